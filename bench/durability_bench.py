"""Durable write cost and disk use, against raw LMDB measured in the same run.

* durable single ``remember`` (ready vector, ``durability="full"`` and ``"fast"``)
  latency p50/p99, interleaved call by call with one synced LMDB transaction of the
  same bytes (py-lmdb's default ``sync=True, metasync=True`` commit of one put: the
  record's text + metadata + vector) in a sibling directory of the same file system;
  the ratio is mnemos ÷ LMDB (target of issue 13: <= 1.5x); next to them, each side's
  CPU per call (the thread's CPU time: Python, LMDB and the kernel's share of writing
  and syncing) and the data.mdb pages each commit wrote (a page walk after each of
  ``PAGE_SAMPLE`` more commits on the same two stores, outside the timed calls);
* fsync/fdatasync system calls per write and LMDB pages written per commit, counted by
  ``strace -f`` over a child process doing N writes (the calls after a marker the child
  prints once its store is built; falls back to counting the Python-level calls when
  strace is missing); the same for the LMDB reference transaction;
* data.mdb pages written per commit by sub-database: after each of N single writes,
  the pages newly reachable from LMDB's current meta page, per named table (each
  commit copies the pages it changes to new page numbers), read by ``pread``;
* what the pages cost (``layout_costs``): synced py-lmdb transactions putting, per
  commit, the values one ``remember`` puts in today's tables and in candidate layouts
  of a later format (``LAYOUTS``), interleaved with the reference transaction: the
  I/O and LMDB share of a durable write without any of mnemos' Python;
* disk bytes (allocated blocks) against the raw vector bytes (n x dim x 4) plus the
  text bytes, after ingest and after ``compact()``.

Run: ``python bench/durability_bench.py [--n 10000] [--dim 384] [--reps 400] [--runs 3]``
(``--runs``: the latency table is measured that many times, each on a fresh store, and
the spread of the ratio is printed). Timing figures depend on the machine's load (note
it with the results): on a quiet machine a synced LMDB transaction costs ~0.3 ms and
every page its commit writes adds to that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    x = _vectors(n + reps + PAGE_SAMPLE, dim)
    db, _ = ingest(os.path.join(root, f"lat-{durability}"), x[:n], durability)
    db_file = os.path.join(root, f"lat-{durability}", "data.mdb")
    ref_dir = os.path.join(root, f"lmdb-{durability}")
    ref_file = os.path.join(ref_dir, "data.mdb")
    os.makedirs(ref_dir)
    env = lmdb.open(ref_dir, map_size=1 << 32)  # py-lmdb defaults: sync=True, metasync=True
    with env.begin(write=True) as txn:  # the same starting size as the store
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), TEXT.format(i=i, j=i % 97).encode() + x[i].tobytes())
    ours, ref, cpu, ref_cpu = [], [], [], []
    for r in range(reps):
        i = n + r
        text = TEXT.format(i=i, j=i % 97)
        value = text.encode() + x[i].tobytes()
        c = time.thread_time()
        t = time.perf_counter()
        db.remember(text, vector=x[i])
        ours.append(time.perf_counter() - t)
        c2 = time.thread_time()
        cpu.append(c2 - c)
        t = time.perf_counter()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), value)
        ref.append(time.perf_counter() - t)
        ref_cpu.append(time.thread_time() - c2)
    # pages per commit, right after on the same two stores (a page walk after each
    # commit: outside the timed calls)
    pages, ref_pages = [], []
    prev, ref_prev = _walk_total(db_file), _walk_total(ref_file)
    for i in range(n + reps, n + reps + PAGE_SAMPLE):
        text = TEXT.format(i=i, j=i % 97)
        db.remember(text, vector=x[i])
        cur = _walk_total(db_file)
        pages.append(len(cur - prev))
        prev = cur
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), text.encode() + x[i].tobytes())
        cur = _walk_total(ref_file)
        ref_pages.append(len(cur - ref_prev))
        ref_prev = cur
    db.close()
    env.close()
    # per-pair ratios: each call against the LMDB transaction right after it (robust to
    # the load of a shared machine drifting during the run)
    pairs = [a / b for a, b in zip(ours, ref)]
    return {"p50": pct(ours, 50) * 1e3, "p90": pct(ours, 90) * 1e3, "p99": pct(ours, 99) * 1e3,
            "ref_p50": pct(ref, 50) * 1e3, "ref_p90": pct(ref, 90) * 1e3,
            "ref_p99": pct(ref, 99) * 1e3,
            "ratio": pct(ours, 50) / pct(ref, 50), "pair_ratio": pct(pairs, 50),
            "cpu_p50": pct(cpu, 50) * 1e3, "ref_cpu_p50": pct(ref_cpu, 50) * 1e3,
            "pages_p50": pct(pages, 50),
            "pages_mean": sum(pages) / len(pages), "ref_pages_p50": pct(ref_pages, 50)}


#: Commits whose pages ``latency`` counts after its timed calls (each a page walk).
PAGE_SAMPLE = 48


def _walk_total(path: str) -> set[int]:
    """Every page number reachable from the current meta page of the LMDB file ``path``."""
    out: set[int] = set()
    for pages in _reachable_pages(path).values():
        out |= pages
    return out


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
    print("START", flush=True)
    for i in range(n, n + writes):
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"t" * 70 + x[i].tobytes())
    env.close()
else:
    from mnemos_kv import Mnemos
    from mnemos_kv.embedders import HashingEmbedder
    db = Mnemos.open(path, durability=mode, embedder=HashingEmbedder(dim))
    T = "memory %%d: the deploy of service %%d moved to Thursday after the review"
    db.remember_many([{"text": T %% (i, i %% 97), "vector": x[i]} for i in range(n)])
    db.sync()
    print("START", flush=True)
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
        db.remember(T %% (i, i %% 97), vector=x[i])
    os.fsync, os.fdatasync = real_fsync, real_fdatasync
    db._engine.closed = True  # no final flush: count the writes only
print(counts["py"])
"""


_WRITE = re.compile(r"^\d+\s+(?:pwrite64|pwritev|writev|write)\((\d+),.*\)\s+= (\d+)$")
_OPEN = re.compile(r'^\d+\s+openat\(.*"([^"]*data\.mdb)".*\)\s+= (\d+)$')
_SYNC = re.compile(r"^\d+\s+(?:fsync|fdatasync)\(")


def parse_strace(path: str) -> tuple[int, int]:
    """(fsync + fdatasync calls, whole 4 KiB pages written to data.mdb) after the child's
    START marker (LMDB's meta-page writes are partial pages and not counted)."""
    fds: set[int] = set()
    started = False
    syncs = pages = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip()
            m = _OPEN.match(line)
            if m:
                fds.add(int(m.group(2)))
                continue
            if not started:
                started = 'write(1, "START' in line
                continue
            if _SYNC.match(line):
                syncs += 1
                continue
            m = _WRITE.match(line)
            if m and int(m.group(1)) in fds and int(m.group(2)) % 4096 == 0:
                pages += int(m.group(2)) // 4096
    return syncs, pages


def sync_counts(root: str, mode: str, writes: int, dim: int, n: int = 1000
                ) -> tuple[float, float | None, float | None]:
    """(Python-counted syncs per write, strace-counted fsync+fdatasync per write, data.mdb
    pages written per commit) of ``writes`` single writes into a store of ``n``."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _CHILD % {"repo": repo}
    strace = shutil.which("strace")
    path = os.path.join(root, f"count-{mode}")
    cmd = [sys.executable, "-c", code, mode, path, str(writes), str(n), str(dim)]
    out_file = path + ".strace"
    if strace:
        cmd = [strace, "-f", "-e", "trace=openat,pwrite64,pwritev,writev,write,fsync,fdatasync",
               "-o", out_file] + cmd
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    per_py = int(res.stdout.strip().splitlines()[-1]) / writes
    if not strace:
        return per_py if mode != "lmdb" else float("nan"), None, None
    syncs, pages = parse_strace(out_file)
    os.unlink(out_file)
    return (per_py if mode != "lmdb" else float("nan")), syncs / writes, pages / writes


def _reachable_pages(path: str) -> dict[str, set[int]]:
    """Per named table of the LMDB file ``path`` (plus "freelist" and "main"): the page
    numbers reachable from the current meta page (duplicate sub-trees and overflow pages
    count for their table)."""
    import struct
    from mnemos_kv import _lmdbcheck as C
    meta = C.check_meta(path)
    rd = C._Reader(path, meta)
    out: dict[str, set[int]] = {}

    def tree(root: int, label: str) -> None:
        if root == C.P_INVALID:
            return
        stack = [root]
        while stack:
            pg = stack.pop()
            raw = rd.page(pg, C.P_BRANCH | C.P_LEAF)
            out.setdefault(label, set()).add(pg)
            flags = C._PAGE.unpack_from(raw, 0)[2]
            if flags & C.P_LEAF2:
                continue
            for nflags, size, _off, key, doff in rd.nodes(raw, pg):
                if flags & C.P_BRANCH:
                    stack.append(size | (nflags << 32))
                elif nflags & C.F_BIGDATA:
                    opg = struct.unpack_from("<Q", raw, doff)[0]
                    pages = struct.unpack_from("<I", rd.page(opg, C.P_OVERFLOW), 12)[0]
                    out[label].update(range(opg, opg + pages))
                elif nflags & C.F_SUBDATA:
                    sub = C._DB.unpack(raw[doff:doff + size])[7]
                    tree(sub, key.decode() if label == "main" else label)
    try:
        tree(meta.free_root, "freelist")
        tree(meta.main_root, "main")
    finally:
        rd.close()
    return out


def pages_by_table(root: str, n: int, dim: int, writes: int) -> dict[str, float]:
    """data.mdb pages each of ``writes`` durable single remembers wrote, per table (into
    a store of ``n``; the flushes every 256 operations included, so their merge counts)."""
    x = _vectors(n + writes, dim, seed=13)
    path = os.path.join(root, "pages")
    db, _ = ingest(path, x[:n])
    db.sync()
    f = os.path.join(path, "data.mdb")
    prev = _reachable_pages(f)
    total: dict[str, int] = {}
    for i in range(n, n + writes):
        db.remember(TEXT.format(i=i, j=i % 97), vector=x[i])
        cur = _reachable_pages(f)
        for name, pages in cur.items():
            total[name] = total.get(name, 0) + len(pages - prev.get(name, set()))
        prev = cur
    db.close()
    shutil.rmtree(path, ignore_errors=True)
    return {k: v / writes for k, v in sorted(total.items(), key=lambda kv: -kv[1])}


#: The value sizes of one durable ``remember`` of TEXT in format 5 (measured): record,
#: log frame (``pending``), staged postings (``lexstage``), namespace record, state.
_SIZES = {"record": 113, "frame": 149, "stage": 224, "ns": 22, "state": 146}

#: Commit layouts ``layout_costs`` times: the tables each single write puts one value
#: into (besides LMDB's main and free-list pages), with that value's size.
LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "formats 5-6: records, time, pending, vrows, lexstage, namespaces, meta": [
        ("records", "record"), ("time", "key"), ("pending", "frame"), ("vrows", "row"),
        ("lexstage", "stage"), ("namespaces", "ns"), ("meta", "state")],
    "format 7 (today): records, time, pending (frame + row), lexstage (ns), namespaces, meta": [
        ("records", "record"), ("time", "key"), ("pending", "frame+row"),
        ("lexstage", "ns4"), ("namespaces", "ns"), ("meta", "state")],
    "one table for the unflushed copies (frame + row + postings in one value)": [
        ("records", "record"), ("time", "key"), ("unflushed", "frame+row+stage"),
        ("namespaces", "ns"), ("meta", "state")],
    "... and no namespace count per write": [
        ("records", "record"), ("time", "key"), ("unflushed", "frame+row+stage"),
        ("meta", "state")],
    "... and the counters in the unflushed entry (meta written at flushes only)": [
        ("records", "record"), ("time", "key"), ("unflushed", "frame+row+stage+counters")],
}


def layout_costs(root: str, n: int, dim: int, reps: int) -> list[dict[str, object]]:
    """What a format change could save in I/O: synced py-lmdb transactions that put, per
    commit, the values a single ``remember`` puts in each layout of ``LAYOUTS`` (the
    same sizes and key orders; the unflushed tables emptied every 256 commits as a flush
    does), interleaved with the reference transaction (one put of text + vector) in
    sibling directories; no Python of mnemos runs. Returns per layout p50 ms, the ratio
    to the reference's p50 and pages per commit (page walks after ``PAGE_SAMPLE`` more)."""
    import lmdb
    row = dim * 4
    size = {"record": _SIZES["record"], "frame": _SIZES["frame"], "row": row,
            "stage": _SIZES["stage"], "ns": _SIZES["ns"], "state": _SIZES["state"],
            "frame+row+stage": _SIZES["frame"] + row + _SIZES["stage"],
            "frame+row": _SIZES["frame"] + 16 + row, "ns4": 4,
            # the counters a write changes (seq, next id, slots, log end, live, bytes) as
            # 6 u64: the whole state record would take the value past LMDB's 2,040-byte
            # inline limit (an overflow page per write)
            "frame+row+stage+counters": _SIZES["frame"] + row + _SIZES["stage"] + 48,
            "key": 0}
    rng = np.random.default_rng(3)
    envs: dict[str, tuple[lmdb.Environment, dict[str, object]]] = {}
    for k, layout in enumerate(LAYOUTS.values()):
        path = os.path.join(root, f"layout{k}")
        os.makedirs(path)
        env = lmdb.open(path, map_size=1 << 32, max_dbs=16, sync=True, metasync=False)
        dbs = {t: env.open_db(t.encode()) for t, _ in layout}
        with env.begin(write=True) as txn:  # a store of n memories
            for i in range(n):
                txn.put(i.to_bytes(8, "big"), rng.bytes(size["record"]), db=dbs["records"],
                        append=True)
                txn.put(b"\0\0\0\0" + (1 << 62 | i).to_bytes(8, "big") + i.to_bytes(8, "big"),
                        b"", db=dbs["time"], append=True)
        envs[f"layout{k}"] = (env, dbs)
    ref_dir = os.path.join(root, "layout-ref")
    os.makedirs(ref_dir)
    ref = lmdb.open(ref_dir, map_size=1 << 32)  # py-lmdb defaults: sync=True, metasync=True
    with ref.begin(write=True) as txn:
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), rng.bytes(70 + row))

    def commit(k: int, i: int) -> None:
        env, dbs = envs[f"layout{k}"]
        layout = list(LAYOUTS.values())[k]
        with env.begin(write=True) as txn:
            if i % 256 == 0:  # a flush empties the unflushed copies
                for t in ("pending", "vrows", "lexstage", "unflushed"):
                    if t in dbs:
                        txn.drop(dbs[t], delete=False)
            for t, what in layout:
                key = i.to_bytes(8, "big")
                if t == "time":
                    key = b"\0\0\0\0" + (1 << 62 | i).to_bytes(8, "big") + key
                elif t in ("namespaces", "meta"):
                    key = t.encode()
                txn.put(key, rng.bytes(size[what]), db=dbs[t], append=t not in (
                    "namespaces", "meta"))
        env.sync(True)

    def ref_commit(i: int) -> None:
        with ref.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), rng.bytes(70 + row))

    times: dict[int, list[float]] = {k: [] for k in range(-1, len(LAYOUTS))}
    cpu: dict[int, list[float]] = {k: [] for k in times}
    for r in range(reps):
        i = n + r
        for k in range(-1, len(LAYOUTS)):
            c = time.thread_time()
            t = time.perf_counter()
            commit(k, i) if k >= 0 else ref_commit(i)
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.thread_time() - c)
    files = {k: os.path.join(root, f"layout{k}" if k >= 0 else "layout-ref", "data.mdb")
             for k in times}
    pages: dict[int, list[int]] = {k: [] for k in times}
    prev = {k: _walk_total(f) for k, f in files.items()}
    for i in range(n + reps, n + reps + PAGE_SAMPLE):
        for k in times:
            commit(k, i) if k >= 0 else ref_commit(i)
            cur = _walk_total(files[k])
            pages[k].append(len(cur - prev[k]))
            prev[k] = cur
    for env, _ in envs.values():
        env.close()
    ref.close()
    ref_p50 = pct(times[-1], 50)
    out = [{"layout": "one synced LMDB transaction (reference)", "p50": ref_p50 * 1e3,
            "cpu_p50": pct(cpu[-1], 50) * 1e3, "ratio": 1.0,
            "pages": sum(pages[-1]) / PAGE_SAMPLE}]
    for k, name in enumerate(LAYOUTS):
        out.append({"layout": name, "p50": pct(times[k], 50) * 1e3,
                    "cpu_p50": pct(cpu[k], 50) * 1e3, "ratio": pct(times[k], 50) / ref_p50,
                    "pages": sum(pages[k]) / PAGE_SAMPLE})
    return out


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
        tables = lmdb_tables(db)
    after_compact = disk_bytes(path)
    return {"raw_vec": raw_vec, "text": text_bytes, "ingest": after_ingest,
            "compact": after_compact, "files_ingest": files_ingest,
            "files_compact": file_table(path), "tables_compact": tables}


def lmdb_tables(db: Mnemos) -> dict[str, dict[str, int]]:
    """Per LMDB sub-database: entries and the bytes of its pages (branch, leaf, overflow)."""
    env = db._engine.env.env
    out = {}
    with env.begin() as txn:
        for name in list(txn.cursor().iternext(values=False)):
            st = txn.stat(env.open_db(name, txn=txn, create=False))
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            if st["entries"]:
                out[name.decode()] = {"entries": st["entries"], "bytes": pages * st["psize"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-dur-", dir=os.environ.get("BENCH_DIR"))
    out: dict[str, object] = {"n": a.n, "dim": a.dim, "reps": a.reps}
    try:
        rows = []
        spread = []
        for run in range(a.runs):
            for mode in ("full", "fast"):
                os.makedirs(os.path.join(root, f"run{run}"), exist_ok=True)
                lat = latency(os.path.join(root, f"run{run}"), a.n, a.dim, a.reps, mode)
                out.setdefault("runs", []).append(dict(lat, mode=mode, run=run))
                spread.append((mode, lat["ratio"], lat["pair_ratio"]))
                rows.append([f"remember ({mode}) run {run + 1}", f"{lat['p50']:.3f}",
                             f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                             f"{lat['cpu_p50']:.3f}",
                             f"{lat['pages_p50']:.0f} ({lat['pages_mean']:.1f})",
                             f"{lat['ref_p50']:.3f}", f"{lat['ref_p90']:.3f}",
                             f"{lat['ref_cpu_p50']:.3f}",
                             f"{lat['ref_pages_p50']:.0f}", f"{lat['ratio']:.2f}x",
                             f"{lat['pair_ratio']:.2f}x"])
                shutil.rmtree(os.path.join(root, f"run{run}"), ignore_errors=True)
        print(f"durable single write, store of {a.n:,} x {a.dim} (interleaved with the LMDB "
              f"reference, {a.reps} calls each; load average {os.getloadavg()[0]:.1f})")
        print(table(["write", "p50 ms", "p90 ms", "p99 ms", "CPU p50 ms",
                     "pages/commit p50 (mean)", "LMDB p50 ms", "LMDB p90 ms", "LMDB CPU p50 ms",
                     "LMDB pages/commit", "p50 ratio", "median pair ratio"], rows))
        print(f"(CPU: the calling thread's CPU time per call, user and kernel (the kernel's "
              "share of writing and syncing counts); pages: data.mdb pages each "
              f"commit wrote, by a page walk after each of {PAGE_SAMPLE} more commits on the "
              "same two stores right after the timed calls)")
        for mode in ("full", "fast"):
            r = [x[1] for x in spread if x[0] == mode]
            pr = [x[2] for x in spread if x[0] == mode]
            out[f"{mode}_ratio_spread"] = [min(r), max(r)]
            print(f"{mode}: p50 ratio {min(r):.2f}x-{max(r):.2f}x over {len(r)} runs "
                  f"(median pair ratio {min(pr):.2f}x-{max(pr):.2f}x)")
        crow = []
        for mode in ("full", "fast", "lmdb"):
            py, st, pages = sync_counts(root, mode, 256, a.dim, a.n)
            out[f"{mode}_counts"] = {"syncs_py": py, "syncs_strace": st, "pages": pages}
            crow.append([mode if mode != "lmdb" else "one synced LMDB transaction",
                         "-" if py != py else f"{py:.3f}",
                         "-" if st is None else f"{st:.3f}",
                         "-" if pages is None else f"{pages:.1f}"])
        print()
        print(table(["write (256 in a row)", "syncs/write (counted)",
                     "fsync+fdatasync/write (strace)", "data.mdb pages/commit (strace)"], crow))
        print("(a synced LMDB transaction also writes its meta page through an O_DSYNC "
              "descriptor: 2 device syncs; \"full\" makes the same 2, plus 3 per flush of "
              "256 writes)")
        by_table = pages_by_table(root, a.n, a.dim, 512)
        out["pages_by_table"] = by_table
        print()
        print(table(["data.mdb table", "pages per durable remember (512 in a row)"],
                    [[k, f"{v:.2f}"] for k, v in by_table.items()]
                    + [["total", f"{sum(by_table.values()):.2f}"]]))
        lay = layout_costs(root, a.n, a.dim, a.reps)
        out["layouts"] = lay
        print()
        print("what the pages cost: synced py-lmdb transactions putting what one remember "
              f"puts, per layout, interleaved ({a.reps} each; no mnemos Python runs; load "
              f"average {os.getloadavg()[0]:.1f})")
        print(table(["commit layout", "p50 ms", "CPU p50 ms", "÷ reference p50",
                     "pages/commit"],
                    [[r["layout"], f"{r['p50']:.3f}", f"{r['cpu_p50']:.3f}",
                      f"{r['ratio']:.2f}x", f"{r['pages']:.1f}"] for r in lay]))
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
        print("data.mdb sub-databases after compact (entries, page bytes):",
              json.dumps(d["tables_compact"]))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
