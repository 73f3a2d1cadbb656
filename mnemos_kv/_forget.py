"""Forgetting many memories at once: the ops and the state of one ``forget`` op each.

``forget_many`` and ``forget_where`` (and replay of a run of ``forget`` ops) go through
:func:`apply`, which leaves exactly what ``Engine.apply_op`` leaves after one ``forget``
op per memory in the same order (the same log frames and sequence numbers, dead marks,
records, time index, keys, BM25 postings and statistics, filter index, edges, capacity
bytes and pins), but works table by table in sorted key order: the records are read
and decoded at once, the BM25 postings of a run that forgets at least 1/SWEEP_SHARE
of a namespace are found by sweeping the namespace's postings (``_sweep``), those of
a smaller run by tokenising its texts in one pass (``_lexical_index.doc_terms_many``),
a posting or filter key that loses most of its entries is rewritten whole, and the
statistics are updated once per namespace. Sorted deletes keep LMDB's dirty pages few
in a transaction that forgets hundreds of thousands of memories.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import struct
import zlib
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import lmdb
import numpy as np

from . import _capacity, _filter_index, _ingest, _lexical_index, _lexstage, _sweep
from . import _records as R
from . import _storage as S
from .errors import CorruptionError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._engine import Engine, _Ctx

__all__ = ["request", "load", "apply", "MIN_BULK"]

#: Below this many memories the per-op path is as fast (and is what runs).
MIN_BULK = 64
_CRC = struct.Struct("<I")
_FRAME = struct.Struct("<IIQ")
_SEQ = struct.Struct("<Q")
#: A key whose duplicates are at least this many, and of which at least half go, is
#: rewritten (read whole, delete, put the survivors) instead of deleted entry by entry.
REWRITE_MIN = 256
#: A namespace losing at least 1/SWEEP_SHARE of its memories has its postings swept
#: (read whole, :mod:`_sweep`) rather than found by re-tokenising the forgotten texts.
SWEEP_SHARE = 8


def _forget_payload(mid: int) -> bytes:
    """``R.encode({"op": "forget", "id": mid})`` without the general encoder (canonical
    CBOR: a 2-map, "id" before "op"); checked against it by the tests."""
    if mid < 24:
        num = bytes((mid,))
    elif mid < 1 << 8:
        num = bytes((0x18, mid))
    elif mid < 1 << 16:
        num = b"\x19" + mid.to_bytes(2, "big")
    elif mid < 1 << 32:
        num = b"\x1a" + mid.to_bytes(4, "big")
    else:
        num = b"\x1b" + mid.to_bytes(8, "big")
    return b"\xa2\x62id" + num + b"\x62op\x66forget"


def request(ns_name: str, ids: Sequence[int]) -> Callable[["Engine", "_Ctx"], None]:
    """A ``("call", fn, 0)`` write request forgetting ``ids`` (distinct) of namespace
    ``ns_name`` in the given order. :raises MemoryNotFoundError: the first id that is
    not a live memory of the namespace (nothing is written)."""

    def fn(engine: "Engine", ctx: "_Ctx") -> None:
        def missing(mid: int) -> Exception:
            return MemoryNotFoundError(f"no memory with id {mid} in namespace {ns_name!r}")
        nid = engine.ns_id(ns_name, ctx.txn)
        if nid is None:
            raise missing(ids[0])
        recs = _load(engine, ctx.txn, ids, nid, missing)
        apply(engine, ctx, ids, recs)
    return fn


def load(engine: "Engine", txn: lmdb.Transaction, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The records of ``ids`` for :func:`apply` (any namespace: replay, forget_where)."""
    return _load(engine, txn, ids, None,
                 lambda mid: CorruptionError(f"op forgets id {mid}, which is not live"))


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: a bulk forget makes millions of objects
    (decoded records, keys, values) and none of them in cycles; collecting the young
    generation over and over as they pile up costs a quarter of the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load(engine: "Engine", txn: lmdb.Transaction, ids: Sequence[int], nid: int | None,
          missing: Callable[[int], Exception]) -> list[dict[str, Any]]:
    with _no_gc():
        return _load_records(engine, txn, ids, nid, missing)


def _load_records(engine: "Engine", txn: lmdb.Transaction, ids: Sequence[int],
                  nid: int | None, missing: Callable[[int], Exception]) -> list[dict[str, Any]]:
    """The stored fields of each id (checksum checked), in order; ``missing(id)`` is
    raised for the first id without a record (of namespace ``nid`` when given).

    The records are read with one ``getmulti``, their checksums checked inline; a
    record that fails is found again by the general decoder, and named."""
    rdb = engine.env.db("records")
    keys = [S.u64(mid) for mid in ids]
    with txn.cursor(db=rdb) as cur:
        got = cur.getmulti(keys)
    if len(got) != len(keys):
        have = {k for k, _ in got}
        raise missing(next(mid for mid, k in zip(ids, keys) if k not in have))
    crc32, unpack = zlib.crc32, _CRC.unpack_from
    bodies = []
    for _k, raw in got:
        body = raw[5:]
        if raw[:1] != b"\x02" or unpack(raw, 1)[0] != crc32(body):
            break  # (format 1, or damage: the general path below decides)
        bodies.append(body)
    out: list[dict[str, Any]] | None = None
    if len(bodies) == len(got):
        try:
            out = R.decode_many(b"".join(bodies), len(bodies))
        except CorruptionError:
            out = None
        if out is not None and not all(type(d) is dict and "s" in d and "t" in d and "m" in d
                                       and "n" in d and "ts" in d for d in out):
            out = None
    if out is None:  # one by one: the first bad record is named
        out = []
        for mid, (_k, raw) in zip(ids, got):
            try:
                out.append(R.Record.fields(raw))
            except CorruptionError as exc:
                raise CorruptionError(f"memory {mid}: {exc} ({engine.recover_hint()})") from exc
    if nid is not None:
        for mid, d in zip(ids, out):
            if d["n"] != nid:
                raise missing(mid)
    return out


def apply(engine: "Engine", ctx: "_Ctx", ids: Sequence[int], recs: Sequence[dict[str, Any]]) -> None:
    """Apply one ``forget`` op per id (``recs``: their stored fields, from :func:`load`)."""
    with _no_gc():
        _apply(engine, ctx, ids, recs)


def _apply(engine: "Engine", ctx: "_Ctx", ids: Sequence[int],
           recs: Sequence[dict[str, Any]]) -> None:
    k = len(ids)
    if k == 0:
        return
    engine.flush_index(ctx)  # memories added earlier in this write are indexed first
    txn, st, env = ctx.txn, ctx.state, engine.env
    seq0 = st.seq + 1
    given = np.asarray(ids, dtype=np.int64)
    slots = np.fromiter((d["s"] for d in recs), np.int64, k)
    # every table is changed in id order (keys sort by id); the ops keep the given order
    order = np.argsort(given, kind="stable")
    mids = given[order]
    recs = [recs[j] for j in order.tolist()]
    ns = np.fromiter((d["n"] for d in recs), np.int64, k)
    ts = np.fromiter((d["ts"] for d in recs), np.int64, k)
    id_bytes = mids.astype(">u8").tobytes()
    idb = [id_bytes[i:i + 8] for i in range(0, 8 * k, 8)]

    # staged postings are derived from the records (format 7): merged before any goes,
    # and the postings removed below are then all in ``postings``
    _lexstage.merge(txn, env)
    rdb = env.db("records")
    delete = txn.delete
    for key in idb:
        delete(key, db=rdb)
    # time index, in key order
    raw = _ingest.time_keys(ns, ts, mids)
    tdb = env.db("time")
    for i in range(0, len(raw), 20):
        delete(raw[i:i + 20], db=tdb)
    # keys
    kdb = env.db("keys")
    for j, d in enumerate(recs):
        name = d.get("k")
        if name is not None:
            delete(S.u32(int(ns[j])) + str(name).encode(), db=kdb)
    # BM25 postings and statistics, per namespace
    for nsv in np.unique(ns).tolist():
        sel = np.flatnonzero(ns == nsv)
        if not _sweep_postings(txn, env, int(nsv), mids[sel]):
            _remove_postings(txn, env, int(nsv), mids[sel],
                             [recs[j]["t"] for j in sel.tolist()])
    # filter index: (key, id) pairs in (key, id) order; and the capacity bytes. The
    # entries and the encoded size of equal metadata are computed once.
    groups = _meta_groups(recs, ns, idb)
    nbytes = _entry_bytes(recs, groups.group, groups.sizes, engine.dim)
    st.live_bytes -= int(nbytes.sum())
    uns, inv = np.unique(ns, return_inverse=True)
    for nid, b in zip(uns.tolist(), np.bincount(inv, weights=nbytes).tolist()):
        ctx.ns_bytes[nid] = ctx.ns_bytes.get(nid, 0) - int(b)
    if groups.ids:
        fkeys: list[bytes] = []
        fvals: list[bytes] = []
        starts = []
        for key in sorted(groups.ids):
            got = groups.ids[key]
            starts.append(len(fkeys))
            fkeys.extend([key] * len(got))
            fvals.extend(got)  # ascending ids: recs are in id order
        _remove_dups(txn, env.db(_filter_index.DB), fkeys, fvals, 8,
                     np.asarray(starts, np.int64))
    # edges (none in most stores: two lookups say so)
    if txn.stat(env.db("edges_out"))["entries"] or txn.stat(env.db("edges_in"))["entries"]:
        for mid in mids.tolist():
            engine._drop_edges(txn, mid)
    # pins (what _capacity.on_remove does for a forget)
    pinned = _capacity.pinned_ids(engine, txn, None)
    if pinned.size:
        cdb = env.db(_capacity.DB)
        for j in np.flatnonzero(np.isin(mids, pinned)).tolist():
            delete(b"P" + S.u32(int(ns[j])) + idb[j], db=cdb)
    for nsv, cnt in zip(*np.unique(ns, return_counts=True)):
        ctx.ns_delta[int(nsv)] = ctx.ns_delta.get(int(nsv), 0) - int(cnt)
    # dead marks (set after the frames are durable), frames, counters: in the given order
    seqs = range(seq0, seq0 + k)
    ctx.dead.extend(zip(slots.tolist(), seqs))
    crc32, pack_frame, pack_seq = zlib.crc32, _FRAME.pack, _SEQ.pack
    frames = []
    for s, num in zip(seqs, _ingest.cbor_ints(given)):
        payload = b"\xa2\x62id" + num + b"\x62op\x66forget"
        frames.append(pack_frame(len(payload), crc32(payload, crc32(pack_seq(s))), s) + payload)
    ctx.frames.extend(frames)
    st.live -= k
    st.seq = seq0 + k - 1


def _remove_postings(txn: lmdb.Transaction, env: Any, ns: int, mids: np.ndarray,
                     texts: list[str]) -> None:
    """Remove the postings of ``mids`` (ascending) and their share of the statistics
    (nothing is staged: :func:`_apply` merged first)."""
    bt = _lexical_index.doc_terms_many(texts)
    if bt.key.size:
        vals = _lexical_index.posting_values(mids[bt.doc], bt.tf, bt.dl)
        # (key, id) order: the entries sort by key code, then by text = by id
        _remove_dups(txn, env.db("postings"), bt.full_keys(S.u32(ns), bt.key),
                     vals, _lexical_index.POSTING_BYTES,
                     np.flatnonzero(np.concatenate(([True], bt.key[1:] != bt.key[:-1]))),
                     id_bytes=6)
    _lexical_index.bump(txn, env, ns, -len(texts), -int(bt.stem_len.sum()),
                        -int(bt.surface_len.sum()))


class _MetaGroups:
    """The records' metadata, equal ones once: ``group`` (per record, the number of its
    metadata; -1 for none), ``sizes`` (per number, the canonical CBOR size) and ``ids``
    (filter index key -> the ids, ascending, of the records it lists)."""

    __slots__ = ("group", "sizes", "ids")

    def __init__(self, group: np.ndarray, sizes: np.ndarray, ids: dict[bytes, list[bytes]]):
        self.group, self.sizes, self.ids = group, sizes, ids


def _meta_groups(recs: Sequence[dict[str, Any]], ns: np.ndarray, idb: list[bytes]
                 ) -> _MetaGroups:
    """:class:`_MetaGroups` of ``recs`` (in id order; ``idb``: their ids as keys)."""
    number: dict[Any, int] = {}
    found: list[tuple[list[bytes], int]] = []
    group: list[int] = []
    memo_key = _filter_index.memo_key
    for d, nid in zip(recs, ns.tolist()):
        meta = d["m"]
        if not meta:
            group.append(-1)
            continue
        mk = memo_key(nid, meta)
        g = number.get(mk) if mk is not None else None
        if g is None:
            g = len(found)
            fk, overflow = _filter_index.entries(nid, meta)
            if overflow:
                fk.append(_filter_index.overflow_key(nid))
            found.append((fk, len(R.encode(meta))))
            if mk is not None:
                number[mk] = g
        group.append(g)
    garr = np.asarray(group, np.int64)
    ids: dict[bytes, list[bytes]] = {}
    merged: set[bytes] = set()
    if found:
        order = np.argsort(garr, kind="stable")  # (ids ascend within each group)
        bounds = np.searchsorted(garr[order], np.arange(-1, len(found) + 1)).tolist()
        ordl = order.tolist()
        for g, (fk, _size) in enumerate(found):
            members = [idb[j] for j in ordl[bounds[g + 1]:bounds[g + 2]]]
            for key in fk:
                got = ids.get(key)
                if got is None:
                    ids[key] = list(members)
                else:
                    got.extend(members)
                    merged.add(key)
        for key in merged:  # (several groups list it: their runs of ids, merged)
            ids[key].sort()
    sizes = np.asarray([size for _fk, size in found] + [1], np.int64)  # ({} is 1 byte)
    return _MetaGroups(garr, sizes, ids)


def _entry_bytes(recs: Sequence[dict[str, Any]], group: np.ndarray, sizes: np.ndarray,
                 dim: int) -> np.ndarray:
    """What each record counts against ``max_bytes`` (``_capacity.entry_bytes``)."""
    text = np.fromiter((len(t) if t.isascii() else len(t.encode("utf-8"))
                        for t in (d["t"] for d in recs)), np.int64, len(recs))
    out = text + sizes[group] + 4 * dim  # (group -1: the last size, an empty map's)
    if any("k" in d for d in recs):
        out += np.fromiter((len(d["k"].encode("utf-8")) if d.get("k") is not None else 0
                            for d in recs), np.int64, len(recs))
    return out


def _sweep_postings(txn: lmdb.Transaction, env: Any, ns: int, mids: np.ndarray) -> bool:
    """Remove the postings of ``mids`` (ascending, live memories of namespace ``ns``) and
    their share of the statistics by sweeping the namespace's postings
    (:func:`_sweep.sweep`), when that is the cheaper way: they are at least
    1/SWEEP_SHARE of its memories. False (nothing done) otherwise, or when the stored
    postings are not of the current width. (Nothing is staged: :func:`_apply` merged
    first, and the sweep reads ``postings`` only.)"""
    docs = _lexical_index.stats(txn, env, [ns])[0]
    k = int(mids.size)
    if k * SWEEP_SHARE < docs:
        return False
    pdb = env.db("postings")
    prefix = S.u32(ns)
    with txn.cursor(db=pdb) as cur:
        if cur.set_range(prefix) and cur.key().startswith(prefix) \
                and len(cur.value()) != _lexical_index.POSTING_BYTES:
            return False
    # (no term byte is 0xff: UTF-8 never holds it, and the field prefixes are below it)
    surface, speaker = _lexical_index.SURFACE_PREFIX, _lexical_index.SPEAKER_PREFIX
    gone = _sweep.sweep(txn, pdb, prefix, prefix + b"\xff", mids, _lexical_index.POSTING_BYTES,
                        6, (prefix + surface, prefix + speaker, prefix + bytes((speaker[0] + 1,))))
    lengths = []
    # parts: the question marker, surface words, speaker words, stems
    for field in (gone.part == 3, gone.part == 1):
        # every posting of a memory in a field holds the memory's length in that field
        rows = gone.rows[field]
        _u, at = np.unique(_sweep.ids_of(rows, 6), return_index=True)
        dl = rows[at, 9:12].astype(np.int64)
        lengths.append(int(((dl[:, 0] << 16) | (dl[:, 1] << 8) | dl[:, 2]).sum()))
    _lexical_index.bump(txn, env, ns, -k, -lengths[0], -lengths[1])
    return True


def _remove_dups(txn: lmdb.Transaction, db: Any, keys: list[bytes], vals: list[bytes],
                 width: int, starts: np.ndarray | None = None, id_bytes: int = 8) -> None:
    """Delete the duplicates ``(keys[i], vals[i])`` (sorted by key, then value) of a
    dupsort + dupfixed table of ``width``-byte values whose first ``id_bytes`` bytes are
    the id (big-endian).
    A key losing at least REWRITE_MIN entries and half of its duplicates is rewritten
    whole; a value not found as is (a posting's tf or length differs) is found by id."""
    m = len(keys)
    done = np.zeros(m, bool)
    with txn.cursor(db=db) as cur:
        if m >= REWRITE_MIN:  # runs of one key (``starts``: where each run begins)
            if starts is None:
                change = np.fromiter((keys[i] != keys[i - 1] for i in range(1, m)), bool, m - 1)
                starts = np.flatnonzero(np.concatenate(([True], change)))
            ends = np.append(starts[1:], m)
            for a, b in zip(starts.tolist(), ends.tolist()):
                if b - a < REWRITE_MIN:
                    continue
                key = keys[a]
                n = cur.count() if cur.set_key(key) else 0
                if n and 2 * (b - a) >= n:
                    _rewrite(cur, key, vals[a:b], width, id_bytes)
                    done[a:b] = True
        delete = txn.delete
        for i in (np.flatnonzero(~done).tolist() if done.any() else range(m)):
            key, v = keys[i], vals[i]
            if not delete(key, v, db=db):
                idb = v[:id_bytes]
                if cur.set_range_dup(key, idb) and cur.value()[:id_bytes] == idb:
                    cur.delete()


def _rewrite(cur: lmdb.Cursor, key: bytes, gone: list[bytes], width: int,
             id_bytes: int = 8) -> None:
    """Replace the duplicates of ``key`` by those whose id is not one of ``gone``'s."""
    buf = cur.getmulti([key], dupdata=True, dupfixed_bytes=width, keyfixed=True)
    rows = np.frombuffer(buf, dtype=np.dtype([("k", f"V{len(key)}"), ("v", f"V{width}")]))
    vals = np.ascontiguousarray(rows["v"])
    have = _sweep.ids_of(np.frombuffer(vals.tobytes(), np.uint8).reshape(-1, width), id_bytes)
    # (every value in ``gone`` is ``width`` bytes: one join, no slice per entry)
    drop = _sweep.ids_of(np.frombuffer(b"".join(gone), np.uint8).reshape(-1, width), id_bytes)
    keep = ~np.isin(have, drop)
    cur.set_key(key)
    cur.delete(dupdata=True)
    if keep.any():
        cur.putmulti(zip(itertools.repeat(key), vals[keep].tolist()), dupdata=True)
