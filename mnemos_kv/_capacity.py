"""Capacity policies: limits, pins, the retention score, and deterministic eviction.

A *limit* caps the live memories of the whole store or of one namespace, by count
(``max_entries``) and/or by size (``max_bytes``, see :func:`entry_bytes`). Limits are
set by a logged ``capacity`` op and kept in the ``capacity`` sub-database.

Eviction runs at the end of every write that is not a replay (``Engine.write``): when
a limit the write touched is exceeded, the lowest-retention memories of that scope are
evicted — exactly as many as needed to get back within the limit — by ``evict`` ops in
the same transaction, so no commit ever exceeds a limit. Namespace limits are enforced
first (in namespace-id order), the store limit last. When the check finds the scope
within its limits it costs O(1): counts and byte totals are kept as counters.

The retention score (documented in docs/compaction.md)::

    age(m)       = t_ref - ts(m)   (seconds; t_ref = newest timestamp among the
                                    scope's live memories, pinned ones included)
    x(m)         = age(m) / half_life(type(m))
    retention(m) = 2 ** -x(m)      (1.0 for the newest memory; halves every half-life)
    half_life    = episodic 7 days, semantic 30 days, procedural 90 days
    pinned memories are never evicted

Memories are evicted in ascending retention, i.e. descending ``x`` (computed as one
correctly rounded float64 division, so it is the same on every IEEE machine), ties
broken by ascending id. The score uses only logged facts (timestamps, types, pins):
reading a memory never changes its score, so reads stay reads and replay reproduces
every eviction. The evict op carries ``x``, ``t_ref`` and the limit, and the last
:data:`NOTES_MAX` evictions keep a note for ``explain_eviction``.

Sub-database ``capacity`` keys::

    b"L"                      limits: CBOR {"store": lim?, "ns": {"<nid>": lim}}, lim = {"max_entries": n?, "max_bytes": n?}
    b"C" + u32(ns)            evicted count of a namespace (u64)
    b"P" + u32(ns) + u64(id)  a pinned memory (value b"")
    b"E" + u64(seq)           eviction note (CBOR), b"I" + u64(id) -> u64(seq), b"n" -> u64 notes kept
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import lmdb
import numpy as np

from . import _filter_index
from . import _records as R
from . import _storage as S
from .errors import CapacityError, CorruptionError, InvalidInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._engine import Engine, _Ctx

DB = "capacity"
DAY = 86_400
#: Half-life of the retention score per memory type, in seconds.
HALF_LIFE_S: dict[str, int] = {"episodic": 7 * DAY, "semantic": 30 * DAY, "procedural": 90 * DAY}
_HL_US = np.array([HALF_LIFE_S[t] * 1_000_000 for t in R.MEMORY_TYPES], dtype=np.float64)
#: How many eviction notes (for ``explain_eviction``) are kept; older ones are dropped.
NOTES_MAX = 10_000
_LIMITS, _NOTES_N = b"L", b"n"


# -- sizes and keys ------------------------------------------------------------------------

def entry_bytes(text: str, meta: Any, key: str | None, dim: int) -> int:
    """The size a memory counts against ``max_bytes``: UTF-8 text + canonical CBOR
    metadata + key + its float32 vector. Depends only on the memory, never on layout."""
    n = len(text.encode("utf-8")) + (len(R.encode(meta)) if meta else 1) + 4 * dim  # {} = 1 byte
    return n + (len(key.encode("utf-8")) if key is not None else 0)


def _pin_key(ns: int, mid: int) -> bytes:
    return b"P" + S.u32(ns) + S.u64(mid)


def _db(engine: "Engine") -> Any:
    return engine.env.db(DB)


def check_limit(value: Any, what: str) -> int | None:
    """Validate one limit argument: None (no limit) or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{what} must be a positive int or None, got {value!r}")
    return int(value)


# -- reading -------------------------------------------------------------------------------

def limits(engine: "Engine", txn: lmdb.Transaction) -> dict[str, Any]:
    """``{"store": lim or None, "ns": {nid: lim}}`` in ``txn`` (decoded once per value)."""
    raw = txn.get(_LIMITS, db=_db(engine))
    if raw is None:
        return {"store": None, "ns": {}}
    hit = engine.__dict__.get("_cap_cache")  # (raw, decoded), replaced as one tuple
    if hit is not None and hit[0] == raw:
        return hit[1]
    val = R.decode(raw, "capacity limits")
    val = {"store": val.get("store"), "ns": {int(k): v for k, v in val.get("ns", {}).items()}}
    engine.__dict__["_cap_cache"] = (raw, val)
    return val


def pinned_ids(engine: "Engine", txn: lmdb.Transaction, ns: int | None) -> np.ndarray:
    """Ids of the pinned memories of namespace ``ns`` (None: every namespace), sorted."""
    prefix = b"P" if ns is None else b"P" + S.u32(ns)
    out = []
    with txn.cursor(db=_db(engine)) as cur:
        if cur.set_range(prefix):
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    break
                out.append(S.from_u64(k[5:13]))
    return np.array(sorted(out), dtype=np.int64)


def is_pinned(engine: "Engine", txn: lmdb.Transaction, ns: int, mid: int) -> bool:
    return txn.get(_pin_key(ns, mid), db=_db(engine)) is not None


def evicted_counts(engine: "Engine", txn: lmdb.Transaction) -> dict[int, int]:
    out = {}
    with txn.cursor(db=_db(engine)) as cur:
        if cur.set_range(b"C"):
            for k, v in cur:
                if not k.startswith(b"C"):
                    break
                out[S.from_u32(k[1:5])] = S.from_u64(v)
    return out


def note(engine: "Engine", txn: lmdb.Transaction, mid: int) -> dict[str, Any] | None:
    """The eviction note of memory ``mid`` (None when it has none)."""
    db = _db(engine)
    seq = txn.get(b"I" + S.u64(mid), db=db)
    if seq is None:
        return None
    raw = txn.get(b"E" + seq, db=db)
    return None if raw is None else R.decode(raw, "eviction note")


# -- op hooks (called by Engine.apply_op; also on replay) -------------------------------------

def on_add(engine: "Engine", ctx: "_Ctx", rec: R.Record, op: dict[str, Any]) -> None:
    """A memory was added: count its bytes; pin it when the op says so."""
    b = entry_bytes(rec.text, rec.metadata, rec.key, engine.dim)
    ctx.state.live_bytes += b
    ctx.ns_bytes[rec.ns] = ctx.ns_bytes.get(rec.ns, 0) + b
    if op.get("pin"):
        ctx.txn.put(_pin_key(rec.ns, rec.id), b"", db=_db(engine))


def on_remove(engine: "Engine", ctx: "_Ctx", rec: R.Record, op: dict[str, Any], seq: int) -> None:
    """A memory was forgotten or evicted: uncount it, unpin it, note an eviction."""
    b = entry_bytes(rec.text, rec.metadata, rec.key, engine.dim)
    ctx.state.live_bytes -= b
    ctx.ns_bytes[rec.ns] = ctx.ns_bytes.get(rec.ns, 0) - b
    txn, db = ctx.txn, _db(engine)
    txn.delete(_pin_key(rec.ns, rec.id), db=db)
    if op["op"] != "evict":
        return
    ckey = b"C" + S.u32(rec.ns)
    raw = txn.get(ckey, db=db)
    txn.put(ckey, S.u64((S.from_u64(raw) if raw else 0) + 1), db=db)
    ctx.evicted.append(rec)
    if not ctx.log:
        return  # restoring a base snapshot: no notes
    info = {"id": rec.id, "ns": rec.ns, "ts": rec.ts, "type": rec.type, "seq": seq,
            "scope": op.get("scope"), "x": op.get("x"), "ref": op.get("ref"),
            "lim": op.get("lim")}
    txn.put(b"E" + S.u64(seq), R.encode(info), db=db)
    txn.put(b"I" + S.u64(rec.id), S.u64(seq), db=db)
    raw = txn.get(_NOTES_N, db=db)
    n = (S.from_u64(raw) if raw else 0) + 1
    while n > NOTES_MAX:  # drop the oldest note
        with txn.cursor(db=db) as cur:
            if not cur.set_range(b"E") or not cur.key().startswith(b"E"):
                break
            old = R.decode(cur.value(), "eviction note")
            cur.delete()
        txn.delete(b"I" + S.u64(int(old["id"])), db=db)
        n -= 1
    txn.put(_NOTES_N, S.u64(n), db=db)


def on_update(engine: "Engine", ctx: "_Ctx", old: R.Record, new: R.Record) -> None:
    """A memory changed (``update`` op): count the difference of its bytes."""
    delta = (entry_bytes(new.text, new.metadata, new.key, engine.dim)
             - entry_bytes(old.text, old.metadata, old.key, engine.dim))
    ctx.state.live_bytes += delta
    ctx.ns_bytes[new.ns] = ctx.ns_bytes.get(new.ns, 0) + delta


def on_drop(engine: "Engine", ctx: "_Ctx", nid: int) -> None:
    """A namespace was dropped (``drop`` op): its limit, pins, evicted counter and the
    eviction notes of its memories go with it."""
    txn, db = ctx.txn, _db(engine)
    prefix = b"P" + S.u32(nid)
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                if not cur.delete():
                    break
    txn.delete(b"C" + S.u32(nid), db=db)
    lims = limits(engine, txn)
    if nid in lims["ns"]:
        _apply_capacity(engine, ctx, {"op": "capacity", "ns": nid})
        ctx.cap_scopes.discard(nid)
    raw = txn.get(_NOTES_N, db=db)
    if not raw:
        return
    gone = []  # eviction notes of the namespace's memories (at most NOTES_MAX to scan)
    with txn.cursor(db=db) as cur:
        if cur.set_range(b"E"):
            for k, v in cur:
                if not k.startswith(b"E"):
                    break
                info = R.decode(v, "eviction note")
                if int(info["ns"]) == nid:
                    gone.append((k, int(info["id"])))
    for k, mid in gone:
        txn.delete(k, db=db)
        txn.delete(b"I" + S.u64(mid), db=db)
    if gone:
        txn.put(_NOTES_N, S.u64(S.from_u64(raw) - len(gone)), db=db)


def _apply_capacity(engine: "Engine", ctx: "_Ctx", op: dict[str, Any]) -> None:
    """``{"op": "capacity", "ns": nid or None, "max_entries": n?, "max_bytes": n?}``."""
    txn = ctx.txn
    cur = limits(engine, txn)
    new = {"store": cur["store"], "ns": dict(cur["ns"])}
    lim = {k: int(op[k]) for k in ("max_entries", "max_bytes") if op.get(k) is not None}
    scope = op.get("ns")
    if scope is None:
        new["store"] = lim or None
    elif lim:
        new["ns"][int(scope)] = lim
    else:
        new["ns"].pop(int(scope), None)
    enc: dict[str, Any] = {}
    if new["store"]:
        enc["store"] = new["store"]
    if new["ns"]:
        enc["ns"] = {str(n): v for n, v in new["ns"].items()}  # CBOR map keys are strings
    if enc:
        txn.put(_LIMITS, R.encode(enc), db=_db(engine))
    else:
        txn.delete(_LIMITS, db=_db(engine))
    ctx.cap_scopes.add(None if scope is None else int(scope))


def _apply_pin(engine: "Engine", ctx: "_Ctx", op: dict[str, Any]) -> None:
    """``{"op": "pin", "id": id, "on": bool}``."""
    rec = engine.record(ctx.txn, int(op["id"]))
    if rec is None:
        raise CorruptionError(f"op pins id {op['id']}, which is not live")
    if op.get("on", True):
        ctx.txn.put(_pin_key(rec.ns, rec.id), b"", db=_db(engine))
    else:
        ctx.txn.delete(_pin_key(rec.ns, rec.id), db=_db(engine))


def _apply_evicted(engine: "Engine", ctx: "_Ctx", op: dict[str, Any]) -> None:
    """``{"op": "evicted", "counts": [[nid, n], ...]}``: a base snapshot restoring the counters."""
    for nid, n in op["counts"]:
        ctx.txn.put(b"C" + S.u32(int(nid)), S.u64(int(n)), db=_db(engine))


def _apply_meta(engine: "Engine", ctx: "_Ctx", op: dict[str, Any]) -> None:
    """``{"op": "meta", "id": id, "meta": {...}}``: replace a memory's metadata
    (semantic compaction merges metadata into the memory it keeps)."""
    txn = ctx.txn
    rec = engine.record(txn, int(op["id"]))
    if rec is None:
        raise CorruptionError(f"op sets the metadata of id {op['id']}, which is not live")
    before = entry_bytes(rec.text, rec.metadata, rec.key, engine.dim)
    new = dataclasses.replace(rec, metadata=op["meta"])
    txn.put(S.u64(rec.id), new.to_bytes(), db=engine.env.db("records"))
    _filter_index.remove(txn, engine.env, rec.ns, rec.id, rec.metadata)
    _filter_index.add(txn, engine.env, rec.ns, rec.id, new.metadata)
    delta = entry_bytes(new.text, new.metadata, new.key, engine.dim) - before
    ctx.state.live_bytes += delta
    ctx.ns_bytes[rec.ns] = ctx.ns_bytes.get(rec.ns, 0) + delta


#: Op kinds this module applies (dispatched by ``Engine.apply_op``).
OPS: dict[str, Callable[..., Any]] = {"capacity": _apply_capacity, "pin": _apply_pin,
                                      "evicted": _apply_evicted, "meta": _apply_meta}


# -- requests (run inside Engine.write through ("call", fn, n_new)) ------------------------------

def set_limit(ns: str | None, max_entries: int | None, max_bytes: int | None
              ) -> Callable[["Engine", "_Ctx"], None]:
    """A write call that sets (or, with both None, removes) the limit of one scope."""
    def call(engine: "Engine", ctx: "_Ctx") -> None:
        nid = None if ns is None else engine._ensure_ns(ctx, ns)
        if max_bytes is not None:
            ensure_usage(engine, ctx)
        op: dict[str, Any] = {"op": "capacity", "ns": nid}
        if max_entries is not None:
            op["max_entries"] = max_entries
        if max_bytes is not None:
            op["max_bytes"] = max_bytes
        engine.apply_op(ctx, op)
    return call


def set_pin(ns: str, mid: int, on: bool) -> Callable[["Engine", "_Ctx"], None]:
    """A write call that pins or unpins memory ``mid`` of namespace ``ns``."""
    def call(engine: "Engine", ctx: "_Ctx") -> None:
        rec = engine._live_record(ctx, ns, mid)
        if is_pinned(engine, ctx.txn, rec.ns, mid) != on:
            engine.apply_op(ctx, {"op": "pin", "id": mid, "on": on})
    return call


def ensure_usage(engine: "Engine", ctx: "_Ctx") -> None:
    """Stores made before byte counting: compute the byte counters once (O(records))."""
    st = ctx.state
    if st.usage:
        return
    per_ns: dict[int, int] = {}
    with ctx.txn.cursor(db=engine.env.db("records")) as cur:
        for _k, v in cur:
            rec = R.Record.from_bytes(v)
            per_ns[rec.ns] = per_ns.get(rec.ns, 0) + entry_bytes(rec.text, rec.metadata, rec.key,
                                                                 engine.dim)
    ndb = engine.env.db("namespaces")
    for name, info in engine.namespaces(ctx.txn).items():
        nid = int(info["id"])
        info["bytes"] = per_ns.get(nid, 0) - ctx.ns_bytes.get(nid, 0)  # the flush adds the delta
        ctx.txn.put(name.encode(), R.encode(info), db=ndb)
    st.live_bytes = sum(per_ns.values())
    st.usage = 1


# -- enforcement ------------------------------------------------------------------------------

class Scope(Protocol):
    """What enforcement reads and does inside one engine's write transaction (the
    embedded engine: :class:`_LmdbScope`; PostgreSQL: ``_pg.write.PgScope``)."""

    dim: int

    def limits(self) -> dict[str, Any]: ...
    def usage(self, nid: int | None) -> tuple[int, int]: ...
    def columns(self, nid: int | None, k: int | None = None) -> tuple[Any, ...]:
        """(ids, timestamps, type codes, pinned ids[, t_ref]) of the scope's live memories.
        With ``k``, an engine may return only a subset holding the first ``k`` of the
        eviction order, plus the scope's reference timestamp ``t_ref``."""
    def record(self, mid: int) -> R.Record | None: ...
    def apply(self, op: dict[str, Any]) -> None: ...
    def scope_name(self, nid: int | None) -> str: ...


class _LmdbScope:
    """:class:`Scope` of the embedded engine's write (``_Ctx``)."""

    def __init__(self, engine: "Engine", ctx: "_Ctx") -> None:
        self.engine, self.ctx, self.dim = engine, ctx, engine.dim

    def limits(self) -> dict[str, Any]:
        return limits(self.engine, self.ctx.txn)

    def usage(self, nid: int | None) -> tuple[int, int]:
        """(live count, live bytes) of a scope, including this write's pending changes."""
        engine, ctx = self.engine, self.ctx
        st = ctx.state
        if nid is None:
            return st.live, st.live_bytes
        name = engine.ns_name(nid, ctx.txn)
        raw = ctx.txn.get(name.encode(), db=engine.env.db("namespaces"))
        info = R.decode(raw, "namespace") if raw is not None else {}
        return (int(info.get("count", 0)) + ctx.ns_delta.get(nid, 0),
                int(info.get("bytes", 0)) + ctx.ns_bytes.get(nid, 0))

    def columns(self, nid: int | None, k: int | None = None) -> tuple[Any, ...]:
        ctx = self.ctx
        sl = ctx.slots[:ctx.state.n_slots]
        alive = sl["dead"] == 0
        if ctx.dead:  # forgotten in this write (the dead marks are set at the commit)
            alive[np.asarray([s for s, _ in ctx.dead], dtype=np.int64)] = False
        return slot_columns(sl, alive, nid) + (pinned_ids(self.engine, ctx.txn, nid),)

    def record(self, mid: int) -> R.Record | None:
        return self.engine.record(self.ctx.txn, mid)

    def apply(self, op: dict[str, Any]) -> None:
        self.engine.apply_op(self.ctx, op)

    def scope_name(self, nid: int | None) -> str:
        return _scope_name(lambda n: self.engine.ns_name(n, self.ctx.txn), nid)


def slot_columns(sl: np.ndarray, alive: np.ndarray, nid: int | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, timestamps, type codes) of the live slots of scope ``nid`` (None: all)."""
    if nid is not None:
        alive = alive & (sl["ns"] == nid)
    idx = np.flatnonzero(alive)
    return (sl["id"][idx].astype(np.int64), sl["ts"][idx].astype(np.int64),
            sl["type"][idx].astype(np.int64))


def snapshot_columns(snap: Any, nid: int | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Scope.columns` of an embedded snapshot (live as of its seq)."""
    sl = snap.slots[:snap.state.n_slots]
    alive = snap.live_mask()[:snap.state.n_slots]
    return slot_columns(sl, alive, nid) + (pinned_ids(snap.engine, snap.txn, nid),)


class Ranking:
    """The live, unpinned memories of one scope in eviction order (lazily sorted).

    Built from the scope's live memories as columns (any order: ids, timestamps in
    µs, type codes) and its pinned ids, which every engine reads its own way; the
    score and the order are this class alone, for every engine. The columns may be a
    subset holding the first ``k`` of the order when ``t_ref`` (the newest timestamp of
    the whole scope, pinned memories included) is given: ``prefix(j)``, ``j <= k``, is
    then the same (see ``_pg.write.capacity_columns``)."""

    def __init__(self, ids: np.ndarray, ts: np.ndarray, types: np.ndarray,
                 pinned: np.ndarray, t_ref: int | None = None) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        ts_all = np.asarray(ts, dtype=np.int64)
        types = np.asarray(types, dtype=np.int64)
        self.live = int(ids.size)  # (of the columns given: a subset's size for a subset)
        if t_ref is None:
            t_ref = int(ts_all.max()) if ids.size else 0
        self.t_ref = int(t_ref)
        self.pinned = int(np.asarray(pinned).size)
        if self.pinned:
            keep = ~np.isin(ids, np.asarray(pinned, dtype=np.int64))
            ids, ts_all, types = ids[keep], ts_all[keep], types[keep]
        self.ids = ids
        self.ts = ts_all
        self.types = types
        self.x = (self.t_ref - ts_all).astype(np.float64) / _HL_US[self.types]

    def __len__(self) -> int:
        return int(self.ids.size)

    def prefix(self, k: int) -> np.ndarray:
        """Positions (into this ranking) of the first ``k`` memories to evict, in order."""
        n = len(self)
        k = min(k, n)
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        if k < n:
            thr = np.partition(self.x, n - k)[n - k]  # the k-th largest x
            sel = np.flatnonzero(self.x >= thr)
        else:
            sel = np.arange(n)
        order = sel[np.lexsort((self.ids[sel], -self.x[sel]))]
        return order[:k]

    def position(self, mid: int) -> int | None:
        """1-based place of ``mid`` in the eviction order (1 = next to go)."""
        hit = np.flatnonzero(self.ids == mid)
        if not hit.size:
            return None
        xi = self.x[int(hit[0])]
        return int((self.x > xi).sum() + ((self.x == xi) & (self.ids < mid)).sum()) + 1


def _scope_name(ns_name: Callable[[int], str], nid: int | None) -> str:
    return "the store" if nid is None else f"namespace {ns_name(nid)!r}"


def _enforce_scope(w: Scope, nid: int | None, lim: dict[str, int]) -> None:
    me, mb = lim.get("max_entries"), lim.get("max_bytes")
    count, nbytes = w.usage(nid)
    over_n = count - me if me is not None else 0
    over_b = nbytes - mb if mb is not None else 0
    if over_n <= 0 and over_b <= 0:
        return
    lim_list = [me, mb]
    done, want = 0, max(over_n, 1)
    # within the byte limit exactly the first over_n of the order go: an engine may read
    # just the candidates for them; over it, how many must go is not known beforehand
    rank = Ranking(*w.columns(nid, want if over_b <= 0 else None))
    while over_n > 0 or over_b > 0:
        order = rank.prefix(want)
        if done >= order.size:
            raise CapacityError(
                f"{w.scope_name(nid)} holds {count} memories ({nbytes} bytes); "
                f"the limit max_entries={me}, max_bytes={mb} cannot be met because the "
                f"{rank.pinned} remaining memories are pinned; unpin some or raise the limit")
        for pos in order[done:].tolist():
            if over_n <= 0 and over_b <= 0:
                break
            mid = int(rank.ids[pos])
            rec = w.record(mid)
            if rec is None:
                raise CorruptionError(f"live memory id {mid} has no record")
            b = entry_bytes(rec.text, rec.metadata, rec.key, w.dim)
            w.apply({"op": "evict", "id": mid, "scope": nid, "x": float(rank.x[pos]),
                     "ref": rank.t_ref, "lim": lim_list})
            over_n -= 1
            over_b -= b
            done += 1
        want = max(want * 2, done + 1)


def enforce_in(w: Scope, ctx: Any) -> None:
    """Evict down to every limit this write touched (O(1) when within limits). ``ctx``:
    the engine's write context (``ns_delta``, ``ns_bytes``, ``cap_scopes``)."""
    lims = w.limits()
    if lims["store"] is None and not lims["ns"]:
        return
    grown = {nid for nid in set(ctx.ns_delta) | set(ctx.ns_bytes)
             if ctx.ns_delta.get(nid, 0) > 0 or ctx.ns_bytes.get(nid, 0) > 0}
    scopes = grown | {s for s in ctx.cap_scopes if s is not None}
    for nid in sorted(scopes):
        lim = lims["ns"].get(nid)
        if lim:
            _enforce_scope(w, nid, lim)
    if lims["store"] and (grown or None in ctx.cap_scopes):
        _enforce_scope(w, None, lims["store"])


def enforce(engine: "Engine", ctx: "_Ctx") -> None:
    """The embedded engine's :func:`enforce_in`."""
    enforce_in(_LmdbScope(engine, ctx), ctx)


def notify(callback: Callable[[list[R.Record]], None], evicted: list[R.Record]) -> None:
    """Run the ``on_evict`` callback after the commit; its errors become warnings (the
    write is durable and must not look failed)."""
    try:
        callback(list(evicted))
    except Exception as exc:  # noqa: BLE001 - user code
        warnings.warn(f"on_evict callback raised {type(exc).__name__}: {exc}", RuntimeWarning,
                      stacklevel=3)


# -- snapshot, digest, explanation ---------------------------------------------------------------

def base_ops(engine: "Engine", txn: lmdb.Transaction, ns_ids: set[int] | None
             ) -> Iterator[dict[str, Any]]:
    """Ops restoring limits and evicted counters in a base snapshot (after the ns ops)."""
    lims = limits(engine, txn)
    if lims["store"] and ns_ids is None:
        yield {"op": "capacity", "ns": None, **lims["store"]}
    for nid in sorted(lims["ns"]):
        if ns_ids is None or nid in ns_ids:
            yield {"op": "capacity", "ns": nid, **lims["ns"][nid]}
    counts = [[n, c] for n, c in sorted(evicted_counts(engine, txn).items())
              if ns_ids is None or n in ns_ids]
    if counts:
        yield {"op": "evicted", "counts": counts}


def digest_items(snap: Any, sel: dict[int, str], whole: bool) -> Iterator[list[Any]]:
    """What the state digest covers of this module: limits, pins, evicted counters (by
    namespace name). Nothing when no limit, pin or eviction was ever made. ``snap``:
    any engine's read view (``_backend.Reader``)."""
    lims = snap.limits()
    if whole and lims["store"]:
        yield ["capacity", None, lims["store"].get("max_entries"), lims["store"].get("max_bytes")]
    for nid in sorted(lims["ns"], key=lambda n: sel.get(n, "")):
        if nid in sel:
            lim = lims["ns"][nid]
            yield ["capacity", sel[nid], lim.get("max_entries"), lim.get("max_bytes")]
    for nid, count in sorted(snap.evicted_counts().items(), key=lambda t: sel.get(t[0], "")):
        if nid in sel and count:
            yield ["evicted", sel[nid], count]
    for nid in sorted(sel, key=lambda n: sel[n]):
        for mid in snap.pinned_ids(nid):
            yield ["pin", sel[nid], mid]


def _days(us: float) -> str:
    return f"{us / 1e6 / DAY:.2f} days"


def explain(snap: Any, ns_name: str, nid: int | None, mid: int, *,
            confined: bool) -> dict[str, Any]:
    """Why memory ``mid`` was evicted, or where it stands now (see ``explain_eviction``).
    ``snap``: any engine's read view (``_backend.Reader``)."""
    st = snap.state
    where = f" in namespace {ns_name!r}" if confined else ""
    rec = snap.record(mid)
    if rec is not None and confined and rec.ns != nid:
        raise MemoryNotFoundError(f"no memory with id {mid}{where}")
    if rec is None:
        info = snap.eviction_note(mid)
        if info is not None and confined and info["ns"] != nid:
            raise MemoryNotFoundError(f"no memory with id {mid}{where}")
        if info is not None:
            tcode = R.TYPE_CODES[info["type"]]
            hl = float(_HL_US[tcode])
            x = float(info["x"])
            scope = _scope_name(snap.ns_name, info["scope"])
            me, mb = (list(info.get("lim") or []) + [None, None])[:2]
            limit = ", ".join(f"{k}={v}" for k, v in (("max_entries", me), ("max_bytes", mb))
                              if v is not None)
            return {"id": mid, "status": "evicted", "namespace": snap.ns_name(info["ns"]),
                    "seq": info["seq"], "scope": scope, "max_entries": me, "max_bytes": mb,
                    "type": info["type"], "timestamp": info["ts"] / 1e6,
                    "reference_timestamp": info["ref"] / 1e6, "age_seconds": x * hl / 1e6,
                    "half_life_seconds": hl / 1e6, "x": x, "retention": 2.0 ** -x,
                    "reason": (f"evicted at seq {info['seq']} to keep {scope} within {limit}: it "
                               f"had the lowest retention 2^-(age/half-life) = {2.0 ** -x:.6g} "
                               f"(age {_days(x * hl)}, {info['type']} half-life {_days(hl)}) of the "
                               "unpinned memories, ties broken by the smaller id")}
        if mid < st.next_id:
            return {"id": mid, "status": "gone",
                    "reason": "not live, and no eviction note: forgotten, merged or summarized, or "
                              f"evicted before the last {NOTES_MAX} evictions or a replay"}
        raise MemoryNotFoundError(f"no memory with id {mid}{where}")
    lims = snap.limits()
    pinned = snap.is_pinned(rec.ns, mid)
    hl = float(_HL_US[R.TYPE_CODES[rec.type]])
    scopes = []
    applies: list[int | None] = [rec.ns] if rec.ns in lims["ns"] else []
    if lims["store"]:
        applies.append(None)
    ranks: dict[int | None, Ranking] = {}
    for sc in applies:
        lim = lims["store"] if sc is None else lims["ns"][sc]
        srank = ranks[sc] = Ranking(*snap.capacity_columns(sc))
        sx = (srank.t_ref - rec.ts) / hl
        scopes.append({"scope": _scope_name(snap.ns_name, sc), "max_entries": lim.get("max_entries"),
                       "max_bytes": lim.get("max_bytes"), "live": srank.live,
                       "reference_timestamp": srank.t_ref / 1e6,
                       "retention": float("inf") if pinned else 2.0 ** -sx,
                       "position": None if pinned else srank.position(mid),
                       "candidates": len(srank)})
    rank = ranks.get(rec.ns) or Ranking(*snap.capacity_columns(rec.ns))
    x = (rank.t_ref - rec.ts) / hl
    return {"id": mid, "status": "live", "namespace": snap.ns_name(rec.ns),
            "pinned": pinned, "type": rec.type, "timestamp": rec.ts / 1e6,
            "reference_timestamp": rank.t_ref / 1e6, "age_seconds": (rank.t_ref - rec.ts) / 1e6,
            "half_life_seconds": hl / 1e6, "x": x, "retention": float("inf") if pinned else 2.0 ** -x,
            "limits": scopes,
            "reason": ("pinned: never evicted" if pinned else
                       f"retention 2^-(age/half-life) = {2.0 ** -x:.6g} (age {_days(rank.t_ref - rec.ts)} "
                       f"before the newest memory of its namespace, {rec.type} half-life {_days(hl)})"
                       + ("" if scopes else "; no capacity limit applies"))}


# -- verify ----------------------------------------------------------------------------------

def verify(engine: "Engine", snap: Any, rep: Any) -> None:
    """Check pins, byte counters and limits against the records (adds to a VerifyReport)."""
    txn, st = snap.txn, snap.state
    per_ns: dict[int, int] = {}
    count: dict[int, int] = {}
    with txn.cursor(db=engine.env.db("records")) as cur:
        for _k, v in cur:
            try:
                rec = R.Record.from_bytes(v)
            except CorruptionError:
                continue  # reported by the record check
            count[rec.ns] = count.get(rec.ns, 0) + 1
            if st.usage:
                per_ns[rec.ns] = per_ns.get(rec.ns, 0) + entry_bytes(rec.text, rec.metadata,
                                                                     rec.key, engine.dim)
    n_pins = 0
    with txn.cursor(db=_db(engine)) as cur:
        if cur.set_range(b"P"):
            for k in cur.iternext(values=False):
                if not k.startswith(b"P"):
                    break
                n_pins += 1
                ns, mid = S.from_u32(k[1:5]), S.from_u64(k[5:13])
                live = engine.record(txn, mid)
                if live is None or live.ns != ns:
                    rep.add(f"pin of memory {mid} (namespace id {ns}) has no live memory")
    rep.checked["pins"] = n_pins
    nss = engine.namespaces(txn)
    if st.usage:
        if sum(per_ns.values()) != st.live_bytes:
            rep.add(f"state says {st.live_bytes} live bytes, records hold {sum(per_ns.values())}")
        for name, info in nss.items():
            got = per_ns.get(int(info["id"]), 0)
            if int(info.get("bytes", 0)) != got:
                rep.add(f"namespace {name!r}: bytes say {info.get('bytes', 0)}, records hold {got}")
    lims = limits(engine, txn)
    scopes: list[tuple[int | None, dict[str, int], int, int]] = []
    if lims["store"]:
        scopes.append((None, lims["store"], st.live, st.live_bytes))
    for name, info in nss.items():
        nid = int(info["id"])
        if nid in lims["ns"]:
            scopes.append((nid, lims["ns"][nid], count.get(nid, 0), per_ns.get(nid, 0)))
    for snid, lim, n, b in scopes:
        me, mb = lim.get("max_entries"), lim.get("max_bytes")
        if (me is not None and n > me) or (mb is not None and st.usage and b > mb):
            rep.add(f"{_scope_name(lambda n: engine.ns_name(n, txn), snid)} holds {n} memories ({b} bytes), over its "
                    f"limit max_entries={me}, max_bytes={mb}")
