"""The vector matrix and the per-slot columns: mmap'd files beside the LMDB environment.

One row per memory slot. Slots are append-only between compactions, so a reader's
LMDB snapshot (which says how many slots exist) never points at a row that a later
write overwrote. Forgetting sets the slot's ``dead`` column to the log sequence
number of the forget; a reader at snapshot ``seq`` treats a slot as live when
``dead == 0 or dead > seq``. Compaction writes a new *generation* of both files.

Files (``G`` is the generation, zero-padded)::

    vectors.G.f32   4 KiB header, then capacity x dim float32 rows (little-endian)
    slots.G.bin     4 KiB header, then capacity x 32-byte rows of SLOT_DTYPE
"""

from __future__ import annotations

import binascii
import errno
import mmap
import os
import struct
import threading
import zlib
from typing import Any

import numpy as np

from ._storage import fsync_path
from .errors import CorruptionError, StoreError

HEADER = 4096
VEC_MAGIC = b"MNMSVEC1"
SLOT_MAGIC = b"MNMSSLT1"
_HDR = struct.Struct("<8sIIQ")  # magic, dim (or row bytes), generation, reserved

SLOT_DTYPE = np.dtype([
    ("id", "<i8"),     # memory id
    ("dead", "<i8"),   # 0 = live, else the log seq of the forget/evict
    ("ts", "<i8"),     # event time, microseconds since epoch
    ("ns", "<i4"),     # namespace id
    ("type", "u1"),    # memory type code
    ("flags", "u1"),   # CHECKED / CHECKED32: what checksum of the vector row pad holds
    ("pad", "<u2"),    # the vector row's checksum (CRC-16, or CRC-32 folded to 16 bits)
])
assert SLOT_DTYPE.itemsize == 32

INITIAL_ROWS = 1024

#: ``flags`` bit: the row's ``pad`` holds the CRC-16 (CCITT) of its vector row
#: (formats 2-5; rows written before format 2 have no bit set and are not checked).
CHECKED = 0x80
#: ``flags`` bit: the row's ``pad`` holds the CRC-32 of its vector row folded to 16 bits
#: (:func:`fold`; format 6: ``zlib.crc32`` is ~7x faster than ``binascii.crc_hqx``).
CHECKED32 = 0x40
#: Keys of a logged ``mem``/``update`` op that name its vector row instead of carrying
#: it: the row, and its checksum (``vcrc``: CRC-16, formats 3-5; ``vc32``: CRC-32, 6).
ROW_KEYS = ("vrow", "vcrc", "vc32")


def crc16(vec: bytes | memoryview) -> int:
    """CRC-16/CCITT of a row (initial value 0): the checksum of formats 2-5 (slot ``pad``
    with CHECKED, op ``vcrc``); detects every 1- and 2-bit error and every burst of up
    to 16 bits in a row."""
    return binascii.crc_hqx(vec, 0)


def row_crc(vec: bytes | memoryview) -> int:
    """The checksum a format-6 op keeps of its vector row (``vc32``): ``zlib.crc32`` of the
    little-endian float32 bytes."""
    return zlib.crc32(vec)


def fold(crc32: int) -> int:
    """A CRC-32 folded into a slot's 16-bit ``pad`` (CHECKED32): its high half XOR its low
    half."""
    return (crc32 ^ (crc32 >> 16)) & 0xFFFF


def folds(crc32s: np.ndarray) -> np.ndarray:
    """:func:`fold` of many CRC-32s (any integer array) as uint16."""
    c = np.asarray(crc32s, np.uint32)
    return ((c ^ (c >> np.uint32(16))) & np.uint32(0xFFFF)).astype(np.uint16)


def slot_row(mid: int, ts: int, ns: int, type_code: int, vec: bytes,
             crc: int | None = None) -> tuple[int, ...]:
    """A new live slot row, with the checksum of its vector bytes ``vec`` (``crc``: their
    :func:`row_crc`, when the caller has it already)."""
    return (mid, 0, ts, ns, type_code, CHECKED32, fold(row_crc(vec) if crc is None else crc))


def op_row_fields(slot: int, vec: bytes | memoryview, crc: int | None = None) -> dict[str, int]:
    """The fields naming vector row ``slot`` (holding ``vec``, whose :func:`row_crc` is
    ``crc`` when given) in a logged op (format 6)."""
    return {"vrow": slot, "vc32": row_crc(vec) if crc is None else crc}


def op_row_ok(op: dict[str, Any], vec: bytes | memoryview) -> bool:
    """Whether ``vec`` passes the checksum op ``op`` keeps of its row: ``vc32`` (format 6)
    or ``vcrc`` (a CRC-16, formats 3-5)."""
    if "vc32" in op:
        return row_crc(vec) == op["vc32"]
    return crc16(vec) == op.get("vcrc")


def row_ok(flags: int, pad: int, vec: bytes | memoryview) -> bool:
    """Whether vector bytes ``vec`` pass their slot's checksum (``flags``, ``pad``); a row
    written before checksums (neither bit set) passes."""
    if flags & CHECKED32:
        return fold(zlib.crc32(vec)) == pad
    if flags & CHECKED:
        return binascii.crc_hqx(vec, 0) == pad
    return True


def bad_rows(matrix: np.ndarray, slots: np.ndarray, rows: Any) -> list[int]:
    """The rows among ``rows`` whose vector fails its checksum (unchecked rows pass)."""
    out = []
    flags, pad = slots["flags"], slots["pad"]
    for r in rows:
        r = int(r)
        if not row_ok(int(flags[r]), int(pad[r]), matrix[r].tobytes()):
            out.append(r)
    return out


#: :func:`rows_pass` folds at most this many rows into one CRC.
FOLD_ROWS = 64


def rows_pass(matrix: np.ndarray, slots: np.ndarray, rows: Any) -> bool:
    """Whether every row among ``rows`` passes its checksum (unchecked rows pass), with
    one CRC over a fold of the CRC-16 rows instead of one CRC per row (CRC-32 rows,
    format 6, are checked one by one: ``zlib.crc32`` is fast).

    The CRC-16 (initial value 0, no final XOR) is linear, and appending ``i`` zero
    bytes multiplies a message by ``x^(8i)``: so the XOR of the rows, row ``i`` shifted
    by ``i`` bytes, has the CRC ``XOR_i crc_hqx(i zero bytes, crc(row i))``, computed
    from the stored checksums. Damage confined to one row changes the two sides by
    that row's ``crc(error) * x^(8i)``, which is 0 only when ``crc(error)`` is: it is
    caught whenever the row-by-row check catches it. Damage in several rows is missed
    only when the shifted errors cancel modulo the CRC polynomial (about 1 in 65,536
    for random damage; the shifts keep the same bits flipped at the same offsets of
    two rows from cancelling: every burst of up to 15 bits is still caught). See
    docs/durability.md. ``rows`` are made distinct first.
    """
    distinct = sorted({int(r) for r in rows})
    flags = slots["flags"][distinct] if distinct else np.empty(0, np.uint8)
    pad = slots["pad"]
    for r, f in zip(distinct, flags.tolist()):
        if f & CHECKED32 and fold(zlib.crc32(matrix[r].tobytes())) != int(pad[r]):
            return False
    chk = [r for r, f in zip(distinct, flags.tolist()) if f & CHECKED and not f & CHECKED32]
    for start in range(0, len(chk), FOLD_ROWS):
        part = chk[start:start + FOLD_ROWS]
        k = len(part)
        if k == 1:
            if crc16(matrix[part[0]].tobytes()) != int(pad[part[0]]):
                return False
            continue
        block = np.ascontiguousarray(matrix[part]).view(np.uint8)  # k x width bytes
        width = block.shape[1]
        span = width + k - 1
        # k rows of span bytes, row i holding the bytes of row part[i] at offset k-1-i:
        # rows laid (span - 1) apart in one zeroed buffer
        flat = np.zeros(k * span, np.uint8)
        flat[k - 1:k - 1 + k * (span - 1)].reshape(k, span - 1)[:, :width] = block
        folded = np.bitwise_xor.reduce(flat.reshape(k, span), axis=0)
        want = 0
        for i, r in enumerate(part):  # crc(row i followed by i zero bytes)
            want ^= binascii.crc_hqx(bytes(i), int(pad[r]))
        if crc16(folded.tobytes()) != want:
            return False
    return True


class GenerationGone(CorruptionError):
    """The files of a generation are missing (removed by a compaction, or lost)."""
#: Growth step of the vector and slot files: 1/GROW_DIVISOR of the rows they hold (at
#: least INITIAL_ROWS, at most MAX_GROW_ROWS), so preallocated zero rows stay under
#: ~6% of a large file (doubling left up to 50%, ~18% on average).
GROW_DIVISOR = 16
MAX_GROW_ROWS = 1 << 17


def vector_file(root: str, gen: int) -> str:
    return os.path.join(root, f"vectors.{gen:06d}.f32")


def slot_file(root: str, gen: int) -> str:
    return os.path.join(root, f"slots.{gen:06d}.bin")


def _grown(cap: int, need: int) -> int:
    """Rows to grow a file of ``cap`` rows to so that it holds ``need`` (a whole number of
    INITIAL_ROWS chunks)."""
    step = max(INITIAL_ROWS, min(cap // GROW_DIVISOR, MAX_GROW_ROWS))
    new = max(need, cap + step, INITIAL_ROWS)
    return -(-new // INITIAL_ROWS) * INITIAL_ROWS


class _MappedFile:
    """A header + fixed-size rows file, mapped whole; remapped when it grows."""

    def __init__(self, path: str, magic: bytes, width: int, gen: int, row_bytes: int,
                 dtype: Any, shape_tail: tuple[int, ...], readonly: bool) -> None:
        self.path, self.magic, self.width, self.gen = path, magic, width, gen
        self.row_bytes, self.dtype, self.tail, self.readonly = row_bytes, dtype, shape_tail, readonly
        try:
            self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError as exc:
            raise GenerationGone(f"missing store file {path}") from exc
        self.mm: mmap.mmap | None = None
        self.array: np.ndarray = np.empty((0,) + shape_tail, dtype)
        self.capacity = 0
        try:
            self._check_header()
            self.remap()
        except BaseException:
            os.close(self.fd)
            raise

    @classmethod
    def create(cls, path: str, magic: bytes, width: int, gen: int, rows: int, row_bytes: int) -> None:
        """Write a new file (header + zeroed rows) and make it durable; atomic via rename."""
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            try:
                os.write(fd, _HDR.pack(magic, width, gen, 0).ljust(HEADER, b"\0"))
                allocate(fd, HEADER + rows * row_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.replace(tmp, path)
        fsync_path(os.path.dirname(path))

    def _check_header(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < HEADER:
            raise CorruptionError(f"{self.path}: {size} bytes, shorter than its {HEADER}-byte header "
                                  "(the file was truncated)")
        head = os.pread(self.fd, _HDR.size, 0)
        magic, width, gen, _ = _HDR.unpack(head)
        if magic != self.magic:
            raise CorruptionError(f"{self.path}: bad magic {magic!r}, expected {self.magic!r}")
        if width != self.width:
            raise CorruptionError(f"{self.path}: row width {width}, expected {self.width}")
        if gen != self.gen:
            raise CorruptionError(f"{self.path}: generation {gen}, expected {self.gen}")

    def remap(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < HEADER:
            raise CorruptionError(f"{self.path}: {size} bytes, shorter than its {HEADER}-byte "
                                  "header (the file was truncated)")
        cap = max(0, (size - HEADER) // self.row_bytes)
        if cap == self.capacity and self.mm is not None:
            return
        access = mmap.ACCESS_READ if self.readonly else mmap.ACCESS_WRITE
        mm = mmap.mmap(self.fd, HEADER + cap * self.row_bytes, access=access)
        arr = np.frombuffer(mm, dtype=self.dtype, count=cap * (self.row_bytes // self.dtype.itemsize),
                            offset=HEADER).reshape((cap,) + self.tail)
        # Old maps stay alive while views of them exist (readers mid-query); the GC
        # unmaps them when the last view goes.
        self.mm, self.array, self.capacity = mm, arr, cap

    def grow(self, need: int) -> None:
        """Extend the file to hold at least ``need`` rows (blocks allocated, not sparse)."""
        if need <= self.capacity:
            return
        new = _grown(self.capacity, need)
        old_size = HEADER + self.capacity * self.row_bytes
        try:
            allocate(self.fd, HEADER + new * self.row_bytes)
        except OSError:
            # e.g. ENOSPC: leave the file as it was; no reader maps rows past n_slots
            try:
                if os.fstat(self.fd).st_size > old_size:
                    os.ftruncate(self.fd, old_size)
            except OSError:
                pass
            raise
        self.remap()

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        self.array = np.empty((0,) + self.tail, self.dtype)
        self.mm = None  # unmapped by GC once no view remains
        try:
            os.close(self.fd)
        except OSError:
            pass


class VectorFiles:
    """The matrix and slot columns of the store's current generation, as numpy views."""

    def __init__(self, root: str, dim: int, readonly: bool) -> None:
        self.root, self.dim, self.readonly = root, dim, readonly
        self.gen = -1  # the generation writers use: the newest ensure()d or viewed
        # Each generation keeps its own mapping: a thread reading an older snapshot
        # never swaps the files under a writer thread of the same process.
        self._gens: dict[int, tuple[_MappedFile, _MappedFile]] = {}
        self._lock = threading.RLock()

    @staticmethod
    def create(root: str, dim: int, gen: int, rows: int = INITIAL_ROWS) -> None:
        rows = max(rows, 1)
        _MappedFile.create(vector_file(root, gen), VEC_MAGIC, dim, gen, rows, dim * 4)
        _MappedFile.create(slot_file(root, gen), SLOT_MAGIC, SLOT_DTYPE.itemsize, gen, rows,
                           SLOT_DTYPE.itemsize)

    def _files(self, gen: int) -> tuple[_MappedFile, _MappedFile]:
        """The mapped files of generation ``gen`` (opened on first use; lock held)."""
        pair = self._gens.get(gen)
        if pair is not None:
            return pair
        vec = _MappedFile(vector_file(self.root, gen), VEC_MAGIC, self.dim, gen, self.dim * 4,
                          np.dtype("<f4"), (self.dim,), self.readonly)
        try:
            slots = _MappedFile(slot_file(self.root, gen), SLOT_MAGIC, SLOT_DTYPE.itemsize, gen,
                                SLOT_DTYPE.itemsize, SLOT_DTYPE, (), self.readonly)
        except BaseException:
            vec.close()
            raise
        self._gens[gen] = pair = (vec, slots)
        if gen > self.gen:  # (a newer generation: the one writers and syncs use next)
            self.gen = gen
        # Unmap every other generation: arrays handed out keep their own mapping alive
        # (a snapshot reads on), so a superseded generation's removed files free their
        # disk space once no snapshot of this process reads them; a later snapshot of it
        # maps it again (or finds it gone: GenerationGone, retried on a newer one).
        for g in [g for g in self._gens if g not in (gen, self.gen)]:
            for f in self._gens.pop(g):
                f.close()
        return pair

    def view(self, gen: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[0, n)`` of generation ``gen``: (matrix n x dim, slot columns n)."""
        with self._lock:
            vec, slots = self._files(gen)
            if n > vec.capacity or n > slots.capacity:
                # another process grew the files since we mapped them
                vec.remap()
                slots.remap()
                if (n > vec.capacity or n > slots.capacity) and self._replaced(gen):
                    vec, slots = self._files(gen)
                if n > vec.capacity or n > slots.capacity:
                    raise CorruptionError(
                        f"store says {n} slots but {vec.path} holds {vec.capacity} "
                        f"and {slots.path} holds {slots.capacity}")
            return vec.array[:n], slots.array[:n]

    # -- writer side (called under the LMDB write lock) -------------------------

    def ensure(self, gen: int, need: int, have: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Map generation ``gen`` with room for ``need`` rows; returns writable full arrays.

        ``have`` is the committed row count: files holding fewer rows were truncated
        outside mnemos-kv, and growing them would silently zero committed rows.
        """
        if self.readonly:
            raise StoreError("vector files are open read-only")
        with self._lock:
            vec, slots = self._files(gen)
            # (one stat per write: rows must reach the file the name holds, not a mapping
            # of a failed compaction's removed files made again under the same name)
            if self._replaced(gen):
                vec, slots = self._files(gen)
            self.gen = gen
            vec.remap()
            slots.remap()
            for f in (vec, slots):
                if f.capacity < have:
                    raise CorruptionError(
                        f"{f.path}: holds {f.capacity} rows but the store committed {have} "
                        "(the file was truncated)")
            vec.grow(need)
            slots.grow(need)
            return vec.array, slots.array

    def _replaced(self, gen: int) -> bool:
        """Whether a file of mapped generation ``gen`` is no longer the one its name
        holds (a failed compaction's files, made again by a retry or by another
        process's compaction); if so the mapping is discarded (lock held). A removed
        file is not replaced: its mapping still holds that generation's rows."""
        for f in self._gens.get(gen, ()):
            try:
                named = os.stat(f.path)
            except FileNotFoundError:
                continue
            mapped = os.fstat(f.fd)
            if (named.st_ino, named.st_dev) != (mapped.st_ino, mapped.st_dev):
                self.discard(gen)
                return True
        return False

    def discard(self, gen: int) -> None:
        """Close and forget this process's mapping of generation ``gen`` (a compaction's
        new generation that did not commit: its files are removed, and a retry makes
        new ones under the same name, which a cached mapping would not see)."""
        with self._lock:
            for f in self._gens.pop(gen, ()):
                f.close()
            if self.gen == gen:
                self.gen = max(self._gens, default=-1)

    def sync(self, gen: int | None = None) -> None:
        """fdatasync both files of generation ``gen`` (default: the writers') with their
        dirty mmap pages."""
        with self._lock:
            pair = self._gens.get(self.gen if gen is None else gen)
        if pair is not None:
            pair[0].sync()
            pair[1].sync()

    def file_sizes(self) -> dict[str, int]:
        out = {}
        with self._lock:
            pair = self._gens.get(self.gen)
        for f in pair or ():
            out[os.path.basename(f.path)] = os.fstat(f.fd).st_size
        return out

    def close(self) -> None:
        with self._lock:
            for pair in self._gens.values():
                for f in pair:
                    f.close()
            self._gens.clear()
            self.gen = -1


def allocate(fd: int, size: int) -> None:
    """Grow the file to ``size`` bytes with its blocks allocated.

    A sparse file would be allocated later, by page faults of writes through the
    mmap; on a full disk those kill the process with SIGBUS. Allocating up front turns
    that into an ``OSError(ENOSPC)`` here, before anything is written.
    """
    if os.fstat(fd).st_size >= size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)  # the filesystem cannot preallocate

