"""Where the disk goes: per file and per LMDB sub-database, after ingest and after
forgetting half the store and compacting, against the raw vector bytes plus the text.

The store is built as ``peers_bench.py`` builds it (ready vectors, short texts, one
metadata field; ``--style durability``: the texts of ``durability_bench.py``), so the
"disk after delete half + compact" row of that benchmark can be explained table by table.

Run: ``nice python bench/disk_bench.py --n 100000`` (``--keep-all``: compact without
forgetting half).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import table  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402

DIM = 384


class _Given:
    """An embedder that refuses to embed: every vector is given."""

    name = "bench-given"
    dim = DIM

    def embed(self, texts: Any) -> np.ndarray:
        raise RuntimeError("the benchmark gives every vector")


def text_of(i: int, style: str) -> str:
    if style == "durability":
        return f"memory {i}: the deploy of service {i % 97} moved to Thursday after the review"
    return f"note {i} about topic{(i * 31) % 1000} w{(i * 2654435761) % 20000}"


def files(path: str) -> dict[str, int]:
    """Allocated bytes of each file of the store."""
    return {f: os.stat(os.path.join(path, f)).st_blocks * 512 for f in sorted(os.listdir(path))
            if os.path.isfile(os.path.join(path, f))}


def tables(db: Mnemos) -> list[list[str]]:
    """Rows: sub-database, entries, page bytes (branch + leaf + overflow), key + value bytes."""
    env = db._engine.env.env
    rows = []
    with env.begin() as txn:
        for name in list(txn.cursor().iternext(values=False)):
            dbi = env.open_db(name, txn=txn, create=False)
            st = txn.stat(dbi)
            if not st["entries"]:
                continue
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            data = 0
            with txn.cursor(db=dbi) as cur:
                for k, v in cur.iternext():
                    data += len(k) + len(v)
            rows.append([name.decode(), f"{st['entries']:,}", f"{pages * st['psize']:,}",
                         f"{data:,}"])
    return rows


def report(label: str, db: Mnemos, path: str, live: int, text_bytes: int) -> None:
    base = live * DIM * 4 + text_bytes
    fs = files(path)
    total = sum(fs.values())
    print(f"\n## {label}: {total:,} bytes = {total / base:.3f}x raw vectors + text "
          f"({live:,} memories: {live * DIM * 4:,} + {text_bytes:,})\n")
    print(table(["file", "bytes"], [[f, f"{b:,}"] for f, b in fs.items()]))
    print()
    print(table(["LMDB sub-database", "entries", "page bytes",
                 "key + value bytes (keys counted per duplicate)"], tables(db)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--style", choices=("peers", "durability"), default="peers")
    ap.add_argument("--keep-all", action="store_true")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-disk-", dir=os.environ.get("BENCH_DIR"))
    path = os.path.join(root, "store")
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((a.n, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        texts = [text_of(i, a.style) for i in range(a.n)]
        sizes = np.array([len(t.encode()) for t in texts])
        with Mnemos.open(path, embedder=_Given(), ann=False) as db:
            t = time.perf_counter()
            for lo in range(0, a.n, 20_000):
                hi = min(a.n, lo + 20_000)
                db.remember_many([{"text": texts[i], "vector": x[i],
                                   "metadata": {"cat": (i * 7919) % 10}} for i in range(lo, hi)])
            print(f"{a.n:,} x {DIM} ({a.style} texts): ingest {time.perf_counter() - t:.1f} s")
            report("after ingest", db, path, a.n, int(sizes.sum()))
            keep = np.ones(a.n, bool)
            if not a.keep_all:
                db.forget_many(list(range(1, a.n + 1, 2)))  # ids 1, 3, 5, ...: rows 0, 2, 4
                keep[0::2] = False
            t = time.perf_counter()
            db.compact()
            label = "after compact" if a.keep_all else "after forgetting half + compact"
            print(f"\ncompact: {time.perf_counter() - t:.1f} s")
            report(label, db, path, int(keep.sum()), int(sizes[keep].sum()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
