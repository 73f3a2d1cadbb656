"""Remembering many new memories at once: a run of ``remember`` requests applied as a block.

:func:`apply_run` leaves exactly what ``Engine.apply_op`` leaves after one ``mem`` op per
request in the same order (the same ids, slots, sequence numbers, log frames, records,
time index, keys, BM25 postings and statistics, filter index, capacity bytes and pins,
vector rows and slot columns), but works column by column: the vectors are checked
and written as one numpy block (one CRC-32 per row), each record and its log frame
are assembled from the CBOR of their fields encoded once (the metadata's encoding is
the one validation measured), the records are appended with one ``putmulti`` (new ids
are larger than every stored one), the time and key entries are put in key order, and
the postings and filter entries go to the write's deferred bulk index (``_Ctx.pending``).

The canonical CBOR this module assembles by hand is checked byte for byte against
``_records.encode`` by the tests (``tests/test_bulk_ingest.py``).
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from . import _capacity, _lexical_index, _filter_index
from . import _records as R
from . import _storage as S
from ._vectors import CHECKED32, SLOT_DTYPE, folds, slot_row
from .errors import CorruptionError, DuplicateKeyError

if TYPE_CHECKING:
    from ._bulkcheck import Block
    from ._engine import Engine, _Ctx

__all__ = ["MIN_RUN", "apply_run", "apply_block", "apply_one", "cbor_head", "cbor_int",
           "cbor_ints", "cbor_text", "record_bytes", "op_bytes", "time_keys"]

#: Runs of fewer ``remember`` requests go op by op (the same state; no gain below).
MIN_RUN = 8

_TIME_KEY = np.dtype([("ns", ">u4"), ("ts", ">u8"), ("id", ">u8")])
_CRC = struct.Struct("<I")
_FRAME = struct.Struct("<IIQ")
_SEQ = struct.Struct("<Q")
_EMPTY_MAP = b"\xa0"
_RECORD_TAG = b"\x02"  # (a record's format byte, before its CRC-32: _records)


# -- canonical CBOR pieces ----------------------------------------------------------------

def cbor_head(major: int, n: int) -> bytes:
    """The shortest CBOR head of major type ``major`` (0-7) with argument ``n`` >= 0."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    return bytes((m | 27,)) + n.to_bytes(8, "big")


def cbor_int(n: int) -> bytes:
    """A CBOR integer (-2**64 <= n < 2**64), as the canonical encoder writes it."""
    return cbor_head(0, n) if n >= 0 else cbor_head(1, -1 - n)


_SIZES = ((24, 0, 0), (0x100, 24, 1), (0x10000, 25, 2), (0x100000000, 26, 4), (None, 27, 8))


def cbor_ints(values: np.ndarray) -> list[bytes]:
    """:func:`cbor_int` of every int64 in ``values``, vectorised by size class."""
    a = np.asarray(values, dtype=np.int64)
    k = a.size
    neg = a < 0
    # -1 - a for negatives (no overflow for int64), as uint64
    u = np.where(neg, ~a, a).astype(np.uint64)
    major = np.where(neg, 0x20, 0).astype(np.uint8)
    out: list[bytes] = [b""] * k
    lo = np.zeros(k, bool)
    done = 0
    for limit, add, width in _SIZES:
        sel = ~lo if limit is None else (~lo & (u < np.uint64(limit)))
        idx = np.flatnonzero(sel)
        lo |= sel
        if not idx.size:
            continue
        m = idx.size
        buf = np.empty((m, 1 + width), np.uint8)
        uv = u[idx]
        if width == 0:
            buf[:, 0] = major[idx] | uv.astype(np.uint8)
        else:
            buf[:, 0] = major[idx] | np.uint8(add)
            buf[:, 1:] = uv.astype(">u8").view(np.uint8).reshape(m, 8)[:, 8 - width:]
        raw = buf.tobytes()
        w = 1 + width
        if m == k:
            return np.frombuffer(raw, f"V{w}").tolist()  # type: ignore[no-any-return]
        for j, i in enumerate(idx.tolist()):
            out[i] = raw[j * w:(j + 1) * w]
        done += m
        if done == k:
            break
    return out


_TEXT_HEADS = [cbor_head(3, n) for n in range(256)]


def time_keys(ns: np.ndarray, ts: np.ndarray, ids: np.ndarray) -> bytes:
    """The ``time`` index keys of memories (ns u32, offset-binary ts, id u64; big-endian,
    20 bytes each), concatenated in key order."""
    packed = np.empty(ns.size, _TIME_KEY)
    packed["ns"], packed["id"] = ns, ids
    packed["ts"] = np.asarray(ts, np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    order = np.lexsort((packed["id"], packed["ts"], packed["ns"]))
    return packed[order].tobytes()


def cbor_text(raw: bytes) -> bytes:
    """The CBOR text string of the UTF-8 bytes ``raw``."""
    return (_TEXT_HEADS[len(raw)] if len(raw) < 256 else cbor_head(3, len(raw))) + raw


def record_bytes(e_id: bytes, e_key: bytes, e_meta: bytes, e_ns: bytes, e_seq: bytes,
                 e_slot: bytes, e_text: bytes, e_type: bytes, e_ts: bytes) -> bytes:
    """The canonical CBOR map of a new record (``_records.Record.to_bytes`` without its
    checksum header) from the CBOR of its fields (``e_key``: b"" without a key)."""
    if not e_key:
        return b"".join((b"\xa8\x61i", e_id, b"\x61m", e_meta, b"\x61n", e_ns, b"\x61q", e_seq,
                         b"\x61s", e_slot, b"\x61t", e_text, b"\x61y", e_type, b"\x62ts", e_ts))
    return b"".join((b"\xa9\x61i", e_id, b"\x61k", e_key, b"\x61m", e_meta, b"\x61n", e_ns,
                     b"\x61q", e_seq, b"\x61s", e_slot, b"\x61t", e_text, b"\x61y", e_type,
                     b"\x62ts", e_ts))


def op_bytes(e_id: bytes, e_ns: bytes, e_ts: bytes, e_key: bytes, pinned: bool, e_meta: bytes,
             e_text: bytes, e_type: bytes, e_crc: bytes, e_slot: bytes) -> bytes:
    """The canonical CBOR of a logged ``mem`` op (``Engine.apply_op``'s frame payload:
    the vector named by its row and CRC-32) from the CBOR of its fields."""
    return b"".join((bytes((0xa9 + bool(e_key) + pinned,)), b"\x62id", e_id, b"\x62ns", e_ns,
                     b"\x62op\x63mem\x62ts", e_ts, b"\x63key" + e_key if e_key else b"",
                     b"\x63pin\xf5" if pinned else b"", b"\x64meta", e_meta, b"\x64text", e_text,
                     b"\x64type", e_type, b"\x64vc32", e_crc, b"\x64vrow", e_slot))


def apply_one(engine: "Engine", ctx: "_Ctx", req: Sequence[Any], nid: int) -> int | None:
    """Apply one ``remember`` request (namespace id ``nid``, its key already checked
    free) as ``Engine.apply_op`` applies its ``mem`` op, leaving the same bytes
    everywhere, with the record and the log frame assembled from their fields' CBOR
    (what a single durable ``remember`` spends most of its Python on otherwise).
    Returns the new id, or None, having changed nothing, for a request this path does
    not take (no metadata encoding from validation, a vector of another shape, or no
    deferred index): the caller applies the op."""
    e_meta = req[9] if len(req) > 9 else None
    if e_meta is None or ctx.pending is None:
        return None
    vec = np.ascontiguousarray(req[7], dtype="<f4")
    if vec.shape != (engine.dim,):
        return None
    _, _ns, text, meta, type_, ts, key, _vec = req[:8]
    pinned = len(req) > 8 and bool(req[8])
    st, txn, env = ctx.state, ctx.txn, engine.env
    mid, slot, seq = st.next_id, st.n_slots, st.seq + 1
    type_code = R.TYPE_CODES[type_]
    row = vec.tobytes()
    crc = zlib.crc32(row)
    ctx.matrix[slot] = vec
    ctx.slots[slot] = slot_row(mid, ts, nid, type_code, row, crc)
    e_id, e_ns, e_ts, e_type = cbor_int(mid), cbor_int(nid), cbor_int(ts), cbor_int(type_code)
    e_slot = cbor_int(slot)
    tb = text.encode("utf-8")
    e_text = cbor_text(tb)
    kb = b"" if key is None else key.encode("utf-8")
    e_key = b"" if key is None else cbor_text(kb)
    rec = record_bytes(e_id, e_key, e_meta, e_ns, cbor_int(seq), e_slot, e_text, e_type, e_ts)
    op = op_bytes(e_id, e_ns, e_ts, e_key, pinned, e_meta, e_text, e_type, cbor_int(crc), e_slot)
    idk = S.u64(mid)
    S.put_last(txn, idk, b"\x02" + _CRC.pack(zlib.crc32(rec)) + rec, env.db("records"))
    txn.put(S.u32(nid) + S.ts_key(ts) + idk, b"", db=env.db("time"))
    if key is not None:
        txn.put(S.u32(nid) + kb, idk, db=env.db("keys"))
    if pinned:
        txn.put(b"P" + S.u32(nid) + idk, b"", db=env.db(_capacity.DB))
    ctx.pending.append((nid, mid, text, meta))
    # capacity bytes (_capacity.entry_bytes): text, metadata ({} counts 1), vector, key
    nbytes = len(tb) + len(e_meta) + 4 * engine.dim + len(kb)
    st.live_bytes += nbytes
    ctx.ns_bytes[nid] = ctx.ns_bytes.get(nid, 0) + nbytes
    ctx.ns_delta[nid] = ctx.ns_delta.get(nid, 0) + 1
    st.next_id += 1
    st.n_slots += 1
    st.live += 1
    st.seq = seq
    ctx.frames.append(_FRAME.pack(len(op), zlib.crc32(op, zlib.crc32(_SEQ.pack(seq))), seq) + op)
    return mid


def _small_ints(values: list[int]) -> list[bytes]:
    """:func:`cbor_int` of each of ``values`` (few distinct: namespaces, type codes)."""
    first = values[0] if values else 0
    if values.count(first) == len(values):
        return [cbor_int(first)] * len(values)
    memo = {v: cbor_int(v) for v in set(values)}
    return list(map(memo.__getitem__, values))


# -- the run ------------------------------------------------------------------------------

def apply_run(engine: "Engine", ctx: "_Ctx", reqs: Sequence[tuple[Any, ...]]) -> bool:
    """Apply ``reqs`` (``("remember", ns, text, meta, type, ts, key, vec[, pinned[,
    meta_cbor]])`` requests) as one ``mem`` op each, in order, into ``ctx``; their ids are
    appended to ``ctx.results``. Returns False, having changed nothing, when some
    request is not of the shape this path handles (the caller applies them op by op,
    which raises the same errors). :raises DuplicateKeyError: as the per-op path."""
    dim = engine.dim
    try:
        # (np.array of the rows: np.stack's result, made in C; rows of unequal
        # shapes raise ValueError, or give a 1-d object array on older numpy)
        block = np.array([r[7] for r in reqs]).astype("<f4", copy=False)
    except (ValueError, TypeError):
        return False
    k = len(reqs)
    if block.shape != (k, dim):
        return False
    block = np.ascontiguousarray(block)
    # namespaces: a new one is created (an ``ns`` op, one seq) where its first item is
    i = 0
    while i < k:
        j = i
        nids: list[int] = []
        while j < k:
            ns = reqs[j][1]
            nid = ctx.ns_seen.get(ns)
            if nid is None:
                nid = engine.ns_id(ns, ctx.txn)
                if nid is None:
                    break
                ctx.ns_seen[ns] = nid
            nids.append(nid)
            j += 1
        if j > i:
            _apply(engine, ctx, _columns(reqs[i:j]), nids, block[i:j])
        if j < k:
            ns = reqs[j][1]
            ctx.ns_seen[ns] = engine._ensure_ns(ctx, ns)
        i = j
    return True


def apply_block(engine: "Engine", ctx: "_Ctx", block: "Block") -> None:
    """Apply a validated ``remember_many`` call (:mod:`_bulkcheck`), vectors given or
    embedded, as one ``mem`` op per item, in order, into ``ctx`` (its namespace created
    first when new, as the first item's op would): the same state as :func:`apply_run`
    of the call's requests. Ids go to ``ctx.results``. :raises DuplicateKeyError:"""
    ns = block.ns
    nid = ctx.ns_seen.get(ns)
    if nid is None:
        nid = engine.ns_id(ns, ctx.txn)
        if nid is None:
            nid = engine._ensure_ns(ctx, ns)
        ctx.ns_seen[ns] = nid
    vectors = block.vectors
    assert vectors is not None and vectors.shape == (len(block), engine.dim)
    cols = _Columns([ns] * len(block), block.texts, block.raw, block.metas, block.e_meta,
                    block.types, block.ts, block.keys, block.pinned)
    _apply(engine, ctx, cols, [nid] * len(block), np.ascontiguousarray(vectors, "<f4"))


class _Columns(NamedTuple):
    """The fields of a run of ``remember`` requests, by columns (``keys``/``pinned``:
    None when no item has one)."""
    ns: list[str]
    texts: list[str]
    raw: list[bytes]
    metas: list[Any]
    e_meta: list[bytes]
    types: np.ndarray
    ts: np.ndarray
    keys: list[str | None] | None
    pinned: list[bool] | None


def _columns(reqs: Sequence[tuple[Any, ...]]) -> _Columns:
    """The columns of ``("remember", ns, text, meta, type, ts, key, vec[, pinned[,
    meta_cbor]])`` requests."""
    k = len(reqs)
    metas = [r[3] for r in reqs]
    texts = [r[2] for r in reqs]
    keys = [r[6] for r in reqs]
    pinned = [len(r) > 8 and bool(r[8]) for r in reqs]
    return _Columns(
        [r[1] for r in reqs], texts, [t.encode("utf-8") for t in texts], metas,
        [r[9] if len(r) > 9 and r[9] is not None else (R.encode(m) if m else _EMPTY_MAP)
         for r, m in zip(reqs, metas)],
        np.fromiter((R.TYPE_CODES[r[4]] for r in reqs), np.int64, k),
        np.fromiter((r[5] for r in reqs), np.int64, k),
        keys if any(key is not None for key in keys) else None,
        pinned if any(pinned) else None)


def _apply(engine: "Engine", ctx: "_Ctx", cols: _Columns, nids: list[int],
           block: np.ndarray) -> None:
    """The ``mem`` ops of the run ``cols`` (namespaces ``nids``, all existing; vectors
    ``block``)."""
    st, txn, env = ctx.state, ctx.txn, engine.env
    k = len(cols.texts)
    id0, slot0, seq0 = st.next_id, st.n_slots, st.seq + 1
    kdb = env.db("keys")
    keyed: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    if cols.keys is not None:
        for j, key in enumerate(cols.keys):  # duplicate keys: the first one in order, as op by op
            if key is not None:
                kb = S.u32(nids[j]) + key.encode()
                if kb in seen or txn.get(kb, db=kdb) is not None:
                    raise DuplicateKeyError(
                        f"namespace {cols.ns[j]!r} already has a memory with key {key!r}")
                seen.add(kb)
                keyed.append((kb, S.u64(id0 + j)))
    ids = np.arange(id0, id0 + k, dtype=np.int64)
    slots = np.arange(slot0, slot0 + k, dtype=np.int64)
    seqs = np.arange(seq0, seq0 + k, dtype=np.int64)
    ns_arr = np.asarray(nids, dtype=np.int64)
    ts_arr = cols.ts
    types = cols.types
    # vectors and slot columns, one block each
    w = 4 * block.shape[1]
    raw = block.data.cast("B")  # (rows read in place: no copy of the block)
    crc32 = zlib.crc32
    vcrcs = np.fromiter(map(crc32, map(raw.__getitem__, map(slice, range(0, k * w, w),
                                                            range(w, k * w + w, w)))), np.int64, k)
    rows = np.zeros(k, SLOT_DTYPE)
    rows["id"], rows["ts"], rows["ns"], rows["type"] = ids, ts_arr, ns_arr, types
    rows["flags"], rows["pad"] = CHECKED32, folds(vcrcs)
    ctx.matrix[slot0:slot0 + k] = block
    ctx.slots[slot0:slot0 + k] = rows
    # records and log frames: the CBOR of each field once, assembled twice
    e_id, e_slot, e_seq = cbor_ints(ids), cbor_ints(slots), cbor_ints(seqs)
    e_ts = cbor_ints(ts_arr)
    e_crc = cbor_ints(vcrcs)
    e_ns, e_type = _small_ints(nids), _small_ints(types.tolist())
    metas, e_meta, texts, tbs = cols.metas, cols.e_meta, cols.texts, cols.raw
    heads = _TEXT_HEADS
    text_len = np.fromiter(map(len, tbs), np.int64, k)
    # (C passes; the heads of texts of 256 bytes or more, rare, are put right after)
    e_text = list(map(bytes.__add__, map(heads.__getitem__,
                                         np.minimum(text_len, 255).tolist()), tbs))
    for j in np.flatnonzero(text_len > 255).tolist():
        e_text[j] = cbor_head(3, len(tbs[j])) + tbs[j]
    keys = cols.keys if cols.keys is not None else [None] * k
    pinned = cols.pinned if cols.pinned is not None else [False] * k
    join = b"".join
    if not keyed and cols.pinned is None:  # the common case: one shape for every item
        c = itertools.repeat  # (each item's pieces zipped and joined in C)
        recs = list(map(join, zip(
            c(b"\xa8\x61i"), e_id, c(b"\x61m"), e_meta, c(b"\x61n"), e_ns, c(b"\x61q"), e_seq,
            c(b"\x61s"), e_slot, c(b"\x61t"), e_text, c(b"\x61y"), e_type, c(b"\x62ts"), e_ts)))
        ops = list(map(join, zip(
            c(b"\xa9\x62id"), e_id, c(b"\x62ns"), e_ns, c(b"\x62op\x63mem\x62ts"), e_ts,
            c(b"\x64meta"), e_meta, c(b"\x64text"), e_text, c(b"\x64type"), e_type,
            c(b"\x64vc32"), e_crc, c(b"\x64vrow"), e_slot)))
        key_bytes = 0
    else:
        recs, ops = [], []
        key_bytes = 0
        for j in range(k):
            key = keys[j]
            e_key = b""
            if key is not None:
                kb = key.encode("utf-8")
                key_bytes += len(kb)
                e_key = cbor_text(kb)
            recs.append(record_bytes(e_id[j], e_key, e_meta[j], e_ns[j], e_seq[j], e_slot[j],
                                     e_text[j], e_type[j], e_ts[j]))
            ops.append(op_bytes(e_id[j], e_ns[j], e_ts[j], e_key, bool(pinned[j]), e_meta[j],
                                e_text[j], e_type[j], e_crc[j], e_slot[j]))
    crc32, pack_crc, pack_frame, pack_seq = zlib.crc32, _CRC.pack, _FRAME.pack, _SEQ.pack
    id_keys = ids.astype(">u8").tobytes()
    # (C passes: a record is b"\x02", its CRC-32 and its CBOR; a frame's CRC covers its
    # sequence number and payload)
    records = list(zip(np.frombuffer(id_keys, "V8").tolist(), map(
        _RECORD_TAG.__add__, map(bytes.__add__, map(pack_crc, map(crc32, recs)), recs))))
    seq_range = range(seq0, seq0 + k)
    frames = list(map(bytes.__add__, map(pack_frame, map(len, ops), map(
        crc32, ops, map(crc32, map(pack_seq, seq_range))), seq_range), ops))
    pending = list(zip(nids, range(id0, id0 + k), texts, metas))
    # capacity bytes (_capacity.entry_bytes): text, metadata ({} counts 1), vector, key
    nbytes = text_len + np.fromiter(map(len, e_meta), np.int64, k) + 4 * engine.dim
    live_bytes = int(nbytes.sum()) + key_bytes
    if len(set(nids)) == 1:
        ns_bytes = {nids[0]: live_bytes}
    else:
        ns_bytes = {}
        for j, nid in enumerate(nids):
            key = keys[j]
            kl = len(key.encode("utf-8")) if key is not None else 0
            ns_bytes[nid] = ns_bytes.get(nid, 0) + int(nbytes[j]) + kl
    pins = [] if cols.pinned is None else [
        b"P" + S.u32(nids[j]) + id_keys[8 * j:8 * j + 8] for j in range(k) if pinned[j]]
    rdb = env.db("records")
    with txn.cursor(db=rdb) as cur:
        # new ids are larger than every stored one: append (checked, not assumed)
        append = not cur.last() or cur.key() < records[0][0]
        if cur.putmulti(records, append=append)[1] != k:
            raise CorruptionError(f"{engine.path!r}: new memory ids {id0}.. are already stored")
    tkeys = time_keys(ns_arr, ts_arr, ids)
    with txn.cursor(db=env.db("time")) as cur:
        cur.putmulti(zip(np.frombuffer(tkeys, "V20").tolist(), itertools.repeat(b"", k)))
    if keyed:
        keyed.sort()
        with txn.cursor(db=kdb) as cur:
            cur.putmulti(keyed)
    if pins:
        cdb = env.db(_capacity.DB)
        for p in pins:
            txn.put(p, b"", db=cdb)
    if ctx.pending is not None:  # indexed with the rest of the write (Engine.flush_index)
        ctx.pending.extend(pending)
    else:
        _lexical_index.add_many(txn, env, pending)
        _filter_index.add_many(txn, env, pending)
    st.live_bytes += live_bytes
    for nid, b in ns_bytes.items():
        ctx.ns_bytes[nid] = ctx.ns_bytes.get(nid, 0) + b
    for nid in dict.fromkeys(nids):
        ctx.ns_delta[nid] = ctx.ns_delta.get(nid, 0) + nids.count(nid)
    st.next_id += k
    st.n_slots += k
    st.live += k
    st.seq = seq0 + k - 1
    ctx.frames.extend(frames)
    ctx.results.extend(range(id0, id0 + k))
