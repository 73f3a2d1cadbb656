"""Shared plumbing of the framework adapters (``langchain``, ``langgraph``).

Neither framework is imported here. The helpers speak only the public store API:
search by a caller's vector, metadata filters, and write-by-key (insert or replace
the memory that holds a key, atomically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import filters
from ._validate import MAX_TOP_K
from .errors import InvalidInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._model import Memory
    from .store import _Handle

__all__ = ["ExternalEmbedder", "check_filter", "search", "write_by_key",
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
    fn = getattr(embeddings, "func", None) or getattr(embeddings, "afunc", None)
    if callable(fn):  # LangGraph's wrapper of a plain embedding function: name the function
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    size = getattr(embeddings, "size", None)  # the fake embeddings of langchain-core
    if isinstance(size, int) and not isinstance(size, bool):
        return f"{type(embeddings).__name__}:{size}"
    return type(embeddings).__name__


# ------------------------------------------------------------------------------ filters

def check_filter(filter: Any) -> Mapping[str, Any] | None:
    """Validate a metadata filter of the store's filter language (None: no filter)."""
    if filter is None:
        return None
    filters.validate(filter)
    return filter  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------- search

def search(db: "_Handle", names: Sequence[str], *, text: str | None, vector: np.ndarray,
           k: int, mode: str, filter: Mapping[str, Any] | None) -> list["Memory"]:
    """The ``k`` best memories of the namespaces ``names``, best first.

    ``mode="vector"``: pure cosine with ``vector`` (``Memory.score`` is the cosine);
    ``mode="hybrid"``: the store's fused ranking, ``vector`` scoring and ``text``
    feeding BM25 (without a text, hybrid is pure cosine too).
    """
    if not names or k < 1:
        return []
    k = min(k, MAX_TOP_K)
    if mode == "hybrid" and text is not None and text.strip():
        return db.ask(text, k, vector=vector, mode="hybrid", namespaces=list(names),
                      filter=filter)
    return db.ask(None, k, vector=vector, mode="vector", namespaces=list(names), filter=filter)


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
    ``timestamp`` go to ``upsert``: a new key is inserted, an existing one keeps its
    id and creation time and gets the new content (``updated_at`` moves).
    """
    if not entries:
        return
    targets = [(e.get("ns", handle.name), e["key"]) for e in entries]
    if len(set(targets)) != len(targets):
        raise InvalidInputError("write_by_key got the same key of a namespace twice")
    dels = [t for t, e in zip(targets, entries) if e.get("delete")]
    err: Exception | None = None
    for _ in range(WRITE_RETRIES):
        # a delete needs the current id; another process may forget it before our
        # transaction: then the whole transaction fails, and we look again
        old: dict[tuple[str, str], Memory] = {}
        for ns in dict.fromkeys(ns for ns, _ in dels):
            found = get_by_keys(_scoped(handle, ns), [k for n, k in dels if n == ns])
            old.update({(ns, k): m for k, m in found.items()})
        try:
            with handle.batch() as b:
                for (ns, key), e in zip(targets, entries):
                    bn = b if ns == handle.name else b.namespace(ns)
                    if not e.get("delete"):
                        bn.upsert(key, e["text"], e.get("metadata"), vector=e["vector"],
                                  timestamp=e.get("timestamp"))
                    elif (ns, key) in old:
                        bn.forget(old[(ns, key)].id)
            return
        except MemoryNotFoundError as exc:  # a concurrent writer
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
