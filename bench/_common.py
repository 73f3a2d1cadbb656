"""Helpers shared by the benchmarks: a precomputed-vector embedder, timers, tables."""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PrecomputedEmbedder:
    """Looks vectors up by text ``"mem-<i>"`` / ``"query-<i>"``: isolates the store from
    embedding cost. Vectors are seeded random normals (deterministic)."""

    name = "bench-precomputed"

    def __init__(self, n: int, dim: int = 384, n_queries: int = 200, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.vectors = rng.standard_normal((n, dim), dtype=np.float32)
        self.queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.queries /= np.linalg.norm(self.queries, axis=1, keepdims=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            kind, _, num = t.partition("-")
            out[i] = (self.queries if kind == "query" else self.vectors)[int(num)]
        return out


def timeit(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def size_table(rows: Sequence[tuple[str, str]], res: dict[int, dict[str, float]],
               sizes: Sequence[int], fmt: Callable[[float], str]) -> str:
    """A metric x store-size table: one line per ``(key, label)`` of ``rows``, one
    column per size, cells ``fmt(res[size][key])``."""
    return table(["metric"] + [f"{n:,}" for n in sizes],
                 [[label] + [fmt(res[n][k]) for n in sizes] for k, label in rows])


def report(headers: Sequence[str], rows: Sequence[Sequence[object]], note: str,
           results: object, json_path: str | None) -> None:
    """Print the table and its targets; also write ``results`` as JSON when asked."""
    import json
    print(table(headers, rows))
    print("\n" + note)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
