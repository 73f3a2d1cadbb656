"""Removing many memories' entries from a dupsort table by reading it, not by finding them.

A bulk forget of a large part of a namespace (``_forget``) does not re-tokenise the
forgotten texts to find their BM25 postings: it reads every posting of the namespace
(the keys with one cursor walk, their duplicates with one ``getmulti`` per key length,
as numpy rows), marks the rows whose id is forgotten, and then

* deletes each key all of whose duplicates go (one delete per key, in key order);
* rewrites a key that loses many of its duplicates (delete them all, put the survivors);
* deletes the few forgotten duplicates of any other key one by one.

What is left is exactly what deleting each forgotten memory's entries leaves (the
tables hold the same (key, value) pairs). :func:`sweep` also returns the forgotten
rows' keys and values, from which ``_forget`` takes the forgotten memories' field
lengths (each posting holds its memory's length in its field) for the statistics.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable, Sequence

import lmdb
import numpy as np

__all__ = ["sweep", "Gone", "ids_of", "REWRITE_MIN_DEAD", "CHUNK_KEYS", "BITMAP_SPAN"]

#: A key that loses at least this many duplicates, and at least a third of them, is
#: rewritten (deleted whole, the survivors put back) rather than deleted entry by entry.
REWRITE_MIN_DEAD = 8
#: The forgotten ids are marked in a bitmap when their span is at most this many bytes
#: per id; beyond, they are found by binary search.
BITMAP_SPAN = 64
#: Keys read (and held in memory) at once.
CHUNK_KEYS = 1 << 18


class Gone:
    """The forgotten rows of a sweep: ``part`` (for each row, how many of the sweep's
    ``splits`` its key is at or past: which part of the key range it is in) and
    ``rows`` (``uint8``, one ``width``-byte value per row)."""

    __slots__ = ("part", "rows")

    def __init__(self, part: np.ndarray, rows: np.ndarray) -> None:
        self.part, self.rows = part, rows


def ids_of(rows: np.ndarray, id_bytes: int) -> np.ndarray:
    """The big-endian ids in the first ``id_bytes`` of each ``uint8`` row, as int64."""
    wide = np.zeros((rows.shape[0], 8), np.uint8)
    wide[:, 8 - id_bytes:] = rows[:, :id_bytes]
    return wide.view(">u8").reshape(-1).astype(np.int64)


def _marker(mids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function telling which of an array of ids are in ``mids`` (ascending, distinct):
    a bitmap over ``[mids[0], mids[-1]]`` when that span is at most BITMAP_SPAN bytes per
    id, else a binary search of ``mids`` (ids come from a counter and a store that has
    forgotten much has large ones: the bitmap must not grow with them)."""
    lo, hi = int(mids[0]), int(mids[-1])
    if hi - lo < BITMAP_SPAN * (mids.size + 64):
        bits = np.zeros(hi - lo + 1, bool)
        bits[mids - lo] = True

        def in_bitmap(ids: np.ndarray) -> np.ndarray:
            out = np.zeros(ids.size, bool)
            inside = (ids >= lo) & (ids <= hi)
            out[inside] = bits[ids[inside] - lo]
            return out
        return in_bitmap

    def in_list(ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(mids, ids)
        pos[pos == mids.size] = 0
        return mids[pos] == ids
    return in_list


def _walk(txn: lmdb.Transaction, db: Any, start: bytes, end: bytes, limit: int
          ) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """The first ``limit`` keys in ``[start, end)``, the first duplicate of each and how
    many each has: three walks of the cursor, each a loop in C (most keys of a large
    store have one duplicate, and one walk reading all three would be a Python loop)."""
    with txn.cursor(db=db) as cur:
        if not cur.set_range(start):
            return [], [], np.empty(0, np.int64)
        walk = cur.iternext_nodup(keys=True, values=False)
        with txn.cursor(db=db) as last:  # (the range often runs to the table's end)
            if not (last.last() and last.key() < end):
                walk = itertools.takewhile(end.__gt__, walk)
        keys = list(itertools.islice(walk, limit))
        n = len(keys)
        cur.set_range(start)
        firsts = list(itertools.islice(cur.iternext_nodup(keys=False, values=True), n))
        cur.set_range(start)
        count = cur.count
        counts = [count() for _ in itertools.islice(
            cur.iternext_nodup(keys=False, values=False), n)]
    return keys, firsts, np.asarray(counts, np.int64)


def sweep(txn: lmdb.Transaction, db: Any, prefix: bytes, end: bytes, mids: np.ndarray,
          width: int, id_bytes: int, splits: Sequence[bytes] = ()) -> Gone:
    """Delete from ``db`` (dupsort + dupfixed, ``width``-byte values starting with a
    big-endian ``id_bytes``-byte id) every duplicate of the keys in ``[prefix, end)``
    whose id is one of ``mids`` (int64, ascending, distinct, not empty); ``splits``
    (ascending keys) cut the range into parts for :class:`Gone`. The keys are taken
    CHUNK_KEYS at a time (what is held in memory at once)."""
    marked = _marker(mids)
    parts: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    start = prefix
    while True:
        keys, firsts, cnt = _walk(txn, db, start, end, CHUNK_KEYS)
        if keys:
            got = _sweep_keys(txn, db, keys, firsts, cnt, marked, width, id_bytes)
            if got is not None:
                at = np.asarray([bisect.bisect_left(keys, s) for s in splits], np.int64)
                parts.append(np.searchsorted(at, got[0], side="right"))
                rows.append(got[1])
        if len(keys) < CHUNK_KEYS:
            break
        start = keys[-1] + b"\x00"  # (the next key after it: later keys are untouched)
    if not rows:
        return Gone(np.empty(0, np.int64), np.empty((0, width), np.uint8))
    return Gone(np.concatenate(parts), np.concatenate(rows))


def _sweep_keys(txn: lmdb.Transaction, db: Any, keys: list[bytes], firsts: list[bytes],
                cnt: np.ndarray, marked: Callable[[np.ndarray], np.ndarray], width: int,
                id_bytes: int
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`sweep` of ``keys`` (ascending; ``firsts``: their first duplicates, ``cnt``:
    how many each has): (the key number of each forgotten row, the rows), or None."""
    n = len(keys)
    whole: list[np.ndarray] = []  # key numbers all of whose duplicates go
    part: list[tuple[int, np.ndarray, np.ndarray]] = []  # (key number, kept rows, dead rows)
    g_key: list[np.ndarray] = []  # the key number of each forgotten row
    g_rows: list[np.ndarray] = []
    # keys with one duplicate: the walk read it
    one = np.flatnonzero(cnt == 1)
    if one.size:
        vals = np.frombuffer(b"".join(firsts), np.uint8).reshape(n, width)[one]
        gone = marked(ids_of(vals, id_bytes))
        whole.append(one[gone])
        g_key.append(one[gone])
        g_rows.append(vals[gone])
    # the others: their duplicates read with one getmulti per key length
    many = np.flatnonzero(cnt > 1)
    lens = np.fromiter(map(len, map(keys.__getitem__, many.tolist())), np.int64, many.size)
    with txn.cursor(db=db) as cur:
        for size in np.unique(lens).tolist():
            knum = many[lens == size]
            buf = cur.getmulti(list(map(keys.__getitem__, knum.tolist())), dupdata=True,
                               dupfixed_bytes=width, keyfixed=True)
            vals = np.frombuffer(buf, np.uint8).reshape(-1, size + width)[:, size:]
            gone = marked(ids_of(vals, id_bytes))
            if not gone.any():
                continue
            kc = cnt[knum]
            kidx = np.repeat(np.arange(knum.size), kc)  # (the rows come key by key)
            ndead = np.bincount(kidx, weights=gone, minlength=knum.size).astype(np.int64)
            g_key.append(knum[kidx[gone]])
            g_rows.append(vals[gone])
            full = ndead == kc
            whole.append(knum[full])
            some = np.flatnonzero((ndead > 0) & ~full).tolist()
            if some:
                bounds = [0] + np.cumsum(kc).tolist()
                for j in some:
                    a, b = bounds[j], bounds[j + 1]
                    g = gone[a:b]
                    part.append((int(knum[j]), vals[a:b][~g], vals[a:b][g]))
        delete = txn.delete
        if whole:
            for key in map(keys.__getitem__, np.sort(np.concatenate(whole)).tolist()):
                delete(key, db=db)  # (no value: every duplicate)
        part.sort(key=lambda p: p[0])
        for j, kept, lost in part:
            key = keys[j]
            if lost.shape[0] >= REWRITE_MIN_DEAD and 3 * lost.shape[0] >= kept.shape[0]:
                _rewrite(cur, key, kept)
            else:
                for v in _split(lost):
                    delete(key, v, db=db)
    if not g_rows:
        return None
    return np.concatenate(g_key), np.concatenate(g_rows)


def _rewrite(cur: lmdb.Cursor, key: bytes, kept: np.ndarray) -> None:
    """Replace the duplicates of ``key`` by ``kept`` (ascending ``uint8`` rows)."""
    cur.set_key(key)
    cur.delete(dupdata=True)
    # (not append=True: py-lmdb before 2.1 passes MDB_APPEND, not MDB_APPENDDUP, for a
    # dupsort table, and a key put back in the middle of the table then lands out of
    # order: iteration still shows it, but a seek no longer finds it)
    cur.putmulti(zip(itertools.repeat(key), _split(kept)), dupdata=True)


def _split(rows: np.ndarray) -> list[bytes]:
    """One ``bytes`` per row of a ``uint8`` array."""
    raw, w = rows.tobytes(), rows.shape[1]
    return [raw[i:i + w] for i in range(0, len(raw), w)]
