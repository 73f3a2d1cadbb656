"""Core store benchmark: ingest throughput, durable remember latency, open time, ask latency.

For N in (10k, 100k) memories of dimension 384 (precomputed vectors, so embedding
costs nothing), measures in one process:

* ``remember_many`` throughput (batches of 5,000, one transaction each);
* single durable ``remember`` latency (median, p90) on the persisted store;
* ``Mnemos.open`` time of the persisted store (median of warm reopens, and a cold open
  in a fresh process, import excluded);
* ``ask`` top-10 median latency next to plain numpy brute force (``matrix @ q`` +
  argpartition) on the same matrix, as a ratio.

Targets (issue 3): open < 20 ms at 100k; ask within 1.5x of numpy; remember_many
>= 20,000/s; single remember < 1 ms median. Run: ``python bench/core_bench.py [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import PrecomputedEmbedder, median, pct, report, timeit

from mnemos_kv import Mnemos

DIM = 384


def cold_open_ms(path: str) -> float:
    code = (
        "import sys, time, json; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
        "from _common import PrecomputedEmbedder\n"
        "from mnemos_kv import Mnemos\n"
        "e = PrecomputedEmbedder(1, %d, 1)\n"
        "t = time.perf_counter(); db = Mnemos.open(%r, embedder=e); dt = time.perf_counter() - t\n"
        "db.close(); print(json.dumps(dt * 1000))\n"
    ) % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.path.dirname(os.path.abspath(__file__)), DIM, path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def run(n: int, root: str) -> dict[str, float]:
    emb = PrecomputedEmbedder(n + 1000, DIM)
    path = os.path.join(root, f"bench-{n}.mem")
    res: dict[str, float] = {"n": n}
    with Mnemos.open(path, embedder=emb, clock=lambda: 1_767_225_600.0) as db:
        batch = 5000
        t = time.perf_counter()
        for start in range(0, n, batch):
            db.remember_many([f"mem-{i}" for i in range(start, min(n, start + batch))])
        res["ingest_per_s"] = n / (time.perf_counter() - t)
    with Mnemos.open(path, embedder=emb, clock=lambda: 1_767_225_600.0) as db:
        counter = iter(range(n, n + 1000))
        lat = timeit(lambda: db.remember(f"mem-{next(counter)}"), 300)
        res["remember_med_ms"] = median(lat) * 1000
        res["remember_p90_ms"] = pct(lat, 90) * 1000
        # ask vs numpy brute force on the same matrix
        qi = iter(range(10**9))
        ask_lat = timeit(lambda: db.ask(f"query-{next(qi) % 200}", top_k=10), 200)
        with db._engine.snapshot() as snap:
            matrix = np.array(snap.matrix)  # the same rows, as a plain in-memory array
        qs = emb.queries

        def brute() -> None:
            q = qs[next(qi) % 200]
            s = matrix @ q
            top = np.argpartition(-s, 10)[:10]
            top[np.argsort(-s[top])]
        np_lat = timeit(brute, 200)
        res["ask_med_ms"] = median(ask_lat) * 1000
        res["ask_p99_ms"] = pct(ask_lat, 99) * 1000
        res["numpy_med_ms"] = median(np_lat) * 1000
        res["ask_ratio"] = res["ask_med_ms"] / res["numpy_med_ms"]
        # sanity: the vector part of every answer is the brute-force cosine of that row
        # (ask fuses it with BM25, so scores are not cosines; ids are rows + 1 here)
        hits = db.ask("query-3", top_k=10, explain=True)
        s = matrix @ qs[3]
        assert len(hits) == 10
        assert all(abs(h.explain["cosine"] - float(s[h.id - 1])) < 1e-5 for h in hits)
    opens = []
    for _ in range(20):
        t = time.perf_counter()
        db = Mnemos.open(path, embedder=emb)
        opens.append(time.perf_counter() - t)
        db.close()
    res["open_warm_ms"] = median(opens) * 1000
    res["open_cold_proc_ms"] = median([cold_open_ms(path) for _ in range(3)])
    res["disk_mb"] = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 2**20
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        results = [run(int(n), root) for n in args.sizes.split(",")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [[f"{r['n']:,}", f"{r['ingest_per_s']:,.0f}", f"{r['remember_med_ms']:.3f}",
             f"{r['remember_p90_ms']:.3f}", f"{r['open_warm_ms']:.2f}", f"{r['open_cold_proc_ms']:.2f}",
             f"{r['ask_med_ms']:.2f}", f"{r['numpy_med_ms']:.2f}", f"{r['ask_ratio']:.2f}x",
             f"{r['ask_p99_ms']:.2f}"] for r in results]
    report(["N", "remember_many /s", "remember ms (med)", "p90", "open ms (warm)",
            "open ms (new proc)", "ask top-10 ms", "numpy ms", "ask/numpy", "ask p99 ms"], rows,
           "targets: remember_many >= 20,000/s; remember < 1 ms median; open < 20 ms at 100k; "
           "ask within 1.5x numpy", results, args.json)


if __name__ == "__main__":
    main()
