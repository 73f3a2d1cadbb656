"""Side by side with other vector stores: ingest, durable insert, query latency and recall,
filtered query, cold open + first query, disk. Each system runs in its own process.

Peers: numpy brute force, raw LMDB (one-transaction puts of the same bytes), faiss
(flat, HNSW), hnswlib, usearch, and -- from ``/work/venv-bench`` (or ``--peer-python``)
when installed there -- sqlite-vec, LanceDB, Chroma. A peer whose package is missing
is skipped with a visible note.

Data (deterministic seeds, 384 dimensions, L2-normalised): ``clustered`` (centres, sub-
centres and noise: what sentence embeddings look like) and ``random`` (gaussian). The
exact top-10 of every query (numpy, float32) is the ground truth for recall@10; for
mnemos' hybrid ask the ground truth is the exact planner (``ann=False``) on the same
store. Filtered query: a category keeping 10% of the rows. mnemos runs with
``ann="approximate"`` (the index ranks hybrid asks too; the default exact-or-nothing mode
gives the same vector answers when the bound closes and the exact planner's hybrid ones).

Ingest is timed like for like: each system's input (mnemos' item dicts, the lmdb peer's
key/value pairs, the arrays of the index peers) is built before its timer starts; mnemos
times each ``remember_many`` call of 20,000 and sums them (earlier, mnemos built
its dicts inside the timer, ~2.6 us per item against it, in results before this note).

Every worker runs with one BLAS/OpenMP thread (a shared 2-core machine; a query is one
thread in every peer). Run: ``nice python bench/peers_bench.py --sizes 10000,100000`` (1M: ``--sizes 1000000``,
slow: every peer builds its index). Writes ``bench/results/peers_bench.md``.
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
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import pct, table  # noqa: E402

DIM = 384
TOPK = 10
CATEGORIES = 10          # filtered query: category == 3 keeps 10%
#: HNSW peers build with this many threads (their normal use); queries use one.
BUILD_THREADS = 2
PEERS = ["mnemos", "numpy", "lmdb", "faiss-flat", "faiss-hnsw", "hnswlib", "usearch"]
EXTERNAL = ["sqlite-vec", "lancedb", "chroma"]  # run by --peer-python
#: Durable single inserts timed (after the queries), p50 reported.
SINGLES = 300


# --------------------------------------------------------------------------- data

def make_data(kind: str, n: int, n_queries: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, DIM), dtype=np.float32)
        q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    else:
        n_c = max(64, n // 1000)
        centres = rng.standard_normal((n_c, DIM), dtype=np.float32)
        subs = centres.repeat(8, axis=0) + 0.6 * rng.standard_normal((n_c * 8, DIM), dtype=np.float32)
        x = np.empty((n, DIM), np.float32)
        for lo in range(0, n, 65536):
            hi = min(n, lo + 65536)
            x[lo:hi] = subs[rng.integers(0, subs.shape[0], hi - lo)]
            x[lo:hi] += 0.45 * rng.standard_normal((hi - lo, DIM), dtype=np.float32)
        q = subs[rng.integers(0, subs.shape[0], n_queries)] + \
            0.45 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def ground_truth(x: np.ndarray, q: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((q.shape[0], TOPK), np.int64)
    for i in range(q.shape[0]):
        s = x @ q[i]
        if mask is not None:
            s[~mask] = -np.inf
        top = np.argpartition(-s, TOPK)[:TOPK]
        out[i] = top[np.argsort(-s[top], kind="stable")]
    return out


def category(n: int) -> np.ndarray:
    return (np.arange(n) * 7919) % CATEGORIES


def recall(found: list[list[int]], gt: np.ndarray) -> float:
    return float(np.mean([len(set(f[:TOPK]) & set(g.tolist())) / TOPK for f, g in zip(found, gt)]))


def du(path: str) -> float:
    """Allocated MB under ``path``."""
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dp, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total / 1e6


def rss_mb() -> float:
    """Resident set size now (ru_maxrss would include the parent's peak: kept across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latencies(fn: Callable[[int], list[int]], nq: int) -> tuple[list[list[int]], list[float]]:
    """Answers and times of queries ``0..nq-1``, timed on a second pass (the first pass
    pages in what each query touches: the peers that load everything into RAM at open
    have paid that already)."""
    found, times = [], []
    for i in range(nq):
        fn(i)
    for i in range(nq):
        t = time.perf_counter()
        found.append(fn(i))
        times.append(time.perf_counter() - t)
    return found, times


# --------------------------------------------------------------------------- workers

def _common_query_metrics(out: dict, fn: Callable[[int], list[int]], gt: np.ndarray, nq: int,
                          prefix: str = "") -> None:
    found, times = latencies(fn, nq)
    out[prefix + "p50_ms"] = pct(times, 50) * 1e3
    out[prefix + "p99_ms"] = pct(times, 99) * 1e3
    out[prefix + "recall"] = recall(found, gt[:nq])


def worker(peer: str, d: str, kind: str, phase: str) -> dict[str, Any]:
    x = np.load(os.path.join(d, "x.npy"), mmap_mode="r")
    q = np.load(os.path.join(d, "q.npy"))
    gt = np.load(os.path.join(d, "gt.npy"))
    gtf = np.load(os.path.join(d, "gtf.npy"))
    n, nq = x.shape[0], q.shape[0]
    cat = category(n)
    store = os.path.join(d, "store-" + peer)
    out: dict[str, Any] = {}
    ingest = phase == "full"
    if peer == "numpy":
        if phase == "cold":
            t = time.perf_counter()
            m = np.load(os.path.join(d, "x.npy"), mmap_mode="r")
            s = m @ q[0]
            np.argpartition(-s, TOPK)[:TOPK]
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        m = np.ascontiguousarray(x)
        fmask = cat == 3

        def qf(i: int) -> list[int]:
            s = m @ q[i]
            top = np.argpartition(-s, TOPK)[:TOPK]
            return top[np.argsort(-s[top])].tolist()

        def qff(i: int) -> list[int]:
            rows = np.flatnonzero(fmask)
            s = m[rows] @ q[i]
            top = np.argpartition(-s, TOPK)[:TOPK]
            return rows[top[np.argsort(-s[top])]].tolist()
        _common_query_metrics(out, qf, gt, nq)
        _common_query_metrics(out, qff, gtf, nq, "filt_")
        return out
    if peer == "lmdb":
        import lmdb
        os.makedirs(store, exist_ok=True)
        env = lmdb.open(store, map_size=1 << 40, metasync=True, sync=True)
        vals = [(i.to_bytes(8, "big"), bytes(x[i].tobytes()) + f"doc {i}".encode()) for i in range(n)]
        t = time.perf_counter()
        with env.begin(write=True) as txn:
            for k, v in vals:
                txn.put(k, v)
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        out["disk_mb"] = du(store)
        ts = []
        for i in range(SINGLES):
            t = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put((n + i).to_bytes(8, "big"), vals[i][1])
            ts.append(time.perf_counter() - t)
        out["single_ms"] = pct(ts, 50) * 1e3
        with env.begin(write=True) as txn:
            for i in range(0, n, 2):
                txn.delete(i.to_bytes(8, "big"))
        os.makedirs(store + "-c", exist_ok=True)
        env.copy(store + "-c", compact=True)
        out["disk_half_mb"] = du(store + "-c")
        return out
    if peer in ("faiss-flat", "faiss-hnsw"):
        import faiss
        path = store + ".faiss"
        if phase == "cold":
            t = time.perf_counter()
            idx = faiss.read_index(path)
            idx.search(q[:1], TOPK)
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        t = time.perf_counter()
        if peer == "faiss-flat":
            idx = faiss.IndexFlatIP(DIM)
        else:
            idx = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = 80
            faiss.omp_set_num_threads(BUILD_THREADS)
        idx.add(np.ascontiguousarray(x))
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        if peer == "faiss-hnsw":
            idx.hnsw.efSearch = 64
            faiss.omp_set_num_threads(1)
        faiss.write_index(idx, path)
        out["disk_mb"] = os.path.getsize(path) / 1e6

        def qf(i: int) -> list[int]:
            return idx.search(q[i:i + 1], TOPK)[1][0].tolist()
        _common_query_metrics(out, qf, gt, nq)
        if peer == "faiss-flat":
            sel = faiss.IDSelectorBatch(np.flatnonzero(cat == 3).astype(np.int64))
            params = faiss.SearchParameters(sel=sel)

            def qff(i: int) -> list[int]:
                return idx.search(q[i:i + 1], TOPK, params=params)[1][0].tolist()
            _common_query_metrics(out, qff, gtf, nq, "filt_")
            idx.remove_ids(np.arange(0, n, 2, dtype=np.int64))
            faiss.write_index(idx, path + ".half")
            out["disk_half_mb"] = os.path.getsize(path + ".half") / 1e6
        return out
    if peer == "hnswlib":
        import hnswlib
        path = store + ".hnsw"
        if phase == "cold":
            t = time.perf_counter()
            idx = hnswlib.Index(space="ip", dim=DIM)
            idx.load_index(path)
            idx.set_ef(64)
            idx.knn_query(q[:1], k=TOPK)
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        t = time.perf_counter()
        idx = hnswlib.Index(space="ip", dim=DIM)
        idx.init_index(max_elements=n, M=16, ef_construction=100, random_seed=1)
        idx.add_items(np.ascontiguousarray(x), np.arange(n), num_threads=BUILD_THREADS)
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        idx.set_ef(64)
        idx.save_index(path)
        out["disk_mb"] = os.path.getsize(path) / 1e6

        def qf(i: int) -> list[int]:
            return idx.knn_query(q[i:i + 1], k=TOPK)[0][0].tolist()
        _common_query_metrics(out, qf, gt, nq)
        fset = cat == 3

        def qff(i: int) -> list[int]:
            return idx.knn_query(q[i:i + 1], k=TOPK, filter=lambda j: bool(fset[j]))[0][0].tolist()
        _common_query_metrics(out, qff, gtf, nq, "filt_")
        return out
    if peer == "usearch":
        from usearch.index import Index
        path = store + ".usearch"
        if phase == "cold":
            t = time.perf_counter()
            idx = Index.restore(path, view=True)
            idx.search(q[0], TOPK)
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        t = time.perf_counter()
        idx = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                    expansion_search=64)
        idx.add(np.arange(n), np.ascontiguousarray(x), threads=BUILD_THREADS)
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        idx.save(path)
        out["disk_mb"] = os.path.getsize(path) / 1e6

        def qf(i: int) -> list[int]:
            return idx.search(q[i], TOPK).keys.tolist()
        _common_query_metrics(out, qf, gt, nq)
        return out
    if peer == "mnemos":
        return mnemos_worker(x, q, gt, gtf, cat, store, phase)
    if peer in EXTERNAL:
        return external_worker(peer, x, q, gt, gtf, cat, store, phase)
    raise SystemExit(f"unknown peer {peer}")


class _Given:
    """An embedder that refuses to embed: every vector is given."""

    name = "bench-given"
    dim = DIM

    def embed(self, texts: Any) -> np.ndarray:
        raise RuntimeError("the benchmark gives every vector")


def _text(i: int, c: int) -> str:
    return f"note {i} about topic{(i * 31) % 1000} w{(i * 2654435761) % 20000}"


def vector_items(x: np.ndarray, cat: np.ndarray, lo: int, hi: int) -> list[dict[str, Any]]:
    """The ``remember_many`` items of rows ``lo:hi``: text, ready vector, ``{"cat": c}``."""
    return [{"text": _text(i, int(cat[i])), "vector": x[i], "metadata": {"cat": int(cat[i])}}
            for i in range(lo, hi)]


def mnemos_worker(x: np.ndarray, q: np.ndarray, gt: np.ndarray, gtf: np.ndarray,
                  cat: np.ndarray, store: str, phase: str) -> dict[str, Any]:
    from mnemos_kv import Mnemos
    n, nq = x.shape[0], q.shape[0]
    out: dict[str, Any] = {}
    if phase == "cold":
        t = time.perf_counter()
        db = Mnemos.open(store, embedder=_Given(), ann="approximate")
        db.ask(vector=q[0], mode="vector", top_k=TOPK)
        out["cold_ms"] = (time.perf_counter() - t) * 1e3
        out["rss_mb"] = rss_mb()
        db.close()
        return out
    db = Mnemos.open(store, embedder=_Given(), ann="approximate")
    spent = 0.0
    for lo in range(0, n, 20000):
        items = vector_items(x, cat, lo, min(n, lo + 20000))  # (built before the timer,
        t = time.perf_counter()                               # as the lmdb peer's values)
        db.remember_many(items)
        spent += time.perf_counter() - t
    out["ingest_per_s"] = n / spent
    t = time.perf_counter()
    db.ask(vector=q[0], mode="vector", top_k=TOPK)
    out["index_build_s"] = time.perf_counter() - t
    out["disk_mb"] = du(store)

    def qf(i: int) -> list[int]:
        return [m.id - 1 for m in db.ask(vector=q[i], mode="vector", top_k=TOPK)]
    _common_query_metrics(out, qf, gt, nq)

    def qff(i: int) -> list[int]:
        return [m.id - 1 for m in db.ask(vector=q[i], mode="vector", top_k=TOPK,
                                         filter={"cat": 3})]
    _common_query_metrics(out, qff, gtf, nq, "filt_")
    # hybrid: text + vector, against the exact planner on the same store
    rng = np.random.default_rng(3)
    texts = [f"topic{int(c)} w{int(w)}" for c, w in zip(rng.integers(0, 1000, nq),
                                                       rng.integers(0, 20000, nq))]

    def qh(i: int) -> list[int]:
        return [m.id for m in db.ask(texts[i], vector=q[i], top_k=TOPK)]
    db._engine.ann_mode = False
    exact = [qh(i) for i in range(nq)]
    db._engine.ann_mode = "approximate"
    found, times = latencies(qh, nq)
    out["hyb_p50_ms"] = pct(times, 50) * 1e3
    out["hyb_p99_ms"] = pct(times, 99) * 1e3
    out["hyb_recall"] = float(np.mean([len(set(f) & set(e)) / max(1, len(e))
                                       for f, e in zip(found, exact)]))
    # durable single remember (after the queries: these rows are extra), each followed
    # by one synced LMDB transaction putting the same bytes into a sibling store of n
    # entries like the lmdb peer's: a ratio from the same minutes of the same process
    import lmdb
    ref_dir = store + "-single-ref"
    os.makedirs(ref_dir, exist_ok=True)
    ref = lmdb.open(ref_dir, map_size=1 << 40)  # py-lmdb defaults: sync=True, metasync=True
    with ref.begin(write=True) as txn:
        for i in range(n):
            txn.put(i.to_bytes(8, "big"), x[i].tobytes() + f"doc {i}".encode(), append=True)
    ts, rs = [], []
    for i in range(SINGLES):
        text = _text(n + i, 0)
        t = time.perf_counter()
        db.remember(text, vector=-x[i])
        ts.append(time.perf_counter() - t)
        value = (-x[i]).astype("<f4").tobytes() + text.encode()
        t = time.perf_counter()
        with ref.begin(write=True) as txn:
            txn.put((n + i).to_bytes(8, "big"), value)
        rs.append(time.perf_counter() - t)
    ref.close()
    shutil.rmtree(ref_dir)
    out["single_ms"] = pct(ts, 50) * 1e3
    out["single_ref_ms"] = pct(rs, 50) * 1e3
    out["single_ratio"] = pct([a / b for a, b in zip(ts, rs)], 50)
    # delete half: forget_many, filtered ask before compaction, then compact
    t = time.perf_counter()
    db.forget_many(list(range(1, n + 1, 2)))
    out["forget_half_s"] = time.perf_counter() - t
    _, times = latencies(qff, min(nq, 50))
    out["filt_after_forget_p50_ms"] = pct(times, 50) * 1e3
    db.compact()
    out["disk_half_mb"] = du(store)
    db.close()
    return out


def external_worker(peer: str, x: np.ndarray, q: np.ndarray, gt: np.ndarray, gtf: np.ndarray,
                    cat: np.ndarray, store: str, phase: str) -> dict[str, Any]:
    n, nq = x.shape[0], q.shape[0]
    out: dict[str, Any] = {}
    if peer == "sqlite-vec":
        import sqlite3

        import sqlite_vec
        path = store + ".sqlite"

        try:  # the venv's sqlite3 may be built without extension loading
            import pysqlite3 as sqlite3  # type: ignore[no-redef]
        except ImportError:
            pass

        def connect() -> Any:
            db = sqlite3.connect(path)
            db.enable_load_extension(True)
            sqlite_vec.load(db)
            return db

        def qf_of(db: Any) -> Callable[[int], list[int]]:
            def qf(i: int) -> list[int]:
                rows = db.execute("SELECT rowid FROM v WHERE emb MATCH ? AND k = ? ORDER BY distance",
                                  (q[i].tobytes(), TOPK)).fetchall()
                return [r[0] - 1 for r in rows]
            return qf
        if phase == "cold":
            t = time.perf_counter()
            qf_of(connect())(0)
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        db = connect()
        db.execute(f"CREATE VIRTUAL TABLE v USING vec0(emb float[{DIM}] distance_metric=cosine, cat integer)")
        t = time.perf_counter()
        db.executemany("INSERT INTO v(rowid, emb, cat) VALUES (?, ?, ?)",
                       ((i + 1, x[i].tobytes(), int(cat[i])) for i in range(n)))
        db.commit()
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        out["disk_mb"] = os.path.getsize(path) / 1e6
        _common_query_metrics(out, qf_of(db), gt, nq)

        def qff(i: int) -> list[int]:
            rows = db.execute("SELECT rowid FROM v WHERE emb MATCH ? AND k = ? AND cat = 3 "
                              "ORDER BY distance", (q[i].tobytes(), TOPK)).fetchall()
            return [r[0] - 1 for r in rows]
        _common_query_metrics(out, qff, gtf, nq, "filt_")
        return out
    if peer == "lancedb":
        import lancedb
        if phase == "cold":
            t = time.perf_counter()
            tbl = lancedb.connect(store).open_table("v")
            tbl.search(q[0]).metric("cosine").limit(TOPK).to_list()
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        import pyarrow as pa
        t = time.perf_counter()
        data = pa.table({"id": np.arange(n), "cat": cat.astype(np.int64),
                         "vector": pa.FixedSizeListArray.from_arrays(
                             pa.array(np.ascontiguousarray(x).ravel()), DIM)})
        tbl = lancedb.connect(store).create_table("v", data)
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        out["disk_mb"] = du(store)

        def qf(i: int) -> list[int]:
            return [r["id"] for r in tbl.search(q[i]).metric("cosine").limit(TOPK).to_list()]
        _common_query_metrics(out, qf, gt, nq)

        def qff(i: int) -> list[int]:
            return [r["id"] for r in tbl.search(q[i]).metric("cosine").where("cat = 3")
                    .limit(TOPK).to_list()]
        _common_query_metrics(out, qff, gtf, nq, "filt_")
        return out
    if peer == "chroma":
        import chromadb
        if phase == "cold":
            t = time.perf_counter()
            col = chromadb.PersistentClient(path=store).get_collection("vecs")
            col.query(query_embeddings=[q[0].tolist()], n_results=TOPK)
            out["cold_ms"] = (time.perf_counter() - t) * 1e3
            out["rss_mb"] = rss_mb()
            return out
        client = chromadb.PersistentClient(path=store)
        col = client.create_collection("vecs", metadata={"hnsw:space": "ip"})
        t = time.perf_counter()
        for lo in range(0, n, 5000):
            hi = min(n, lo + 5000)
            col.add(ids=[str(i) for i in range(lo, hi)], embeddings=x[lo:hi].tolist(),
                    metadatas=[{"cat": int(cat[i])} for i in range(lo, hi)])
        out["ingest_per_s"] = n / (time.perf_counter() - t)
        out["disk_mb"] = du(store)

        def qf(i: int) -> list[int]:
            r = col.query(query_embeddings=[q[i].tolist()], n_results=TOPK)
            return [int(s) for s in r["ids"][0]]
        _common_query_metrics(out, qf, gt, nq)

        def qff(i: int) -> list[int]:
            r = col.query(query_embeddings=[q[i].tolist()], n_results=TOPK, where={"cat": 3})
            return [int(s) for s in r["ids"][0]]
        _common_query_metrics(out, qff, gtf, nq, "filt_")
        return out
    raise SystemExit(f"unknown peer {peer}")


# --------------------------------------------------------------------------- driver

def run_peer(python: str, peer: str, d: str, kind: str, phase: str) -> dict[str, Any] | str:
    # one BLAS/OpenMP thread everywhere: the machine is shared, and a query is one thread
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", peer, "--dir", d,
                           "--kind", kind, "--phase", phase],
                          capture_output=True, text=True, timeout=7200, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return f"skipped: {last[:120]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = [  # (metric key, label, better: "hi" / "lo")
    ("ingest_per_s", "ingest (vectors/s)", "hi"),
    ("single_ms", "durable single insert (ms, p50)", "lo"),
    ("p50_ms", "query p50 (ms)", "lo"),
    ("p99_ms", "query p99 (ms)", "lo"),
    ("recall", "recall@10", "hi"),
    ("filt_p50_ms", "filtered query p50 (ms, 10% kept)", "lo"),
    ("filt_recall", "filtered recall@10", "hi"),
    ("cold_ms", "cold open + first query (ms)", "lo"),
    ("rss_mb", "RSS after cold first query (MB)", "lo"),
    ("disk_mb", "disk after ingest (MB)", "lo"),
    ("disk_half_mb", "disk after delete half + compact (MB)", "lo"),
]
MNEMOS_ONLY = [
    ("index_build_s", "ANN index build at first ask (s)"),
    ("hyb_p50_ms", "hybrid ask p50 (ms)"),
    ("hyb_p99_ms", "hybrid ask p99 (ms)"),
    ("hyb_recall", "hybrid recall@10 vs exact planner"),
    ("forget_half_s", "forget_many of half the store (s)"),
    ("filt_after_forget_p50_ms", "filtered ask p50 after forgetting half, before compact (ms)"),
    ("single_ref_ms", "one synced LMDB txn of the same bytes, interleaved with each durable "
                      "single insert (ms, p50)"),
    ("single_ratio", "durable single insert / that LMDB txn (median of the pairs)"),
]


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:,.0f}" if v >= 1000 else f"{v:.1f}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="clustered,random")
    ap.add_argument("--peers", default=",".join(PEERS + EXTERNAL))
    ap.add_argument("--peer-python", default="/work/venv-bench/bin/python")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "peers_bench.md"))
    ap.add_argument("--update", action="store_true",
                    help="keep the other peers' saved results (<out>.json), re-run these")
    ap.add_argument("--worker")
    ap.add_argument("--dir")
    ap.add_argument("--kind", default="clustered")
    ap.add_argument("--phase", default="full")
    a = ap.parse_args()
    if a.worker:
        res = worker(a.worker, a.dir, a.kind, a.phase)
        res[f"load_{a.phase}"] = round(os.getloadavg()[0], 1)  # (1-minute load at its end)
        print(json.dumps(res))
        return
    peers = a.peers.split(",")
    json_path = os.path.splitext(a.out)[0] + ".json"
    saved: dict[str, Any] = {}
    if a.update and os.path.exists(json_path):
        with open(json_path) as f:
            saved = json.load(f)
    for n in [int(s) for s in a.sizes.split(",")]:
        for kind in a.kinds.split(","):
            key = f"{n} {kind}"
            entry = saved.setdefault(key, {"n": n, "kind": kind, "res": {}, "notes": []})
            res = entry["res"]
            notes = entry["notes"] = [x for x in entry["notes"]
                                      if x.split(":")[0] not in peers]
            d = tempfile.mkdtemp(prefix=f"peers-{n}-{kind}-", dir=os.environ.get("BENCH_TMP"))
            try:
                x, q = make_data(kind, n, a.queries)
                np.save(os.path.join(d, "x.npy"), x)
                np.save(os.path.join(d, "q.npy"), q)
                np.save(os.path.join(d, "gt.npy"), ground_truth(x, q))
                np.save(os.path.join(d, "gtf.npy"), ground_truth(x, q, category(n) == 3))
                del x
                for peer in peers:
                    python = a.peer_python if peer in EXTERNAL else sys.executable
                    if peer in EXTERNAL and not os.path.exists(python):
                        notes.append(f"{peer}: skipped (no {python})")
                        continue
                    print(f"[{n} {kind}] {peer} ...", file=sys.stderr, flush=True)
                    r = run_peer(python, peer, d, kind, "full")
                    if isinstance(r, str):
                        notes.append(f"{peer}: {r}")
                        continue
                    if peer not in ("lmdb",):
                        c = run_peer(python, peer, d, kind, "cold")
                        if isinstance(c, dict):
                            r.update(c)
                    res[peer] = r
                    write_out(a, saved, json_path)
                    for name in os.listdir(d):  # free the disk before the next peer
                        if name.startswith("store-"):
                            p = os.path.join(d, name)
                            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
                write_out(a, saved, json_path)
                print(render(n, kind, res, notes), flush=True)
            finally:
                shutil.rmtree(d, ignore_errors=True)


def write_out(a: Any, saved: dict[str, Any], json_path: str) -> None:
    with open(json_path, "w") as f:
        json.dump(saved, f, indent=1)
    order = [p for p in PEERS + EXTERNAL]
    sections = []
    for e in saved.values():
        res = {p: e["res"][p] for p in order if p in e["res"]}
        sections.append(render(e["n"], e["kind"], res, e["notes"]))
    with open(a.out, "w") as f:
        f.write("# peers_bench\n\n" + __doc__.split("\n\n")[0] + "\n\n"
                f"Machine: {os.cpu_count()} cores, shared with other jobs (each peer's "
                f"load average at the end of its runs is under its table); {a.queries} "
                f"queries; top-{TOPK}; dim {DIM}. Ratio = mnemos ÷ best "
                "peer of the row (for recall and ingest, > 1 means mnemos is better; for "
                "times and sizes, < 1). Raw vector bytes: n × 1536 B (153.6 MB at 100k, "
                "1.536 GB at 1M).\n\n" + "\n\n".join(sections) + "\n")


def render(n: int, kind: str, res: dict[str, Any], notes: list[str]) -> str:
    peers = list(res)
    rows = []
    for key, label, better in ROWS:
        vals = {p: res[p].get(key) for p in peers}
        others = [v for p, v in vals.items() if p != "mnemos" and v is not None]
        mv = vals.get("mnemos")
        ratio = "—"
        if mv is not None and others:
            best = max(others) if better == "hi" else min(others)
            ratio = f"{mv / best:.2f}" if best else "—"
        rows.append([label] + [fmt(vals[p]) for p in peers] + [ratio])
    out = f"## {n:,} × {DIM}, {kind}\n\n" + table(["metric"] + peers + ["mnemos ÷ best"], rows)
    if "mnemos" in res:
        out += "\n\nmnemos only:\n\n" + table(["metric", "mnemos"], [[label, fmt(res["mnemos"].get(k))]
                                                                   for k, label in MNEMOS_ONLY])
    loads = [f"{p} " + ", ".join(str(res[p][k]) for k in ("load_full", "load_cold") if k in res[p])
             for p in peers if "load_full" in res[p]]
    if loads:
        notes = list(notes) + ["1-minute load average at the end of each run (full, cold): "
                               + "; ".join(loads)]
    if notes:
        out += "\n\n" + "\n".join(f"* {s}" for s in notes)
    return out


if __name__ == "__main__":
    main()
