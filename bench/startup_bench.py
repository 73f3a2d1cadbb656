"""Startup benchmark (the roadmap's ``startup_bench``): open time must not grow with history.

Builds stores of 1k, 10k and 100k live memories with long histories (about 5 logged
operations per live memory: remember twice as many, connect, forget half, re-connect),
then measures in fresh processes:

* ``import mnemos_kv``;
* cold ``Mnemos.open`` (new process; page cache as the OS left it);
* the first ``ask`` after open;
* open with log reconciliation: an uncommitted log tail (a writer killed between its
  log append and its commit) plus 200 operations of vector-file sync lag to redo;
* export of the full history and its replay into a new store.

Targets: open < 100 ms for small and medium stores, flat as history grows.
Run: ``python bench/startup_bench.py [--sizes 1000,10000,100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import PrecomputedEmbedder, median, report

from mnemos_kv import Mnemos
from mnemos_kv import _records as R
from mnemos_kv._log import encode_frame, log_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIM = 384

PROBE = """
import sys, time, json
t0 = time.perf_counter()
sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
import mnemos_kv
t1 = time.perf_counter()
from _common import PrecomputedEmbedder
emb = PrecomputedEmbedder(1, {dim}, 200)
t2 = time.perf_counter()
db = mnemos_kv.Mnemos.open({path!r}, embedder=emb, readonly={readonly})
t3 = time.perf_counter()
db.ask("query-1", top_k=10)
t4 = time.perf_counter()
db.close()
print(json.dumps({{"import_ms": (t1 - t0) * 1e3, "open_ms": (t3 - t2) * 1e3, "first_ask_ms": (t4 - t3) * 1e3}}))
"""


def probe(path: str, readonly: bool = False) -> dict[str, float]:
    code = PROBE.format(root=ROOT, here=HERE, dim=DIM, path=path, readonly=readonly)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def build(path: str, n_live: int, emb: PrecomputedEmbedder) -> int:
    """Create ``n_live`` live memories through ~5 operations each; returns ops logged."""
    with Mnemos.open(path, embedder=emb, clock=lambda: 1_767_225_600.0) as db:
        total = 2 * n_live
        ids: list[int] = []
        for start in range(0, total, 5000):
            ids += db.remember_many([f"mem-{i}" for i in range(start, min(total, start + 5000))])
        with db.batch() if hasattr(db, "batch") else _NoBatch(db) as b:
            for i in range(0, total - 1, 2):
                b.connect(ids[i], ids[i + 1])
        doomed = ids[1::2]
        for start in range(0, len(doomed), 5000):
            db.forget_many(doomed[start:start + 5000])
        keep = ids[0::2]
        with db.batch() if hasattr(db, "batch") else _NoBatch(db) as b:
            for i in range(0, len(keep) - 1):
                if i % 2 == 0:
                    b.connect(keep[i], keep[i + 1], relation="next")
        return db.stats()["seq"]


class _NoBatch:
    """Stand-in for ``db.batch()``: buffers connects and sends them in chunks."""

    def __init__(self, db: Mnemos) -> None:
        self.db, self.reqs = db, []

    def connect(self, a: int, b: int, relation: str = "related") -> None:
        self.reqs.append(("connect", "default", a, b, relation, 1.0))
        if len(self.reqs) >= 5000:
            self.flush()

    def flush(self) -> None:
        if self.reqs:
            self.db._engine.write(self.reqs)
            self.reqs = []

    def __enter__(self) -> "_NoBatch":
        return self

    def __exit__(self, *a: object) -> None:
        self.flush()


def add_reconcile_work(path: str, emb: PrecomputedEmbedder) -> None:
    """200 ops of vector-sync lag, then a torn, uncommitted log tail."""
    with Mnemos.open(path, embedder=emb) as db:
        for i in range(200):
            db.remember(f"mem-{i}")
        st = db._engine.read_state()
        eng = db._engine
        # leave without the closing sync, as a killed process would
        eng.closed = True
        eng.vectors.close()
        eng.log.close()
        from mnemos_kv import _storage
        _storage.release(eng.env)
    op = {"op": "mem", "id": st.next_id, "ns": 0, "text": "ghost", "meta": {}, "type": 0, "ts": 0,
          "vec": emb.vectors[0].tobytes()}
    with open(log_file(path, st.log_seg), "ab") as f:
        f.write(encode_frame(st.seq + 1, R.encode(op)))
        f.write(b"\x01\x02\x03")


def run(n: int, root: str) -> dict[str, float]:
    emb = PrecomputedEmbedder(2 * n + 1000, DIM)
    path = os.path.join(root, f"s{n}.mem")
    t = time.perf_counter()
    ops = build(path, n, emb)
    build_s = time.perf_counter() - t
    res: dict[str, float] = {"n": n, "ops": ops, "build_s": build_s}
    probes = [probe(path) for _ in range(5)]
    res["import_ms"] = median([p["import_ms"] for p in probes])
    res["open_ms"] = median([p["open_ms"] for p in probes])
    res["first_ask_ms"] = median([p["first_ask_ms"] for p in probes])
    res["open_ro_ms"] = median([probe(path, readonly=True)["open_ms"] for _ in range(3)])
    add_reconcile_work(path, emb)
    res["open_reconcile_ms"] = probe(path)["open_ms"]
    res["open_after_ms"] = median([probe(path)["open_ms"] for _ in range(3)])
    out = os.path.join(root, f"s{n}.replay")
    with Mnemos.open(path, embedder=emb) as db:
        t = time.perf_counter()
        info = db.export_replay(out)
        res["export_s"] = time.perf_counter() - t
        digest = db.state_digest()
    res["replay_mb"] = info.bytes / 2**20
    with Mnemos.open(os.path.join(root, f"r{n}.mem"), embedder=emb) as dst:
        t = time.perf_counter()
        r = dst.replay(out)
        res["replay_s"] = time.perf_counter() - t
        assert r.digest_matches and dst.state_digest() == digest
    res["log_mb"] = os.path.getsize(log_file(path, 1)) / 2**20 if os.path.exists(log_file(path, 1)) else 0.0
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-startup-", dir=os.environ.get("BENCH_DIR"))
    try:
        results = [run(int(n), root) for n in args.sizes.split(",")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [[f"{r['n']:,}", f"{r['ops']:,}", f"{r['log_mb']:.0f}", f"{r['import_ms']:.0f}",
             f"{r['open_ms']:.2f}", f"{r['open_ro_ms']:.2f}", f"{r['first_ask_ms']:.2f}",
             f"{r['open_reconcile_ms']:.2f}", f"{r['open_after_ms']:.2f}",
             f"{r['export_s']:.2f}", f"{r['replay_s']:.2f}", f"{r['replay_mb']:.0f}"] for r in results]
    report(["live memories", "logged ops", "log MiB", "import ms", "open ms", "open ro ms",
            "first ask ms", "open+reconcile ms", "open after ms", "export s", "replay s",
            "replay file MiB"], rows,
           "target: open < 100 ms for small/medium stores, flat as history grows "
           "(open reads no log frames; reconcile redoes at most 256)", results, args.json)


if __name__ == "__main__":
    main()
