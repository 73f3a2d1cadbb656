"""Bulk forget (issue 13): ``forget_many`` of every other memory of a store, and the asks
after it (before compaction) next to the same asks before it, in the same run.

* The store: the peers benchmark's clustered vectors (384 dims), its texts and
  ``{"cat": c}`` metadata, remembered in calls of 20,000 (built once per size, then
  copied for each pass).
* ``forget_many`` of every other id: wall and process CPU seconds, in a fresh process
  per pass (``sweep``: the current path; ``tokens``: the same code forced to find the
  postings by re-tokenising the forgotten texts, ``_forget.SWEEP_SHARE = 0``, which is
  what every bulk forget did before the sweep). Target: seconds at 1M.
* Filtered vector ask (``cat == 3``) and hybrid ask (text + vector) p50 over 50 queries
  (the least of 3 passes), before and after the forget, and after ÷ before. Target:
  <= 1.5.

Run: ``nice python bench/forget_bench.py --sizes 100000,1000000`` (``--keep DIR`` keeps
the built stores there and reuses them); writes ``bench/results/forget_bench.md``
(``--out -``: print only).
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
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import size_table  # noqa: E402
from peers_bench import _Given, _text, category, make_data  # noqa: E402

CHUNK = 20_000
QUERIES = 50
#: Passes over the queries; the least p50 is kept (a shared machine's spikes).
PASSES = 3


def build(n: int, path: str) -> None:
    from mnemos_kv import Mnemos
    x, _ = make_data("clustered", n, 1)
    cat = category(n)
    db = Mnemos.open(path, embedder=_Given())
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        db.remember_many([{"text": _text(i, int(cat[i])), "vector": x[i],
                           "metadata": {"cat": int(cat[i])}} for i in range(lo, hi)])
    db.close()


def asks(db: Any, n: int) -> dict[str, float]:
    """p50 ms of the filtered vector ask and of the hybrid ask."""
    _, q = make_data("clustered", n, QUERIES)
    rng = np.random.default_rng(3)
    texts = [f"topic{int(c)} w{int(w)}" for c, w in zip(rng.integers(0, 1000, QUERIES),
                                                       rng.integers(0, 20000, QUERIES))]
    out = {}
    for name, fn in (("filt", lambda i: db.ask(vector=q[i], mode="vector", top_k=10,
                                               filter={"cat": 3})),
                     ("hyb", lambda i: db.ask(texts[i], vector=q[i], top_k=10))):
        fn(0)
        p50s = []
        for _ in range(PASSES):
            ts = []
            for i in range(QUERIES):
                t = time.perf_counter()
                fn(i)
                ts.append(time.perf_counter() - t)
            p50s.append(float(np.median(ts) * 1e3))
        out[name] = min(p50s)
    return out


def worker(path: str, n: int, mode: str) -> dict[str, float]:
    from mnemos_kv import Mnemos, _forget
    if mode == "tokens":
        _forget.SWEEP_SHARE = 0
    db = Mnemos.open(path, embedder=_Given())
    before = asks(db, n)
    ids = list(range(1, n + 1, 2))
    t, c = time.perf_counter(), time.process_time()
    db.forget_many(ids)
    out = {"forget_s": time.perf_counter() - t, "forget_cpu_s": time.process_time() - c}
    after = asks(db, n)
    db.close()
    for k in before:
        out[f"{k}_before_ms"], out[f"{k}_after_ms"] = before[k], after[k]
        out[f"{k}_ratio"] = after[k] / before[k]
    return out


def run_pass(base: str, n: int, mode: str, root: str) -> dict[str, float]:
    work = os.path.join(root, f"pass-{mode}")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work)
    try:
        got = subprocess.run([sys.executable, __file__, "--worker", work, str(n), mode],
                             check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return json.loads(got.strip().splitlines()[-1])


ROWS = [("forget_s", "forget_many of half the store (s, wall)"),
        ("forget_cpu_s", "... process CPU (s)"),
        ("tokens_forget_s", "the same through re-tokenising (s, wall)"),
        ("tokens_forget_cpu_s", "... process CPU (s)"),
        ("filt_before_ms", "filtered vector ask p50 before (ms)"),
        ("filt_after_ms", "... after forgetting half, before compact (ms)"),
        ("filt_ratio", "... after / before (target <= 1.5)"),
        ("hyb_before_ms", "hybrid ask p50 before (ms)"),
        ("hyb_after_ms", "... after forgetting half, before compact (ms)"),
        ("hyb_ratio", "... after / before")]


def fmt(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--keep", default=None, help="keep (and reuse) the built stores here")
    ap.add_argument("--modes", default="sweep,tokens")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "forget_bench.md"))
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.worker[2])))
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    res: dict[int, dict[str, float]] = {}
    for n in sizes:
        root = tempfile.mkdtemp(prefix=f"forget-{n}-", dir=os.environ.get("BENCH_TMP"))
        try:
            base = os.path.join(a.keep or root, f"store-{n}")
            if not os.path.exists(base):
                build(n, base)
            res[n] = {}
            for mode in a.modes.split(","):
                got = run_pass(base, n, mode, root)
                if mode == "sweep":
                    res[n].update(got)
                else:
                    res[n].update({f"{mode}_{k}": v for k, v in got.items()})
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(n, json.dumps(res[n]), file=sys.stderr, flush=True)
    rows = [(k, label) for k, label in ROWS if all(k in res[n] for n in sizes)]
    text = size_table(rows, res, sizes, fmt)
    print(text)
    if a.out != "-":
        with open(a.out, "w") as f:
            f.write("# forget_bench\n\n" + __doc__.split("\n\n")[0] + "\n\n"
                    f"Machine: {os.cpu_count()} cores, shared with other jobs.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
