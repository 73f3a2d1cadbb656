"""The exact-or-nothing ANN stage against the exact scan, in the same run.

For random (unclustered) and clustered vectors (peers_bench's data, 384 dims), builds a
store of ``--n`` memories, then measures ``mode="vector"`` asks three ways on the same
queries, interleaved so a loaded machine hits them alike: ``ann=False`` (the exact scan),
``ann=None`` (the default: the index when its bound proves the top k exact, else the
exact scan) and ``ann="approximate"`` (the old capped behaviour, for reference). Prints
p50/p90 of each, the default's ratio to the exact scan, the share of asks the index
answered itself, whether every default answer equals the exact one, the approximate
mode's recall@10, and the one-time index build (the first vector ask of the epoch).

    PYTHONPATH=$PWD nice python bench/ann_exact_bench.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_bench as pb  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv import _retrieval as RT  # noqa: E402

TOPK = 10


def measure(kind: str, n: int, nq: int, root: str) -> dict:
    x, q = pb.make_data(kind, n, nq)
    path = os.path.join(root, f"{kind}.mem")
    with Mnemos.open(path, embedder=pb._Given(), ann=False, durability="fast") as db:
        for lo in range(0, n, 20000):
            db.remember_many([{"text": f"m{i}", "vector": x[i]} for i in range(lo, min(n, lo + 20000))])
    dbs = {m: Mnemos.open(path, embedder=pb._Given(), ann=m)
           for m in (False, None, "approximate")}
    out: dict = {"kind": kind, "n": n}
    t = time.perf_counter()
    dbs[None].ask(vector=q[0], mode="vector", top_k=TOPK)  # builds the index (epoch)
    out["build_s"] = time.perf_counter() - t
    dbs["approximate"].ask(vector=q[0], mode="vector", top_k=TOPK)  # reads the file
    answered = []
    real = RT._ann_candidates

    def spy(*a, **kw):
        got = real(*a, **kw)
        if kw.get("strict", a[5] if len(a) > 5 else False):
            answered.append(got is not None)
        return got
    RT._ann_candidates = spy
    lat: dict = {m: [] for m in dbs}
    got: dict = {m: [] for m in dbs}
    try:
        for i in range(nq):
            for m, db in dbs.items():
                s = time.perf_counter()
                hits = db.ask(vector=q[i], mode="vector", top_k=TOPK)
                lat[m].append((time.perf_counter() - s) * 1e3)
                got[m].append([(h.id, h.score) for h in hits])
    finally:
        RT._ann_candidates = real
        for db in dbs.values():
            db.close()
    for m in dbs:
        out[m] = (float(np.percentile(lat[m], 50)), float(np.percentile(lat[m], 90)))
    out["index_answered"] = sum(answered) / max(1, len(answered))
    out["equal"] = all([i for i, _ in a] == [i for i, _ in e]
                       and max((abs(s - t) for (_, s), (_, t) in zip(a, e)), default=0.0) < 1e-5
                       for a, e in zip(got[None], got[False]))
    out["approx_recall"] = float(np.mean([len({i for i, _ in a} & {i for i, _ in e}) / TOPK
                                          for a, e in zip(got["approximate"], got[False])]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--kinds", default="random,clustered")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ann_exact_")
    try:
        for kind in args.kinds.split(","):
            r = measure(kind, args.n, args.queries, root)
            print(f"{kind} n={r['n']:,} dim {pb.DIM}: index build (first vector ask) "
                  f"{r['build_s']:.1f} s")
            for m, label in ((False, "exact scan (ann=False)"), (None, "default (ann=None)"),
                             ("approximate", "ann='approximate'")):
                p50, p90 = r[m]
                print(f"  {label:24s} p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  "
                      f"x{p50 / r[False][0]:.2f} of exact")
            print(f"  default: index answered {100 * r['index_answered']:.0f}% of asks, "
                  f"every answer equal to the exact scan: {r['equal']}; "
                  f"approximate recall@10 {r['approx_recall']:.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
