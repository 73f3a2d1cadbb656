"""The values of LMDB's ``pending`` table: a write's log frames and, since format 7, its
new vector rows, until the next flush makes the files durable.

Between flushes (``_engine``: every 256 operations, ``sync()``, ``close()``, a big write,
compaction) neither the log file nor the vector file is synced; a small write's commit
makes its frames and rows durable in LMDB instead. Formats 3-6 put the frames into
``pending`` (key: log segment, byte offset) and each row into ``vrows`` (key:
generation, slot): two B-trees, two paths of pages per commit. Format 7 puts both into
one value of ``pending``, under the frames' key:

``MARK | u32 frames length | u64 first slot | frames | rows`` (little-endian), the rows
those of the write's consecutive new slots ``first slot``... of the current generation,
each ``dim`` float32. A write without new rows stores its frames alone, as formats 3-6
did; :data:`MARK` (``0xffffffff``) cannot start them (a frame starts with its payload
length, at most 64 MiB), so both forms read alike.

An entry stays until the flush that syncs the vector file, also when a later write
syncs the log (a forget: write-ahead of its dead marks), so entries before the state's
``log_sync`` hold rows whose frames the log file already has; the entries from
``log_sync`` on cover the unsynced log bytes ``[log_sync, log_end)`` exactly.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, Iterator

import lmdb

from .errors import CorruptionError

__all__ = ["MARK", "pack", "unpack", "rows_of", "rows_in", "entries"]

#: First four bytes of a value that carries rows.
MARK = b"\xff\xff\xff\xff"
_HEAD = struct.Struct("<4sIQ")
_KEY = struct.Struct(">IQ")  # (as _engine's pending_key)


def pack(frames: bytes, first_slot: int, rows: bytes) -> bytes:
    """The value of a write's ``frames`` and its new ``rows`` (from ``first_slot``)."""
    if not rows:
        return frames
    return b"".join((_HEAD.pack(MARK, len(frames), first_slot), frames, rows))


def unpack(value: bytes) -> tuple[bytes, int, bytes]:
    """(frames, first slot, rows) of a value (rows b"" for frames alone).
    :raises CorruptionError: a value with rows whose header does not fit it."""
    if value[:4] != MARK:
        return value, 0, b""
    if len(value) < _HEAD.size:
        raise CorruptionError("data.mdb: an unflushed write (pending) is cut in its header")
    _mark, n, first = _HEAD.unpack_from(value, 0)
    if _HEAD.size + n > len(value):
        raise CorruptionError(f"data.mdb: an unflushed write (pending) says {n} bytes of "
                              f"log frames but holds {len(value) - _HEAD.size}")
    return value[_HEAD.size:_HEAD.size + n], first, value[_HEAD.size + n:]


def rows_of(value: bytes, row_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(slot, row) of each vector row a value carries.
    :raises CorruptionError: the rows are not whole rows of ``row_bytes``."""
    _frames, first, rows = unpack(value)
    if len(rows) % row_bytes:
        raise CorruptionError(f"data.mdb: an unflushed write (pending) holds {len(rows)} bytes "
                              f"of vector rows, not a whole number of {row_bytes}-byte rows")
    for i in range(len(rows) // row_bytes):
        yield first + i, rows[i * row_bytes:(i + 1) * row_bytes]


def rows_in(values: Iterable[bytes], row_bytes: int) -> tuple[dict[int, bytes], int]:
    """(slot -> row of every entry among ``values`` that decodes; how many did not).

    A damaged entry's rows are left out, not fatal: whoever needs a row checks it against
    its log frame's CRC and otherwise takes the vector file's row when that passes, so
    only a row lost from both is an error (the engine's re-apply after a crash and
    ``recover`` treat a damaged entry alike)."""
    out: dict[int, bytes] = {}
    bad = 0
    for v in values:
        try:
            out.update(rows_of(v, row_bytes))
        except CorruptionError:
            bad += 1
    return out, bad


def entries(txn: lmdb.Transaction, db: Any) -> Iterator[tuple[int, int, bytes]]:
    """(segment, offset, value) of every entry, in key order."""
    with txn.cursor(db=db) as cur:
        for k, v in cur:
            seg, off = _KEY.unpack(k)
            yield seg, off, v
