"""Compaction benchmark: 100k memories (dim 384), forget 50%, compact.

Measures, in one process:

* bytes per file before and after ``compact()`` — apparent size (``st_size``) and bytes
  on disk (``st_blocks * 512``) — next to a *fresh* store built in the same run that holds
  exactly the surviving memories (same texts, timestamps and vectors, in id order);
* the compaction time;
* ``ask`` top-10 latency (median, p95 over 200 queries) before and after.

Target (issue 7): after compaction the store is within 10% of the fresh store's size.
Run: ``python bench/compaction_bench.py [--n 100000] [--out bench/results/compaction_bench.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

from _common import PrecomputedEmbedder, median, pct, table, timeit

from mnemos_kv import Mnemos

DIM = 384
T0 = 1_767_225_600.0
BATCH = 5000


def kind(name: str) -> str:
    """File kind, so stores with different generations/segments line up in one table."""
    for prefix, label in (("vectors.", "vectors.G.f32"), ("slots.", "slots.G.bin"),
                          ("log.", "log.S.mlog"), ("base.", "base.S.msnap")):
        if name.startswith(prefix):
            return label
    return name


def usage(path: str) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            st = os.stat(p)
            a, d = out.get(kind(name), (0, 0))
            out[kind(name)] = (a + st.st_size, d + st.st_blocks * 512)
    return out


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


def ask_latency(db: Mnemos, n_queries: int, rounds: int = 3) -> tuple[float, float]:
    """(median, p95) in ms of the quietest of ``rounds`` rounds over ``n_queries`` queries
    (the machine is shared: the least disturbed round is the best estimate)."""
    qs = [f"query-{i}" for i in range(n_queries)]
    for q in qs[:20]:
        db.ask(q, top_k=10)  # warm up
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        times = []
        for q in qs:
            times += timeit(lambda: db.ask(q, top_k=10), 1)
        cur = (median(times) * 1000, pct(times, 95) * 1000)
        best = cur if best is None or cur[0] < best[0] else best
    assert best is not None
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "compaction_bench.md"))
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed)")
    args = ap.parse_args()
    n = args.n
    root = args.dir or tempfile.mkdtemp(prefix="mnemos-compaction-bench-")
    emb = PrecomputedEmbedder(n, DIM, n_queries=args.queries)
    rng = np.random.default_rng(7)
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    try:
        src = os.path.join(root, "compacted.mem")
        with Mnemos.open(src, embedder=emb, clock=lambda: T0) as db:
            t = time.perf_counter()
            for lo in range(0, n, BATCH):
                db.remember_many([{"text": f"mem-{i}", "timestamp": T0 + i}
                                  for i in range(lo, min(n, lo + BATCH))])
            t_ingest = time.perf_counter() - t
            ids = np.arange(1, n + 1)
            doomed = np.sort(rng.choice(ids, n // 2, replace=False))
            t = time.perf_counter()
            for lo in range(0, doomed.size, BATCH):
                db.forget_many(doomed[lo: lo + BATCH].tolist())
            t_forget = time.perf_counter() - t
            before = usage(src)
            ask_before = ask_latency(db, args.queries)
            answers_before = [[(m.id, m.score) for m in db.ask(f"query-{i}", top_k=10)]
                              for i in range(20)]
            t = time.perf_counter()
            rep = db.compact()
            t_compact = time.perf_counter() - t
            after = usage(src)
            ask_after = ask_latency(db, args.queries)
            answers_after = [[(m.id, m.score) for m in db.ask(f"query-{i}", top_k=10)]
                             for i in range(20)]
            assert answers_after == answers_before, "compaction changed answers"
            assert db.verify(deep=False).ok
            gone = set(doomed.tolist())
            live_ids = [m_id for m_id in ids.tolist() if m_id not in gone]
        fresh = os.path.join(root, "fresh.mem")
        with Mnemos.open(fresh, embedder=emb, clock=lambda: T0) as db:
            for lo in range(0, len(live_ids), BATCH):
                db.remember_many([{"text": f"mem-{i - 1}", "timestamp": T0 + i - 1}
                                  for i in live_ids[lo: lo + BATCH]])
            assert db.count() == n - n // 2
        fresh_u = usage(fresh)

        say("# Compaction benchmark\n")
        say(f"{n:,} memories (dim {DIM}, precomputed vectors), {n // 2:,} forgotten at random "
            f"(seed 7), then `compact()`; a fresh store holding the same {n - n // 2:,} live "
            "memories is built in the same run for comparison. Sizes in MiB: apparent "
            "(`st_size`) / on disk (`st_blocks*512`).\n")
        say(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()}.\n")
        kinds = sorted(set(before) | set(after) | set(fresh_u))
        rows = []
        for k in kinds:
            b, a, f = before.get(k, (0, 0)), after.get(k, (0, 0)), fresh_u.get(k, (0, 0))
            rows.append([k, f"{mib(b[0])} / {mib(b[1])}", f"{mib(a[0])} / {mib(a[1])}",
                         f"{mib(f[0])} / {mib(f[1])}"])
        tb = [sum(v[i] for v in before.values()) for i in (0, 1)]
        ta = [sum(v[i] for v in after.values()) for i in (0, 1)]
        tf = [sum(v[i] for v in fresh_u.values()) for i in (0, 1)]
        rows.append(["**total**", f"{mib(tb[0])} / {mib(tb[1])}", f"{mib(ta[0])} / {mib(ta[1])}",
                     f"{mib(tf[0])} / {mib(tf[1])}"])
        say(table(["file", "before compact", "after compact", "fresh store"], rows))
        say()
        ratio_a, ratio_d = ta[0] / tf[0], ta[1] / tf[1]
        ok = ratio_a <= 1.10 and ratio_d <= 1.10
        say(table(["measure", "value"], [
            ["ingest (remember_many, batches of 5,000)", f"{n / t_ingest:,.0f} memories/s"],
            ["forget_many of 50%", f"{t_forget:.2f} s"],
            ["compact() time", f"{t_compact:.2f} s"],
            ["LMDB file", rep["lmdb_note"]],
            ["ask top-10 before: median / p95 (best of 3 rounds)", f"{ask_before[0]:.2f} / {ask_before[1]:.2f} ms"],
            ["ask top-10 after: median / p95 (best of 3 rounds)", f"{ask_after[0]:.2f} / {ask_after[1]:.2f} ms"],
            ["compacted / fresh, apparent", f"{ratio_a:.3f}"],
            ["compacted / fresh, on disk", f"{ratio_d:.3f}"],
            ["target (within 10% of fresh)", "met" if ok else "NOT met"],
        ]))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\nwrote {args.out}")
        return 0 if ok else 1
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
