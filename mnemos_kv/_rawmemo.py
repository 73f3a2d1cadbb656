"""Decoded values kept by the stored bytes they were decoded from (the read path's memo).

An ``ask`` decodes the same stored values again and again: the postings of the query
terms, the records of the answers. :class:`RawMemo` keeps a decoding keyed on the very
bytes the reader's own transaction returned (plus whatever else the decoding depends
on), so a hit is, by construction, what decoding those bytes again would give: a reader
in an older snapshot, an update, a forget, another process's write or a compaction all
change the bytes a reader gets, never what a given byte string decodes to. Nothing is
keyed on ids, slots, sequence numbers or transaction ids.

The values are shared between readers, so they must not be changed: arrays are kept
read-only, and a record is copied on the way out (:meth:`_records.Record.fresh`).
The memo is bounded (``max_bytes`` of accounted size; the oldest entries leave first)
and does not keep a value bigger than ``max_item`` bytes.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Generic, Hashable, TypeVar

T = TypeVar("T")

#: Switch every memo off (decode each time): a test hook, and an escape hatch.
ENABLED = True


def owned(buf: object) -> bytes | None:
    """The bytes of ``buf`` as a memo key when the reader owns them (``bytes``, or a
    read-only view of a whole ``bytes``: what py-lmdb returns with ``buffers=False``),
    else None (a view into the map is neither stable nor hashable: not kept). A view is
    keyed by the ``bytes`` it shows (comparing two views goes element by element,
    ~100x slower than comparing bytes)."""
    if type(buf) is bytes:
        return buf
    if type(buf) is memoryview and buf.readonly and type(buf.obj) is bytes \
            and buf.c_contiguous and buf.nbytes == len(buf.obj):
        return buf.obj
    return None


class RawMemo(Generic[T]):
    """A bounded map from (stored bytes, decoding parameters) to the decoded value."""

    def __init__(self, max_bytes: int, max_item: int) -> None:
        self.max_bytes = max_bytes
        self.max_item = max_item
        self._items: dict[Hashable, tuple[T, int]] = {}
        self._size = 0
        self._lock = threading.Lock()
        _ALL.add(self)

    def get(self, key: Hashable) -> T | None:
        """The value kept for ``key`` (None: none)."""
        if not ENABLED:
            return None
        got = self._items.get(key)  # (a dict read is atomic: no lock)
        return None if got is None else got[0]

    def put(self, key: Hashable, value: T, size: int) -> None:
        """Keep ``value`` for ``key``, accounted as ``size`` bytes (the oldest entries
        leave while the memo would exceed ``max_bytes``)."""
        if not ENABLED or size > self.max_item:
            return
        with self._lock:
            if key in self._items:
                return
            items = self._items
            while items and self._size + size > self.max_bytes:
                self._size -= items.pop(next(iter(items)))[1]
            items[key] = (value, size)
            self._size += size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """The accounted bytes kept."""
        return self._size


_ALL: "weakref.WeakSet[RawMemo[Any]]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child starts with empty memos and fresh locks (a parent's thread may
    have held a lock, mid-``put``, at the fork)."""
    for memo in list(_ALL):
        memo._lock = threading.Lock()
        memo._items = {}
        memo._size = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
