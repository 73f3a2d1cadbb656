"""Base snapshots and checkpoints: how the replay log stays bounded.

A *checkpoint* (taken by ``compact()``) writes the whole logical state at sequence
number ``S`` as a *base snapshot* file ``base.S.msnap`` and starts a new log segment
whose frames begin at ``S + 1``; older segments and snapshots are then removed. So the
log holds only the operations since the last compaction, and an export is the base
snapshot plus the retained frames.

A base snapshot is a stream of ordinary log frames (local sequence numbers 1..m)
holding synthetic ops that rebuild the state: ``ns`` ops (by namespace id), then the
capacity limits and evicted counters (``capacity``/``evicted`` ops, only when there
are any), ``mem`` ops (by memory id, ``"pin": True`` when pinned), ``link`` ops (edge
key order), and one final ``base`` op carrying the counters (``seq``, ``next_id``,
``next_ns``). The bytes depend only on the logical state and the slot layout, so two
stores with the same history write the same snapshot.

Vectors are stored once (format 3): a snapshot's ``mem`` op names its row in the
vector file of the generation in the header (``"vrow"``, with the row's CRC-16 as
``"vcrc"``) instead of carrying the vector (``"vec"``, formats 1-2: header generation
0). That generation is the store's current one for as long as the snapshot is: only a
compaction makes a new generation, and it writes a new snapshot in the same commit;
its rows are never rewritten. Export puts the vectors back in (:func:`inline_vector`),
so replay files are self-contained and unchanged.

The frames are stored in zlib-compressed blocks (format 4, magic ``MNMSBAS2``): each
block is ``u32 raw length | u32 compressed length | u32 CRC-32 of the compressed
bytes``, then the compressed bytes of whole frames (about ``BLOCK_RAW`` bytes of
them). The frames inside keep their own CRCs and sequence numbers; a damaged block
ends the readable part of the snapshot like a damaged frame. Snapshots of formats 1-3
(magic ``MNMSBAS1``, frames stored plainly) are read as they are.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from typing import Any, Iterable, Iterator

import lmdb
import numpy as np

from . import _capacity, _lexstage
from . import _records as R
from . import _storage as S
from ._log import (FILE_HEADER, MAX_FRAME, LogFile, LogGone, encode_frame, iter_file_frames,
                   iter_frames, log_file)
from ._vectors import ROW_KEYS, op_row_fields, op_row_ok
from .errors import CorruptionError, LogCorruptionError

log = logging.getLogger("mnemos_kv")

SNAP_MAGIC = b"MNMSBAS1"    # formats 1-3: the frames stored plainly
SNAP_MAGIC_Z = b"MNMSBAS2"  # format 4: the frames in zlib-compressed blocks
SNAP_MAGICS = (SNAP_MAGIC, SNAP_MAGIC_Z)
_SNAP_HDR = struct.Struct("<8sQQ")  # magic, base seq, generation of "vrow" (0: inline "vec")
_BLOCK = struct.Struct("<III")  # raw length, compressed length, CRC-32 of the compressed bytes
#: A block holds whole frames: it is closed once it holds at least this many bytes.
BLOCK_RAW = 1 << 20
#: The largest raw block a reader accepts (one frame of MAX_FRAME after BLOCK_RAW - 1).
MAX_BLOCK_RAW = BLOCK_RAW + MAX_FRAME
#: zlib level: 1 is ~3x faster than 6 and within a few percent of its size on our ops.
ZLEVEL = 1


def snapshot_file(root: str, seq: int) -> str:
    return os.path.join(root, f"base.{seq:016d}.msnap")


def base_ops(engine: Any, txn: lmdb.Transaction, st: Any, matrix: np.ndarray,
             ns_ids: set[int] | None = None, by_row: bool = False) -> Iterator[dict[str, Any]]:
    """Synthetic ops that rebuild the state of ``txn`` (optionally only some namespaces);
    ``by_row``: ``mem`` ops name their vector row (``vrow``, ``vcrc``) instead of
    carrying it."""
    db = engine.env.db
    names: dict[int, str] = {}
    for name, info in engine.namespaces(txn).items():
        names[int(info["id"])] = name
    for nid in sorted(names):
        if nid != 0 and (ns_ids is None or nid in ns_ids):
            yield {"op": "ns", "name": names[nid], "id": nid}
    yield from _capacity.base_ops(engine, txn, ns_ids)
    pinned = set(_capacity.pinned_ids(engine, txn, None).tolist())
    _, slots = engine.vectors.view(st.gen, st.n_slots)
    with txn.cursor(db=db("records")) as cur:
        for _k, v in cur:
            rec = R.Record.from_bytes(v)
            if ns_ids is not None and rec.ns not in ns_ids:
                continue
            engine.check_row(rec, matrix, slots, st.gen)  # never bake a damaged row into a base
            vec = np.ascontiguousarray(matrix[rec.slot], dtype="<f4").tobytes()
            op = {"op": "mem", "id": rec.id, "ns": rec.ns, "text": rec.text, "meta": rec.metadata,
                  "type": R.TYPE_CODES[rec.type], "ts": rec.ts}
            if by_row:
                op.update(op_row_fields(rec.slot, vec))
            else:
                op["vec"] = vec
            if rec.key is not None:
                op["key"] = rec.key
            if rec.id in pinned:
                op["pin"] = True
            if rec.upd is not None:
                op["upd"] = rec.upd
            yield op
    with txn.cursor(db=db("edges_out")) as cur:
        for k, v in cur:
            src = S.from_u64(k[:8])
            if ns_ids is not None:
                raw = txn.get(k[:8], db=db("records"))
                if raw is None or R.Record.from_bytes(raw).ns not in ns_ids:
                    continue
            yield {"op": "link", "src": src, "dst": S.from_u64(k[8:16]),
                   "rel": k[16:].decode(), "w": S.from_f64(v)}
    yield {"op": "base", "seq": st.seq, "next_id": st.next_id, "next_ns": st.next_ns}


def frames_of(ops: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Frame ops with local sequence numbers 1, 2, ..."""
    for i, op in enumerate(ops, 1):
        yield encode_frame(i, R.encode(op))


def write_snapshot(engine: Any, txn: lmdb.Transaction, st: Any, matrix: np.ndarray) -> str:
    """Write ``base.<seq>.msnap`` for the state of ``txn``; durable and atomic (tmp + rename)."""
    path = snapshot_file(engine.path, st.seq)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        _write_all(fd, _SNAP_HDR.pack(SNAP_MAGIC_Z, st.seq, st.gen))
        buf = bytearray()
        for frame in frames_of(base_ops(engine, txn, st, matrix, by_row=True)):
            buf += frame
            if len(buf) >= BLOCK_RAW:
                _write_all(fd, compress_block(buf))
                buf.clear()
        if buf:
            _write_all(fd, compress_block(buf))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def compress_block(raw: bytes | bytearray) -> bytes:
    """One block of a compressed snapshot: header + zlib bytes of ``raw`` (whole frames)."""
    comp = zlib.compress(bytes(raw), ZLEVEL)
    return _BLOCK.pack(len(raw), len(comp), zlib.crc32(comp)) + comp


def iter_snapshot_fd(fd: int, path: str) -> Iterator[tuple[int, int, bytes]]:
    """Verified (offset, local seq, payload) frames of the open snapshot file ``fd``, of
    either layout (the offset of a compressed snapshot's frame is its block's).

    :raises CorruptionError: a bad header; :class:`LogCorruptionError` at the first
        damaged frame or block, after every good frame before it.
    """
    head = os.pread(fd, _SNAP_HDR.size, 0)
    if len(head) < _SNAP_HDR.size:
        raise CorruptionError(f"{path}: shorter than its header")
    magic, _seq, _ = _SNAP_HDR.unpack(head)
    if magic not in SNAP_MAGICS:
        raise CorruptionError(f"{path}: not a base snapshot (magic {magic!r})")
    size = os.fstat(fd).st_size
    if magic == SNAP_MAGIC:
        yield from iter_file_frames(fd, _SNAP_HDR.size, size, path=path)
        return
    pos, idx, last = _SNAP_HDR.size, 0, None

    def bad(what: str) -> LogCorruptionError:
        return LogCorruptionError(f"{path}: {what} at byte {pos} (frame {idx})", path=path,
                                  offset=pos, frame=idx, good_seq=last)

    while pos < size:
        hb = os.pread(fd, _BLOCK.size, pos)
        if len(hb) < _BLOCK.size:
            raise bad("truncated block header")
        raw_len, comp_len, crc = _BLOCK.unpack(hb)
        if raw_len > MAX_BLOCK_RAW or comp_len > size - pos - _BLOCK.size:
            raise bad(f"truncated or oversized block ({comp_len} bytes for {raw_len})")
        comp = os.pread(fd, comp_len, pos + _BLOCK.size)
        if len(comp) != comp_len or zlib.crc32(comp) != crc:
            raise bad("checksum mismatch in a compressed block")
        try:
            dec = zlib.decompressobj()
            raw = dec.decompress(comp, raw_len)
            whole = len(raw) == raw_len and dec.eof and not dec.unused_data
        except zlib.error:
            whole = False
        if not whole:
            raise bad(f"a compressed block does not hold its {raw_len} bytes")
        try:
            for _off, seq, payload in iter_frames(raw, 0, raw_len, path=path, first_index=idx,
                                                  last_seq=last):
                yield pos, seq, payload
                idx += 1
                last = seq
        except LogCorruptionError as exc:
            raise bad(str(exc).split(": ", 1)[-1]) from None
        pos += _BLOCK.size + comp_len


def snapshot_frames(path: str) -> Iterator[tuple[int, int, bytes]]:
    """Verified (offset, local seq, payload) frames of a snapshot file, read in chunks."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise LogGone(f"missing base snapshot {path}") from exc
    try:
        yield from iter_snapshot_fd(fd, path)
    finally:
        os.close(fd)


def snapshot_gen(path: str) -> int:
    """The generation whose vector rows the snapshot's ``mem`` ops name (0: none, the
    vectors are inline)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNAP_HDR.size)
    except FileNotFoundError as exc:
        raise LogGone(f"missing base snapshot {path}") from exc
    if len(head) < _SNAP_HDR.size or head[:8] not in SNAP_MAGICS:
        raise CorruptionError(f"{path}: not a base snapshot")
    return int(_SNAP_HDR.unpack(head)[2])


def inline_vector(op: dict[str, Any], matrix: np.ndarray, where: str) -> dict[str, Any]:
    """``op`` with its ``vrow`` reference replaced by the row's bytes from ``matrix`` (the
    snapshot's generation), CRC-checked. :raises CorruptionError: the row is damaged."""
    if "vrow" not in op:
        return op
    out = {k: v for k, v in op.items() if k not in ROW_KEYS}
    row = op["vrow"]
    if not isinstance(row, int) or not 0 <= row < matrix.shape[0]:
        raise CorruptionError(f"{where}: memory {op.get('id')} names vector row {row!r}, outside "
                              f"the {matrix.shape[0]} rows of its generation")
    vec = np.ascontiguousarray(matrix[row], dtype="<f4").tobytes()
    if not op_row_ok(op, vec):
        raise CorruptionError(f"{where}: the vector row {row} of memory {op.get('id')} fails its "
                              "checksum")
    out["vec"] = vec
    return out


def snapshot_ops(path: str) -> Iterator[dict[str, Any]]:
    """Decoded, verified ops of a snapshot file."""
    for _off, _s, payload in snapshot_frames(path):
        yield R.decode(payload, "snapshot frame")


def checkpoint(engine: Any, txn: lmdb.Transaction, st: Any, matrix: np.ndarray) -> None:
    """Inside a write transaction: snapshot the state at ``st.seq`` and start a new log
    segment after it. The caller commits ``st``; then :func:`remove_stale` cleans up.

    Crash rules: both new files are complete and synced before the commit that names
    them; until that commit the old segment stays in force and the new files are
    strays that the next checkpoint removes.
    """
    engine.vectors.sync()
    write_snapshot(engine, txn, st, matrix)
    log.debug("%s: base snapshot at seq %d written", engine.path, st.seq)
    seg = st.log_seg + 1
    LogFile.create(engine.path, seg, st.seq)
    st.log_seg = seg
    st.log_end = st.log_sync = FILE_HEADER
    st.vsync_seq, st.vsync_slots, st.vsync_off = st.seq, st.n_slots, st.log_end
    # the unflushed frames of the old segment: the synced base snapshot holds their effect
    from ._engine import clear_pending, clear_vrows
    clear_pending(engine.env, txn)
    clear_vrows(engine.env, txn)
    _lexstage.merge(txn, engine.env)  # a checkpoint is a flush
    S.fsync_path(engine.path)


def remove_stale(root: str, log_seg: int, base_seq: int) -> None:
    """Remove strays: log segments, snapshots and temp files other than the ones in force.

    Call only while holding the write lock (a concurrent checkpoint creates new files).
    """
    keep = {os.path.basename(log_file(root, log_seg))}
    if base_seq:
        keep.add(os.path.basename(snapshot_file(root, base_seq)))
    for name in os.listdir(root):
        stale = ((name.endswith(".tmp") and not name.startswith("data"))
                 or (name.startswith("log.") and name.endswith(".mlog"))
                 or (name.startswith("base.") and name.endswith(".msnap")))
        if stale and name not in keep:
            S.unlink_quiet(os.path.join(root, name))


def remove_superseded(root: str, old_seg: int, old_base_seq: int) -> None:
    """After a checkpoint's commit: remove exactly the segment and snapshot it replaced.

    Names only grow, so no other process can be creating these files now.
    """
    S.unlink_quiet(log_file(root, old_seg))
    if old_base_seq:
        S.unlink_quiet(snapshot_file(root, old_base_seq))

