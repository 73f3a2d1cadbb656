"""Per-namespace time order of the slots, cached and grown incrementally: who is next to whom.

Neighbour expansion needs, for every candidate memory, the candidates just before and
after it in its namespace, in (timestamp, id) order. Sorting every slot on each query
would cost O(n log n); instead each engine keeps, per namespace, the slots of the
current generation sorted by (timestamp, slot) (slot order is id order). Slots are
append-only within a generation and a slot's namespace and timestamp never change,
so a newer snapshot only inserts its new rows (binary search + one ``np.insert``);
forgotten slots stay in the order and are dropped per query by the candidate mask.
A new generation (compaction) rebuilds the order once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Iterable

import numpy as np

__all__ = ["TimeOrder", "for_engine", "neighbour_best"]


class TimeOrder:
    """Slots of one generation grouped by namespace, each group sorted by (ts, slot)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gen = -1
        self.n = 0
        self.blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # ns -> (slots, ts)

    def _rebuild(self, slots: np.ndarray, gen: int, n: int) -> None:
        ns = np.asarray(slots["ns"][:n])
        ts = np.asarray(slots["ts"][:n])
        order = np.lexsort((np.arange(n), ts, ns))
        ns_sorted = ns[order]
        cuts = np.flatnonzero(ns_sorted[1:] != ns_sorted[:-1]) + 1
        blocks = {}
        for part in np.split(order, cuts) if n else []:
            blocks[int(ns[part[0]])] = (part.astype(np.int64), ts[part].astype(np.int64))
        self.blocks, self.gen, self.n = blocks, gen, n

    def _extend(self, slots: np.ndarray, n: int) -> None:
        new = np.arange(self.n, n, dtype=np.int64)
        ns = np.asarray(slots["ns"][self.n:n])
        ts = np.asarray(slots["ts"][self.n:n]).astype(np.int64)
        blocks = dict(self.blocks)
        for v in np.unique(ns).tolist():
            sel = ns == v
            s_new, t_new = new[sel], ts[sel]
            o = np.lexsort((s_new, t_new))
            s_new, t_new = s_new[o], t_new[o]
            old = blocks.get(int(v))
            if old is None:
                blocks[int(v)] = (s_new, t_new)
                continue
            # new slots are larger than every old one, so among equal timestamps they go last
            pos = np.searchsorted(old[1], t_new, side="right")
            blocks[int(v)] = (np.insert(old[0], pos, s_new), np.insert(old[1], pos, t_new))
        self.blocks, self.n = blocks, n

    def view(self, snap: Any) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], int]:
        """(blocks, slots covered): at least the snapshot's slots, maybe more (filter slot < n)."""
        gen, n = snap.state.gen, snap.state.n_slots
        with self._lock:
            if gen != self.gen:
                self._rebuild(snap.slots, gen, n)
            elif n > self.n:
                if n - self.n > max(4096, self.n // 2):
                    self._rebuild(snap.slots, gen, n)
                else:
                    self._extend(snap.slots, n)
            return self.blocks, self.n


_caches: "weakref.WeakKeyDictionary[Any, TimeOrder]" = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def for_engine(engine: Any) -> TimeOrder:
    """The TimeOrder cache of an engine (created on first use)."""
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = TimeOrder()
        return cache


def neighbour_best(view: tuple[dict[int, tuple[np.ndarray, np.ndarray]], int],
                   ns_ids: Iterable[int], n: int, mask: np.ndarray, rows: np.ndarray | None,
                   rel: np.ndarray) -> np.ndarray:
    """For each candidate, ``max(rel(prev), rel(next))`` over its adjacent candidates.

    ``mask`` (length ``n``) marks candidate slots; ``rel`` is indexed by slot when
    ``rows`` is None, else by position in the sorted candidate slots ``rows``. prev/next
    are the candidates just before/after in the same namespace in (timestamp, id)
    order; a missing neighbour counts 0. Returns an array shaped like ``rel``.
    """
    blocks, covered = view
    best = np.zeros(rel.shape[0], dtype=np.float32)
    for ns in sorted(set(ns_ids)):
        blk = blocks.get(ns)
        if blk is None:
            continue
        s = blk[0]
        if covered > n:  # the cache is ahead of this (older) snapshot
            s = s[s < n]
        s = s[mask[s]]
        if s.size < 2:
            continue
        idx = s if rows is None else np.searchsorted(rows, s)
        r = rel[idx]
        b = np.empty(r.size, dtype=np.float32)
        b[0] = r[1]
        b[-1] = r[-2]
        if r.size > 2:
            np.maximum(r[:-2], r[2:], out=b[1:-1])
        best[idx] = b
    return best
