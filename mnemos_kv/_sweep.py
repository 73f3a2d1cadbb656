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

import itertools
from typing import Any

import lmdb
import numpy as np

__all__ = ["sweep", "Gone", "REWRITE_MIN_DEAD"]

#: A key that loses at least this many duplicates, and at least a third of them, is
#: rewritten (deleted whole, the survivors put back) rather than deleted entry by entry.
REWRITE_MIN_DEAD = 8


class Gone:
    """The forgotten rows of a sweep: ``first`` (their key's first term byte, after the
    ``prefix_len``-byte prefix; -1 for a key with no byte there), ``rows`` (uint8, one
    ``width``-byte value per row)."""

    __slots__ = ("first", "rows")

    def __init__(self, first: np.ndarray, rows: np.ndarray) -> None:
        self.first, self.rows = first, rows


def _ids(rows: np.ndarray, id_bytes: int) -> np.ndarray:
    """The big-endian ids in the first ``id_bytes`` of each ``uint8`` row, as int64."""
    wide = np.zeros((rows.shape[0], 8), np.uint8)
    wide[:, 8 - id_bytes:] = rows[:, :id_bytes]
    return wide.view(">u8").reshape(-1).astype(np.int64)


def _dead(vals: np.ndarray, id_bytes: int, dead: np.ndarray, limit: int) -> np.ndarray:
    """Which rows' ids are marked in ``dead`` (ids at or past ``limit`` are not)."""
    ids = _ids(vals, id_bytes)
    gone = np.zeros(ids.size, bool)
    inside = ids < limit
    gone[inside] = dead[ids[inside]]
    return gone


def sweep(txn: lmdb.Transaction, db: Any, prefix: bytes, end: bytes, dead: np.ndarray,
          width: int, id_bytes: int) -> Gone:
    """Delete from ``db`` (dupsort + dupfixed, ``width``-byte values starting with a
    big-endian ``id_bytes``-byte id) every duplicate of the keys in ``[prefix, end)``
    whose id ``i`` has ``dead[i]`` (ids past ``dead``'s end are kept)."""
    limit = dead.size
    with txn.cursor(db=db) as cur:
        keys: list[bytes] = []
        if cur.set_range(prefix):
            walk = cur.iternext_nodup(keys=True, values=False)
            with txn.cursor(db=db) as last:  # (the range often runs to the table's end)
                keys = list(walk) if last.last() and last.key() < end else \
                    list(itertools.takewhile(end.__gt__, walk))
        n = len(keys)
        if not n:
            return Gone(np.empty(0, np.int64), np.empty((0, width), np.uint8))
        lens = np.fromiter(map(len, keys), np.int64, n)
        whole: list[np.ndarray] = []  # key numbers all of whose duplicates go
        part: list[tuple[int, np.ndarray, np.ndarray]] = []  # (key number, kept rows, dead rows)
        g_first: list[np.ndarray] = []
        g_rows: list[np.ndarray] = []
        plen = len(prefix)
        for size in np.unique(lens).tolist():
            knum = np.flatnonzero(lens == size)
            group = list(map(keys.__getitem__, knum.tolist()))
            buf = cur.getmulti(group, dupdata=True, dupfixed_bytes=width, keyfixed=True)
            rows = np.frombuffer(buf, np.uint8).reshape(-1, size + width)
            vals = rows[:, size:]
            gone = _dead(vals, id_bytes, dead, limit)
            if not gone.any():
                continue
            # the row's key: a new key starts where the key bytes change
            kb = rows[:, :size]
            start = np.ones(gone.size, bool)
            if gone.size > 1:
                start[1:] = np.any(kb[1:] != kb[:-1], axis=1)
            kidx = np.cumsum(start) - 1  # (number of the key within the group)
            count = np.bincount(kidx, minlength=knum.size)
            ndead = np.bincount(kidx, weights=gone, minlength=knum.size).astype(np.int64)
            g_first.append(kb[gone, plen].astype(np.int64) if size > plen
                           else np.full(int(gone.sum()), -1, np.int64))
            g_rows.append(vals[gone])
            full = ndead == count
            whole.append(knum[full])
            some = np.flatnonzero((ndead > 0) & ~full).tolist()
            if some:
                bounds = np.flatnonzero(start).tolist() + [gone.size]
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
        return Gone(np.empty(0, np.int64), np.empty((0, width), np.uint8))
    return Gone(np.concatenate(g_first), np.concatenate(g_rows))


def _rewrite(cur: lmdb.Cursor, key: bytes, kept: np.ndarray) -> None:
    """Replace the duplicates of ``key`` by ``kept`` (ascending ``uint8`` rows)."""
    cur.set_key(key)
    cur.delete(dupdata=True)
    # (the survivors ascend: each is put after the last, with no search)
    cur.putmulti(zip(itertools.repeat(key), _split(kept)), dupdata=True, append=True)


def _split(rows: np.ndarray) -> list[bytes]:
    """One ``bytes`` per row of a ``uint8`` array."""
    raw, w = rows.tobytes(), rows.shape[1]
    return [raw[i:i + w] for i in range(0, len(raw), w)]
