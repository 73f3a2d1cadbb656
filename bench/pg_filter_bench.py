"""Metadata filters on the PostgreSQL engine: in SQL over jsonb vs in Python, same run.

``--n`` memories (default 20,000) with metadata ``{"user": "u<i % 50>", "n": i,
"tags": [...], "doc": {"page": i % 300}}`` in one namespace; then, per filter,
``count(filter)``, ``memories(filter=...)`` (listed) and ``ask(q, filter=..., top_k=10)``
timed (median of ``--reps``) twice: with the filter translated to SQL
(``_pg.jsonfilter``; the default) and evaluated in Python over every row of the
namespace (how 0.2.0-dev did it; ``engine.sql_filters = False``). The answers of the
two paths are checked equal. The table is ANALYZEd after the load (autovacuum does
it on its own a little later), so that the planner uses the GIN index on ``metaj``. The embedded store (filter index) is timed too, as the
reference.

    python bench/pg_filter_bench.py [--n 20000] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pg_bench import drop_schema, pg_server, with_schema  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402

FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("equality (2%)", {"user": "u7"}),
    ("range (10%)", {"n": {"$gte": 1000, "$lt": 3000}}),
    ("nested + $in (1%)", {"doc.page": {"$in": [3, 4, 5]}}),
    ("$or / $ne (broad)", {"$or": [{"user": {"$ne": "u1"}}, {"tags": ["a"]}]}),
]


def _median_ms(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    out, times = None, []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def _calls(db: Mnemos, flt: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    return {"count": lambda: db.count(flt),
            "memories": lambda: [m.id for m in db.memories(filter=flt)],
            "ask": lambda: [m.id for m in db.ask("notes about the budget", filter=flt, top_k=10)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("MNEMOS_TEST_PG_URL"))
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="mnemos-pgfilter-")
    items = [{"text": f"note {i} about the {['plan', 'budget', 'risk', 'design'][i % 4]}",
              "metadata": {"user": f"u{i % 50}", "n": i, "tags": [["a"], ["b"], ["a", "b"]][i % 3],
                           "doc": {"page": i % 300}}} for i in range(args.n)]
    with pg_server(args.url, tmp) as url:
        drop_schema(url, "bench_filters")
        with Mnemos.open(with_schema(url, "bench_filters")) as pg, \
                Mnemos.open(os.path.join(tmp, "local.mem")) as loc:
            for label, db in (("PostgreSQL", pg), ("embedded", loc)):
                t = time.perf_counter()
                for k in range(0, len(items), 5000):
                    db.remember_many(items[k:k + 5000])
                print(f"remember_many ({label}): {time.perf_counter() - t:.1f} s")
            # planner statistics, as autovacuum gathers them after a bulk load (without
            # them the planner does not know the GIN index on metaj is selective)
            pg._engine._w.execute("ANALYZE memories")
            print(f"{args.n} memories in one namespace; median of {args.reps} calls, ms "
                  "(loaded 2-core machine, pgserver on the same machine)")
            print(f"{'filter':<20} {'call':<9} {'PG SQL':>9} {'PG Python':>10} {'ratio':>6} "
                  f"{'embedded':>9}")
            eng = pg._engine
            for name, flt in FILTERS:
                for call, fn in _calls(pg, flt).items():
                    eng.sql_filters = True
                    t_sql, a = _median_ms(fn, args.reps)
                    eng.sql_filters = False
                    t_py, b = _median_ms(fn, args.reps)
                    eng.sql_filters = True
                    t_loc, c = _median_ms(_calls(loc, flt)[call], args.reps)
                    assert a == b, (name, call)
                    assert call == "ask" or a == c, (name, call)
                    print(f"{name:<20} {call:<9} {t_sql:>9.1f} {t_py:>10.1f} "
                          f"{t_py / t_sql:>5.1f}x {t_loc:>9.1f}", flush=True)
        drop_schema(url, "bench_filters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
