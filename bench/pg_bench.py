"""PostgreSQL engine vs the embedded store, in the same run: LoCoMo dev recall@10 and
``ask`` latency p50 at 100k memories.

* LoCoMo: the protocol of ``bench/locomo_bench.py`` (one namespace per conversation,
  ``ask(top_k=100)`` per question, default embedder and settings), once on a local
  directory and once on a PostgreSQL schema; recall@1/5/10/20 and MRR, and the
  difference (issue 16 asks |delta recall@10| <= 0.02).
* Latency: ``--n`` memories (default 100,000) of LoCoMo-like texts (the dev turns,
  cycled with a counter word) remembered in one namespace of each store, then
  ``ask(q, top_k=10)`` (hybrid, default settings) for ``--queries`` questions of the
  split; p50/p90 in ms (embed + rank + records, store open, one thread) and the
  PostgreSQL/embedded ratio.

The server: ``--url`` (a PostgreSQL URL with pgvector, no schema) or ``MNEMOS_TEST_PG_URL``,
else a pgserver started in a temporary directory.

    python bench/pg_bench.py                     # both parts
    python bench/pg_bench.py --n 20000 --skip-locomo
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import locomo_bench as L  # noqa: E402

from mnemos_kv import HashingEmbedder, Mnemos  # noqa: E402


@contextlib.contextmanager
def pg_server(given: str | None, tmp: str) -> Iterator[str]:
    """The server's URL: ``given``, or a pgserver started in ``tmp`` and stopped after."""
    if given:
        yield given
        return
    import pgserver  # type: ignore[import-untyped]
    srv = pgserver.get_server(os.path.join(tmp, "pg"), cleanup_mode="stop")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def locomo(convs: list[Any], local: str, remote: str) -> list[str]:
    lines = []
    res = {}
    for label, path in (("embedded", local), ("postgres", remote)):
        t = L.ingest(path, HashingEmbedder(), convs)
        t0 = time.perf_counter()
        res[label] = L.evaluate(convs, L.ranks_by_ask(path, HashingEmbedder(), convs))
        t_ask = time.perf_counter() - t0
        p50, p90 = L.ask_latency(path, HashingEmbedder(), convs)
        a = res[label]["all"]
        lines.append(f"LoCoMo dev, {label:9s}: R@1 {a['R@1']:.3f}  R@5 {a['R@5']:.3f}  "
                     f"R@10 {a['R@10']:.3f}  R@20 {a['R@20']:.3f}  MRR {a['MRR']:.3f}  "
                     f"(ingest {t:.1f} s, all asks {t_ask:.1f} s, ask p50 {p50:.2f} ms, "
                     f"p90 {p90:.2f} ms)")
    d = res["postgres"]["all"]["R@10"] - res["embedded"]["all"]["R@10"]
    lines.append(f"recall@10 postgres - embedded: {d:+.4f} (target |delta| <= 0.02)")
    return lines


def latency(convs: list[Any], n: int, n_queries: int, local: str, remote: str) -> list[str]:
    turns = [t["text"] for c in convs for t in c.turns]
    texts = [f"{turns[i % len(turns)]} item{i}" for i in range(n)]
    qs = [q for c in convs for q in c.questions][:n_queries]
    lines = []
    p50s = {}
    for label, path in (("embedded", local), ("postgres", remote)):
        t = time.perf_counter()
        with Mnemos.open(path, clock=lambda: L.CLOCK) as db:
            ns = db.namespace("big")
            for i in range(0, n, 5000):
                ns.remember_many([{"text": x, "timestamp": L.CLOCK - (n - i - j)}
                                  for j, x in enumerate(texts[i:i + 5000])])
        ingest = time.perf_counter() - t
        with Mnemos.open(path) as db:
            ns = db.namespace("big")
            for q in qs[:3]:
                ns.ask(q, top_k=10)  # warm caches (both engines)
            times = []
            for q in qs:
                t = time.perf_counter()
                ns.ask(q, top_k=10)
                times.append(time.perf_counter() - t)
        p50, p90 = float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 90) * 1e3)
        p50s[label] = p50
        lines.append(f"{n:,} memories, {label:9s}: ask(top_k=10) p50 {p50:.1f} ms, p90 {p90:.1f} ms "
                     f"({len(qs)} questions; ingest {ingest:.0f} s)")
    lines.append(f"ask p50 ratio postgres / embedded: {p50s['postgres'] / p50s['embedded']:.1f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("MNEMOS_TEST_PG_URL"))
    ap.add_argument("--data", type=Path, default=L.DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-locomo", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args(argv)
    convs = L.load_locomo(args.data)
    tmp = tempfile.mkdtemp(prefix="mnemos-pgbench-")
    out: list[str] = [f"server: {'given URL' if args.url else 'pgserver (bundled PostgreSQL 16 + pgvector)'}"]
    with pg_server(args.url, tmp) as url:
        if not args.skip_locomo:
            drop_schema(url, "bench_locomo")
            out += locomo(convs, os.path.join(tmp, "locomo.mem"), with_schema(url, "bench_locomo"))
            print("\n".join(out), flush=True)
            drop_schema(url, "bench_locomo")
        if not args.skip_latency:
            drop_schema(url, "bench_big")
            lat = latency(convs, args.n, args.queries, os.path.join(tmp, "big.mem"),
                          with_schema(url, "bench_big"))
            print("\n".join(lat), flush=True)
            out += lat
            drop_schema(url, "bench_big")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
