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


def candidate_mask(snap: Snapshot, ns_ids: Iterable[int]) -> np.ndarray:
    """Boolean mask over the snapshot's slots: live and in one of ``ns_ids``."""
    ids = sorted(set(ns_ids))
    if snap.state.n_slots == 0 or not ids:
        return np.zeros(snap.state.n_slots, bool)
    ns_col = snap.slots["ns"]
    if len(ids) == 1:
        mask = ns_col == ids[0]
    else:
        mask = np.isin(ns_col, np.asarray(ids, dtype=ns_col.dtype))
    mask &= snap.live_mask()
    return mask


def candidate_rows(snap: Snapshot, ns_ids: Iterable[int]) -> np.ndarray:
    """Slots that are live in the snapshot and belong to one of ``ns_ids`` (sorted)."""
    return np.flatnonzero(candidate_mask(snap, ns_ids))


def cosine(snap: Snapshot, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``query`` (normalised) with the given rows, float32."""
    n = snap.state.n_slots
    if rows.size == 0:
        return np.empty(0, np.float32)
    if rows.size >= n * GATHER_FRACTION:
        return (snap.matrix @ query)[rows]
    return snap.matrix[rows] @ query


def order_top(scores: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    """Indices into ``scores`` of the best ``k``: score descending, then row ascending.

    ``rows`` (the slot of each score) breaks ties; None means the index is the slot.
    Entries of ``-inf`` are never returned.
    """
    if k <= 0 or scores.size == 0:
        return np.empty(0, np.int64)
    if scores.size > k:
        part = np.argpartition(scores, scores.size - k)[scores.size - k:]
        threshold = scores[part].min()
        cand = np.flatnonzero(scores >= threshold)  # every tie at the boundary
    else:
        cand = np.arange(scores.size)
    tie = cand if rows is None else rows[cand]
    order = np.lexsort((tie, -scores[cand].astype(np.float64)))
    out = cand[order][:k]
    if out.size and scores[out[-1]] == -np.inf:
        out = out[scores[out] > -np.inf]
    return out


def iter_ranked(scores: np.ndarray, rows: np.ndarray | None, first: int) -> Iterator[int]:
    """Indices into ``scores`` in rank order; the first ``first`` cheaply, then the rest."""
    top = order_top(scores, rows, first)
    yield from top.tolist()
    if top.size == first and top.size < scores.size:
        rest = scores > -np.inf
        rest[top] = False
        idx = np.flatnonzero(rest)
        tie = idx if rows is None else rows[idx]
        order = np.lexsort((tie, -scores[idx].astype(np.float64)))
        yield from idx[order].tolist()


def vector_scores(snap: Snapshot, query: np.ndarray, ns_ids: Iterable[int]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Cosine scores of the candidate slots: ``(scores, rows)``.

    When most slots are candidates, scores cover every slot (``rows`` is None, the
    index is the slot) and excluded slots score ``-inf``; otherwise only the
    candidate rows are gathered and scored.
    """
    mask = candidate_mask(snap, ns_ids)
    n = mask.size
    if n == 0:
        return np.empty(0, np.float32), None
    selected = int(np.count_nonzero(mask))
    if selected >= n * GATHER_FRACTION:
        scores = snap.matrix @ query
        if selected < n:
            scores[~mask] = -np.inf
        return scores, None
    rows = np.flatnonzero(mask)
    return snap.matrix[rows] @ query, rows


def search(snap: Snapshot, query: np.ndarray, ns_ids: Iterable[int], k: int,
           accept: Callable[[int], bool] | None = None) -> list[tuple[int, float]]:
    """Top ``k`` (slot, score) by cosine; ``accept(slot)`` filters (e.g. on metadata)."""
    scores, rows = vector_scores(snap, query, ns_ids)
    slot_of = (lambda i: i) if rows is None else (lambda i: int(rows[i]))
    if accept is None:
        return [(slot_of(int(i)), float(scores[i])) for i in order_top(scores, rows, k)]
    out: list[tuple[int, float]] = []
    for i in iter_ranked(scores, rows, max(4 * k, 32)):
        if scores[i] == -np.inf:
            break
        slot = slot_of(i)
        if accept(slot):
            out.append((slot, float(scores[i])))
            if len(out) >= k:
                break
    return out
