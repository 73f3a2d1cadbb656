"""Shared plumbing of the framework adapters (``langchain``, ``langgraph``).

Neither framework is imported here. The helpers speak only the public store API:
search by a caller's vector, metadata filters, and write-by-key (insert or replace
the memory that holds a key, atomically).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import DuplicateKeyError, InvalidInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._model import Memory
    from .store import _Handle

__all__ = ["ExternalEmbedder", "check_filter", "matches", "search", "write_by_key",
           "delete_keys", "get_by_keys"]

#: How often a write-by-key is retried when another process changed one of its keys
#: between our read and our write (the write itself is all or nothing).
WRITE_RETRIES = 8


class ExternalEmbedder:
    """A framework's embedding object as the store's embedder.

    ``embed`` calls ``embed_documents`` and ``embed_query`` calls ``embed_query``
    (one text at a time, as the frameworks define it). ``name`` is what the store
    records: ``"langchain:<name>"``, so the store refuses to reopen with another model.
    """

    def __init__(self, embeddings: Any, *, name: str | None = None, dim: int | None = None) -> None:
        for meth in ("embed_documents", "embed_query"):
            if not callable(getattr(embeddings, meth, None)):
                raise InvalidInputError(
                    f"embedding must have embed_documents and embed_query (a LangChain "
                    f"Embeddings), got {type(embeddings).__name__}")
        self.embeddings = embeddings
        self.name = "langchain:" + (name or default_name(embeddings))
        if dim is None:
            dim = len(embeddings.embed_query("dimension probe"))
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float32)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self.embeddings.embed_query(t) for t in texts], dtype=np.float32)


def default_name(embeddings: Any) -> str:
    """A stable name for an embedding object: its model name, else its class name."""
    for attr in ("model", "model_name"):
        val = getattr(embeddings, attr, None)
        if isinstance(val, str) and val:
            return f"{type(embeddings).__name__}:{val}"
    size = getattr(embeddings, "size", None)  # the fake embeddings of langchain-core
    if isinstance(size, int) and not isinstance(size, bool):
        return f"{type(embeddings).__name__}:{size}"
    return type(embeddings).__name__


def _has_param(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------ filters

def check_filter(filter: Any) -> Mapping[str, Any] | None:
    """Validate a metadata filter of the store's filter language (None: no filter)."""
    if filter is None:
        return None
    try:
        from . import filters  # type: ignore[attr-defined]
    except ImportError:  # FALLBACK until issue 11's filter language lands
        _interim_validate(filter)
        return filter  # type: ignore[no-any-return]
    filters.validate(filter)
    return filter  # type: ignore[no-any-return]


def matches(filter: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` passes ``filter`` (the store's reference semantics)."""
    if not filter:
        return True
    try:
        from . import filters  # type: ignore[attr-defined]
    except ImportError:  # FALLBACK until issue 11's filter language lands
        return _interim_matches(filter, metadata)
    return bool(filters.matches(filter, metadata))


# FALLBACK (interim, removed when mnemos_kv.filters lands): the filter language of the
# API contract, evaluated in Python over candidate records.
_OPS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not"}
_MISSING = object()


def _interim_validate(f: Any) -> None:
    if not isinstance(f, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {f!r}")
    for k, v in f.items():
        if k in ("$and", "$or"):
            if not isinstance(v, list) or not v:
                raise InvalidInputError(f"{k} takes a non-empty list of filters, got {v!r}")
            for sub in v:
                _interim_validate(sub)
        elif k == "$not":
            _interim_validate(v)
        elif not isinstance(k, str) or k.startswith("$"):
            raise InvalidInputError(f"unknown filter operator {k!r}")
        elif isinstance(v, Mapping) and any(isinstance(x, str) and x.startswith("$") for x in v):
            for op in v:
                if op not in _OPS:
                    raise InvalidInputError(f"unknown filter operator {op!r} for field {k!r}")


def _path(meta: Any, path: str) -> Any:
    cur = meta
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _cmp(a: Any, op: str, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool) or not (
            (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    import operator
    fn = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}[op]
    return bool(fn(a, b))


def _field(val: Any, cond: Any) -> bool:
    if isinstance(cond, Mapping) and any(isinstance(x, str) and x.startswith("$") for x in cond):
        for op, arg in cond.items():
            if op == "$eq":
                ok = val is not _MISSING and val == arg
            elif op == "$ne":
                ok = val is _MISSING or val != arg
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                ok = val is not _MISSING and _cmp(val, op, arg)
            elif op == "$in":
                ok = val is not _MISSING and any(val == x for x in arg)
            elif op == "$nin":
                ok = val is _MISSING or all(val != x for x in arg)
            elif op == "$exists":
                ok = (val is not _MISSING) == bool(arg)
            elif op == "$not":
                ok = not _field(val, arg)
            else:
                raise InvalidInputError(f"unknown filter operator {op!r}")
            if not ok:
                return False
        return True
    return val is not _MISSING and val == cond


def _interim_matches(f: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    for k, v in f.items():
        if k == "$and":
            ok = all(_interim_matches(s, meta) for s in v)
        elif k == "$or":
            ok = any(_interim_matches(s, meta) for s in v)
        elif k == "$not":
            ok = not _interim_matches(v, meta)
        else:
            ok = _field(_path(meta, k), v)
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------------- search

def search(db: "_Handle", names: Sequence[str], *, text: str | None, vector: np.ndarray,
           k: int, mode: str, filter: Mapping[str, Any] | None) -> list["Memory"]:
    """The ``k`` best memories of the namespaces ``names``, best first.

    ``mode="vector"``: pure cosine with ``vector`` (``Memory.score`` is the cosine);
    ``mode="hybrid"``: the store's fused ranking of ``text`` and ``vector``.
    """
    if not names or k < 1:
        return []
    k = min(k, 10_000)
    if not _has_param(db.ask, "vector") or (filter and not _has_filters()):
        return _interim_search(db, names, text=text, vector=vector, k=k, mode=mode,
                               filter=filter)
    if mode == "hybrid" and text is not None and text.strip():
        return db.ask(text, k, vector=vector, mode="hybrid", namespaces=list(names),
                      filter=filter)
    return db.ask(None, k, vector=vector, mode="vector", namespaces=list(names), filter=filter)


def _has_filters() -> bool:
    try:
        from . import filters  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def _interim_search(db: "_Handle", names: Sequence[str], *, text: str | None,
                    vector: np.ndarray, k: int, mode: str,
                    filter: Mapping[str, Any] | None) -> list["Memory"]:
    """FALLBACK until issue 11's ``ask(vector=, mode=, filter=)`` lands: pure cosine
    over the snapshot's vectors (hybrid: the store's ask, filtered afterwards)."""
    from . import _retrieval
    from .embedders import check_vectors
    if mode == "hybrid" and text is not None and text.strip():
        hits = db.ask(text, 10_000 if filter else k, namespaces=list(names))
        return [h for h in hits if matches(filter, h.metadata)][:k]
    eng = db._engine
    q = check_vectors(vector, 1, eng.dim, "query vector")[0]
    out: list[Memory] = []
    with eng.snapshot() as snap:
        nids = [n for n in (eng.ns_id(nm, snap.txn) for nm in names) if n is not None]
        scores, rows = _retrieval.vector_scores(snap, q, nids)
        ids = snap.slots["id"]
        for i in _retrieval.iter_ranked(scores, rows, k):
            slot = i if rows is None else int(rows[i])
            rec = eng.record(snap.txn, int(ids[slot]))
            if rec is None or not matches(filter, rec.metadata):
                continue
            out.append(db._memory(snap, rec, float(scores[i])))
            if len(out) == k:
                break
    return out


# ------------------------------------------------------------------------------- writes

def get_by_keys(handle: "_Handle", keys: Sequence[str]) -> dict[str, "Memory"]:
    """The live memories holding these keys in the handle's namespace (missing ones left out)."""
    out = {}
    for key in keys:
        try:
            out[key] = handle.get_by_key(key)
        except MemoryNotFoundError:
            pass
    return out


def _scoped(handle: "_Handle", ns: str) -> "_Handle":
    return handle if ns == handle.name else handle.namespace(ns)  # type: ignore[attr-defined, no-any-return]


def write_by_key(handle: "_Handle", entries: Sequence[Mapping[str, Any]]) -> None:
    """Insert, replace or delete memories by key, all in one transaction.

    Each entry has ``key`` and optionally ``ns`` (default: the handle's namespace;
    another one needs the root store). ``delete=True`` forgets the memory holding the
    key (if any); otherwise ``text``, ``metadata``, ``vector`` and optional
    ``timestamp`` insert the memory or replace the one holding the key, which keeps its
    id and creation time.
    """
    if not entries:
        return
    targets = [(e.get("ns", handle.name), e["key"]) for e in entries]
    if len(set(targets)) != len(targets):
        raise InvalidInputError("write_by_key got the same key of a namespace twice")
    from ._batch import BatchNamespace
    upsert = hasattr(BatchNamespace, "upsert")
    err: Exception | None = None
    for _ in range(WRITE_RETRIES):
        # deletes (and, without upsert, replacements) need the current ids; another
        # process may change them before our transaction: then it fails whole, retry
        need = [(ns, k) for (ns, k), e in zip(targets, entries) if e.get("delete") or not upsert]
        old: dict[tuple[str, str], Memory] = {}
        for ns in dict.fromkeys(ns for ns, _ in need):
            found = get_by_keys(_scoped(handle, ns), [k for n, k in need if n == ns])
            old.update({(ns, k): m for k, m in found.items()})
        try:
            with handle.batch() as b:
                for (ns, key), e in zip(targets, entries):
                    bn = b if ns == handle.name else b.namespace(ns)
                    prev = old.get((ns, key))
                    if e.get("delete"):
                        if prev is not None:
                            bn.forget(prev.id)
                    elif upsert:
                        bn.upsert(key, e["text"], e.get("metadata"),  # type: ignore[attr-defined]
                                  vector=e["vector"], timestamp=e.get("timestamp"))
                    else:  # FALLBACK until issue 11's upsert lands: forget + remember
                        ts = e.get("timestamp")
                        if prev is not None:
                            bn.forget(prev.id)
                            ts = prev.created_at if ts is None else ts
                        bn.remember(e["text"], e.get("metadata"), key=key, vector=e["vector"],
                                    timestamp=ts)
            return
        except (MemoryNotFoundError, DuplicateKeyError) as exc:  # a concurrent writer
            err = exc
    assert err is not None
    raise err


def delete_keys(handle: "_Handle", keys: Sequence[str]) -> int:
    """Forget the memories holding these keys (missing keys are ignored), in one
    transaction; returns how many were forgotten."""
    err: Exception | None = None
    for _ in range(WRITE_RETRIES):
        found = get_by_keys(handle, list(dict.fromkeys(keys)))
        if not found:
            return 0
        try:
            handle.forget_many([m.id for m in found.values()])
            return len(found)
        except MemoryNotFoundError as exc:  # another process deleted one meanwhile
            err = exc
    assert err is not None
    raise err
