"""Durable write cost and disk use, against raw LMDB measured in the same run.

* durable single ``remember`` (ready vector, ``durability="full"`` and ``"fast"``)
  latency p50/p99, interleaved call by call with one synced LMDB transaction of the
  same bytes (py-lmdb's default ``sync=True, metasync=True`` commit of one put: the
  record's text + metadata + vector) in a sibling directory of the same file system;
  the ratio is mnemos ÷ LMDB (target of issue 13: <= 1.5x);
* fsync/fdatasync system calls per write, counted by ``strace -f -c`` over a child
  process doing N writes minus the same child doing none (falls back to counting the
  Python-level calls when strace is missing);
* disk bytes (allocated blocks) against the raw vector bytes (n x dim x 4) plus the
  text bytes, after ingest and after ``compact()``.

Run: ``python bench/durability_bench.py [--n 10000] [--dim 384] [--reps 400]``.
Timing figures depend on the machine's load (note it with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import pct, table  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv.embedders import HashingEmbedder  # noqa: E402

TEXT = "memory {i}: the deploy of service {j} moved to Thursday after the review"


def _vectors(n: int, dim: int, seed: int = 5) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def disk_bytes(path: str) -> int:
    """Allocated bytes of every file under ``path`` (what the disk holds, not apparent size)."""
    total = 0
    for d, _dirs, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(d, f)).st_blocks * 512
    return total


def file_table(path: str) -> dict[str, int]:
    return {f: os.stat(os.path.join(path, f)).st_blocks * 512 for f in sorted(os.listdir(path))
            if os.path.isfile(os.path.join(path, f))}


def ingest(path: str, x: np.ndarray, durability: str = "full") -> tuple[Mnemos, int]:
    db = Mnemos.open(path, durability=durability, embedder=HashingEmbedder(x.shape[1]))
    text_bytes = 0
    for lo in range(0, x.shape[0], 5000):
        items = []
        for i in range(lo, min(x.shape[0], lo + 5000)):
            t = TEXT.format(i=i, j=i % 97)
            text_bytes += len(t.encode())
            items.append({"text": t, "vector": x[i]})
        db.remember_many(items)
    return db, text_bytes


def latency(root: str, n: int, dim: int, reps: int, durability: str) -> dict[str, float]:
    """Interleaved: one mnemos remember, then one synced LMDB transaction of the same bytes."""
    import lmdb
    x = _vectors(n + reps, dim)
    db, _ = ingest(os.path.join(root, f"lat-{durability}"), x[:n], durability)
    ref_dir = os.path.join(root, f"lmdb-{durability}")
    os.makedirs(ref_dir)
    env = lmdb.open(ref_dir, map_size=1 << 32)  # py-lmdb defaults: sync=True, metasync=True
    with env.begin(write=True) as txn:  # the same starting size as the store
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), TEXT.format(i=i, j=i % 97).encode() + x[i].tobytes())
    ours, ref = [], []
    for r in range(reps):
        i = n + r
        text = TEXT.format(i=i, j=i % 97)
        value = text.encode() + x[i].tobytes()
        t = time.perf_counter()
        db.remember(text, vector=x[i])
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), value)
        ref.append(time.perf_counter() - t)
    db.close()
    env.close()
    # per-pair ratios: each call against the LMDB transaction right after it (robust to
    # the load of a shared machine drifting during the run)
    pairs = [a / b for a, b in zip(ours, ref)]
    return {"p50": pct(ours, 50) * 1e3, "p99": pct(ours, 99) * 1e3,
            "ref_p50": pct(ref, 50) * 1e3, "ref_p99": pct(ref, 99) * 1e3,
            "ratio": pct(ours, 50) / pct(ref, 50), "pair_ratio": pct(pairs, 50)}


_CHILD = r"""
import os, sys, time
sys.path.insert(0, %(repo)r)
import numpy as np
mode, path, writes, n, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(5).standard_normal((n + writes, dim), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
counts = {"py": 0}
if mode == "lmdb":
    import lmdb
    env = lmdb.open(path, map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), b"t" * 70 + x[i].tobytes())
    for i in range(n, n + writes):
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"t" * 70 + x[i].tobytes())
    env.close()
else:
    from mnemos_kv import Mnemos
    from mnemos_kv.embedders import HashingEmbedder
    db = Mnemos.open(path, durability=mode, embedder=HashingEmbedder(dim))
    db.remember_many([{"text": "memory %%d" %% i, "vector": x[i]} for i in range(n)])
    db.sync()
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    def c1(fd): counts["py"] += 1; return real_fsync(fd)
    def c2(fd): counts["py"] += 1; return real_fdatasync(fd)
    os.fsync, os.fdatasync = c1, c2
    from mnemos_kv import _storage
    real_commit, real_sync = _storage.txn_commit, _storage.env_sync
    def commit(t): counts["py"] += 1; return real_commit(t)   # LMDB's data-page sync
    def esync(e): counts["py"] += 1; return real_sync(e)
    _storage.txn_commit, _storage.env_sync = commit, esync
    for i in range(n, n + writes):
        db.remember("memory %%d" %% i, vector=x[i])
    os.fsync, os.fdatasync = real_fsync, real_fdatasync
    db._engine.closed = True  # no final flush: count the writes only
print(counts["py"])
"""


def sync_counts(root: str, mode: str, writes: int, dim: int) -> tuple[float, float | None]:
    """(Python-counted syncs per write, strace-counted fsync+fdatasync per write)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _CHILD % {"repo": repo}
    strace = shutil.which("strace")
    per_py = None
    totals = []
    for w in (0, writes):
        path = os.path.join(root, f"count-{mode}-{w}")
        cmd = [sys.executable, "-c", code, mode, path, str(w), "1000", str(dim)]
        if strace:
            out_file = path + ".strace"
            cmd = [strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", out_file] + cmd
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        if w:
            per_py = int(res.stdout.strip().splitlines()[-1]) / writes
        if strace:
            calls = 0
            for line in open(out_file):
                parts = line.split()
                if parts and parts[-1] in ("fsync", "fdatasync"):
                    calls += int(parts[3])
            totals.append(calls)
    per_strace = (totals[1] - totals[0]) / writes if strace else None
    return (per_py if mode != "lmdb" else float("nan")), per_strace


def disk(root: str, n: int, dim: int) -> dict[str, object]:
    x = _vectors(n, dim, seed=11)
    path = os.path.join(root, "disk")
    db, text_bytes = ingest(path, x)
    db.close()
    raw_vec = n * dim * 4
    after_ingest = disk_bytes(path)
    files_ingest = file_table(path)
    with Mnemos.open(path, embedder=HashingEmbedder(dim)) as db:
        db.compact()
    after_compact = disk_bytes(path)
    return {"raw_vec": raw_vec, "text": text_bytes, "ingest": after_ingest,
            "compact": after_compact, "files_ingest": files_ingest,
            "files_compact": file_table(path)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-dur-", dir=os.environ.get("BENCH_DIR"))
    out: dict[str, object] = {"n": a.n, "dim": a.dim, "reps": a.reps}
    try:
        rows = []
        for mode in ("full", "fast"):
            lat = latency(root, a.n, a.dim, a.reps, mode)
            py, st = sync_counts(root, mode, 512, a.dim)
            out[mode] = dict(lat, syncs_py=py, syncs_strace=st)
            rows.append([f"remember ({mode})", f"{lat['p50']:.3f}", f"{lat['p99']:.3f}",
                         f"{lat['ref_p50']:.3f}", f"{lat['ref_p99']:.3f}", f"{lat['ratio']:.2f}x",
                         f"{lat['pair_ratio']:.2f}x",
                         f"{py:.3f}", "-" if st is None else f"{st:.3f}"])
        _py, st = sync_counts(root, "lmdb", 512, a.dim)
        out["lmdb_syncs_strace"] = st
        print(f"durable single write, store of {a.n:,} x {a.dim} (interleaved with the LMDB "
              f"reference, {a.reps} calls each)")
        print(table(["write", "p50 ms", "p99 ms", "LMDB p50 ms", "LMDB p99 ms", "p50 ratio",
                     "median pair ratio",
                     "syncs/write (counted)", "fsync+fdatasync/write (strace)"], rows))
        print(f"one synced LMDB transaction: {'-' if st is None else f'{st:.3f}'} "
              "fsync+fdatasync per write (strace), plus its meta-page write through an O_DSYNC "
              "descriptor")
        d = disk(root, a.n, a.dim)
        out["disk"] = d
        base = d["raw_vec"] + d["text"]  # type: ignore[operator]
        print()
        print(table(["disk", "bytes", "x raw vectors", "x (raw vectors + text)"], [
            ["raw vectors", f"{d['raw_vec']:,}", "1.00", "-"],
            ["text", f"{d['text']:,}", "-", "-"],
            ["after ingest", f"{d['ingest']:,}", f"{d['ingest'] / d['raw_vec']:.2f}",  # type: ignore[operator]
             f"{d['ingest'] / base:.2f}"],  # type: ignore[operator]
            ["after compact", f"{d['compact']:,}", f"{d['compact'] / d['raw_vec']:.2f}",  # type: ignore[operator]
             f"{d['compact'] / base:.2f}"],  # type: ignore[operator]
        ]))
        print("files after ingest:", json.dumps(d["files_ingest"]))
        print("files after compact:", json.dumps(d["files_compact"]))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
