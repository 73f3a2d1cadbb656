"""The write path of the PostgreSQL engine: requests -> ops -> SQL, in one transaction.

The same requests as the embedded engine (see ``_backend``) resolve into the same ops
(``_mutate.mem_op``, ``_mutate.changed_op``), with ids and sequence numbers taken from
the ``state`` row, which the transaction locks first: writers are serialised in
commit order, so the same ops in the same order give the same ids as the embedded
store. Each op is applied to the tables and appended to ``oplog`` as the canonical
CBOR payload a replay file carries for it (vectors inline), so an export copies the
payloads as they are. Inserts of new memories and their postings are buffered and
flushed before the next read (one ``COPY`` each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _capacity, _lexical, _lexical_index, _mutate
from .. import _records as R
from .._capacity import entry_bytes
from .._engine import Ref, State, base_counters, take_id, take_ns
from .jsonfilter import to_json
from ..errors import (CorruptionError, DuplicateKeyError, InvalidInputError, MemoryNotFoundError,
                      UnsupportedError)

__all__ = ["Ctx", "PgScope", "resolve", "apply_op", "finish", "record_of", "as_array", "REC_COLS"]

#: The columns :func:`record_of` decodes, in order.
REC_COLS = "id, ns, text, meta, type, ts, key, upd, seq"


def record_of(row: Any) -> R.Record:
    """A ``Record`` from a row of :data:`REC_COLS` (slot -1: the engine has no slots)."""
    mid, ns, text, meta, type_, ts, key, upd, seq = row
    return R.Record(id=int(mid), ns=int(ns), text=text, metadata=R.decode(bytes(meta), "metadata"),
                    type=R.MEMORY_TYPES[int(type_)], ts=int(ts), slot=-1, key=key, seq=int(seq),
                    upd=None if upd is None else int(upd))


@dataclass
class Ctx:
    """One write transaction: its cursor, the locked counters and what is pending."""

    cur: Any
    state: State
    dim: int
    log: bool = True
    allow_gaps: bool = False
    results: list[Any] = field(default_factory=list)
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    ns_delta: dict[int, int] = field(default_factory=dict)
    ns_bytes: dict[int, int] = field(default_factory=dict)
    lex: dict[int, list[int]] = field(default_factory=dict)  # ns -> [docs, total, stotal] delta
    mem_rows: list[tuple[Any, ...]] = field(default_factory=list)
    post_rows: list[tuple[Any, ...]] = field(default_factory=list)
    replay_only: bool = True  # every request was an already-resolved op
    cap_scopes: set[Any] = field(default_factory=set)  # capacity limits set in this write
    evicted: list[R.Record] = field(default_factory=list)  # evicted in this write (on_evict)
    notes: int = 0  # eviction notes written in this write (trimmed by finish)

    def flush(self) -> None:
        """Write the buffered inserts (before any read that may need them)."""
        if self.mem_rows:  # COPY: one stream instead of a statement per row
            with self.cur.copy("COPY memories (id, ns, text, meta, type, ts, key, upd, seq, "
                               "question, vec, metaj) FROM STDIN") as cp:
                for row in self.mem_rows:
                    cp.write_row(row)
            self.mem_rows = []
        if self.post_rows:
            with self.cur.copy("COPY postings (ns, term, id, tf, dl) FROM STDIN") as cp:
                for row in self.post_rows:
                    cp.write_row(row)
            self.post_rows = []

    def one(self, query: str, params: Any = ()) -> Any:
        self.flush()
        return self.cur.execute(query, params).fetchone()


def _lex(ctx: Ctx, ns: int, sign: int, length: int, slength: int) -> None:
    d = ctx.lex.setdefault(ns, [0, 0, 0])
    d[0] += sign
    d[1] += sign * length
    d[2] += sign * slength


def _index(ctx: Ctx, ns: int, mid: int, text: str) -> None:
    terms, length, slength = _lexical_index.doc_terms(text)
    ctx.post_rows.extend((ns, t, mid, tf, dl) for t, (tf, dl) in terms.items())
    _lex(ctx, ns, 1, length, slength)


def _unindex(ctx: Ctx, ns: int, mid: int, text: str) -> None:
    terms, length, slength = _lexical_index.doc_terms(text)
    ctx.flush()
    ctx.cur.execute("DELETE FROM postings WHERE ns = %s AND id = %s AND term = ANY(%s)",
                    (ns, mid, list(terms)))
    _lex(ctx, ns, -1, length, slength)


def _row(ctx: Ctx, mid: int) -> R.Record | None:
    row = ctx.one(f"SELECT {REC_COLS} FROM memories WHERE id = %s", (mid,))
    return None if row is None else record_of(row)


def ns_id(ctx: Ctx, name: str) -> int | None:
    row = ctx.one("SELECT id FROM namespaces WHERE name = %s", (name,))
    return None if row is None else int(row[0])


def _ensure_ns(ctx: Ctx, name: str) -> int:
    nid = ns_id(ctx, name)
    if nid is not None:
        return nid
    return int(apply_op(ctx, {"op": "ns", "name": name, "id": ctx.state.next_ns}))


def _live(ctx: Ctx, ns: str, mid: int) -> R.Record:
    nid = ns_id(ctx, ns)
    rec = _row(ctx, mid) if nid is not None else None
    if rec is None or rec.ns != nid:
        raise MemoryNotFoundError(f"no memory with id {mid} in namespace {ns!r}")
    return rec


def as_array(v: Any) -> np.ndarray:
    """A ``vector`` value as float32 (pgvector loads a ``Vector`` or an ndarray)."""
    arr = v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v)
    return np.ascontiguousarray(arr, dtype="<f4")


def _vec_bytes(ctx: Ctx, mid: int) -> bytes:
    return as_array(ctx.one("SELECT vec FROM memories WHERE id = %s", (mid,))[0]).tobytes()


def _key_id(ctx: Ctx, nid: int, key: str) -> int | None:
    row = ctx.one("SELECT id FROM memories WHERE ns = %s AND key = %s", (nid, key))
    return None if row is None else int(row[0])


def resolve(ctx: Ctx, req: tuple[Any, ...]) -> Any:
    """Resolve one request into ops and apply them (the embedded engine's vocabulary)."""
    kind = req[0]
    if kind == "op":
        return apply_op(ctx, req[1])
    ctx.replay_only = False
    if kind == "remember":
        _, ns, text, meta, type_, ts, key, vec = req[:8]
        nid = _ensure_ns(ctx, ns)
        if key is not None and _key_id(ctx, nid, key) is not None:
            raise DuplicateKeyError(f"namespace {ns!r} already has a memory with key {key!r}")
        return apply_op(ctx, _mutate.mem_op(ctx.state.next_id, nid, text, meta, type_, ts, key, vec,
                                            len(req) > 8 and bool(req[8])))
    if kind == "forget":
        _, ns, mid = req
        _live(ctx, ns, mid)
        return apply_op(ctx, {"op": "forget", "id": mid})
    if kind == "connect":
        _, ns, src, dst, rel, w = req
        src = ctx.results[src[1]] if isinstance(src, tuple) else src
        dst = ctx.results[dst[1]] if isinstance(dst, tuple) else dst
        _live(ctx, ns, src)
        _live(ctx, ns, dst)
        return apply_op(ctx, {"op": "link", "src": src, "dst": dst, "rel": rel, "w": w})
    if kind == "disconnect":
        _, ns, src, dst, rel = req
        _live(ctx, ns, src)
        _live(ctx, ns, dst)
        return apply_op(ctx, {"op": "unlink", "src": src, "dst": dst, "rel": rel})
    if kind == "update":
        _, ns, mid, fields, at = req
        old = _live(ctx, ns, mid)
        op = _mutate.changed_op(old, fields, at, _vec_bytes(ctx, mid))
        if op is not None:
            apply_op(ctx, op)
        rec = _row(ctx, mid)
        assert rec is not None
        return rec
    if kind == "upsert":
        _, ns, key, fields, now, pinned = req
        kns = ns_id(ctx, ns)
        kid = _key_id(ctx, kns, key) if kns is not None else None
        if kid is None:
            return int(resolve(ctx, ("remember", ns, fields["text"], fields["meta"], fields["type"],
                                     fields.get("ts", now), key, fields["vec"], pinned)))
        old = _live(ctx, ns, kid)
        op = _mutate.changed_op(old, fields, now, _vec_bytes(ctx, kid))
        if op is not None:
            apply_op(ctx, op)
        return kid
    if kind == "drop":
        name = req[1]
        dns = ns_id(ctx, name)
        if dns is None:
            return 0
        if dns == 0:
            count = int(ctx.one("SELECT count FROM namespaces WHERE id = 0")[0]) \
                + ctx.ns_delta.get(0, 0)
            extra = ctx.one("SELECT EXISTS (SELECT 1 FROM limits WHERE scope = 0) OR "
                            "EXISTS (SELECT 1 FROM evicted WHERE ns = 0 AND count > 0)")[0]
            if count == 0 and not extra:
                return 0
        return int(apply_op(ctx, {"op": "drop", "ns": dns, "name": name}))
    if kind == "forget_many":  # the same forget ops, in the given order
        _, ns, mids = req
        for mid in mids:
            _live(ctx, ns, mid)
            apply_op(ctx, {"op": "forget", "id": mid})
        return None
    if kind == "forget_where":  # the matches of a parsed filter, forgotten in id order
        from .. import filters as F
        _, ns, node = req
        fns = ns_id(ctx, ns)
        if fns is None:
            return 0
        ctx.flush()
        victims = matching_ids(ctx.cur, node, "ns = %s", [fns])
        for mid in victims:
            apply_op(ctx, {"op": "forget", "id": mid})
        return len(victims)
    if kind == "capacity":  # ("capacity", ns or None, max_entries, max_bytes)
        _, ns, me, mb = req
        cap: dict[str, Any] = {"op": "capacity", "ns": None if ns is None else _ensure_ns(ctx, ns)}
        if me is not None:
            cap["max_entries"] = me
        if mb is not None:
            cap["max_bytes"] = mb
        return apply_op(ctx, cap)
    if kind == "pin":
        _, ns, mid, on = req
        rec = _live(ctx, ns, mid)
        pinned = ctx.one("SELECT 1 FROM pins WHERE id = %s", (mid,)) is not None
        if pinned != bool(on):
            apply_op(ctx, {"op": "pin", "id": rec.id, "on": bool(on)})
        return None
    if kind == "bind":
        bound = tuple(ctx.results[x.item] if isinstance(x, Ref) else x for x in req[1])
        return resolve(ctx, bound)
    if kind == "apply":  # a part resolving its own ops through the writer (_semantic)
        return req[1](PgWriter(ctx))
    if kind == "call":
        name = getattr(req[1], "__qualname__", "").split(".")[0] or "this call"
        raise UnsupportedError(f"{name} is not supported by the PostgreSQL engine "
                               "(see docs/postgres.md)")
    raise InvalidInputError(f"unknown request {kind!r}")


def apply_op(ctx: Ctx, op: dict[str, Any]) -> Any:
    """Apply one op to the tables and frame it for ``oplog``. Shared with replay."""
    st, cur = ctx.state, ctx.cur
    kind = op["op"]
    seq = st.seq + 1
    result: Any = None
    if kind == "mem":
        mid = int(op["id"])
        take_id(st, mid, ctx.allow_gaps)
        vec = np.frombuffer(op["vec"], dtype="<f4")
        if vec.shape != (ctx.dim,):
            raise CorruptionError(f"op vector has {vec.size} floats, expected {ctx.dim}")
        ns, text, meta, key = int(op["ns"]), op["text"], op["meta"], op.get("key")
        ctx.mem_rows.append((mid, ns, text, R.encode(meta), int(op["type"]), int(op["ts"]), key,
                             op.get("upd"), seq, _lexical.is_question(text),
                             vec.astype(np.float32), to_json(meta)))
        _index(ctx, ns, mid, text)
        if op.get("pin"):
            ctx.flush()
            cur.execute("INSERT INTO pins (id, ns) VALUES (%s, %s)", (mid, ns))
        b = entry_bytes(text, meta, key, ctx.dim)
        st.live_bytes += b
        ctx.ns_bytes[ns] = ctx.ns_bytes.get(ns, 0) + b
        st.next_id += 1
        st.live += 1
        ctx.ns_delta[ns] = ctx.ns_delta.get(ns, 0) + 1
        result = mid
    elif kind in ("forget", "evict"):
        mid = int(op["id"])
        rec = _row(ctx, mid)
        if rec is None:
            raise CorruptionError(f"op forgets id {mid}, which is not live")
        cur.execute("DELETE FROM memories WHERE id = %s", (mid,))
        _unindex(ctx, rec.ns, mid, rec.text)
        cur.execute("DELETE FROM edges WHERE src = %s OR dst = %s", (mid, mid))
        cur.execute("DELETE FROM pins WHERE id = %s", (mid,))
        if kind == "evict":
            cur.execute("INSERT INTO evicted (ns, count) VALUES (%s, 1) ON CONFLICT (ns) "
                        "DO UPDATE SET count = evicted.count + 1", (rec.ns,))
            ctx.evicted.append(rec)
            if ctx.log:  # the note explain_eviction reads (the embedded engine's fields)
                info = {"id": rec.id, "ns": rec.ns, "ts": rec.ts, "type": rec.type, "seq": seq,
                        "scope": op.get("scope"), "x": op.get("x"), "ref": op.get("ref"),
                        "lim": op.get("lim")}
                cur.execute("INSERT INTO evictions (seq, id, ns, info) VALUES (%s, %s, %s, %s)",
                            (seq, rec.id, rec.ns, R.encode(info)))
                ctx.notes += 1
        b = entry_bytes(rec.text, rec.metadata, rec.key, ctx.dim)
        st.live_bytes -= b
        ctx.ns_bytes[rec.ns] = ctx.ns_bytes.get(rec.ns, 0) - b
        st.live -= 1
        ctx.ns_delta[rec.ns] = ctx.ns_delta.get(rec.ns, 0) - 1
    elif kind == "link":
        ctx.flush()
        cur.execute("INSERT INTO edges (src, dst, rel, w) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (src, dst, rel) DO UPDATE SET w = EXCLUDED.w",
                    (int(op["src"]), int(op["dst"]), op["rel"], float(op["w"])))
    elif kind == "unlink":
        if op.get("rel") is None:
            cur.execute("DELETE FROM edges WHERE src = %s AND dst = %s", (op["src"], op["dst"]))
        else:
            cur.execute("DELETE FROM edges WHERE src = %s AND dst = %s AND rel = %s",
                        (op["src"], op["dst"], op["rel"]))
    elif kind == "compact":
        pass  # marks the point in the log; PostgreSQL reclaims space itself (VACUUM)
    elif kind == "update":
        result = _apply_update(ctx, op, seq)
    elif kind == "drop":
        result = _apply_drop(ctx, op)
    elif kind == "capacity":
        scope = -1 if op.get("ns") is None else int(op["ns"])
        me, mb = op.get("max_entries"), op.get("max_bytes")
        ctx.cap_scopes.add(None if scope == -1 else scope)
        if me is None and mb is None:
            cur.execute("DELETE FROM limits WHERE scope = %s", (scope,))
        else:
            cur.execute("INSERT INTO limits (scope, max_entries, max_bytes) VALUES (%s, %s, %s) "
                        "ON CONFLICT (scope) DO UPDATE SET max_entries = EXCLUDED.max_entries, "
                        "max_bytes = EXCLUDED.max_bytes", (scope, me, mb))
    elif kind == "pin":
        rec = _row(ctx, int(op["id"]))
        if rec is None:
            raise CorruptionError(f"op pins id {op['id']}, which is not live")
        if op.get("on", True):
            cur.execute("INSERT INTO pins (id, ns) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (rec.id, rec.ns))
        else:
            cur.execute("DELETE FROM pins WHERE id = %s", (rec.id,))
    elif kind == "evicted":
        for nid, n in op["counts"]:
            cur.execute("INSERT INTO evicted (ns, count) VALUES (%s, %s) ON CONFLICT (ns) "
                        "DO UPDATE SET count = EXCLUDED.count", (int(nid), int(n)))
    elif kind == "meta":
        rec = _row(ctx, int(op["id"]))
        if rec is None:
            raise CorruptionError(f"op sets the metadata of id {op['id']}, which is not live")
        cur.execute("UPDATE memories SET meta = %s, metaj = %s::jsonb WHERE id = %s",
                    (R.encode(op["meta"]), to_json(op["meta"]), rec.id))
        delta = entry_bytes(rec.text, op["meta"], rec.key, ctx.dim) \
            - entry_bytes(rec.text, rec.metadata, rec.key, ctx.dim)
        st.live_bytes += delta
        ctx.ns_bytes[rec.ns] = ctx.ns_bytes.get(rec.ns, 0) + delta
    elif kind == "base":
        seq = base_counters(st, op)
    elif kind == "ns":
        nid = int(op["id"])
        take_ns(st, nid, ctx.allow_gaps)
        ctx.flush()
        cur.execute("INSERT INTO namespaces (id, name) VALUES (%s, %s)", (nid, op["name"]))
        st.next_ns += 1
        result = nid
    else:
        raise CorruptionError(f"unknown op {kind!r} in log")
    st.seq = seq
    if ctx.log:
        ctx.frames.append((seq, R.encode(op)))
    return result


def _apply_update(ctx: Ctx, op: dict[str, Any], seq: int) -> int:
    mid = int(op["id"])
    old = _row(ctx, mid)
    if old is None:
        raise CorruptionError(f"op updates id {mid}, which is not live")
    if int(op["ns"]) != old.ns:
        raise CorruptionError(f"op updates id {mid} in namespace id {op['ns']}, it is in {old.ns}")
    vec = np.frombuffer(op["vec"], dtype="<f4")
    if vec.shape != (ctx.dim,):
        raise CorruptionError(f"op vector has {vec.size} floats, expected {ctx.dim}")
    text = op["text"]
    ctx.cur.execute("UPDATE memories SET text = %s, meta = %s, type = %s, ts = %s, upd = %s, "
                    "seq = %s, question = %s, vec = %s, metaj = %s::jsonb WHERE id = %s",
                    (text, R.encode(op["meta"]), int(op["type"]), int(op["ts"]), int(op["at"]), seq,
                     _lexical.is_question(text), vec.astype(np.float32), to_json(op["meta"]), mid))
    if text != old.text:
        _unindex(ctx, old.ns, mid, old.text)
        _index(ctx, old.ns, mid, text)
    delta = entry_bytes(text, op["meta"], old.key, ctx.dim) \
        - entry_bytes(old.text, old.metadata, old.key, ctx.dim)
    ctx.state.live_bytes += delta
    ctx.ns_bytes[old.ns] = ctx.ns_bytes.get(old.ns, 0) + delta
    return mid


def _apply_drop(ctx: Ctx, op: dict[str, Any]) -> int:
    st, cur = ctx.state, ctx.cur
    nid, name = int(op["ns"]), str(op["name"])
    row = ctx.one("SELECT id FROM namespaces WHERE name = %s", (name,))
    if row is None or int(row[0]) != nid:
        raise CorruptionError(f"op drops namespace {name!r} (id {nid}), which does not exist")
    gone = cur.execute("SELECT text, meta, key FROM memories WHERE ns = %s", (nid,)).fetchall()
    gone_bytes = sum(entry_bytes(t, R.decode(bytes(m), "metadata"), k, ctx.dim) for t, m, k in gone)
    cur.execute("DELETE FROM edges WHERE src IN (SELECT id FROM memories WHERE ns = %s) "
                "OR dst IN (SELECT id FROM memories WHERE ns = %s)", (nid, nid))
    for table, col in (("memories", "ns"), ("postings", "ns"), ("lexstats", "ns"), ("pins", "ns"),
                       ("evicted", "ns"), ("limits", "scope"), ("evictions", "ns")):
        cur.execute(f"DELETE FROM {table} WHERE {col} = %s", (nid,))  # our own table names
    ctx.lex.pop(nid, None)
    ctx.cap_scopes.discard(nid)
    st.live -= len(gone)
    st.live_bytes -= gone_bytes
    ctx.ns_delta.pop(nid, None)
    ctx.ns_bytes.pop(nid, None)
    if nid == 0:  # "default" always exists: it stays, empty
        cur.execute("UPDATE namespaces SET count = 0, bytes = 0 WHERE id = 0")
    else:
        cur.execute("DELETE FROM namespaces WHERE id = %s", (nid,))
    return len(gone)


def finish(ctx: Ctx) -> None:
    """Write the pending rows, statistics, counts, log frames and counters."""
    ctx.flush()
    cur, st = ctx.cur, ctx.state
    for ns in sorted(ctx.lex):
        d, t, s = ctx.lex[ns]
        if d or t or s:
            cur.execute("INSERT INTO lexstats (ns, docs, total, stotal) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (ns) DO UPDATE SET docs = lexstats.docs + EXCLUDED.docs, "
                        "total = GREATEST(lexstats.total + EXCLUDED.total, 0), "
                        "stotal = GREATEST(lexstats.stotal + EXCLUDED.stotal, 0)", (ns, d, t, s))
    if ctx.lex:
        cur.execute("DELETE FROM lexstats WHERE docs <= 0")
    for ns in sorted(set(ctx.ns_delta) | set(ctx.ns_bytes)):
        dc, db = ctx.ns_delta.get(ns, 0), ctx.ns_bytes.get(ns, 0)
        if dc or db:
            cur.execute("UPDATE namespaces SET count = count + %s, bytes = bytes + %s WHERE id = %s",
                        (dc, db, ns))
    if ctx.notes:  # keep the newest NOTES_MAX eviction notes
        cur.execute("DELETE FROM evictions WHERE seq < (SELECT seq FROM evictions "
                    "ORDER BY seq DESC OFFSET %s LIMIT 1)", (_capacity.NOTES_MAX - 1,))
    if ctx.frames:
        cur.executemany("INSERT INTO oplog (seq, payload) VALUES (%s, %s)", ctx.frames)
    cur.execute("UPDATE state SET seq = %s, next_id = %s, next_ns = %s, live = %s, "
                "live_bytes = %s", (st.seq, st.next_id, st.next_ns, st.live, st.live_bytes))


class PgScope:
    """``_capacity.Scope`` of a PostgreSQL write: capacity is enforced by the shared
    ``_capacity.enforce_in`` inside the write transaction, which holds the ``state``
    row lock, so concurrent writers evict one after the other, each from the state the
    previous one committed."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx, self.dim = ctx, ctx.dim

    def limits(self) -> dict[str, Any]:
        self.ctx.flush()
        return limits_of(self.ctx.cur.execute(
            "SELECT scope, max_entries, max_bytes FROM limits ORDER BY scope").fetchall())

    def usage(self, nid: int | None) -> tuple[int, int]:
        ctx = self.ctx
        if nid is None:
            return ctx.state.live, ctx.state.live_bytes
        row = ctx.one("SELECT count, bytes FROM namespaces WHERE id = %s", (nid,))
        count, nbytes = (0, 0) if row is None else (int(row[0]), int(row[1]))
        return count + ctx.ns_delta.get(nid, 0), nbytes + ctx.ns_bytes.get(nid, 0)

    def columns(self, nid: int | None, k: int | None = None) -> tuple[Any, ...]:
        self.ctx.flush()
        return capacity_columns(self.ctx.cur.connection, nid, k)

    def record(self, mid: int) -> R.Record | None:
        return _row(self.ctx, mid)

    def apply(self, op: dict[str, Any]) -> None:
        apply_op(self.ctx, op)

    def scope_name(self, nid: int | None) -> str:
        if nid is None:
            return "the store"
        row = self.ctx.one("SELECT name FROM namespaces WHERE id = %s", (nid,))
        return f"namespace {row[0] if row else f'<dropped namespace {nid}>'!r}"


def limits_of(rows: Any) -> dict[str, Any]:
    """Rows ``(scope, max_entries, max_bytes)`` of ``limits`` as ``_capacity.limits`` gives
    them (scope -1: the store)."""
    out: dict[str, Any] = {"store": None, "ns": {}}
    for scope, me, mb in rows:
        lim = {k: int(v) for k, v in (("max_entries", me), ("max_bytes", mb)) if v is not None}
        if int(scope) == -1:
            out["store"] = lim
        else:
            out["ns"][int(scope)] = lim
    return out


_COLS = [("id", ">i8"), ("ts", ">i8"), ("type", ">i2")]


def capacity_columns(conn: Any, nid: int | None, k: int | None = None) -> tuple[Any, ...]:
    """(ids, timestamps, type codes, pinned ids[, t_ref]) of the live memories of scope
    ``nid`` (None: the store), columns as ``bytea`` (see ``fetch_columns``).

    With ``k``: only the candidates for the first ``k`` of the eviction order, and the
    scope's newest timestamp ``t_ref``. Within one type, x = (t_ref - ts) / half-life
    falls as ts grows, so per type the ``k + pinned`` oldest (by ts, id) hold every
    candidate; rows up to ``(t_ref - ts) >> 48`` µs newer than the last of them are
    taken too, since two float64 roundings (of the int difference and of the
    quotient) may tie x of timestamps that close (a relative 2**-52 each), and a tie is
    broken by id. Everything newer has a strictly smaller x than k unpinned rows of
    its type, so it cannot be among the first k."""
    from .search import fetch_columns
    scope, sp = ("TRUE", []) if nid is None else ("ns = %s", [nid])
    pins = "(SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM pins WHERE " + scope + ")"
    if k is None:
        rows, (pinned,) = fetch_columns(conn, "SELECT id, ts, type FROM memories WHERE " + scope,
                                        sp, _COLS, ("id",), extra=pins, extra_params=sp)
        return (rows["id"].astype(np.int64), rows["ts"].astype(np.int64),
                rows["type"].astype(np.int64), np.array(pinned or [], dtype=np.int64))
    types = range(len(R.MEMORY_TYPES))  # per type: each a lookup in memories_ns_type/_type
    newest = ", ".join(f"(SELECT max(ts) FROM memories WHERE {scope} AND type = {t})" for t in types)
    t_ref, n_pins = conn.execute(f"SELECT greatest({newest}), (SELECT count(*) FROM pins "
                                 f"WHERE {scope})", sp * (len(types) + 1)).fetchone()
    if t_ref is None:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, empty, 0
    parts, params = [], []
    for t in types:  # {t}, {scope}: our own constants
        parts.append(f"SELECT id, ts, type FROM memories WHERE {scope} AND type = {t} AND "
                     f"ts <= coalesce((SELECT ts + ((%s - ts) >> 48) + 1 FROM memories "
                     f"WHERE {scope} AND type = {t} ORDER BY ts, id OFFSET %s LIMIT 1), "
                     "9223372036854775807)")
        params += sp + [int(t_ref)] + sp + [int(k) + int(n_pins) - 1]
    rows, (pinned,) = fetch_columns(conn, " UNION ALL ".join(parts), params, _COLS, ("id",),
                                    extra=pins, extra_params=sp)
    return (rows["id"].astype(np.int64), rows["ts"].astype(np.int64),
            rows["type"].astype(np.int64), np.array(pinned or [], dtype=np.int64), int(t_ref))


def matching_ids(cur: Any, node: Any, cond: str, params: list[Any]) -> list[int]:
    """Ids (ascending) of the memories satisfying SQL ``cond`` whose metadata matches the
    parsed filter ``node``: in SQL over ``metaj`` (``jsonfilter``), re-checking in Python
    only rows JSON cannot hold; all in Python when the filter has no exact SQL form."""
    from .. import filters as F
    from .jsonfilter import where
    sql = where(node)
    if sql is None:
        rows = cur.execute(f"SELECT id, meta FROM memories WHERE {cond} ORDER BY id",
                           params).fetchall()
        return [int(i) for i, m in rows if F.evaluate(node, R.decode(bytes(m), "metadata"))]
    pred, pparams = sql
    rows = cur.execute(f"SELECT id, CASE WHEN metaj IS NULL THEN meta END FROM memories "
                       f"WHERE {cond} AND (metaj IS NULL OR {pred}) ORDER BY id",
                       [*params, *pparams]).fetchall()
    return [int(i) for i, m in rows
            if m is None or F.evaluate(node, R.decode(bytes(m), "metadata"))]


class PgWriter:
    """``_semantic.LmdbWriter`` of a PostgreSQL write: what an ``("apply", fn, n)``
    request's ``fn`` reads and does (edges in the embedded engine's key order)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def record(self, mid: int) -> R.Record | None:
        return _row(self.ctx, mid)

    def edges(self, mid: int, direction: str) -> list[tuple[int, int, str, float]]:
        self.ctx.flush()
        cur = self.ctx.cur
        if direction == "out":
            return [(mid, int(d), r, float(w)) for d, r, w in cur.execute(
                "SELECT dst, rel, w FROM edges WHERE src = %s ORDER BY dst, rel", (mid,)).fetchall()]
        return [(int(s), mid, r, float(w)) for s, r, w in cur.execute(
            "SELECT src, rel, w FROM edges WHERE dst = %s ORDER BY src, rel", (mid,)).fetchall()]

    def has_edge(self, src: int, dst: int, rel: str) -> bool:
        return self.ctx.one("SELECT 1 FROM edges WHERE src = %s AND dst = %s AND rel = %s",
                            (src, dst, rel)) is not None

    def resolve(self, req: tuple[Any, ...]) -> Any:
        return resolve(self.ctx, req)

    def apply(self, op: dict[str, Any]) -> Any:
        return apply_op(self.ctx, op)
