"""A LangGraph long-term memory ``BaseStore`` on mnemos-kv (``pip install "mnemos-kv[langgraph]"``).

>>> from mnemos_kv.langgraph import MnemosStore
>>> store = MnemosStore("agent.mem")                                   # doctest: +SKIP
>>> store.put(("users", "alice"), "prefs", {"theme": "dark"})          # doctest: +SKIP
>>> store.get(("users", "alice"), "prefs").value                       # doctest: +SKIP
{'theme': 'dark'}

Each LangGraph namespace tuple is one store namespace (see :func:`encode_namespace`),
each item one memory: the item key is the memory's key, the value its metadata (so
filters are the store's filter language over the value), the indexed text its text.
Several processes (LangGraph workers) may share one store. See docs/langgraph.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import json
import os
import threading
from typing import Any, Iterable, Sequence

import numpy as np

from . import _adapters as A
from . import _records as R
from .errors import (EmbedderMismatchError, InvalidInputError, MemoryNotFoundError,
                     MissingDependencyError)

try:
    from langgraph.store.base import (BaseStore, GetOp, IndexConfig, InvalidNamespaceError, Item,
                                      ListNamespacesOp, MatchCondition, Op, PutOp, Result,
                                      SearchItem, SearchOp, TTLConfig, ensure_embeddings,
                                      get_text_at_path, tokenize_path)
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        'mnemos_kv.langgraph needs langgraph: pip install "mnemos-kv[langgraph]"') from _exc

from .store import Mnemos

__all__ = ["MnemosStore", "encode_namespace", "decode_namespace", "NamespaceTooLongError"]

#: Characters a namespace label keeps as they are; any other character becomes
#: ``:XX`` per UTF-8 byte (upper-case hex). Labels are joined with ``.`` (LangGraph
#: labels never contain ``.``) after the prefix and ``:``.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_NAME = 128  # the store's namespace-name limit
_MODES = ("vector", "hybrid")


class NamespaceTooLongError(InvalidInputError, InvalidNamespaceError):
    """A namespace tuple whose escaped name exceeds the store's 128-character limit."""


def _escape(label: str) -> str:
    return "".join(c if c in _SAFE else "".join(f":{b:02X}" for b in c.encode("utf-8"))
                   for c in label)


def _unescape(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == ":":
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out.extend(c.encode("ascii"))
            i += 1
    return out.decode("utf-8")


def encode_namespace(namespace: Sequence[str], prefix: str = "lg") -> str:
    """The store namespace name of a LangGraph namespace tuple.

    ``prefix + ":" + ".".join(escaped labels)``: letters, digits, ``_`` and ``-``
    stay, every other character becomes ``:XX`` per UTF-8 byte, so
    ``("users", "a b")`` is ``"lg:users.a:20b"``. Reversible by :func:`decode_namespace`.

    :raises NamespaceTooLongError: the name would exceed 128 characters.
    """
    name = f"{prefix}:" + ".".join(_escape(label) for label in namespace)
    if len(name) > _MAX_NAME:
        raise NamespaceTooLongError(
            f"namespace {tuple(namespace)!r} escapes to {len(name)} characters; the store "
            f"allows {_MAX_NAME}")
    return name


def decode_namespace(name: str, prefix: str = "lg") -> tuple[str, ...] | None:
    """The LangGraph namespace tuple of a store namespace name (None: not one of ours)."""
    head = f"{prefix}:"
    if not name.startswith(head) or len(name) == len(head):
        return None
    try:
        return tuple(_unescape(part) for part in name[len(head):].split("."))
    except (ValueError, UnicodeDecodeError):
        return None


def _does_match(cond: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(cond.path)
    if len(ns) < len(path):
        return False
    if cond.match_type == "prefix":
        pairs = zip(ns, path)
    elif cond.match_type == "suffix":
        pairs = zip(reversed(ns), reversed(path))
    else:
        raise InvalidInputError(f"match_type must be 'prefix' or 'suffix', got {cond.match_type!r}")
    return all(p == "*" or k == p for k, p in pairs)


def _check_ttl_config(ttl: Any) -> TTLConfig | None:
    if ttl is None:
        return None
    if not isinstance(ttl, dict):
        raise InvalidInputError(f"ttl must be a TTLConfig dict or None, got {ttl!r}")
    unknown = set(ttl) - {"refresh_on_read", "default_ttl", "sweep_interval_minutes", "omit_expired"}
    if unknown:
        raise InvalidInputError(f"ttl config has unknown keys {sorted(unknown)}")
    if ttl.get("omit_expired"):
        raise InvalidInputError("omit_expired is not supported: expired items are deleted by sweep_ttl()")
    for name in ("default_ttl", "sweep_interval_minutes"):
        v = ttl.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise InvalidInputError(f"ttl {name} must be a positive number or None, got {v!r}")
    if not isinstance(ttl.get("refresh_on_read", True), bool):
        raise InvalidInputError(f"ttl refresh_on_read must be a bool, got {ttl['refresh_on_read']!r}")
    return ttl  # type: ignore[return-value]


def _check_window(op: Any, what: str) -> None:
    for name in ("limit", "offset"):
        v = getattr(op, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidInputError(f"{what} {name} must be an int >= 0, got {v!r}")


class MnemosStore(BaseStore):
    """A LangGraph ``BaseStore`` kept in a mnemos-kv store.

    ``path_or_store``: a store directory (opened here, closed by :meth:`close`) or an
    open :class:`~mnemos_kv.Mnemos` (left open). ``index`` is LangGraph's
    ``IndexConfig``: ``dims``, ``embed`` (an ``Embeddings``, a function, or a provider
    string) and ``fields`` (JSON paths of the value to embed; default ``["$"]``, the
    whole value). Without ``index``, ``query`` is ignored by searches (as in
    LangGraph's own stores) and items are stored with a zero vector. With it, a
    store opened from a path records the embedder as ``"langchain:" +
    embedding_name`` (default: the embedding's class and model name). ``mode`` ranks
    query searches: ``"vector"`` (cosine; ``score`` is the cosine similarity, as
    LangGraph's stores) or ``"hybrid"`` (the store's vector + BM25 ranking over the
    indexed text). ``prefix`` is the store-namespace prefix of every LangGraph
    namespace (see :func:`encode_namespace`). ``ttl`` is LangGraph's ``TTLConfig``
    (``default_ttl`` and a put's ``ttl`` in minutes, ``refresh_on_read``,
    ``sweep_interval_minutes``): an item with a TTL expires that long after its last
    put or read, and :meth:`sweep_ttl` (or the thread :meth:`start_ttl_sweeper` starts)
    deletes expired items. Other keyword arguments go to :meth:`Mnemos.open`.
    """

    supports_ttl = True

    def __init__(self, path_or_store: str | os.PathLike[str] | Mnemos, *,
                 index: IndexConfig | None = None, ttl: TTLConfig | None = None,
                 mode: str = "vector", prefix: str = "lg", embedding_name: str | None = None,
                 **open_kwargs: Any) -> None:
        if mode not in _MODES:
            raise InvalidInputError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode = mode
        if not isinstance(prefix, str) or not prefix or not set(prefix) <= _SAFE or not prefix[0].isalnum():
            raise InvalidInputError(
                f"prefix must be letters, digits, '_' or '-' starting with a letter or digit; got {prefix!r}")
        self.prefix = prefix
        self.ttl_config = _check_ttl_config(ttl)
        self._sweeper: concurrent.futures.Future[None] | None = None
        self._sweep_stop = threading.Event()
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None
        self._fields: list[tuple[str, Any]] = []
        embedder = None
        if index:
            cfg: dict[str, Any] = dict(index)
            dims = cfg.get("dims")
            if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
                raise InvalidInputError(f"index dims must be a positive int, got {dims!r}")
            self.embeddings = ensure_embeddings(cfg.get("embed"))
            fields = cfg.get("fields") or ["$"]
            self._fields = [(p, tokenize_path(p) if p != "$" else p) for p in fields]
            self.index_config = cfg
            embedder = A.ExternalEmbedder(self.embeddings, name=embedding_name, dim=dims)
        if isinstance(path_or_store, Mnemos):
            if open_kwargs:
                raise InvalidInputError(
                    f"open options {sorted(open_kwargs)} need a path, not an open store")
            self._db = path_or_store
            self._owns = False
        elif isinstance(path_or_store, (str, os.PathLike)):
            self._db = Mnemos.open(path_or_store, embedder=embedder, **open_kwargs)
            self._owns = True
        else:
            raise InvalidInputError(
                f"path_or_store must be a path or a Mnemos store, got {type(path_or_store).__name__}")
        self._dim = int(self._db._engine.dim)
        if index and self._dim != index["dims"]:
            self.close()
            raise EmbedderMismatchError(
                f"store {self._db.path!r} has dimension {self._dim}; index dims is {index['dims']}")

    @property
    def store(self) -> Mnemos:
        """The underlying mnemos-kv store."""
        return self._db

    def close(self) -> None:
        """Stop the TTL sweeper; close the store if this object opened it (idempotent)."""
        self.stop_ttl_sweeper()
        if self._owns:
            self._db.close()

    def __enter__(self) -> "MnemosStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches ---------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the ops: reads see the store as it was before this batch's puts, which
        are then applied together, in one transaction (the last put of a key wins)."""
        plan = self._plan(ops)
        docs = plan.doc_texts
        dvecs = self._embed_docs(self.embeddings.embed_documents(docs)) if docs else None
        qvecs = {q: self._embed_query(self.embeddings.embed_query(q)) for q in plan.queries}
        return self._run(plan, dvecs, qvecs)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` with the embedding model's async methods, the store work in a thread."""
        plan = self._plan(ops)
        docs = plan.doc_texts
        dvecs = self._embed_docs(await self.embeddings.aembed_documents(docs)) if docs else None
        queries = list(plan.queries)
        got = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
        qvecs = {q: self._embed_query(v) for q, v in zip(queries, got)}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._run, plan, dvecs, qvecs)

    def _embed_docs(self, raw: Any) -> np.ndarray:
        arr = np.asarray(raw, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self._dim:
            raise InvalidInputError(f"index embed returned shape {arr.shape}; expected (n, {self._dim})")
        return arr

    def _embed_query(self, raw: Any) -> np.ndarray:
        arr = np.asarray(raw, dtype=np.float32)
        if arr.shape != (self._dim,):
            raise InvalidInputError(f"index embed returned shape {arr.shape}; expected ({self._dim},)")
        return arr

    # -- planning: validate everything, find what to embed -----------------------------

    class _Plan:
        __slots__ = ("ops", "puts", "doc_texts", "queries")

        def __init__(self) -> None:
            self.ops: list[Op] = []
            self.puts: dict[tuple[tuple[str, ...], str], tuple[PutOp, list[int]]] = {}
            self.doc_texts: list[str] = []
            self.queries: dict[str, None] = {}

    def _plan(self, ops: Iterable[Op]) -> "MnemosStore._Plan":
        self._db._engine.check_open()
        plan = self._Plan()
        plan.ops = list(ops)
        for op in plan.ops:
            if isinstance(op, (GetOp, PutOp)):
                self._check_labels(op.namespace)
                if not isinstance(op.key, str):
                    raise InvalidInputError(f"key must be a str, got {op.key!r}")
            if isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                if op.ttl is not None and (isinstance(op.ttl, bool) or not isinstance(
                        op.ttl, (int, float)) or not 0 < op.ttl < float("inf")):
                    raise InvalidInputError(f"ttl must be a positive number of minutes or None, got {op.ttl!r}")
                R.check_key(op.key)
                if op.value is not None:
                    if not isinstance(op.value, dict):
                        raise InvalidInputError(f"value must be a dict or None, got {type(op.value).__name__}")
                    R.check_metadata(op.value)  # before anything is embedded or written
                    self._text_of(op)
                plan.puts[(tuple(op.namespace), op.key)] = (op, [])
            elif isinstance(op, SearchOp):
                self._check_labels(op.namespace_prefix)
                _check_window(op, "search")
                A.check_filter(op.filter)
                if op.query is not None and not isinstance(op.query, str):
                    raise InvalidInputError(f"query must be a str or None, got {op.query!r}")
                if op.query and self.embeddings is not None:
                    plan.queries[op.query] = None
            elif isinstance(op, ListNamespacesOp):
                for cond in op.match_conditions or ():
                    self._check_labels(cond.path)
                _check_window(op, "list_namespaces")
                if op.max_depth is not None and (isinstance(op.max_depth, bool) or not isinstance(
                        op.max_depth, int) or op.max_depth < 1):
                    raise InvalidInputError(f"max_depth must be a positive int or None, got {op.max_depth!r}")
            elif not isinstance(op, GetOp):
                raise InvalidInputError(f"unknown store operation {type(op).__name__}")
        if self.embeddings is not None:
            for op, rows in plan.puts.values():
                if op.value is not None and op.index is not False:
                    for text in self._index_texts(op):
                        rows.append(len(plan.doc_texts))
                        plan.doc_texts.append(text)
        return plan

    @staticmethod
    def _check_labels(namespace: Any) -> None:
        if not isinstance(namespace, tuple):
            raise InvalidNamespaceError(f"namespace must be a tuple of str, got {namespace!r}")
        for label in namespace:
            if not isinstance(label, str) or not label or "." in label or "\x00" in label:
                raise InvalidNamespaceError(
                    f"Invalid namespace label {label!r} found in {namespace}: labels are "
                    "non-empty strs without '.' or NUL")

    def _index_texts(self, op: PutOp) -> list[str]:
        fields = self._fields if op.index is None else [
            (p, tokenize_path(p) if p != "$" else p) for p in op.index]  # type: ignore[union-attr]
        texts: list[str] = []
        for _, path in fields:
            texts.extend(t for t in get_text_at_path(op.value, path) if t)
        return texts

    def _text_of(self, op: PutOp) -> str:
        texts = self._index_texts(op) if (self.embeddings is not None and op.index is not False) else []
        text = "\n".join(t for t in texts if t.strip())
        if not text:
            try:
                text = json.dumps(op.value, sort_keys=True, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"value is not JSON-serializable: {exc}") from exc
        return text

    # -- running ---------------------------------------------------------------------

    def _run(self, plan: "MnemosStore._Plan", dvecs: np.ndarray | None,
             qvecs: dict[str, np.ndarray]) -> list[Result]:
        results: list[Result] = []
        touched: dict[tuple[str, str], None] = {}  # (store namespace, key) read with refresh_ttl
        for op in plan.ops:
            if isinstance(op, GetOp):
                item = self._get(op)
                results.append(item)
                if item is not None and op.refresh_ttl:
                    touched[(encode_namespace(item.namespace, self.prefix), item.key)] = None
            elif isinstance(op, SearchOp):
                found = self._search(op, qvecs)
                results.append(found)
                if op.refresh_ttl:
                    touched.update(((encode_namespace(it.namespace, self.prefix), it.key), None)
                                   for it in found)
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list(op))
            else:
                results.append(None)
        entries = self._refresh_entries(touched, plan) if touched else []
        if plan.puts:
            entries.extend(self._put_entries(plan, dvecs))
        if entries:
            A.write_by_key(self._db, entries)
        return results

    def _item(self, mem: Any, namespace: tuple[str, ...], score: float | None = None,
              search: bool = False) -> Item:
        created = _dt.datetime.fromtimestamp(mem.created_at, tz=_dt.timezone.utc)
        updated = _dt.datetime.fromtimestamp(mem.updated_at, tz=_dt.timezone.utc)
        if search:
            return SearchItem(namespace=namespace, key=mem.key, value=dict(mem.metadata),
                              created_at=created, updated_at=updated, score=score)
        return Item(value=dict(mem.metadata), key=mem.key, namespace=namespace,
                    created_at=created, updated_at=updated)

    def _get(self, op: GetOp) -> Item | None:
        try:
            name = encode_namespace(op.namespace, self.prefix)
        except NamespaceTooLongError:
            return None  # such a namespace can never hold anything
        try:
            mem = self._db.namespace(name).get_by_key(op.key)
        except (MemoryNotFoundError, InvalidInputError):
            return None
        return self._item(mem, tuple(op.namespace))

    def _listing(self, labels: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Our namespaces under the namespace prefix ``labels`` that hold items: store
        name -> {"ns": tuple, "id": store namespace id}. A range scan of the store's
        sorted namespace table (escaped labels contain no ".", so the names under a
        prefix are the prefix's name and those that continue it with "."), so one user's
        namespace is found without reading every user's."""
        try:
            head = encode_namespace(labels, self.prefix) if labels else f"{self.prefix}:"
        except NamespaceTooLongError:
            return {}  # no namespace is that long
        under = head + "." if labels else head
        out: dict[str, dict[str, Any]] = {}
        with self._db._engine.snapshot() as snap:
            for name, info in snap.namespaces_from(head):
                if name != head and not name.startswith(under):
                    continue
                if int(info.get("count", 0)) <= 0:
                    continue
                ns = decode_namespace(name, self.prefix)
                if ns is not None:
                    out[name] = {"ns": ns, "id": int(info["id"])}
        return out

    def _search(self, op: SearchOp, qvecs: dict[str, np.ndarray]) -> list[Item]:
        listing = self._listing(tuple(op.namespace_prefix))
        # namespaces in creation order, then (without a query) items in time order
        names = [name for name, info in sorted(listing.items(), key=lambda kv: kv[1]["id"])]
        if not names or op.limit == 0:
            return []
        f = A.check_filter(op.filter)
        want = op.offset + op.limit
        if op.query and self.embeddings is not None:
            hits = A.search(self._db, names, text=op.query, vector=qvecs[op.query], k=want,
                            mode=self.mode, filter=f)
            return [self._item(h, listing[h.namespace]["ns"], float(h.score or 0.0), search=True)
                    for h in hits[op.offset:want]]
        out: list[Item] = []
        seen = 0
        for name in names:
            ns = listing[name]["ns"]
            for mem in self._db.namespace(name).memories(filter=f):
                seen += 1
                if seen > op.offset:
                    out.append(self._item(mem, ns, None, search=True))
                    if len(out) == op.limit:
                        return out
        return out

    def _list(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        literal: list[str] = []  # the leading labels of a prefix condition, up to a "*"
        for cond in op.match_conditions or ():
            if cond.match_type == "prefix":
                for label in cond.path:
                    if label == "*":
                        break
                    literal.append(label)
                break
        nss = [info["ns"] for info in self._listing(literal).values()]
        if op.match_conditions:
            nss = [ns for ns in nss if all(_does_match(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            nss = sorted({ns[:op.max_depth] for ns in nss})
        else:
            nss = sorted(nss)
        return nss[op.offset:op.offset + op.limit]

    def _put_entries(self, plan: "MnemosStore._Plan", dvecs: np.ndarray | None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        now = float(self._db._engine.clock())
        for (ns, key), (op, rows) in plan.puts.items():
            name = encode_namespace(ns, self.prefix)
            tname = self._ttl_name(name, strict=op.value is not None and op.ttl is not None)
            if op.value is not None and op.ttl is not None:
                entries.append(self._ttl_entry(tname, key, now, float(op.ttl)))
            elif self._ns_exists(tname):  # the item no longer expires
                entries.append({"ns": tname, "key": key, "delete": True})
            if op.value is None:
                entries.append({"ns": name, "key": key, "delete": True})
                continue
            vec = np.zeros(self._dim, np.float32)
            if rows and dvecs is not None:
                v = dvecs[rows].astype(np.float64)
                norms = np.linalg.norm(v, axis=1, keepdims=True)
                v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
                vec = v.mean(axis=0).astype(np.float32)  # several texts: their mean direction
            entries.append({"ns": name, "key": key, "text": self._text_of(op),
                            "metadata": op.value, "vector": vec})
        return entries

    # -- TTL ---------------------------------------------------------------------------

    def _ns_exists(self, name: str) -> bool:
        with self._db._engine.snapshot() as snap:
            return snap.ns_id(name) is not None

    def _ttl_name(self, name: str, strict: bool = False) -> str:
        """The store namespace of the TTL records of store namespace ``name``:
        ``prefix + ".ttl:" + ...`` (no LangGraph namespace name has a ``.`` before its ``:``)."""
        tname = f"{self.prefix}.ttl:" + name[len(self.prefix) + 1:]
        if strict and len(tname) > _MAX_NAME:
            raise NamespaceTooLongError(
                f"namespace {name!r} is too long to hold items with a TTL: its TTL records "
                f"need {len(tname)} characters; the store allows {_MAX_NAME}")
        return tname

    def _ttl_entry(self, tname: str, key: str, now: float, minutes: float) -> dict[str, Any]:
        return {"ns": tname, "key": key, "text": key, "vector": np.zeros(self._dim, np.float32),
                "metadata": {"expires_at": now + 60.0 * minutes, "ttl": minutes}}

    def _refresh_entries(self, touched: dict[tuple[str, str], None],
                         plan: "MnemosStore._Plan") -> list[dict[str, Any]]:
        """New expiry times for the items read with ``refresh_ttl`` that have a TTL (and
        are not put by the same batch, whose put sets their TTL)."""
        if self._db.readonly:
            return []
        eng = self._db._engine
        put = {(encode_namespace(ns, self.prefix), k) for ns, k in plan.puts}
        now = float(eng.clock())
        out = []
        for name, key in touched:
            tname = self._ttl_name(name)
            if (name, key) in put or not self._ns_exists(tname):
                continue
            try:
                rec = self._db.namespace(tname).get_by_key(key)
            except (MemoryNotFoundError, InvalidInputError):
                continue
            out.append(self._ttl_entry(tname, key, now, float(rec.metadata["ttl"])))
        return out

    def sweep_ttl(self) -> int:
        """Delete every item whose TTL has expired (by the store's clock), with its TTL
        record, one transaction per namespace; returns how many items were deleted."""
        eng = self._db._engine
        head = f"{self.prefix}.ttl:"
        with eng.snapshot() as snap:
            names = [n for n, info in snap.namespaces_from(head) if int(info.get("count", 0)) > 0]
        now = float(eng.clock())
        total = 0
        for tname in names:
            item_ns = f"{self.prefix}:" + tname[len(head):]
            expired = [m.key for m in self._db.namespace(tname).memories(
                filter={"expires_at": {"$lte": now}}) if m.key is not None]
            if expired:
                A.write_by_key(self._db, [e for k in expired for e in (
                    {"ns": item_ns, "key": k, "delete": True}, {"ns": tname, "key": k, "delete": True})])
                total += len(expired)
        return total

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None
                          ) -> "concurrent.futures.Future[None]":
        """Run :meth:`sweep_ttl` every ``sweep_interval_minutes`` (default: the TTL
        config's, else 5) in a daemon thread until :meth:`stop_ttl_sweeper` or
        :meth:`close`; returns a future that completes when the thread ends."""
        minutes = sweep_interval_minutes
        if minutes is None:
            minutes = (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise InvalidInputError(f"sweep_interval_minutes must be a positive number, got {minutes!r}")
        if self._sweeper is not None and not self._sweeper.done():
            return self._sweeper
        self._sweep_stop.clear()
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()

        def loop() -> None:
            try:
                while not self._sweep_stop.wait(60.0 * float(minutes)):
                    self.sweep_ttl()
                fut.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                fut.set_exception(exc)

        threading.Thread(target=loop, name="mnemos-ttl-sweeper", daemon=True).start()
        self._sweeper = fut
        return fut

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True when it has stopped (or none ran)."""
        fut = self._sweeper
        if fut is None:
            return True
        self._sweep_stop.set()
        try:
            fut.exception(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False
        self._sweeper = None
        return True

    def __repr__(self) -> str:
        return f"<MnemosStore {self._db.path!r} prefix={self.prefix!r} mode={self.mode!r}>"
