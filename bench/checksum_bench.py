"""What the checksums of format 2 cost (issue 10): record CRC on reads, vector-row CRC
on the memories ``ask`` returns, and verify's full pass.

    python bench/checksum_bench.py [N]        (default 20000 memories, dim 384)

Each figure is measured against the same operation with the check switched off, in the
same run (the ratio is the cost); results go to bench/results/checksum_bench.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import PrecomputedEmbedder, median, report, timeit  # noqa: E402

import mnemos_kv._records as R  # noqa: E402
from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv._engine import Engine  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    emb = PrecomputedEmbedder(n, n_queries=100)
    with tempfile.TemporaryDirectory() as tmp:
        db = Mnemos.open(os.path.join(tmp, "s"), embedder=emb)
        texts = [f"mem-{i}" for i in range(n)]
        for lo in range(0, n, 5000):
            db.remember_many(texts[lo:lo + 5000])
        ids = list(range(1, n + 1, max(1, n // 2000)))
        queries = [f"query-{i}" for i in range(100)]

        def gets() -> None:
            for mid in ids:
                db.get(mid)

        def asks() -> None:
            for q in queries:
                db.ask(q, top_k=10)

        rows, results = [], {}
        plain_from_bytes = R.Record.from_bytes.__func__  # type: ignore[attr-defined]

        def unchecked(cls, data):  # the format-1 decode path: no CRC
            return plain_from_bytes(cls, data[5:] if data[:1] == b"\x02" else data)
        for what, fn, per in (("get (record CRC)", gets, len(ids)), ("ask top-10 (row CRC of hits)", asks, len(queries))):
            on = median(timeit(fn, 5)) / per
            saved = (R.Record.from_bytes, Engine.check_vector)
            R.Record.from_bytes = classmethod(unchecked)  # type: ignore[assignment]
            Engine.check_vector = lambda self, snap, rec: None  # type: ignore[assignment]
            try:
                off = median(timeit(fn, 5)) / per
            finally:
                R.Record.from_bytes, Engine.check_vector = saved  # type: ignore[assignment]
            rows.append([what, f"{off * 1e6:.1f}", f"{on * 1e6:.1f}", f"{on / off:.3f}"])
            results[what] = {"off_us": off * 1e6, "on_us": on * 1e6}
        t = time.perf_counter()
        rep = db.verify()
        v = time.perf_counter() - t
        assert rep.ok
        rows.append([f"verify, {n} memories (all rows)", "-", f"{v * 1e3:.0f} ms", "-"])
        results["verify_s"] = v
        db.close()
    report(["operation", "unchecked µs", "checked µs", "ratio"], rows,
           "target: record and hit-row checks cost < 10% of get/ask; verify checks every row",
           results, None)
    print(f"\nrun: python bench/checksum_bench.py {n}")


if __name__ == "__main__":
    main()
