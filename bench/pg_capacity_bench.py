"""Capacity limits on the PostgreSQL engine next to the embedded store, in the same run.

``--n`` memories (default 20,000) in one store of each engine; then ``remember`` p50
without a limit, at a limit (each write evicts one memory: the steady state), and a
``set_capacity`` that halves the store (thousands of evictions in one transaction).
``--scope namespace`` puts the limit on the namespace instead of the store.

    python bench/pg_capacity_bench.py [--n 20000] [--scope store|namespace] [--url ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pg_bench import drop_schema, pg_server, with_schema  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402

T0 = 1_767_225_600


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("MNEMOS_TEST_PG_URL"))
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--scope", choices=["store", "namespace"], default="store")
    args = ap.parse_args(argv)
    n = args.n
    tmp = tempfile.mkdtemp(prefix="mnemos-pgcap-")
    items = [{"text": f"note {i} about the {['plan', 'budget', 'risk'][i % 3]}",
              "timestamp": T0 + i * 60, "type": ("episodic", "semantic", "procedural")[i % 3]}
             for i in range(n)]
    print(f"{n} memories, limit on the {args.scope} (loaded 2-core machine, pgserver on it)")
    with pg_server(args.url, tmp) as url:
        drop_schema(url, "bench_capacity")
        for label, target in (("embedded", os.path.join(tmp, "local.mem")),
                              ("PostgreSQL", with_schema(url, "bench_capacity"))):
            with Mnemos.open(target) as db:
                for k in range(0, n, 5000):
                    db.remember_many(items[k:k + 5000])
                if label == "PostgreSQL":
                    db._engine._w.execute("ANALYZE memories")  # as autovacuum would
                h = db if args.scope == "store" else db.namespace("default")
                free, full = [], []
                for i in range(30):
                    t = time.perf_counter()
                    db.remember(f"free {i}", timestamp=T0 + (n + i) * 60)
                    free.append(time.perf_counter() - t)
                h.set_capacity(db.count())
                for i in range(30):
                    t = time.perf_counter()
                    db.remember(f"over {i}", timestamp=T0 + (n + 30 + i) * 60)
                    full.append(time.perf_counter() - t)
                assert db.stats()["evicted"] == 30
                t = time.perf_counter()
                h.set_capacity(n // 2)
                bulk = time.perf_counter() - t
                gone = db.stats()["evicted"] - 30
                print(f"{label:<11} remember p50 {statistics.median(free) * 1000:.1f} ms without a "
                      f"limit, {statistics.median(full) * 1000:.1f} ms at the limit (one eviction "
                      f"each); set_capacity evicting {gone}: {bulk:.2f} s "
                      f"({bulk / gone * 1e6:.0f} us each)", flush=True)
        drop_schema(url, "bench_capacity")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
