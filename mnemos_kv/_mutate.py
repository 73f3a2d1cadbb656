"""Changing memories: the ``update`` and ``drop`` ops, and the requests behind
``update``, ``upsert`` and ``drop_namespace``.

``update`` op (one per changed memory; the whole new state, so applying it needs
nothing but the op and the record)::

    {"op": "update", "id": id, "ns": nid, "text": str, "meta": {...}, "type": code,
     "ts": µs, "vec": float32 bytes, "at": µs (the clock at the change: updated_at)}

MVCC: the changed memory gets a *fresh* slot (vector row and slot columns appended
at ``n_slots``) and its old slot is marked dead at the op's seq, exactly like a
forget followed by an add under the same id. Readers of older snapshots keep seeing
the old row, record version and liveness; nothing aligned to slots is rewritten.
The slot id column is then no longer ascending (``State.unsorted``), until the next
compaction rewrites the live rows in id order.

``drop`` op (a whole namespace in one op; no per-memory ops)::

    {"op": "drop", "ns": nid, "name": str}

It removes every memory of the namespace (records, time entries, keys, edges in
both directions, BM25 postings and statistics, pins, limit, evicted counter and
eviction notes, capacity bytes) and the namespace itself (``"default"`` stays, empty).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import _capacity, _filter_index, _lexical_index, _lexstage
from ._vectors import slot_row
from . import _records as R
from . import _storage as S
from .errors import CorruptionError, InvalidInputError

if TYPE_CHECKING:
    from ._engine import Engine, _Ctx

_NS_REV = b"\x00"


def _sweep(txn: Any, db: Any, prefix: bytes, dups: bool = False) -> None:
    """Delete every key starting with ``prefix`` (with all its duplicates when ``dups``)."""
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                if not (cur.delete(dupdata=True) if dups else cur.delete()):
                    break


# -- ops (applied by Engine.apply_op; also on replay) ------------------------------------------

def apply_update(engine: "Engine", ctx: "_Ctx", op: dict[str, Any], seq: int) -> int:
    """Write the new version of a memory into a fresh slot; the old slot dies at ``seq``."""
    st, txn, db = ctx.state, ctx.txn, engine.env.db
    mid = int(op["id"])
    raw = txn.get(S.u64(mid), db=db("records"))
    if raw is None:
        raise CorruptionError(f"op updates id {mid}, which is not live")
    old = R.Record.from_bytes(raw)
    if int(op["ns"]) != old.ns:
        raise CorruptionError(f"op updates id {mid} in namespace id {op['ns']}, it is in {old.ns}")
    vec = np.frombuffer(op["vec"], dtype="<f4")
    if vec.shape != (engine.dim,):
        raise CorruptionError(f"op vector has {vec.size} floats, expected {engine.dim}")
    code = int(op["type"])
    slot = st.n_slots
    new = dataclasses.replace(old, text=op["text"], metadata=op["meta"], type=R.MEMORY_TYPES[code],
                              ts=int(op["ts"]), slot=slot, seq=seq, upd=int(op["at"]))
    ctx.matrix[slot] = vec
    ctx.slots[slot] = slot_row(mid, new.ts, new.ns, code, vec.tobytes())
    # staged postings are derived from the records (format 7): merged before one changes
    _lexstage.merge_for(txn, engine.env, mid)
    txn.put(S.u64(mid), new.to_bytes(), db=db("records"))
    if new.ts != old.ts:
        txn.delete(S.u32(old.ns) + S.ts_key(old.ts) + S.u64(mid), db=db("time"))
        txn.put(S.u32(new.ns) + S.ts_key(new.ts) + S.u64(mid), b"", db=db("time"))
    if new.text != old.text:
        _lexical_index.remove(txn, engine.env, old.ns, mid, old.text)
        _lexical_index.add(txn, engine.env, new.ns, mid, new.text)
    if R.encode(new.metadata) != R.encode(old.metadata):
        _filter_index.remove(txn, engine.env, old.ns, mid, old.metadata)
        _filter_index.add(txn, engine.env, new.ns, mid, new.metadata)
    _capacity.on_update(engine, ctx, old, new)
    ctx.dead.append((old.slot, seq))
    st.n_slots += 1
    st.unsorted = 1  # this id now has a slot after larger ids
    return mid


def apply_drop(engine: "Engine", ctx: "_Ctx", op: dict[str, Any], seq: int) -> int:
    """Remove namespace ``op["ns"]`` and everything in it; returns how many memories."""
    st, txn, db = ctx.state, ctx.txn, engine.env.db
    nid, name = int(op["ns"]), str(op["name"])
    ndb = db("namespaces")
    raw = txn.get(name.encode(), db=ndb)
    if raw is None or int(R.decode(raw, "namespace")["id"]) != nid:
        raise CorruptionError(f"op drops namespace {name!r} (id {nid}), which does not exist")
    prefix = S.u32(nid)
    ids: list[int] = []
    _lexstage.merge(txn, engine.env)  # (staged postings are derived from the records)
    with txn.cursor(db=db("time")) as cur:  # the namespace's memories; their entries go
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                ids.append(S.from_u64(cur.key()[12:20]))
                if not cur.delete():
                    break
    rdb = db("records")
    gone_bytes = 0
    for mid in ids:
        rec_raw = txn.pop(S.u64(mid), db=rdb)
        if rec_raw is None:
            raise CorruptionError(f"time index names memory {mid}, which has no record")
        rec = R.Record.from_bytes(rec_raw)
        gone_bytes += _capacity.entry_bytes(rec.text, rec.metadata, rec.key, engine.dim)
        engine._drop_edges(txn, mid)  # both directions, other namespaces' edges too
        ctx.dead.append((rec.slot, seq))
    _sweep(txn, db("keys"), prefix)
    _sweep(txn, db(_filter_index.DB), prefix, dups=True)  # the metadata filter index
    _lexical_index.drop_namespace(txn, engine.env, nid)
    _capacity.on_drop(engine, ctx, nid)
    st.live -= len(ids)
    st.live_bytes -= gone_bytes
    ctx.ns_delta.pop(nid, None)  # pending counts of this write die with the namespace
    ctx.ns_bytes.pop(nid, None)
    if nid == 0:  # "default" always exists: it stays, empty
        info: dict[str, Any] = {"id": 0, "count": 0}
        if st.usage:
            info["bytes"] = 0
        txn.put(name.encode(), R.encode(info), db=ndb)
    else:
        txn.delete(name.encode(), db=ndb)
        txn.delete(_NS_REV + S.u32(nid), db=ndb)
    return len(ids)


#: Op kinds this module applies (dispatched by ``Engine.apply_op``).
OPS: dict[str, Callable[..., Any]] = {"update": apply_update, "drop": apply_drop}
#: Op kinds that take a fresh slot each (the write reserves rows for them).
SLOT_OPS = frozenset({"mem", "update"})


# -- requests (resolved inside Engine.write) -----------------------------------------------------

def changed_op(old: R.Record, fields: dict[str, Any], at: int, old_vec: bytes
               ) -> dict[str, Any] | None:
    """The ``update`` op turning ``old`` into ``old`` + ``fields``; None when nothing differs.

    ``fields`` may hold ``text``, ``meta``, ``type``, ``ts`` and ``vec`` (the embedding
    of the new text, or a caller's vector). A vector that only embeds an unchanged
    text is ignored: the memory keeps its vector (``old_vec``: its little-endian
    float32 bytes). Shared by every engine.
    """
    text = fields.get("text", old.text)
    meta = fields.get("meta", old.metadata)
    type_ = fields.get("type", old.type)
    ts = fields.get("ts", old.ts)
    vec = old_vec
    if fields.get("vec") is not None and (fields.get("vec_given") or text != old.text):
        vec = np.ascontiguousarray(fields["vec"], dtype="<f4").tobytes()
    if (text, type_, ts, vec) == (old.text, old.type, old.ts, old_vec) and \
            R.encode(meta) == R.encode(old.metadata):
        return None
    return {"op": "update", "id": old.id, "ns": old.ns, "text": text, "meta": meta,
            "type": R.TYPE_CODES[type_], "ts": ts, "vec": vec, "at": at}


def _vec_bytes(matrix: np.ndarray, rec: R.Record) -> bytes:
    return np.ascontiguousarray(matrix[rec.slot], dtype="<f4").tobytes()


def mem_op(mid: int, nid: int, text: str, meta: Any, type_: str, ts: int, key: str | None,
           vec: Any, pinned: bool) -> dict[str, Any]:
    """The ``mem`` op remembering one memory (shared by every engine)."""
    op = {"op": "mem", "id": mid, "ns": nid, "text": text, "meta": meta,
          "type": R.TYPE_CODES[type_], "ts": ts,
          "vec": np.ascontiguousarray(vec, dtype="<f4").tobytes()}
    if key is not None:
        op["key"] = key
    if pinned:  # never evicted (see _capacity)
        op["pin"] = True
    return op


def resolve_update(engine: "Engine", ctx: "_Ctx", req: tuple[Any, ...]) -> R.Record:
    """``("update", ns, id, fields, at_us)`` -> the memory's record after the write."""
    _, ns, mid, fields, at = req
    old = engine._live_record(ctx, ns, mid)
    op = changed_op(old, fields, at, _vec_bytes(ctx.matrix, old))
    if op is not None:
        engine.apply_op(ctx, op)
    rec = engine.record(ctx.txn, mid)
    assert rec is not None
    return rec


def resolve_upsert(engine: "Engine", ctx: "_Ctx", req: tuple[Any, ...]) -> int:
    """``("upsert", ns, key, fields, now_us, pinned)`` -> the id (kept when the key exists).

    A new key is remembered (``ts`` defaults to ``now_us``); an existing one is
    updated in place of its text, metadata, type and, when given, timestamp.
    """
    _, ns, key, fields, now, pinned = req
    nid = engine.ns_id(ns, ctx.txn)
    mid = engine.key_id(ctx.txn, nid, key) if nid is not None else None
    if mid is None:
        ts = fields.get("ts", now)
        return int(engine._resolve(ctx, ("remember", ns, fields["text"], fields["meta"],
                                         fields["type"], ts, key, fields["vec"], pinned)))
    old = engine._live_record(ctx, ns, mid)
    op = changed_op(old, fields, now, _vec_bytes(ctx.matrix, old))
    if op is not None:
        engine.apply_op(ctx, op)
    return mid


def resolve_drop(engine: "Engine", ctx: "_Ctx", req: tuple[Any, ...]) -> int:
    """``("drop", ns)`` -> how many memories the namespace held (0: nothing to drop)."""
    name = req[1]
    nid = engine.ns_id(name, ctx.txn)
    if nid is None:
        return 0
    if nid == 0:
        raw = ctx.txn.get(name.encode(), db=engine.env.db("namespaces"))
        empty = raw is not None and int(R.decode(raw, "namespace").get("count", 0)) \
            + ctx.ns_delta.get(0, 0) == 0
        if empty and not _capacity.limits(engine, ctx.txn)["ns"].get(0) \
                and not _capacity.evicted_counts(engine, ctx.txn).get(0):
            return 0  # an empty default namespace: nothing to drop
    return int(engine.apply_op(ctx, {"op": "drop", "ns": nid, "name": name}))


#: Requests this module resolves (dispatched by ``Engine._resolve``).
REQUESTS: dict[str, Callable[..., Any]] = {"update": resolve_update, "upsert": resolve_upsert,
                                           "drop": resolve_drop}


def check_fields(text: Any, metadata: Any, type_: Any, timestamp: Any, vector: Any, dim: int,
                 *, require_text: bool) -> dict[str, Any]:
    """Validate the fields of an update/upsert into request fields (InvalidInputError)."""
    from ._timeutil import to_us
    from .embedders import check_vectors
    fields: dict[str, Any] = {}
    if text is not None or require_text:
        fields["text"] = R.check_text(text)
    if metadata is not None or require_text:
        fields["meta"] = R.check_metadata(metadata)
    if type_ is not None:
        fields["type"] = R.check_type(type_)
    if timestamp is not None:
        fields["ts"] = to_us(timestamp, "timestamp")
    if vector is not None:
        fields["vec"] = check_vectors(vector, 1, dim, "vector")[0]
        fields["vec_given"] = True
    if not fields:
        raise InvalidInputError("update needs at least one of text, metadata, type or timestamp")
    return fields
