"""Search API benchmark: filtered ask through the filter index, and vector-only ask.

At N memories (default 100k) of dimension 384 (precomputed vectors, realistic
metadata: user, channel, priority, a float score, a nested source, tags, and a
``bucket`` 0..99 assigned by a seeded permutation so selected rows are spread over
the whole store), measures in one process, medians over 200 queries, every kind of query
once per round (so the load of a shared machine hits them alike):

* unfiltered hybrid ``ask`` top-10 (the reference);
* the same ask with a metadata filter selecting 50% (``bucket $lt 50``, a cursor
  range over 50 shared values; ``score $gte 0.5``, a range over 50k distinct ones), 10% (``bucket $in [10 values]``), 1% (``bucket == 7``, one key) and 1%
  through a range on unique floats (``score $gte 0.99``), each as a ratio to the
  unfiltered ask;
* ``ask(vector=q, mode="vector")`` next to numpy brute force (``matrix @ q`` +
  argpartition + sort of the top 10) on the same rows, as a ratio.

Targets (issue 11): filtered at 1% <= 2x unfiltered; vector-only <= 1.5x numpy.
Run: ``python bench/api_bench.py [--n 100000]``.
"""

from __future__ import annotations

import os

# One BLAS thread for the store and for numpy alike: on a shared 2-core machine a
# multi-threaded matrix product measures the neighbours' load, not the code.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from _common import PrecomputedEmbedder, median, report  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv.filters import matches  # noqa: E402

DIM = 384
Q = 200
CHANNELS = ["slack", "email", "chat", "meeting"]


def metadata(n: int, seed: int = 11) -> list[dict]:
    rng = np.random.default_rng(seed)
    bucket = rng.permutation(n) % 100
    score = rng.permutation(n) / n
    out = []
    for i in range(n):
        out.append({"user": f"user-{i % 50}", "channel": CHANNELS[i % 4], "priority": i % 5,
                    "score": float(score[i]), "bucket": int(bucket[i]),
                    "source": {"app": ["mail", "crm", "notes"][i % 3], "version": 1 + i % 2},
                    "tags": ["work"] if i % 2 else ["home", "todo"]})
    return out


FILTERS = [
    ("50% (bucket $lt 50)", {"bucket": {"$lt": 50}}),
    ("50% (score $gte 0.5, distinct values)", {"score": {"$gte": 0.5}}),
    ("10% (bucket $in 10 values)", {"bucket": {"$in": list(range(10, 20))}}),
    ("1% (bucket == 7)", {"bucket": 7}),
    ("1% (score $gte 0.99, range)", {"score": {"$gte": 0.99}}),
    ("1% (channel and bucket $lt 4)", {"channel": "email", "bucket": {"$lt": 4}}),
]


def run(n: int, root: str, ann: bool | str | None = False) -> dict:
    emb = PrecomputedEmbedder(n, DIM, n_queries=Q)
    path = os.path.join(root, "api.mem")
    metas = metadata(n)
    res: dict = {"n": n, "ann": ann}
    with Mnemos.open(path, embedder=emb, clock=lambda: 1_767_225_600.0, ann=ann) as db:
        t = time.perf_counter()
        for start in range(0, n, 5000):
            db.remember_many([{"text": f"mem-{i}", "metadata": metas[i]}
                              for i in range(start, min(n, start + 5000))])
        res["ingest_per_s"] = n / (time.perf_counter() - t)
        with db._engine.snapshot() as snap:
            matrix = np.array(snap.matrix)  # the same rows, as a plain in-memory array
        qs = emb.queries

        def brute(j: int) -> None:
            s = matrix @ qs[j]
            top = np.argpartition(-s, 10)[:10]
            top[np.argsort(-s[top])]
        shares = []
        for _label, flt in FILTERS:
            shares.append(sum(matches(flt, m) for m in metas) / n)
            got = db.ask("query-1", top_k=10, filter=flt)
            assert len(got) == 10 and all(matches(flt, m.metadata) for m in got)
            assert db.count(flt) == round(shares[-1] * n)
        # every kind of query once per round, so the load of a shared machine hits all alike
        kinds: list[tuple[str, Callable[[int], object]]] = [
            ("unfiltered", lambda j: db.ask(f"query-{j}", top_k=10)),
            *[(label, (lambda f: lambda j: db.ask(f"query-{j}", top_k=10, filter=f))(flt))
              for label, flt in FILTERS],
            ("vector", lambda j: db.ask(vector=qs[j], mode="vector", top_k=10)),
            ("numpy", brute)]
        lat: dict[str, list[float]] = {k: [] for k, _ in kinds}
        for j in range(Q):
            for name, fn in kinds:
                t = time.perf_counter()
                fn(j)
                lat[name].append(time.perf_counter() - t)
        res["unfiltered_ms"] = median(lat["unfiltered"]) * 1000
        res["filtered"] = []
        for (label, _flt), share in zip(FILTERS, shares):
            ms = median(lat[label]) * 1000
            res["filtered"].append({"filter": label, "share": share, "ms": ms,
                                    "ratio": ms / res["unfiltered_ms"]})
        res["vector_ms"] = median(lat["vector"]) * 1000
        res["numpy_ms"] = median(lat["numpy"]) * 1000
        res["vector_ratio"] = res["vector_ms"] / res["numpy_ms"]
        # sanity: scores are the cosines (ids are rows + 1); the exact planner (ann off)
        # gives numpy's top 10, the ANN stage is measured by its recall@10 against it
        found = 0
        for j in range(20):
            hits = db.ask(vector=qs[j], mode="vector", top_k=10)
            s = matrix @ qs[j]
            want = np.argsort(-s, kind="stable")[:10]
            assert all(abs(h.score - float(s[h.id - 1])) < 1e-5 for h in hits)
            if ann is False:
                assert [h.id - 1 for h in hits] == want.tolist()
            found += len({h.id - 1 for h in hits} & set(want.tolist()))
        res["vector_recall_at_10"] = found / 200
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--ann", choices=["off", "auto", "on", "approximate"], default="off",
                    help="the store's ANN stage (default off: the exact planner, which the "
                         "issue-11 targets are about; see peers_bench.py for the ANN stage)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-api-bench-", dir=os.environ.get("BENCH_DIR"))
    try:
        r = run(args.n, root, {"off": False, "auto": None, "on": True,
                            "approximate": "approximate"}[args.ann])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [["unfiltered hybrid ask", "100%", f"{r['unfiltered_ms']:.2f}", "1.00x (reference)"]]
    rows += [[f"filtered ask, {f['filter']}", f"{f['share']:.1%}", f"{f['ms']:.2f}",
              f"{f['ratio']:.2f}x unfiltered"] for f in r["filtered"]]
    rows += [["numpy brute force (matrix @ q, top 10)", "100%", f"{r['numpy_ms']:.2f}",
              "1.00x (reference)"],
             ["ask(vector=q, mode='vector')", "100%", f"{r['vector_ms']:.2f}",
              f"{r['vector_ratio']:.2f}x numpy"]]
    print(f"N = {r['n']:,} memories, dim {DIM}, ann={args.ann}; ingest with metadata "
          f"{r['ingest_per_s']:,.0f}/s; vector-mode recall@10 vs numpy "
          f"{r['vector_recall_at_10']:.3f}")
    report(["query", "selected", "median ms", "ratio"], rows,
           "targets: filtered at 1% <= 2x unfiltered; vector-only <= 1.5x numpy", r, args.json)


if __name__ == "__main__":
    main()
