"""The replay log: an append-only file of framed, checksummed mutation records.

Every mutating operation is one frame::

    u32 payload length | u32 CRC-32 of (seq bytes + payload) | u64 seq | payload (CBOR op)

all little-endian, after a 32-byte file header. The writer appends the frames of a
transaction and makes them durable *before* the LMDB commit that records the new
``log_end``, either by fdatasync'ing the log before the commit (write-ahead) or by
putting the frames into LMDB's ``pending`` table in the same transaction (format 3:
the commit's own sync makes them durable and the log file is synced later, at a flush;
see ``_engine`` and docs/durability.md). So a committed frame is always durable in the
log or in ``pending``. A crash before the commit leaves frames beyond ``log_end``: the
next writer drops them (and undoes their side effects on the slot columns) before it
writes anything.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Iterator

from .errors import CorruptionError, LogCorruptionError

LOG_MAGIC = b"MNMSLOG1"
LOG_VERSION = 1
_FILE_HDR = struct.Struct("<8sIIQQ")  # magic, version, segment, base_seq, reserved
FILE_HEADER = _FILE_HDR.size  # 32
_FRAME = struct.Struct("<IIQ")
FRAME_HEADER = _FRAME.size  # 16
_SEQ = struct.Struct("<Q")
MAX_FRAME = 64 << 20


def log_file(root: str, segment: int) -> str:
    return os.path.join(root, f"log.{segment:06d}.mlog")


def encode_frame(seq: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))
    return _FRAME.pack(len(payload), crc, seq) + payload


class _Partial(Exception):
    """Internal: the chunk ends inside a frame (more bytes are needed)."""

    def __init__(self, off: int, need: int) -> None:
        self.off, self.need = off, need


def iter_frames(data: bytes | memoryview, start: int, end: int, *, path: str = "",
                first_index: int = 0, last_seq: int | None = None, base: int = 0,
                partial_ok: bool = False) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, seq, payload) for frames in ``data[start:end]``.

    Raises LogCorruptionError naming the frame index and byte offset of the first
    torn or corrupted frame, after yielding every good frame before it. ``base`` is
    added to offsets in messages (the chunk's position in its file); ``last_seq`` is
    the seq of the frame before the chunk. With ``partial_ok`` a frame cut by the
    chunk's end raises the internal ``_Partial`` instead (the caller reads on).
    """
    off, idx, last = start, first_index, last_seq
    while off < end:
        if partial_ok and end - off < FRAME_HEADER:
            raise _Partial(off, FRAME_HEADER)
        if end - off >= FRAME_HEADER and partial_ok:
            length = _FRAME.unpack_from(data, off)[0]
            if length <= MAX_FRAME and off + FRAME_HEADER + length > end:
                raise _Partial(off, FRAME_HEADER + length)
        if end - off < FRAME_HEADER:
            raise LogCorruptionError(
                f"{path or 'log'}: truncated frame header at byte {base + off} (frame {idx}): "
                f"{end - off} of {FRAME_HEADER} bytes", path=path, offset=base + off, frame=idx,
                good_seq=last)
        length, crc, seq = _FRAME.unpack_from(data, off)
        if length > MAX_FRAME or off + FRAME_HEADER + length > end:
            raise LogCorruptionError(
                f"{path or 'log'}: truncated or oversized frame at byte {base + off} (frame {idx}): "
                f"claims {length} payload bytes, {end - off - FRAME_HEADER} remain",
                path=path, offset=base + off, frame=idx, good_seq=last)
        payload = bytes(data[off + FRAME_HEADER: off + FRAME_HEADER + length])
        if zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq))) != crc:
            raise LogCorruptionError(
                f"{path or 'log'}: checksum mismatch in frame {idx} at byte {base + off} (seq {seq})",
                path=path, offset=base + off, frame=idx, good_seq=last)
        if last is not None and seq != last + 1:
            raise LogCorruptionError(
                f"{path or 'log'}: sequence jumps from {last} to {seq} at byte {base + off} "
                f"(frame {idx})", path=path, offset=base + off, frame=idx, good_seq=last)
        yield off, seq, payload
        last = seq
        off += FRAME_HEADER + length
        idx += 1


CHUNK = 8 << 20


def iter_file_frames(fd: int, start: int, end: int, *, path: str = ""
                     ) -> Iterator[tuple[int, int, bytes]]:
    """Frames of the file ``fd`` in [start, end), read in chunks of about 8 MiB.

    The same checks and messages as :func:`iter_frames` (offsets are file offsets),
    in bounded memory however long the log is.
    """
    pos, idx, last = start, 0, None
    want = CHUNK
    while pos < end:
        ask = min(want, end - pos)
        data = os.pread(fd, ask, pos)
        final = len(data) < ask or pos + len(data) >= end  # short read: the file ends here
        used = 0
        try:
            for off, seq, payload in iter_frames(data, 0, len(data), path=path, first_index=idx,
                                                 last_seq=last, base=pos,
                                                 partial_ok=not final):
                yield pos + off, seq, payload
                idx += 1
                last = seq
                used = off + FRAME_HEADER + len(payload)
        except _Partial as part:
            used = part.off
            want = max(CHUNK, part.need)  # a frame larger than a chunk: read it whole
        if not data:
            return
        if used == 0 and final:
            return
        pos += used


class LogGone(CorruptionError):
    """A log segment file is missing (superseded by a compaction, or lost)."""


class LogFile:
    """One segment of the replay log, opened for appending (writer) or reading."""

    def __init__(self, root: str, segment: int, readonly: bool) -> None:
        self.path = log_file(root, segment)
        self.segment = segment
        self.readonly = readonly
        try:
            self.fd = os.open(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError as exc:
            raise LogGone(f"missing replay log {self.path}") from exc
        head = os.pread(self.fd, FILE_HEADER, 0)
        if len(head) < FILE_HEADER:
            raise CorruptionError(f"{self.path}: shorter than its {FILE_HEADER}-byte header")
        magic, version, seg, base_seq, _ = _FILE_HDR.unpack(head)
        if magic != LOG_MAGIC or seg != segment:
            raise CorruptionError(f"{self.path}: not a replay log of segment {segment}")
        if version > LOG_VERSION:
            raise CorruptionError(f"{self.path}: log version {version} is newer than {LOG_VERSION}")
        self.base_seq = base_seq

    @staticmethod
    def create(root: str, segment: int, base_seq: int) -> None:
        path = log_file(root, segment)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, _FILE_HDR.pack(LOG_MAGIC, LOG_VERSION, segment, base_seq, 0))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def append(self, at: int, frames: bytes, durable: bool = True) -> int:
        """Write ``frames`` at offset ``at`` (the committed end) and return the new end."""
        n = os.pwrite(self.fd, frames, at)
        if n != len(frames):
            raise OSError(f"short write to {self.path}: {n} of {len(frames)} bytes")
        if durable:
            os.fdatasync(self.fd)
        return at + n

    def truncate(self, end: int) -> None:
        os.ftruncate(self.fd, end)
        os.fdatasync(self.fd)

    def read(self, start: int, end: int) -> bytes:
        out = bytearray()
        while start + len(out) < end:
            chunk = os.pread(self.fd, min(end - start - len(out), 1 << 24), start + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def frames(self, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
        """Frames in [start, end), verified, read in bounded chunks; raises
        LogCorruptionError at the first bad one."""
        yield from iter_file_frames(self.fd, start, end, path=self.path)

    def tail_frames(self, start: int) -> list[tuple[int, int, bytes]]:
        """The intact frames after ``start`` (an uncommitted tail), stopping at a torn one."""
        out = []
        try:
            for item in self.frames(start, self.size()):
                out.append(item)
        except LogCorruptionError:
            pass
        return out

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
