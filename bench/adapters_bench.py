"""Adapter benchmark: MnemosStore and MnemosVectorStore against the frameworks' in-memory stores.

The same operations, the same embedding (a fixed random vector per text, computed once
before timing, so model cost is out of the picture), on LangGraph's ``InMemoryStore`` and
LangChain's ``InMemoryVectorStore`` (the references: no disk, no durability) and on the
mnemos-kv adapters (durable, shared by processes). LangGraph: ``--items`` items in 50
user namespaces; put (one item, durable), get, a user's unranked search with a filter, a
query search in one user's namespaces and over all, list_namespaces. LangChain: the same
texts added in batches of 100, then similarity_search k=4 (vector and hybrid modes).
Reported: median per call and the ratio to the in-memory reference measured in the same run.

Run from the repository root: ``python bench/adapters_bench.py [--items 2000] [--calls 200]``;
writes bench/results/adapters_bench.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import median, table, timeit

from langchain_core.embeddings import Embeddings  # noqa: E402  (langchain extra)
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langgraph.store.base import PutOp  # noqa: E402  (langgraph extra)
from langgraph.store.memory import InMemoryStore  # noqa: E402

from mnemos_kv.langchain import MnemosVectorStore  # noqa: E402
from mnemos_kv.langgraph import MnemosStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIM = 64


class TableEmbeddings(Embeddings):
    """A fixed random unit vector per text, looked up (precomputed for every text used)."""

    def __init__(self, texts: list[str]) -> None:
        rng = np.random.default_rng(7)
        vecs = rng.standard_normal((len(texts), DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        self.table = {t: v.tolist() for t, v in zip(texts, vecs)}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


def langgraph_rows(n: int, calls: int, emb: TableEmbeddings, tmp: str) -> list[list[object]]:
    index = {"dims": DIM, "embed": emb, "fields": ["text"]}
    ref = InMemoryStore(index=index)  # type: ignore[arg-type]
    ours = MnemosStore(os.path.join(tmp, "lg.mem"), index=index)  # type: ignore[arg-type]
    rows: list[list[object]] = []
    try:
        for s in (ref, ours):
            for start in range(0, n, 100):
                s.batch([PutOp(("users", f"u{i % 50}"), f"k{i}", {"text": f"text {i}", "n": i % 10})
                         for i in range(start, min(n, start + 100))])
        rng = np.random.default_rng(3)
        picks = rng.integers(0, n, calls).tolist()

        def ops(s):  # type: ignore[no-untyped-def]
            it = itertools.cycle(picks)
            return {
                "put (1 item)": lambda: s.put(("users", "u0"), f"new{next(it)}",
                                              {"text": f"text {next(it)}", "n": 1}),
                "get": lambda: s.get(("users", f"u{next(it) % 50}"), f"k{next(it)}"),
                "search one user, filter": lambda: s.search(("users", f"u{next(it) % 50}"),
                                                            filter={"n": {"$gte": 5}}, limit=10),
                "search one user, query": lambda: s.search(("users", f"u{next(it) % 50}"),
                                                           query=f"text {next(it)}", limit=5),
                "search all, query": lambda: s.search(("users",), query=f"text {next(it)}", limit=5),
                "list_namespaces": lambda: s.list_namespaces(prefix=("users",), limit=100),
            }
        ref_ops, our_ops = ops(ref), ops(ours)
        for name in ref_ops:
            r = median(timeit(ref_ops[name], calls)) * 1e3
            o = median(timeit(our_ops[name], calls)) * 1e3
            rows.append(["LangGraph", name, f"{r:.3f}", f"{o:.3f}", f"{o / r:.2f}x"])
    finally:
        ours.close()
    return rows


def langchain_rows(n: int, calls: int, emb: TableEmbeddings, tmp: str) -> list[list[object]]:
    texts = [f"text {i}" for i in range(n)]
    rows: list[list[object]] = []
    ref = InMemoryVectorStore(emb)
    t = time.perf_counter()
    for start in range(0, n, 100):
        ref.add_texts(texts[start:start + 100], ids=[f"d{i}" for i in range(start, min(n, start + 100))])
    ref_add = (time.perf_counter() - t) / n * 1e3
    for mode in ("vector", "hybrid"):
        vs = MnemosVectorStore(os.path.join(tmp, f"lc-{mode}.mem"), emb, mode=mode, dim=DIM)
        try:
            t = time.perf_counter()
            for start in range(0, n, 100):
                vs.add_texts(texts[start:start + 100],
                             ids=[f"d{i}" for i in range(start, min(n, start + 100))])
            ours_add = (time.perf_counter() - t) / n * 1e3
            if mode == "vector":
                rows.append(["LangChain", "add_texts (per text, batches of 100)", f"{ref_add:.3f}",
                             f"{ours_add:.3f}", f"{ours_add / ref_add:.2f}x"])
            rng = np.random.default_rng(5)
            qs = itertools.cycle(rng.integers(0, n, calls).tolist())
            r = median(timeit(lambda: ref.similarity_search(f"text {next(qs)}", k=4), calls)) * 1e3
            o = median(timeit(lambda: vs.similarity_search(f"text {next(qs)}", k=4), calls)) * 1e3
            rows.append(["LangChain", f"similarity_search k=4 ({mode})", f"{r:.3f}", f"{o:.3f}",
                         f"{o / r:.2f}x"])
        finally:
            vs.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    n, calls = args.items, args.calls
    texts = [f"text {i}" for i in range(n)]
    emb = TableEmbeddings(texts)
    with tempfile.TemporaryDirectory() as tmp:
        rows = langgraph_rows(n, calls, emb, tmp) + langchain_rows(n, calls, emb, tmp)
    headers = ["framework", "operation", "in-memory ms (med)", "mnemos ms (med)", "ratio"]
    out = table(headers, rows)
    print(out)
    note = (f"{n} items, dim {DIM}, {calls} calls per operation; in-memory = LangGraph's "
            "InMemoryStore / LangChain's InMemoryVectorStore (no disk), mnemos = the adapters "
            "on a store with durability='full' (every put is fsynced before it returns).")
    print("\n" + note)
    (ROOT / "bench" / "results" / "adapters_bench.md").write_text(
        f"# adapters_bench\n\nRun: `python bench/adapters_bench.py --items {n} --calls {calls}` "
        f"on {time.strftime('%Y-%m-%d')}, 2-core shared machine (heavily loaded by other "
        f"work: absolute times are noisy, the ratios less so).\n\n{out}\n\n{note}\n",
        encoding="utf-8")


if __name__ == "__main__":
    main()
