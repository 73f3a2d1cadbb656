"""Per-namespace time order of the slots, cached and grown incrementally: who is next to whom.

Neighbour expansion needs, for every candidate memory, the candidates just before and
after it in its namespace, in (timestamp, id) order. Sorting every slot on each query
would cost O(n log n); instead each engine keeps, per generation:

* per namespace, its slots sorted by (timestamp, id, slot) (slot order is id order,
  except after an ``update`` gave an id a fresh slot: the order stays by id, so it
  is the same before and after a compaction);
* ``prev`` / ``next``: for every slot, the slot just before / after it in that order
  (-1 at the ends), so that when every slot of the asked namespaces is a candidate
  (no forgotten slot, no filter) neighbour expansion is two gathers;
* a contiguous copy of the slots' ``type`` column and how many slots have each type.

Slots are append-only within a generation and a slot's namespace, timestamp and type
never change, so a newer snapshot only inserts its new rows (binary search + one
``np.insert``); forgotten slots stay in the order and are dropped per query by the
candidate mask. A new generation (compaction) rebuilds the cache once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ._percache import PerOwner

__all__ = ["TimeOrder", "OrderView", "for_engine", "chain", "best_of", "prev_of", "neighbour_best",
           "prev_values", "index_neighbours", "newest_in_index"]


@dataclass(frozen=True)
class OrderView:
    """An immutable state of the cache, covering slots ``[0, n)`` of one generation."""

    n: int
    blocks: dict[int, np.ndarray]   # ns -> slots sorted by (ts, slot)
    prev: np.ndarray                # int64, slot -> previous slot of its namespace or -1
    next: np.ndarray                # int64, slot -> next slot of its namespace or -1
    types: np.ndarray               # uint8, slot -> type code
    type_counts: np.ndarray         # slots per type code
    single_type: int                # the one type code of every slot, or -1 (mixed or none)
    ids: np.ndarray                 # int64, slot -> memory id (a contiguous copy: searchsorted)


def _single(counts: np.ndarray) -> int:
    """The only type code with slots, or -1."""
    present = np.flatnonzero(counts)
    return int(present[0]) if present.size == 1 else -1


def _time_sorted(ns: np.ndarray, ts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Slots in (namespace, timestamp, id, slot) order. Memories are usually written in
    time order, so first a stable sort by namespace alone (a radix sort when namespace
    ids fit 16 bits) and a check that each namespace is then in (timestamp, id) order;
    the full 4-key sort only when it is not (the same permutation either way)."""
    n = ns.size
    if n and int(ns.min()) >= 0 and int(ns.max()) < 65536:
        order = np.argsort(ns.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(ns, kind="stable")
    ns_o, ts_o, ids_o = ns[order], ts[order], ids[order]
    same = ns_o[1:] == ns_o[:-1]
    back = (ts_o[1:] < ts_o[:-1]) | ((ts_o[1:] == ts_o[:-1]) & (ids_o[1:] < ids_o[:-1]))
    if not (same & back).any():
        return order
    return np.lexsort((np.arange(n), ids, ts, ns))


def _link(prev: np.ndarray, nxt: np.ndarray, s: np.ndarray) -> None:
    """Set prev/next of the slots of one namespace block ``s`` (in time order)."""
    if s.size == 0:
        return
    prev[s[0]] = -1
    nxt[s[-1]] = -1
    prev[s[1:]] = s[:-1]
    nxt[s[:-1]] = s[1:]


class TimeOrder:
    """The per-generation slot order cache of one engine (thread-safe, copy-on-write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gen = -1
        self.state: OrderView | None = None
        self._ts: dict[int, np.ndarray] = {}  # ns -> timestamps in block order
        self._miss_gen, self._misses = -1, 0    # view_if_warm calls that found no order

    def _rebuild(self, slots: np.ndarray, gen: int, n: int) -> None:
        """Sort slots [0, n) of generation ``gen`` from scratch."""
        ns = np.asarray(slots["ns"][:n])
        ts = np.asarray(slots["ts"][:n]).astype(np.int64)
        ids = np.ascontiguousarray(slots["id"][:n], dtype=np.int64)
        order = _time_sorted(ns, ts, ids)
        ns_sorted = ns[order]
        cuts = np.flatnonzero(ns_sorted[1:] != ns_sorted[:-1]) + 1
        blocks: dict[int, np.ndarray] = {}
        tss: dict[int, np.ndarray] = {}
        prev = np.full(n, -1, np.int64)
        nxt = np.full(n, -1, np.int64)
        for part in (np.split(order, cuts) if n else []):
            part = part.astype(np.int64)
            blocks[int(ns[part[0]])] = part
            tss[int(ns[part[0]])] = ts[part]
            _link(prev, nxt, part)
        types = np.ascontiguousarray(slots["type"][:n], dtype=np.uint8)
        counts = np.bincount(types, minlength=3)
        self._ts, self.gen = tss, gen
        self.state = OrderView(n, blocks, prev, nxt, types, counts, _single(counts), ids)

    def _extend(self, slots: np.ndarray, n: int) -> None:
        """Insert the slots [self.state.n, n) into their namespaces' orders."""
        old = self.state
        assert old is not None
        start = old.n
        new = np.arange(start, n, dtype=np.int64)
        ns = np.asarray(slots["ns"][start:n])
        ts = np.asarray(slots["ts"][start:n]).astype(np.int64)
        blocks = dict(old.blocks)
        tss = dict(self._ts)
        prev = np.concatenate([old.prev, np.full(n - start, -1, np.int64)])
        nxt = np.concatenate([old.next, np.full(n - start, -1, np.int64)])
        ids = np.concatenate([old.ids, np.asarray(slots["id"][start:n], dtype=np.int64)])
        for v in np.unique(ns).tolist():
            sel = ns == v
            s_new, t_new = new[sel], ts[sel]
            o = np.lexsort((s_new, ids[s_new], t_new))
            s_new, t_new = s_new[o], t_new[o]
            blk = blocks.get(int(v))
            if blk is None:
                blk, tblk = s_new, t_new
            else:
                # new slots are larger than every old one: among equal timestamps they go
                # last, unless an update gave a smaller id a new slot (then by id)
                t_old = tss[int(v)]
                pos = np.searchsorted(t_old, t_new, side="right")
                back = np.flatnonzero((pos > 0) & (t_old[np.maximum(pos - 1, 0)] == t_new)
                                      & (ids[blk[np.maximum(pos - 1, 0)]] > ids[s_new]))
                for j in back.tolist():
                    lo = int(np.searchsorted(t_old, t_new[j], side="left"))
                    pos[j] = lo + int(np.searchsorted(ids[blk[lo:pos[j]]], ids[s_new[j]], side="right"))
                blk, tblk = np.insert(blk, pos, s_new), np.insert(t_old, pos, t_new)
            blocks[int(v)], tss[int(v)] = blk, tblk
            _link(prev, nxt, blk)
        add = np.ascontiguousarray(slots["type"][start:n], dtype=np.uint8)
        types = np.concatenate([old.types, add])
        counts = old.type_counts + np.bincount(add, minlength=old.type_counts.size)[:old.type_counts.size]
        self._ts = tss
        self.state = OrderView(n, blocks, prev, nxt, types, counts, _single(counts), ids)

    def view_if_warm(self, snap: Any, after: int) -> OrderView | None:
        """:meth:`view`, when this generation's order is built already or after ``after``
        calls found it missing; None before that (for a caller with a slower way that
        needs no per-generation cache: a process that asks a few times sorts nothing)."""
        with self._lock:
            if snap.state.gen != self.gen or self.state is None:
                if self._miss_gen != snap.state.gen:
                    self._miss_gen, self._misses = snap.state.gen, 0
                self._misses += 1
                if self._misses <= after:
                    return None
        return self.view(snap)

    def view(self, snap: Any) -> OrderView:
        """The cache state covering at least the snapshot's slots (maybe more: use slot < n)."""
        gen, n = snap.state.gen, snap.state.n_slots
        with self._lock:
            if gen != self.gen or self.state is None:
                self._rebuild(snap.slots, gen, n)
            elif n > self.state.n:
                if n - self.state.n > max(4096, self.state.n // 2):
                    self._rebuild(snap.slots, gen, n)
                else:
                    self._extend(snap.slots, n)
            assert self.state is not None
            return self.state


_caches: PerOwner[TimeOrder] = PerOwner(lambda _engine: TimeOrder())


def for_engine(engine: Any) -> TimeOrder:
    """The TimeOrder cache of an engine (created on first use)."""
    return _caches.get(engine)


def chain(view: OrderView, ns_ids: Iterable[int], n: int, mask: np.ndarray | None,
          rows: np.ndarray | None, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(prev, next) of every candidate: the index of the candidate just before / after
    it in its namespace, in (timestamp, id) order, or -1.

    Indices address the score arrays: slots when ``rows`` is None, else positions in
    the sorted candidate slots ``rows``. ``mask`` (length ``n``, None = every slot)
    marks candidate slots; ``closed`` says that every slot below ``n`` of the asked
    namespaces is a candidate (then the cached prev/next arrays are the answer).
    """
    if closed and rows is None and view.n == n:
        return view.prev, view.next
    size = n if rows is None else rows.size
    consecutive = rows is not None and rows.size > 0 and int(rows[-1]) - int(rows[0]) + 1 == rows.size
    prev = np.full(size, -1, np.int64)
    nxt = np.full(size, -1, np.int64)
    for ns in sorted(set(ns_ids)):
        s = view.blocks.get(ns)
        if s is None:
            continue
        if view.n > n:  # the cache is ahead of this (older) snapshot
            s = s[s < n]
        if mask is not None:
            s = s[mask[s]]
        if s.size < 2:
            continue
        idx = s if rows is None else s - rows[0] if consecutive else np.searchsorted(rows, s)
        prev[idx[1:]] = idx[:-1]
        nxt[idx[:-1]] = idx[1:]
    return prev, nxt


def _padded(vals: np.ndarray) -> np.ndarray:
    """``vals`` as float32 with one extra 0 at the end (so that index -1 reads 0)."""
    out = np.empty(vals.shape[0] + 1, np.float32)
    out[:-1] = vals
    out[-1] = 0
    return out


def best_of(links: tuple[np.ndarray, np.ndarray], vals: np.ndarray) -> np.ndarray:
    """``max(vals[prev], vals[next])`` per candidate (0 for a missing neighbour)."""
    padded = _padded(vals)
    out = padded[links[0]]
    np.maximum(out, padded[links[1]], out=out)
    return out


def prev_of(links: tuple[np.ndarray, np.ndarray], vals: np.ndarray) -> np.ndarray:
    """``vals[prev]`` per candidate (0 for the first of its namespace)."""
    return _padded(vals)[links[0]]


def neighbour_best(view: OrderView, ns_ids: Iterable[int], n: int, mask: np.ndarray | None,
                   rows: np.ndarray | None, rel: np.ndarray, closed: bool) -> np.ndarray:
    """For each candidate, ``max(rel(prev), rel(next))`` over its adjacent candidates
    (see :func:`chain` for the addressing). Returns an array shaped like ``rel``."""
    return best_of(chain(view, ns_ids, n, mask, rows, closed), rel)


def index_neighbours(txn: Any, time_db: Any, keys: list[bytes], width: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Ids of up to ``width`` memories before / after each time-index key, same namespace.

    ``keys`` are ``time`` table keys (ns u32, ts, id u64) of live memories of the
    snapshot ``txn``; returns two ``len(keys) x width`` int64 arrays (nearest first,
    -1 past either end of the namespace). For the ANN path, which has no per-store
    time-order cache: a few cursor steps per shortlisted memory.
    """
    m = len(keys)
    before = np.full((m, width), -1, np.int64)
    after = np.full((m, width), -1, np.int64)
    with txn.cursor(db=time_db) as cur:
        for i, k in enumerate(keys):
            prefix = k[:4]
            if not cur.set_key(k):
                continue
            moved = 0  # steps back from k (a step off the table's first key: -1)
            for j in range(width):
                if not cur.prev():
                    moved = -1
                    break
                moved += 1
                if not cur.key().startswith(prefix):
                    break
                before[i, j] = int.from_bytes(cur.key()[12:20], "big")
            if moved < 0:
                cur.set_key(k)
            else:  # back to k by as many steps (cheaper than a second search)
                for _ in range(moved):
                    cur.next()
            for j in range(width):
                if not cur.next() or not cur.key().startswith(prefix):
                    break
                after[i, j] = int.from_bytes(cur.key()[12:20], "big")
    return before, after


def newest_in_index(txn: Any, time_db: Any, ns_ids: Iterable[int], until_key: bytes | None
                    ) -> int | None:
    """The largest timestamp (µs) of the namespaces' time-index entries whose timestamp
    key is at most ``until_key``; None when there is none."""
    best: bytes | None = None
    with txn.cursor(db=time_db) as cur:
        for ns in sorted(set(ns_ids)):
            prefix = ns.to_bytes(4, "big")
            bound = prefix + until_key + b"\xff" * 8 if until_key is not None \
                else (ns + 1).to_bytes(4, "big") if ns < 0xFFFFFFFF else None
            ok = cur.set_range(bound) if bound is not None else False
            moved = cur.prev() if ok else cur.last()
            if moved and cur.key().startswith(prefix):
                ts = cur.key()[4:12]
                if best is None or ts > best:
                    best = ts
    return None if best is None else int.from_bytes(best, "big") - (1 << 63)


def prev_values(view: OrderView, ns_ids: Iterable[int], n: int, mask: np.ndarray | None,
                rows: np.ndarray | None, vals: np.ndarray, closed: bool) -> np.ndarray:
    """For each candidate, ``vals`` of the candidate just before it (0 for the first):
    the asymmetric half of :func:`neighbour_best`, for the turn that follows a question."""
    return prev_of(chain(view, ns_ids, n, mask, rows, closed), vals)
