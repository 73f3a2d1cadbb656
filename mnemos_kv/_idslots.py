"""Memory id -> slot of a snapshot, also after updates made the id column unsorted.

Slots are appended in id order, so normally the id column ascends and a binary search
finds an id's slot. An ``update`` appends a fresh slot for an existing (smaller) id
(see ``_mutate``); the generation is then marked ``unsorted`` until the next
compaction, and ids are found through a per-engine index instead: the ids sorted,
each with its latest slot below ``n`` (older versions are dead in every snapshot
that has the newer one). The index is grown incrementally like the time order cache
(O(new rows + n) per new snapshot, one sort of the new rows), rebuilt per generation.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ._percache import PerOwner

__all__ = ["slots_of"]


def _latest(ids: np.ndarray, first_slot: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, the last slot of each) of a run of slots starting at ``first_slot``."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    last = np.ones(s.size, bool)
    if s.size > 1:
        last[:-1] = s[1:] != s[:-1]
    return s[last], order[last].astype(np.int64) + first_slot


class _Index:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gen = -1
        self.n = 0
        self.ids = np.empty(0, np.int64)
        self.slots = np.empty(0, np.int64)

    def get(self, snap: Any) -> tuple[np.ndarray, np.ndarray]:
        gen, n = snap.state.gen, snap.state.n_slots
        col = snap.slots["id"]
        with self.lock:
            if gen == self.gen and n == self.n:
                return self.ids, self.slots
            if gen != self.gen or n < self.n:
                ids, slots = _latest(np.asarray(col[:n], dtype=np.int64), 0)
                if gen != self.gen or n > self.n:  # an older snapshot does not replace it
                    self.gen, self.n, self.ids, self.slots = gen, n, ids, slots
                return ids, slots
            new_ids, new_slots = _latest(np.asarray(col[self.n:n], dtype=np.int64), self.n)
            pos = np.searchsorted(self.ids, new_ids)
            pc = np.minimum(pos, max(self.ids.size - 1, 0))
            have = (pos < self.ids.size) & (self.ids[pc] == new_ids) if self.ids.size \
                else np.zeros(new_ids.size, bool)
            slots = self.slots.copy()
            slots[pos[have]] = new_slots[have]
            add = ~have
            self.ids = np.insert(self.ids, pos[add], new_ids[add])
            self.slots = np.insert(slots, pos[add], new_slots[add])
            self.n = n
            return self.ids, self.slots


_indexes: PerOwner[_Index] = PerOwner(lambda _owner: _Index())
_index_for = _indexes.get


def _bisect(col: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.searchsorted(col, x)`` (left) by vectorised bisection: no copy of a strided ``col``."""
    lo = np.zeros(x.size, np.int64)
    hi = np.full(x.size, col.size, np.int64)
    top = max(col.size - 1, 0)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        below = open_ & (col[np.minimum(mid, top)] < x)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)


def _guess_then_bisect(col: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_bisect` of an ascending column of distinct ids, first trying the slot an
    id has when no id before it is missing (``id - col[0]``: most slots of a store that
    was not compacted), one gather for those."""
    if col.size == 0 or x.size == 0:
        return _bisect(col, x)
    guess = x.astype(np.int64) - int(col[0])
    inside = (guess >= 0) & (guess < col.size)
    hit = inside.copy()
    hit[inside] = col[guess[inside]] == x[inside]
    if hit.all():
        return guess
    out = guess.copy()
    out[~hit] = _bisect(col, x[~hit])
    return out


def slots_of(snap: Any, ids: np.ndarray, col: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``ids`` have a slot in the snapshot, their latest slots).

    ``col``: a contiguous copy of the snapshot's id column, if the caller has one
    (searchsorted copies a strided column first, an O(n) cost per call); used only
    while the column ascends.
    """
    if getattr(snap.state, "unsorted", 0):
        owner = getattr(snap, "engine", None)
        if owner is not None:
            sorted_ids, latest = _index_for(owner).get(snap)
        else:
            n = snap.state.n_slots
            sorted_ids, latest = _latest(np.asarray(snap.slots["id"][:n], dtype=np.int64), 0)
        pos = np.searchsorted(sorted_ids, ids)
        pc = np.minimum(pos, max(sorted_ids.size - 1, 0))
        ok = (pos < sorted_ids.size) & (sorted_ids[pc] == ids) if sorted_ids.size \
            else np.zeros(ids.size, bool)
        return ok, latest[pos[ok]]
    if col is None:
        col = snap.slots["id"]
        # few ids: bisect the strided column in place (searchsorted would copy it, O(n))
        pos = _guess_then_bisect(col, ids) if ids.size * 64 < col.size \
            else np.searchsorted(col, ids)
    else:
        if col.size and ids.size:  # every id at the slot it has when none before is missing
            guess = ids.astype(np.int64) - int(col[0])
            if int(guess.min()) >= 0 and int(guess.max()) < col.size \
                    and bool((col[guess] == ids).all()):
                return np.ones(ids.size, bool), guess
        pos = np.searchsorted(col, ids)
    pos_c = np.minimum(pos, max(col.size - 1, 0))
    ok = (pos < col.size) & (col[pos_c] == ids) if col.size else np.zeros(ids.size, bool)
    return ok, pos[ok]
