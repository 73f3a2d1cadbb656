"""JSON Lines dump of a store's logical state, and loading one back (its inverse).

A dump is one JSON object per line, in this order::

    {"kind": "store", "version": 1, "embedder": name, "dim": d, "seq": S, "next_id": N,
     "next_ns": K, "capacity": {"max_entries": n?, "max_bytes": n?} | null}
    {"kind": "namespace", "name": str, "id": nid, "capacity": {...} | null, "evicted": n}
    {"kind": "memory", "id": id, "namespace": str, "text": str, "metadata": {...},
     "type": str, "created_at": float, "ts": µs, "key"?: str, "updated_at"?: float,
     "upd"?: µs, "pinned"?: true, "vector_b64"?: base64 of the float32 (little-endian) row}
    {"kind": "edge", "namespace": str, "src": id, "dst": id, "relation": str, "weight": w}

Memories come in id order, edges in (src, dst, relation) order. Metadata bytes are
written as ``{"$bytes": base64}`` (and a user dict that looks like such a marker as
``{"$dict": {...}}``). ``load`` rebuilds exactly that state in an empty store, with the
same ids, counters, timestamps, keys, pins, limits and edges, through the same path
a replay's base snapshot takes (ops applied by ``Engine.apply_op``, then a checkpoint
whose base snapshot holds them), so the loaded store's ``state_digest()`` equals the
source's. A dump without vectors is embedded again on load (the same digest with a
deterministic embedder such as the default one).
"""

from __future__ import annotations

import base64
import json
from typing import IO, Any, Iterable, Iterator

import numpy as np

from . import _capacity
from . import _progress
from . import _records as R
from . import _storage as S
from ._progress import Progress
from ._progress import embed as embed_progress
from ._validate import check_namespace
from .errors import CorruptionError, EmbedderMismatchError, InvalidInputError, ReplayError

DUMP_VERSION = 1
_MARKERS = ("$bytes", "$dict")


def to_json(value: Any) -> Any:
    """Metadata -> JSON-able values (bytes as ``{"$bytes": base64}``)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        inner = {k: to_json(v) for k, v in value.items()}
        return {"$dict": inner} if len(value) == 1 and next(iter(value)) in _MARKERS else inner
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json`."""
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value and isinstance(value["$bytes"], str):
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except ValueError as exc:
                raise InvalidInputError(f"bad base64 in a $bytes value: {exc}") from None
        if len(value) == 1 and "$dict" in value and isinstance(value["$dict"], dict):
            return {k: from_json(v) for k, v in value["$dict"].items()}
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


# -- dump -----------------------------------------------------------------------------------------

def rows(engine: Any, snap: Any, namespaces: list[str] | None, vectors: bool,
         progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """The dump's rows for one snapshot (see the module doc)."""
    txn, st = snap.txn, snap.state
    nss = engine.namespaces(txn)
    names = sorted(nss) if namespaces is None else [n for n in sorted(set(namespaces)) if n in nss]
    sel = {int(nss[n]["id"]): n for n in names}
    lims = _capacity.limits(engine, txn)
    evicted = _capacity.evicted_counts(engine, txn)
    yield {"kind": "store", "version": DUMP_VERSION, "embedder": engine.embedder_name,
           "dim": engine.dim, "seq": st.seq, "next_id": st.next_id, "next_ns": st.next_ns,
           "capacity": lims["store"] if namespaces is None else None,
           "namespaces": None if namespaces is None else names}
    for nid, name in sorted(sel.items()):
        yield {"kind": "namespace", "name": name, "id": nid, "capacity": lims["ns"].get(nid),
               "evicted": evicted.get(nid, 0)}
    pinned = set(_capacity.pinned_ids(engine, txn, None).tolist())
    db = engine.env.db
    total, done = st.live, 0
    with txn.cursor(db=db("records")) as cur:
        for _k, v in cur:
            rec = R.Record.from_bytes(v)
            done += 1
            if progress is not None and (done % _progress.EVERY == 0 or done == total):
                progress("memories", done, total)
            if rec.ns not in sel:
                continue
            row: dict[str, Any] = {"kind": "memory", "id": rec.id, "namespace": sel[rec.ns],
                                   "text": rec.text, "metadata": to_json(rec.metadata),
                                   "type": rec.type, "created_at": rec.ts / 1e6, "ts": rec.ts}
            if rec.key is not None:
                row["key"] = rec.key
            if rec.upd is not None:
                row["updated_at"], row["upd"] = rec.upd / 1e6, rec.upd
            if rec.id in pinned:
                row["pinned"] = True
            if vectors:  # exact bytes, compact, and fast to write and read (checksum-checked)
                row["vector_b64"] = base64.b64encode(np.ascontiguousarray(
                    engine.checked_vector(snap, rec), dtype="<f4").tobytes()).decode()
            yield row
    with txn.cursor(db=db("edges_out")) as cur:
        for k, v in cur:
            raw = txn.get(k[:8], db=db("records"))
            if raw is None:
                continue
            ns = R.Record.from_bytes(raw).ns
            if ns in sel:
                yield {"kind": "edge", "namespace": sel[ns], "src": S.from_u64(k[:8]),
                       "dst": S.from_u64(k[8:16]), "relation": k[16:].decode(),
                       "weight": S.from_f64(v)}


def dump(engine: Any, out: IO[str], *, namespaces: list[str] | None = None, vectors: bool = False,
         progress: Progress | None = None) -> int:
    """Write the dump of one consistent snapshot to ``out``; returns the lines written.

    The pages of data.mdb are checked first (without LMDB's map): a damaged file raises
    CorruptionError instead of crashing the process in LMDB.
    """
    from ._verify import lmdb_pages
    problems, _pages = lmdb_pages(engine)
    if problems:
        raise CorruptionError(problems[0])
    n = 0
    with engine.snapshot() as snap:
        for row in rows(engine, snap, namespaces, vectors, progress):
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


# -- load -----------------------------------------------------------------------------------------

def _int(row: dict[str, Any], field: str, line: int, lo: int = 0) -> int:
    v = row.get(field)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InvalidInputError(f"line {line}: {field} must be an int >= {lo}, got {v!r}")
    return v


def _limit(value: Any, line: int) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"max_entries", "max_bytes"}:
        raise InvalidInputError(f"line {line}: capacity must be null or a dict of max_entries/"
                                f"max_bytes, got {value!r}")
    out = {k: _capacity.check_limit(v, f"line {line}: {k}") for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not None} or None


def parse(engine: Any, lines: Iterable[str], progress: Progress | None = None
          ) -> tuple[list[dict[str, Any]], int]:
    """Validate a dump and turn it into base-snapshot ops (every check before any write).

    Returns (ops, memories). :raises InvalidInputError: naming the line and the problem.
    """
    header: dict[str, Any] | None = None
    ns_rows: dict[str, dict[str, Any]] = {}
    mems: list[tuple[dict[str, Any], int]] = []
    edges: list[tuple[dict[str, Any], int]] = []
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"line {i}: not JSON ({exc})") from None
        kind = row.get("kind") if isinstance(row, dict) else None
        if kind == "store":
            if header is not None or ns_rows or mems or edges:
                raise InvalidInputError(f"line {i}: the store line must come first, once")
            header = row
        elif header is None:
            raise InvalidInputError(f"line {i}: a dump starts with its store line "
                                    "(made by `mnemos-kv dump` of this version)")
        elif kind == "namespace":
            name = check_namespace(row.get("name"))
            if name in ns_rows:
                raise InvalidInputError(f"line {i}: namespace {name!r} appears twice")
            ns_rows[name] = dict(row, _line=i)
        elif kind == "memory":
            mems.append((row, i))
        elif kind == "edge":
            edges.append((row, i))
        else:
            raise InvalidInputError(f"line {i}: unknown kind {kind!r} (store, namespace, memory, edge)")
    if header is None:
        raise InvalidInputError("the dump is empty (no store line)")
    if header.get("version") != DUMP_VERSION:
        raise InvalidInputError(f"dump version {header.get('version')!r}; this mnemos-kv reads "
                                f"version {DUMP_VERSION}")
    ops: list[dict[str, Any]] = []
    ns_ids: dict[str, int] = {"default": 0}
    for name, row in sorted(ns_rows.items(), key=lambda t: _int(t[1], "id", t[1]["_line"])):
        nid = _int(row, "id", row["_line"])
        if (name == "default") != (nid == 0) or nid in ns_ids.values() and name != "default":
            raise InvalidInputError(f"line {row['_line']}: namespace {name!r} has id {nid}")
        ns_ids[name] = nid
        if nid:
            ops.append({"op": "ns", "name": name, "id": nid})
    store_lim = _limit(header.get("capacity"), 1)
    if store_lim:
        ops.append({"op": "capacity", "ns": None, **store_lim})
    counts = []
    for name, row in sorted(ns_rows.items(), key=lambda t: ns_ids[t[0]]):
        lim = _limit(row.get("capacity"), row["_line"])
        if lim:
            ops.append({"op": "capacity", "ns": ns_ids[name], **lim})
        ev = row.get("evicted", 0)
        if ev:
            counts.append([ns_ids[name], _int(row, "evicted", row["_line"])])
    if counts:
        ops.append({"op": "evicted", "counts": counts})
    # memories, in id order; those without a vector are embedded (in one pass)
    mems.sort(key=lambda t: _int(t[0], "id", t[1], 1))
    dim = engine.dim
    if any("vector" in r or "vector_b64" in r for r, _ in mems) and (header.get("dim") != dim or
                                                header.get("embedder") != engine.embedder_name):
        raise EmbedderMismatchError(
            f"the dump's vectors come from embedder {header.get('embedder')!r} (dim "
            f"{header.get('dim')}); this store uses {engine.embedder_name!r} (dim {dim})")
    mem_ops: list[dict[str, Any]] = []
    keys: set[tuple[int, str]] = set()
    last = 0
    for row, line in mems:
        mid = _int(row, "id", line, 1)
        if mid <= last:
            raise InvalidInputError(f"line {line}: memory id {mid} appears twice")
        last = mid
        ns_name = row.get("namespace")
        if ns_name not in ns_ids:
            raise InvalidInputError(f"line {line}: namespace {ns_name!r} has no namespace line")
        text = R.check_text(row.get("text"), f"line {line}: text")
        meta = R.check_metadata(from_json(row.get("metadata", {})))
        type_ = R.check_type(row.get("type", "episodic"))
        ts = row["ts"] if "ts" in row else None
        if ts is None:
            from ._timeutil import to_us
            ts = to_us(row.get("created_at"), f"line {line}: created_at")
        elif isinstance(ts, bool) or not isinstance(ts, int):
            raise InvalidInputError(f"line {line}: ts must be int microseconds, got {ts!r}")
        op: dict[str, Any] = {"op": "mem", "id": mid, "ns": ns_ids[ns_name], "text": text,
                              "meta": meta, "type": R.TYPE_CODES[type_], "ts": ts}
        key = R.check_key(row.get("key"))
        if key is not None:
            if (ns_ids[ns_name], key) in keys:
                raise InvalidInputError(f"line {line}: key {key!r} appears twice in {ns_name!r}")
            keys.add((ns_ids[ns_name], key))
            op["key"] = key
        if row.get("pinned"):
            op["pin"] = True
        if row.get("upd") is not None:
            op["upd"] = _int(row, "upd", line, -(1 << 62))
        vec = row.get("vector")
        if row.get("vector_b64") is not None:
            try:
                raw = base64.b64decode(row["vector_b64"], validate=True)
            except (ValueError, TypeError):
                raise InvalidInputError(f"line {line}: vector_b64 is not base64") from None
            vec = np.frombuffer(raw, dtype="<f4") if len(raw) == 4 * dim else None
            if vec is None:
                raise InvalidInputError(f"line {line}: vector_b64 must hold {dim} float32 values")
        if vec is not None:
            a = np.asarray(vec, dtype=np.float32) if isinstance(vec, (list, np.ndarray)) else None
            if a is None or a.shape != (dim,) or not np.isfinite(a).all():
                raise InvalidInputError(f"line {line}: vector must be {dim} finite numbers")
            norm = float(np.linalg.norm(a))
            if norm and abs(norm - 1.0) > 1e-3:  # a hand-made vector: normalise it like remember
                a = (a / np.float32(norm)).astype(np.float32)
            op["vec"] = np.ascontiguousarray(a, dtype="<f4").tobytes()
        mem_ops.append(op)
    todo = [op for op in mem_ops if "vec" not in op]
    if todo:
        vecs = embed_progress(engine.require_embedder(), [op["text"] for op in todo], progress)
        for op, v in zip(todo, vecs):
            op["vec"] = np.ascontiguousarray(v, dtype="<f4").tobytes()
    ops.extend(mem_ops)
    ids = {op["id"]: op["ns"] for op in mem_ops}
    seen_edges: set[tuple[int, int, str]] = set()
    link_ops: list[dict[str, Any]] = []
    for row, line in edges:
        src, dst = _int(row, "src", line, 1), _int(row, "dst", line, 1)
        rel = row.get("relation")
        w = row.get("weight", 1.0)
        if src not in ids or dst not in ids:
            raise InvalidInputError(f"line {line}: edge {src} -> {dst} names a memory not in the dump")
        if not isinstance(rel, str) or not rel or isinstance(w, bool) or \
                not isinstance(w, (int, float)) or not np.isfinite(w):
            raise InvalidInputError(f"line {line}: edge needs a relation (str) and a finite weight")
        if (src, dst, rel) in seen_edges:
            raise InvalidInputError(f"line {line}: edge {src} -> {dst} ({rel!r}) appears twice")
        seen_edges.add((src, dst, rel))
        link_ops.append({"op": "link", "src": src, "dst": dst, "rel": rel, "w": float(w)})
    link_ops.sort(key=lambda o: (o["src"], o["dst"], o["rel"].encode()))
    ops.extend(link_ops)
    seq, next_id, next_ns = (_int(header, k, 1) for k in ("seq", "next_id", "next_ns"))
    if next_id <= last or next_ns <= max(ns_ids.values()):
        raise InvalidInputError("line 1: next_id/next_ns are behind the dump's memories/namespaces")
    ops.append({"op": "base", "seq": seq, "next_id": next_id, "next_ns": next_ns})
    return ops, len(mem_ops)


def load(engine: Any, lines: Iterable[str], progress: Progress | None = None) -> int:
    """Load a dump into an empty store (see the module doc); returns the memories loaded."""
    from ._replay import restore_base
    engine.check_writable()
    st = engine.read_state()
    if st.seq != 0 or st.live != 0 or st.next_id != 1:
        raise ReplayError(f"store {engine.path!r} is not empty (seq {st.seq}); load a dump into a "
                          "new store")
    ops, n = parse(engine, lines, progress)
    restore_base(engine, ops, progress)
    return n
