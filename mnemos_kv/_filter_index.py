"""The metadata filter index in LMDB: maintained by ``apply_op``, read as numpy slot masks.

One named sub-database, ``fields`` (dupsort + dupfixed; see ``_storage.DB_NAMES``)::

    ns u32 BE | path | tag u8 | value   ->   duplicates: memory id u64 BE (sorted)

* ``path``: the components of a path into nested dicts, each escaped (``\\x00`` ->
  ``\\x00\\xff``), joined by ``\\x00\\x01`` and ended by ``\\x00\\x00`` (prefix-free,
  so one path's entries are one contiguous key range).
* ``tag`` + ``value``, an order-preserving encoding per type: ``NULL``; ``BOOL`` (one
  byte); ``NUM`` (ints a float64 holds exactly, and floats: 8 bytes of sortable
  float64); ``STR`` (escaped UTF-8 + ``\\x00\\x00``, byte order = code point order).
  Values the key cannot hold exactly are listed by type under one key each, with an
  empty value: ``BIG`` (other ints), ``LONG`` (strings over ``MAX_STR_KEY`` bytes),
  ``OTHER`` (lists, dicts, bytes). Every path of a dict value is indexed, and the
  dict's own path gets an ``OTHER`` entry (so ``$exists`` sees it).
* ``ns | \\x00\\x00`` (no path starts that way): memories with a path too long to be a
  key; ``\\xff\\xff\\xff\\xff version``: the layout version.

Paths through a key that contains ``.`` or is empty are not indexed: no dotted filter
path can name them (see ``filters``).

A filter is answered per snapshot as two boolean masks over the slots: ``yes`` (sure
matches) and ``maybe`` (entries the keys cannot decide: ``BIG``/``LONG``/``OTHER``
values, overflowing paths); only the ``maybe`` records are decoded and checked with
the reference semantics (:func:`mnemos_kv.filters.evaluate`). Equality reads one
key's duplicates with one ``getmulti``; ranges walk one cursor range. The index is
derived state keyed by id: compaction never touches it, replay rebuilds it, and a
store without it (or of another version) is indexed on its first read-write open
(:func:`ensure_built`); until then readers fall back to decoding records.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import struct
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import lmdb
import numpy as np

from . import _records as R
from . import filters as F

log = logging.getLogger("mnemos_kv")

__all__ = ["VERSION", "add", "add_many", "memo_key", "overflow_key", "remove", "ready",
           "ensure_built", "select",
           "entries"]

VERSION = 1
DB = "fields"
#: Paths longer than this (encoded) are not keys: their memories go in the overflow list.
MAX_PATH_KEY = 200
#: Strings whose encoding is longer than this are listed under LONG, not by value.
MAX_STR_KEY = 290
#: A range whose first value has at least this many ids reads the ids key by key in
#: bulk; below, it walks the (key, id) pairs.
DUPS_FOR_BULK = 4

T_NULL, T_BOOL, T_NUM, T_STR = b"\x01", b"\x02", b"\x03", b"\x04"
T_BIG, T_LONG, T_OTHER = b"\x10", b"\x11", b"\x12"
_OVERFLOW = b"\x00\x00"
_VERSION_KEY = b"\xff\xff\xff\xffversion"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_SIGN = 1 << 63


# ------------------------------------------------------------------------------ encodings

def _esc(b: bytes) -> bytes:
    return b.replace(b"\x00", b"\x00\xff")


@functools.lru_cache(maxsize=4096)
def path_key(path: tuple[str, ...]) -> bytes:
    """The encoded path (prefix-free; see the module doc)."""
    return b"\x00\x01".join(_esc(p.encode("utf-8")) for p in path) + b"\x00\x00"


@functools.lru_cache(maxsize=4096)
def _entry_prefix(ns: int, path: tuple[str, ...]) -> bytes | None:
    """``ns + path`` of an index key, or None when the path is too long to be one."""
    pk = path_key(path)
    return _U32.pack(ns) + pk if len(pk) <= MAX_PATH_KEY else None


def num_key(x: float) -> bytes:
    """8 bytes whose byte order is the numeric order of the float64 ``x`` (-0.0 = 0.0)."""
    (bits,) = _U64.unpack(_F64.pack(float(x) + 0.0))
    bits = (~bits & 0xFFFF_FFFF_FFFF_FFFF) if bits & _SIGN else bits | _SIGN
    return _U64.pack(bits)


def num_of(key: bytes) -> float:
    (bits,) = _U64.unpack(key)
    bits = bits & ~_SIGN if bits & _SIGN else ~bits & 0xFFFF_FFFF_FFFF_FFFF
    return float(_F64.unpack(_U64.pack(bits))[0])


def str_key(s: str) -> bytes:
    return _esc(s.encode("utf-8")) + b"\x00\x00"


def str_of(key: bytes) -> str:
    return key[:-2].replace(b"\x00\xff", b"\x00").decode("utf-8")


def _exact_int(v: int) -> bool:
    try:
        return float(v) == v
    except OverflowError:
        return False


def value_key(v: Any) -> bytes:
    """``tag + value`` of a metadata value (a bare tag for values listed by type)."""
    t = type(v)
    if t is str:
        k = str_key(v)
        return T_STR + k if len(k) <= MAX_STR_KEY else T_LONG
    if v is None:
        return T_NULL
    if t is bool:
        return T_BOOL + (b"\x01" if v else b"\x00")
    if t is float:
        return T_NUM + num_key(v)
    if isinstance(v, int):
        return T_NUM + num_key(v) if _exact_int(v) else T_BIG
    if isinstance(v, float):
        return T_NUM + num_key(v)
    if isinstance(v, str):
        return value_key(str(v))
    return T_OTHER


def _walk(meta: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in meta.items():
        if not k or "." in k:
            continue  # no filter path can name it
        path = prefix + (k,)
        yield path, v
        if isinstance(v, dict):  # decoded metadata holds plain dicts
            yield from _walk(v, path)


def entries(ns: int, meta: Mapping[str, Any]) -> tuple[list[bytes], bool]:
    """(the index keys of a memory's metadata, sorted; whether a path overflowed)."""
    out: list[bytes] = []
    overflow = False
    for path, v in _walk(meta or {}, ()):
        pre = _entry_prefix(ns, path)
        if pre is None:
            overflow = True
            continue
        out.append(pre + value_key(v))
    out.sort()
    return out, overflow


# ------------------------------------------------------------------------------ maintenance

def add(txn: lmdb.Transaction, env: Any, ns: int, mid: int, meta: Mapping[str, Any]) -> None:
    """Index memory ``mid``'s metadata (in the caller's write transaction)."""
    keys, overflow = entries(ns, meta)
    if not keys and not overflow:
        return
    db = env.db(DB)
    idb = _U64.pack(mid)
    for k in keys:
        txn.put(k, idb, db=db, dupdata=True)
    if overflow:
        txn.put(_U32.pack(ns) + _OVERFLOW, idb, db=db, dupdata=True)


def add_many(txn: lmdb.Transaction, env: Any, items: Sequence[tuple[int, int, Any, Any]]) -> None:
    """:func:`add` of every ``(ns, id, _, metadata)``, the entries put in (key, id) order.
    Each distinct (namespace, metadata object) is indexed once, and equal flat metadata
    once (:func:`memo_key`); when few objects serve many items (``_bulkcheck`` shares
    one dict between items of equal metadata), the items are grouped with numpy."""
    if not items:
        return
    k = len(items)
    objs = list(zip(map(_NS_OF, items), map(id, map(_META_OF, items))))
    distinct = dict(zip(objs, map(_META_OF, items)))  # (the items keep the objects alive)
    memo: dict[Any, list[bytes]] = {}
    if len(distinct) * 4 > k:  # mostly distinct objects: item by item
        groups: dict[bytes, list[bytes]] = {}
        for ns, mid, _text, meta in items:
            if not meta:
                continue
            idb = _U64.pack(mid)
            for key in _keys_of(ns, meta, memo):
                got = groups.get(key)
                if got is None:
                    groups[key] = [idb]
                else:
                    got.append(idb)
        pairs: list[tuple[bytes, bytes]] = []
        for key in sorted(groups):
            ids = groups[key]
            ids.sort()  # (ascending already when the items are in id order)
            pairs.extend(zip(itertools.repeat(key, len(ids)), ids))
    else:
        code = dict(zip(distinct, range(len(distinct))))
        codes = np.fromiter(map(code.__getitem__, objs), np.int64, k)
        all_ids = np.fromiter(map(_ID_OF, items), np.int64, k)
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(code)))))
        by_key: dict[bytes, list[np.ndarray]] = {}
        for c, ((ns, _oid), meta) in enumerate(distinct.items()):
            if meta:
                sel = all_ids[order[bounds[c]:bounds[c + 1]]]
                for key in _keys_of(ns, meta, memo):
                    by_key.setdefault(key, []).append(sel)
        pairs = []
        for key in sorted(by_key):
            parts = by_key[key]
            sel = np.sort(parts[0] if len(parts) == 1 else np.concatenate(parts))
            vals = np.frombuffer(sel.astype(">u8").tobytes(), "V8").tolist()  # (bytes)
            pairs.extend(zip(itertools.repeat(key, len(vals)), vals))
    if pairs:
        with txn.cursor(db=env.db(DB)) as cur:
            cur.putmulti(pairs, dupdata=True)


_NS_OF, _ID_OF, _META_OF = (operator.itemgetter(i) for i in (0, 1, 3))


def _keys_of(ns: int, meta: Mapping[str, Any], memo: dict[Any, list[bytes]]) -> list[bytes]:
    """The index keys of ``meta`` in namespace ``ns`` (the overflow key included),
    computed once per equal flat metadata (``memo``)."""
    mk = memo_key(ns, meta)
    keys = memo.get(mk) if mk is not None else None
    if keys is None:
        keys, overflow = entries(ns, meta)
        if overflow:
            keys.append(_U32.pack(ns) + _OVERFLOW)
        if mk is not None:
            memo[mk] = keys
    return keys


_SCALARS = (str, int, float, bool, type(None))


def memo_key(ns: int, meta: Mapping[str, Any]) -> Any:
    """A hashable key of flat metadata of scalars (with their classes: 1, 1.0 and True
    differ) in namespace ``ns``: equal keys have equal :func:`entries` and encoded size;
    None for other metadata."""
    if type(meta) is not dict:
        return None
    key = tuple([(k, v.__class__, v) for k, v in meta.items()])
    for _k, cls, _v in key:
        if cls not in _SCALARS:
            return None
    return ns, key


def overflow_key(ns: int) -> bytes:
    """The key listing the memories of ``ns`` with a path too long to be a key."""
    return _U32.pack(ns) + _OVERFLOW


def remove(txn: lmdb.Transaction, env: Any, ns: int, mid: int, meta: Mapping[str, Any]) -> None:
    """Remove memory ``mid``'s entries (its metadata as indexed)."""
    keys, overflow = entries(ns, meta)
    if overflow:
        keys.append(_U32.pack(ns) + _OVERFLOW)
    if not keys:
        return
    idb = _U64.pack(mid)
    with txn.cursor(db=env.db(DB)) as cur:
        for k in keys:
            if cur.set_key_dup(k, idb):
                cur.delete()


def ready(txn: lmdb.Transaction, env: Any) -> bool:
    """Whether this snapshot has an index of the current version."""
    if not env.has_db(DB):
        return False
    raw = txn.get(_VERSION_KEY, db=env.db(DB))
    return raw is not None and _U32.unpack(raw)[0] == VERSION


def ensure_built(env: Any) -> bool:
    """Index every record of a store whose index is missing or of another version
    (stores made before it existed), in one write transaction. True when it built."""
    if not env.has_db(DB):
        return False
    with env.read() as txn:
        if ready(txn, env):
            return False

    def body(txn: lmdb.Transaction) -> None:
        if ready(txn, env):
            return  # another process did it
        t0 = time.perf_counter()
        txn.drop(env.db(DB), delete=False)
        total = int(txn.stat(env.db("records"))["entries"])
        log.log(logging.INFO if total else logging.DEBUG,
                "%s: building the metadata filter index over %d memories",
                getattr(env, "path", "?"), total)
        n = 0
        with txn.cursor(db=env.db("records")) as cur:
            for _k, v in cur:
                rec = R.Record.from_bytes(v)  # type: ignore[arg-type]  # py-lmdb stubs
                add(txn, env, rec.ns, rec.id, rec.metadata)
                n += 1
        txn.put(_VERSION_KEY, _U32.pack(VERSION), db=env.db(DB))
        log.log(logging.INFO if n else logging.DEBUG,
                "%s: built the metadata filter index: %d memories in %.2f s",
                getattr(env, "path", "?"), n, time.perf_counter() - t0)
    env.write(body)
    return True


# ------------------------------------------------------------------------------ queries

@functools.lru_cache(maxsize=256)
def _row_dtype(key_len: int) -> np.dtype:
    return np.dtype([("k", f"V{key_len}"), ("id", ">u8")])


class _Eval:
    """Evaluates a parsed filter over one snapshot as (yes, maybe) slot masks."""

    def __init__(self, txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int],
                 ids: np.ndarray, universe: np.ndarray,
                 slots_of: Callable[[np.ndarray], np.ndarray]) -> None:
        self.txn, self.env = txn, env
        self.ns = [_U32.pack(n) for n in sorted(set(ns_ids))]
        self.ids, self.universe, self.slots_of = ids, universe, slots_of
        self.n = universe.size
        self.cur = txn.cursor(db=env.db(DB))

    def close(self) -> None:
        self.cur.close()

    def none(self) -> np.ndarray:
        return np.zeros(self.n, bool)

    def mask(self, id_chunks: list[np.ndarray]) -> np.ndarray:
        """Slots of the given ids (arrays of u64), within the universe."""
        out = self.none()
        if not id_chunks:
            return out
        ids = np.concatenate(id_chunks) if len(id_chunks) > 1 else id_chunks[0]
        if ids.size:
            out[self.slots_of(ids.astype(np.int64))] = True
            out &= self.universe
        return out

    def key_ids(self, key: bytes) -> np.ndarray:
        """The ids listed under one exact key."""
        buf = self.cur.getmulti([key], dupdata=True, dupfixed_bytes=8, keyfixed=True)
        if not len(buf):
            return np.empty(0, ">u8")
        return np.frombuffer(buf, dtype=_row_dtype(len(key)))["id"]

    def exact(self, suffix: bytes, pk: bytes) -> list[np.ndarray]:
        return [self.key_ids(ns + pk + suffix) for ns in self.ns]

    def scan(self, prefix: bytes, start: bytes = b"",
             keep: Callable[[bytes], int] | None = None) -> list[np.ndarray]:
        """Ids of the keys ``prefix + v`` with ``v >= start``, in key order.

        ``keep(v)``: 1 take, 0 skip, -1 stop (None takes everything). Walks the
        distinct keys, then reads their duplicates with one ``getmulti`` per key length.
        """
        cur = self.cur
        if not cur.set_range(prefix + start):
            return []
        lp = len(prefix)
        by_len: dict[int, list[bytes]] = {}
        for k in cur.iternext_nodup(keys=True, values=False):
            if not k.startswith(prefix):  # type: ignore[union-attr]  # py-lmdb stubs
                break
            if keep is not None:
                d = keep(k[lp:])  # type: ignore[arg-type]  # py-lmdb stubs: bytes or memoryview
                if d < 0:
                    break
                if d == 0:
                    continue
            by_len.setdefault(len(k), []).append(k)  # type: ignore[arg-type]  # py-lmdb stubs: bytes or memoryview
        out = []
        for length, keys in by_len.items():
            buf = cur.getmulti(keys, dupdata=True, dupfixed_bytes=8, keyfixed=True)
            out.append(np.frombuffer(buf, dtype=_row_dtype(length))["id"])
        return out

    def range_ids(self, lo: bytes, hi: bytes) -> list[np.ndarray]:
        """Ids of the keys ``lo <= k < hi``, one comparison per step.

        Values shared by many memories (the first key has several ids): walk the
        distinct keys, then one ``getmulti`` per key length reads their ids in bulk.
        Mostly distinct values (scores, times): walk the (key, id) pairs once, which
        spares a B-tree lookup per key.
        """
        cur = self.cur
        if not cur.set_range(lo):
            return []
        if cur.count() < DUPS_FOR_BULK:
            vals: list[bytes] = []
            push = vals.append
            for k, v in cur.iternext(keys=True, values=True):
                if k >= hi:  # type: ignore[operator]  # py-lmdb stubs
                    break
                push(v)  # type: ignore[arg-type]  # py-lmdb stubs
            return [np.frombuffer(b"".join(vals), ">u8")] if vals else []
        keys: list[bytes] = []
        append = keys.append
        for k in cur.iternext_nodup(keys=True, values=False):
            if k >= hi:  # type: ignore[operator]  # py-lmdb stubs
                break
            append(k)  # type: ignore[arg-type]  # py-lmdb stubs
        if not keys:
            return []
        lengths = {len(k) for k in keys}
        groups = [keys] if len(lengths) == 1 else \
            [[k for k in keys if len(k) == n] for n in sorted(lengths)]
        out = []
        for group in groups:
            buf = cur.getmulti(group, dupdata=True, dupfixed_bytes=8, keyfixed=True)
            out.append(np.frombuffer(buf, dtype=_row_dtype(len(group[0])))["id"])
        return out

    # -- nodes -----------------------------------------------------------------------

    def node(self, nd: F.Node) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(nd, F.Leaf):
            return self.leaf(nd)
        if isinstance(nd, F.Not):
            y, m = self.node(nd.item)
            return self.universe & ~(y | m), m
        parts = [self.node(x) for x in nd.items]
        if isinstance(nd, F.And):
            yes = parts[0][0].copy()
            cand = parts[0][0] | parts[0][1]
            for y, m in parts[1:]:
                yes &= y
                cand &= y | m
            return yes, cand & ~yes
        yes = parts[0][0].copy()
        maybe = parts[0][1].copy()
        for y, m in parts[1:]:
            yes |= y
            maybe |= m
        return yes, maybe & ~yes

    def present(self, pk: bytes) -> np.ndarray:
        """Slots whose memory has the path (any value); ``pk`` ends with ``\\x00\\x00``."""
        end = pk[:-1] + b"\x01"  # the first key after every key of the path
        return self.mask([c for ns in self.ns for c in self.range_ids(ns + pk, ns + end)])

    def leaf(self, lf: F.Leaf) -> tuple[np.ndarray, np.ndarray]:
        pk = path_key(lf.path)
        missing_true = F.eval_leaf(lf, F._MISSING)
        if len(pk) > MAX_PATH_KEY:  # only overflow memories can have this path
            maybe = self.mask([self.key_ids(ns + _OVERFLOW) for ns in self.ns])
            return (self.universe & ~maybe if missing_true else self.none()), maybe
        if lf.op == "exists":
            present = self.present(pk)
            return (present if lf.value else self.universe & ~present), self.none()
        yes_ids: list[Any] = []
        maybe_ids: list[Any] = []
        if lf.op in ("eq", "in"):
            values = (lf.value,) if lf.op == "eq" else lf.value
            seen: set[bytes] = set()
            for x in values:
                sure, unsure = self.equal_keys(x)
                for s, bucket in ((sure, yes_ids), (unsure, maybe_ids)):
                    if s is not None and s not in seen:
                        seen.add(s)
                        bucket.extend(self.exact(s, pk))
        else:
            yes_ids, maybe_ids = self.order(lf, pk)
        yes = self.mask(yes_ids)
        maybe = self.mask(maybe_ids)
        if missing_true:  # {"k": None} or $in with None: memories without the path too
            yes |= self.universe & ~self.present(pk)
        return yes, maybe & ~yes

    @staticmethod
    def equal_keys(x: Any) -> tuple[bytes | None, bytes | None]:
        """(the key suffix of sure matches, the suffix of possible ones) for ``== x``."""
        vk = value_key(x)
        if vk[:1] in (T_NULL, T_BOOL, T_NUM, T_STR):
            return vk, None
        return None, vk  # BIG, LONG, OTHER: the listed values of that kind may be equal

    def order(self, lf: F.Leaf, pk: bytes) -> tuple[list[Any], list[Any]]:
        x, op = lf.value, lf.op
        long = False
        if isinstance(x, str):
            tag, unsure_tag = T_STR, T_LONG
            k = str_key(x)
            long = len(k) > MAX_STR_KEY
            bound = k[:-2][:MAX_STR_KEY] if long else k

            def at_bound(v: bytes) -> bool:
                return v.startswith(bound) if long else v == bound

            def value_of(v: bytes) -> Any:
                return str_of(v)
        else:
            tag, unsure_tag = T_NUM, T_BIG
            try:
                fx = float(x)
            except OverflowError:  # an int beyond float64: compared exactly at the bound
                fx = math.inf if x > 0 else -math.inf
            bound = num_key(fx)

            def at_bound(v: bytes) -> bool:
                return v == bound

            def value_of(v: bytes) -> Any:
                return num_of(v)
        upward = op in ("gt", "gte")

        def keep(v: bytes) -> int:
            if at_bound(v):
                return 1 if F.compare(value_of(v), op, x) else 0
            if upward:
                return 1
            return 1 if v < bound else -1

        yes: list[Any] = []
        for ns in self.ns:
            prefix = ns + pk + tag
            if long:  # the keys starting with the cut bound are compared one by one
                yes.extend(self.scan(prefix, bound if upward else b"", keep))
                continue
            after = prefix[:-1] + bytes([prefix[-1] + 1])  # the first key after the tag's
            if F.compare(value_of(bound), op, x):  # the bound's own key (equal, or
                yes.append(self.key_ids(prefix + bound))  # rounded: compared exactly)
            if upward:
                yes.extend(self.range_ids(prefix + bound + b"\x00", after))
            else:
                yes.extend(self.range_ids(prefix, prefix + bound))
        return yes, self.exact(unsure_tag, pk)


def select(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int], ids: np.ndarray,
           universe: np.ndarray, node: F.Node, slots_of: Callable[[np.ndarray], np.ndarray],
           metadata_of: Callable[[int], Mapping[str, Any] | None]) -> np.ndarray | None:
    """The slots (a mask within ``universe``) whose memory matches ``node``; None when
    this snapshot has no index (the caller decodes records instead).

    ``ids``: the id of each slot; ``slots_of(ids)``: their slots (ids that have one);
    ``metadata_of(id)``: a record's metadata, for the few the index cannot decide.
    """
    if not ready(txn, env):
        return None
    ev = _Eval(txn, env, ns_ids, ids, universe, slots_of)
    try:
        yes, maybe = ev.node(node)
    finally:
        ev.close()
    for slot in np.flatnonzero(maybe).tolist():
        meta = metadata_of(int(ids[slot]))
        if meta is not None and F.evaluate(node, meta):
            yes[slot] = True
    return yes


def scan_all(txn: lmdb.Transaction, env: Any) -> Iterator[tuple[bytes, int]]:
    """Every (key, id) entry (for verify)."""
    if not env.has_db(DB):
        return
    with txn.cursor(db=env.db(DB)) as cur:
        for k, v in cur:
            if k != _VERSION_KEY:
                yield k, _U64.unpack(v)[0]  # type: ignore[misc]  # py-lmdb stubs


def forget_where(ns_name: str, node: F.Node) -> Callable[[Any, Any], int]:
    """A ``("call", fn, 0)`` write request: forget every live memory of the namespace
    whose metadata matches ``node``, as ``forget`` ops in the caller's transaction
    (ascending id); returns how many."""

    def fn(engine: Any, ctx: Any) -> int:
        from ._engine import Snapshot, State
        from ._retrieval import candidate_mask, filter_mask
        nid = engine.ns_id(ns_name, ctx.txn)
        n = ctx.state.n_slots
        if nid is None or n == 0:
            return 0
        snap = Snapshot(ctx.txn, State(**ctx.state.to_dict()), ctx.matrix[:n], ctx.slots[:n])
        universe = candidate_mask(snap, [nid])
        for slot, _seq in ctx.dead:  # forgotten earlier in this transaction
            if slot < n:
                universe[slot] = False
        ids = np.ascontiguousarray(snap.slots["id"])
        hit = filter_mask(engine, snap, [nid], node, universe, ids)
        victims = sorted(int(i) for i in ids[np.flatnonzero(hit)].tolist())
        from . import _forget
        if len(victims) >= _forget.MIN_BULK:
            _forget.apply(engine, ctx, victims, _forget.load(engine, ctx.txn, victims))
        else:
            for mid in victims:
                engine.apply_op(ctx, {"op": "forget", "id": mid})
        return len(victims)
    return fn


class Checker:
    """verify(): the index holds exactly the entries of the snapshot's records."""

    def __init__(self, txn: lmdb.Transaction, env: Any) -> None:
        self.txn, self.env = txn, env
        self.on = ready(txn, env)
        self.expected = 0
        self.cur = txn.cursor(db=env.db(DB)) if self.on else None

    def missing(self, ns: int, mid: int, meta: Mapping[str, Any]) -> int:
        """How many of the record's entries the index lacks (counted as expected)."""
        if self.cur is None:
            return 0
        keys, overflow = entries(ns, meta)
        if overflow:
            keys.append(_U32.pack(ns) + _OVERFLOW)
        self.expected += len(keys)
        idb = _U64.pack(mid)
        return sum(1 for k in keys if not self.cur.set_key_dup(k, idb))

    def total(self) -> int:
        """Entries in the index (without the version key)."""
        if self.cur is None:
            return 0
        n = int(self.txn.stat(self.env.db(DB))["entries"])
        return n - 1  # the version key
