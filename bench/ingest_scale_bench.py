"""Where ready-vector ingest time goes in a store that already holds N memories (issue 13).

Builds a store of ``N`` memories (``peers_bench``'s clustered 384-dim data, its texts and
``{"cat": c}`` metadata, ``remember_many`` calls of 20,000), then times more calls of
20,000 in three variants, interleaved round by round:

* ``full``: the real call;
* ``no posting puts``: the same call with the BM25 postings' LMDB puts left out (the
  texts are still tokenised, the statistics still updated);
* ``no BM25 index``: the same call with the whole BM25 index left out (no tokenising).

The last two are attribution experiments, not modes of the library: they leave the
scratch store's lexical index incomplete, and the store is deleted afterwards. Next to
them, the reference: 20,000 LMDB puts of the same vector + text bytes in one synced
transaction, into an environment already holding ``N`` such entries (the ``lmdb`` peer
of ``peers_bench``, at the same size). Each row: microseconds per item (wall and
process CPU), the bytes the process wrote per item (``/proc/self/io`` ``write_bytes``:
what reached the disk, Linux only), and the ratio of items/s to the reference's.

Run: ``nice python bench/ingest_scale_bench.py --n 1000000`` (~5 min; ``--n 100000`` for a
quick look). Writes ``bench/results/ingest_scale_bench.md`` (``--out -``: print only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import table  # noqa: E402
from peers_bench import _Given, _text, category, make_data, vector_items  # noqa: E402

CALL = 20_000
VARIANTS = ["full", "no posting puts", "no BM25 index"]


def written() -> int | None:
    """Bytes this process has caused to be written to storage (None: not on Linux)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Swap in the attribution experiment ``name`` for the duration (see the module doc)."""
    from mnemos_kv import _lexical_index
    attr = {"no posting puts": "_put_postings", "no BM25 index": "add_many"}.get(name)
    if attr is None:
        yield
        return
    saved = getattr(_lexical_index, attr)
    setattr(_lexical_index, attr, lambda *a, **k: None)
    try:
        yield
    finally:
        setattr(_lexical_index, attr, saved)


def measure(fn: Callable[[], Any]) -> tuple[float, float, float | None]:
    """(wall s, CPU s, bytes written) of one call of ``fn``."""
    w0, t0, c0 = written(), time.perf_counter(), time.process_time()
    fn()
    t, c, w1 = time.perf_counter() - t0, time.process_time() - c0, written()
    return t, c, (None if w0 is None or w1 is None else float(w1 - w0))


def run(n: int, rounds: int, root: str) -> dict[str, dict[str, float | None]]:
    import lmdb

    from mnemos_kv import Mnemos
    extra = rounds * len(VARIANTS) * CALL
    x, _q = make_data("clustered", n + extra, 1)
    cat = category(n + extra)
    db = Mnemos.open(os.path.join(root, "store"), embedder=_Given())
    for lo in range(0, n, CALL):
        db.remember_many(vector_items(x, cat, lo, min(n, lo + CALL)))
    env = lmdb.open(os.path.join(root, "lmdb"), map_size=1 << 40)  # sync, metasync: defaults
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), x[i].tobytes() + _text(i, int(cat[i])).encode(),
                    append=True)
    got: dict[str, list[tuple[float, float, float | None]]] = {v: [] for v in VARIANTS + ["lmdb"]}
    at = n
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for name in order:
            items = vector_items(x, cat, at, at + CALL)  # (built before the timer)
            with variant(name):
                got[name].append(measure(lambda: db.remember_many(items)))
            vals = [(i.to_bytes(8, "big"), x[i].tobytes() + _text(i, int(cat[i])).encode())
                    for i in range(at, at + CALL)]

            def puts() -> None:
                with env.begin(write=True) as txn:
                    for k, v in vals:
                        txn.put(k, v)
            got["lmdb"].append(measure(puts))
            at += CALL
    db.close()
    env.close()
    out: dict[str, dict[str, float | None]] = {}
    for name, ms in got.items():
        wb = [m[2] for m in ms if m[2] is not None]
        out[name] = {"us_wall": statistics.median(m[0] for m in ms) / CALL * 1e6,
                     "us_cpu": statistics.median(m[1] for m in ms) / CALL * 1e6,
                     "bytes": statistics.median(wb) / CALL if wb else None}
    return out


def render(n: int, rounds: int, res: dict[str, dict[str, float | None]]) -> str:
    ref = res["lmdb"]["us_wall"] or float("nan")
    rows = []
    for name in VARIANTS + ["lmdb"]:
        r = res[name]
        label = "LMDB puts of the same bytes (reference)" if name == "lmdb" else f"remember_many, {name}"
        rows.append([label, f"{r['us_wall']:.1f}", f"{r['us_cpu']:.1f}",
                     "n/a" if r["bytes"] is None else f"{r['bytes']:,.0f}",
                     f"{1e6 / r['us_wall']:,.0f}", f"{ref / r['us_wall']:.2f}"])
    head = ["calls of 20,000 into a store of " + f"{n:,}", "us/item (wall)", "us/item (CPU)",
            "bytes written/item", "items/s", "ratio to LMDB"]
    return (f"Medians of {rounds} interleaved calls per row, 384 dims, clustered data.\n\n"
            + table(head, rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ingest_scale_bench.md"))
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-ingest-scale-", dir=os.environ.get("BENCH_TMP"))
    try:
        res = run(a.n, a.rounds, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = render(a.n, a.rounds, res)
    print(text)
    if a.out != "-":
        with open(a.out, "w") as f:
            f.write("# ingest_scale_bench\n\n" + (__doc__ or "").split("\n\n")[0] + "\n\n" + text)


if __name__ == "__main__":
    main()
