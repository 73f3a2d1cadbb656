"""Ingest and bulk forget (issue 13), each next to raw LMDB puts of the same bytes in the
same run.

* ``remember_many`` with ready vectors (384 dims, the peers benchmark's clustered data,
  texts and ``{"cat": c}`` metadata, in calls of 20,000) next to one LMDB transaction
  putting the same vector and text bytes (the ``lmdb`` peer of ``peers_bench.py``: the
  best of two runs, one before and one after mnemos). Like for like: each call's item
  list is built before that call's timer starts (as the LMDB side builds its values
  before its timer), and the timed calls are summed. Target: ratio >= 0.5.
* ``remember_many`` of texts with the default embedder (``HashingEmbedder``, LoCoMo
  turns cycled, a turn number appended): items/s of wall time and of process CPU
  time, and the embedder alone. Target: >= 20k memories/s.
* ``forget_many`` of every other id of the vector store. Target: seconds at 1M.

Run: ``nice python bench/ingest_bench.py --sizes 10000,100000``; writes
``bench/results/ingest_bench.md`` (``--out -``: print only). ``--runs N`` runs each size
N times and reports the median of each figure, with the lowest and highest text-ingest
rates (single runs on a shared machine vary by up to 40%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import size_table  # noqa: E402
from peers_bench import _Given, _text, category, make_data, vector_items  # noqa: E402

CHUNK = 20_000
LOCOMO = next((p for p in (os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data",
                                         "locomo", "locomo_dev.json"),
                            "/work/shared/data/locomo/locomo_dev.json") if os.path.exists(p)),
              "locomo_dev.json")


def lmdb_puts(x: np.ndarray, texts: list[str], d: str) -> float:
    """Items/s of one synced LMDB transaction putting id -> vector bytes + text."""
    import lmdb
    os.makedirs(d)
    env = lmdb.open(d, map_size=1 << 40, metasync=True, sync=True)
    vals = [(i.to_bytes(8, "big"), x[i].tobytes() + texts[i].encode()) for i in range(len(texts))]
    t = time.perf_counter()
    with env.begin(write=True) as txn:
        for k, v in vals:
            txn.put(k, v)
    dt = time.perf_counter() - t
    env.close()
    shutil.rmtree(d)
    return len(texts) / dt


def turns(n: int) -> list[str]:
    """n conversation turns ("Speaker: text #i") from LoCoMo, cycled."""
    try:
        with open(LOCOMO) as f:
            data = json.load(f)
    except OSError:
        base = [f"note {i} about the garden and the dog, painting on sunday" for i in range(100)]
    else:
        base = []
        for conv in data:
            c = conv["conversation"]
            for k in sorted(c):
                if k.startswith("session_") and isinstance(c[k], list):
                    base.extend(f"{t['speaker']}: {t['text']}" for t in c[k] if t.get("text"))
    return [f"{base[i % len(base)]} #{i}" for i in range(n)]


def run(n: int, root: str) -> dict[str, float]:
    from mnemos_kv import HashingEmbedder, Mnemos
    x, _ = make_data("clustered", n, 1)
    cat = category(n)
    texts = [_text(i, int(cat[i])) for i in range(n)]
    out: dict[str, float] = {}
    ref = [lmdb_puts(x, texts, os.path.join(root, "lmdb1"))]

    path = os.path.join(root, "vec")
    db = Mnemos.open(path, embedder=_Given())
    spent = 0.0
    for lo in range(0, n, CHUNK):
        items = vector_items(x, cat, lo, min(n, lo + CHUNK))  # (built before the timer)
        t = time.perf_counter()
        db.remember_many(items)
        spent += time.perf_counter() - t
    out["vec_per_s"] = n / spent
    ref.append(lmdb_puts(x, texts, os.path.join(root, "lmdb2")))
    out["lmdb_per_s"] = max(ref)
    out["ratio"] = out["vec_per_s"] / out["lmdb_per_s"]
    t = time.perf_counter()
    db.forget_many(list(range(1, n + 1, 2)))
    out["forget_half_s"] = time.perf_counter() - t
    db.close()
    shutil.rmtree(path)

    tx = turns(n)
    emb = HashingEmbedder()
    t, c = time.perf_counter(), time.process_time()
    for lo in range(0, n, CHUNK):
        emb.embed(tx[lo:lo + CHUNK])
    out["embed_per_s"] = n / (time.perf_counter() - t)
    out["embed_cpu_per_s"] = n / (time.process_time() - c)
    # cold caches for the store's run: lru_caches, the embedder's memos and word tables
    from mnemos_kv import _batchwords, _hashing, _lexical, _lexical_index
    for mod in (_hashing, _lexical, _lexical_index):
        for fn in vars(mod).values():
            if hasattr(fn, "cache_clear") and not isinstance(fn, type):
                fn.cache_clear()
    _batchwords._last = None
    path = os.path.join(root, "text")
    db = Mnemos.open(path, embedder=emb)
    t, c = time.perf_counter(), time.process_time()
    for lo in range(0, n, CHUNK):
        db.remember_many(tx[lo:lo + CHUNK])
    out["text_per_s"] = n / (time.perf_counter() - t)
    out["text_cpu_per_s"] = n / (time.process_time() - c)
    db.close()
    shutil.rmtree(path)
    return out


ROWS = [("vec_per_s", "remember_many, ready vectors (items/s)"),
        ("lmdb_per_s", "raw LMDB puts of the same bytes (items/s)"),
        ("ratio", "ratio (target >= 0.5)"),
        ("text_per_s", "remember_many, texts, default embedder (items/s, wall)"),
        ("text_cpu_per_s", "... per second of process CPU (target >= 20k)"),
        ("embed_per_s", "HashingEmbedder alone (items/s, wall)"),
        ("embed_cpu_per_s", "... per second of process CPU"),
        ("forget_half_s", "forget_many of half the store (s)")]


def fmt(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ingest_bench.md"))
    ap.add_argument("--runs", type=int, default=1, help="runs per size; figures are medians")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for _ in range(max(1, a.runs)):
        for n in sizes:
            root = tempfile.mkdtemp(prefix=f"ingest-{n}-", dir=os.environ.get("BENCH_TMP"))
            try:
                runs[n].append(run(n, root))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(n, json.dumps(runs[n][-1]), file=sys.stderr, flush=True)
    res = {n: medians(rs) for n, rs in runs.items()}
    rows = ROWS + ([("text_cpu_min", "... lowest of the runs"),
                    ("text_cpu_max", "... highest of the runs")] if a.runs > 1 else [])
    text = size_table(rows, res, sizes, fmt)
    print(text)
    if a.out != "-":
        runs_note = f"; each figure the median of {a.runs} runs" if a.runs > 1 else ""
        with open(a.out, "w") as f:
            f.write("# ingest_bench\n\n" + __doc__.split("\n\n")[0] + "\n\n"
                    f"Machine: {os.cpu_count()} cores, shared with other jobs; 384 dims "
                    f"(vector ingest), 512 (hashing embedder){runs_note}.\n\n" + text + "\n")


def medians(rs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over runs ``rs``, with the extremes of text ingest per
    CPU second (``text_cpu_min``, ``text_cpu_max``)."""
    out = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
    out["text_cpu_min"] = min(r["text_cpu_per_s"] for r in rs)
    out["text_cpu_max"] = max(r["text_cpu_per_s"] for r in rs)
    return out


if __name__ == "__main__":
    main()
