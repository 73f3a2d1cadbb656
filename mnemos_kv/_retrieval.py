"""The query planner: candidate rows of a snapshot, scoring, and top-k selection.

Exact search is cosine similarity (rows are stored L2-normalised, so a dot product)
over the live slots of the asked namespaces, vectorised with numpy. Ties are broken
by slot order, so the same store and query always give the same answers in the same
order.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from ._engine import Snapshot

#: Below this fraction of rows selected, gather the rows before the matrix product
#: (cheaper than scoring every row of the matrix).
GATHER_FRACTION = 0.25


def candidate_rows(snap: Snapshot, ns_ids: Iterable[int]) -> np.ndarray:
    """Slots that are live in the snapshot and belong to one of ``ns_ids`` (sorted)."""
    ids = sorted(set(ns_ids))
    if snap.state.n_slots == 0 or not ids:
        return np.empty(0, np.int64)
    ns_col = snap.slots["ns"]
    if len(ids) == 1:
        mask = ns_col == ids[0]
    else:
        mask = np.isin(ns_col, np.asarray(ids, dtype=ns_col.dtype))
    mask &= snap.live_mask()
    return np.flatnonzero(mask)


def cosine(snap: Snapshot, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``query`` (normalised) with the given rows, float32."""
    n = snap.state.n_slots
    if rows.size == 0:
        return np.empty(0, np.float32)
    if rows.size >= n * GATHER_FRACTION:
        return (snap.matrix @ query)[rows]
    return snap.matrix[rows] @ query


def order_top(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``scores`` of the best ``k``: score descending, then row ascending."""
    if k <= 0 or scores.size == 0:
        return np.empty(0, np.int64)
    if scores.size > k:
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        cand = np.flatnonzero(scores >= threshold)  # every tie at the boundary
    else:
        cand = np.arange(scores.size)
    order = np.lexsort((rows[cand], -scores[cand].astype(np.float64)))
    return cand[order][:k]


def iter_ranked(scores: np.ndarray, rows: np.ndarray, first: int) -> Iterator[int]:
    """Indices into ``scores`` in rank order; the first ``first`` cheaply, then the rest."""
    top = order_top(scores, rows, first)
    yield from top.tolist()
    if top.size < scores.size:
        rest = np.ones(scores.size, bool)
        rest[top] = False
        idx = np.flatnonzero(rest)
        order = np.lexsort((rows[idx], -scores[idx].astype(np.float64)))
        yield from idx[order].tolist()


def search(snap: Snapshot, query: np.ndarray, ns_ids: Iterable[int], k: int,
           accept: Callable[[int], bool] | None = None) -> list[tuple[int, float]]:
    """Top ``k`` (slot, score) by cosine; ``accept(slot)`` filters (e.g. on metadata)."""
    rows = candidate_rows(snap, ns_ids)
    scores = cosine(snap, rows, query)
    if accept is None:
        idx = order_top(scores, rows, k)
        return [(int(rows[i]), float(scores[i])) for i in idx]
    out: list[tuple[int, float]] = []
    for i in iter_ranked(scores, rows, max(4 * k, 32)):
        slot = int(rows[i])
        if accept(slot):
            out.append((slot, float(scores[i])))
            if len(out) >= k:
                break
    return out
