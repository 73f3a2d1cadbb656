"""The public facade: ``Mnemos`` (a store) and ``Namespace`` (a handle confined to one).

Each call validates its input, then runs one transaction over the parts through the
engine. Plain ``db`` calls act on the ``"default"`` namespace; ``db.namespace(name)``
returns a handle with the same API that can neither read nor change any other
namespace (unless it was granted read access to named ones, e.g. a shared one).
"""

from __future__ import annotations

import os
import stat
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import _ann, _bulkcheck, _gcpause
from . import _records as R
from . import _retrieval
from . import rerank as _rerank
from ._backend import Backend, Reader, is_postgres_url
from ._engine import DEFAULT_NS, Engine
from ._model import Document, Edge, Memory
from ._storage import DEFAULT_MAP_SIZE
from ._timeutil import from_us, to_us
from .embedders import embed_checked, resolve
from ._validate import (MAX_ID as _MAX_ID, as_list, check_id as _check_id, check_namespace,
                        check_relation, check_relation_filter, check_top_k as _check_top_k,
                        check_types as _check_types, check_weight, embed_missing, prepare_remember)
from .errors import InvalidInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._batch import Batch
    from ._recover import RecoveryReport
    from ._replay import ExportInfo, ReplayResult
    from ._verify import VerifyReport

__all__ = ["Mnemos", "Namespace", "MemoryId"]

MemoryId = int

#: The largest ``map_size=`` accepted (LMDB's map is address space: 256 TiB).
MAX_MAP_SIZE = 1 << 48

#: ``Mnemos.open(durability=...)``: see docs/durability.md.
DURABILITY_MODES = frozenset({"full", "fast"})
#: ``ask(mode=...)``: see :meth:`Mnemos.ask` and docs/retrieval.md.
ASK_MODES = ("hybrid", "vector", "lexical")



def _to_memory(rec: R.Record, namespace: str, score: float | None = None,
               explain: dict[str, float] | None = None) -> Memory:
    """The public value of a stored record (every field set at once, not through the
    frozen dataclass's ``__init__``: one ``object.__setattr__`` per field was half the
    cost, ten times per ``ask``; the same value, see tests/test_ask_memo.py)."""
    m = _new(Memory)
    m.__dict__.update(id=rec.id, text=rec.text, metadata=rec.metadata, namespace=namespace,
                      type=rec.type, created_at=from_us(rec.ts), score=score, key=rec.key,
                      explain=explain,
                      updated_at=from_us(rec.upd if rec.upd is not None else rec.ts))
    return m


_new = object.__new__


def _parse_filter(filter: Any) -> Any:
    """The parsed filter (None for None or ``{}``). :raises InvalidInputError:"""
    from . import filters as F
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidInputError(
            f"filter must be a dict (see docs/filters.md), got {type(filter).__name__} {filter!r}")
    return F.parse(filter) if filter else None


class _Handle:
    """The memory API, confined to one namespace (``self.name``)."""

    _engine: Backend
    name: str
    _readable: frozenset[str]

    # -- writes -----------------------------------------------------------------------

    def remember(self, text: str, metadata: Mapping[str, Any] | None = None, *,
                 type: str = "episodic", timestamp: Any = None, key: str | None = None,
                 vector: Any = None, pinned: bool = False) -> MemoryId:
        """Store ``text`` and return its id; durable when this returns.

        ``timestamp`` is when the remembered event happened (seconds since the epoch,
        a datetime or date, or an ISO-8601 string like ``"2026-01-01T09:30:00Z"``;
        naive means UTC; default: the clock's now). ``type`` is ``"episodic"``,
        ``"semantic"`` or ``"procedural"``. ``key`` is an optional name unique in the
        namespace. ``vector`` skips the embedder (must have the store's dimension).
        ``pinned`` protects the memory from capacity eviction (see :meth:`pin`).

        :raises InvalidInputError: bad text, metadata, type, timestamp, key or vector.
        :raises DuplicateKeyError: ``key`` already names a memory of this namespace.
        :raises CapacityError: a capacity limit cannot be kept (everything evictable is pinned).
        """
        self._engine.check_writable()
        return self._remember([{"text": text, "metadata": metadata, "type": type,
                                "timestamp": timestamp, "key": key, "vector": vector,
                                "pinned": pinned}], None)[0]

    def remember_many(self, items: Iterable[str | Mapping[str, Any]], *,
                      progress: Callable[[str, int, int], Any] | None = None) -> list[MemoryId]:
        """Store many memories in one transaction; all or nothing.

        Each item is a text, or a dict with ``text`` and optionally ``metadata``,
        ``type``, ``timestamp``, ``key``, ``vector`` and ``pinned``. Every item is
        validated (and embedded, in one embedder call) before anything is written. When
        the write takes a namespace or the store over its capacity limit, the
        lowest-retention memories are evicted in the same transaction (possibly some of
        these new ones, e.g. when they carry old timestamps). ``progress(phase, done,
        total)`` is called as the work goes on: phase ``"embed"`` (texts embedded, in
        chunks of 1024), then ``"write"`` (0 of 1, then 1 of 1 once committed).
        """
        from ._progress import check
        self._engine.check_writable()
        prog = check(progress)
        if isinstance(items, (str, bytes, Mapping)):
            raise InvalidInputError("remember_many takes a list of texts or dicts, not a single item")
        return self._remember(as_list(items, "items"), prog)

    def _remember(self, items: list[Any], prog: Callable[[str, int, int], Any] | None
                  ) -> list[MemoryId]:
        """:meth:`remember_many` of the checked list ``items`` (the store checked writable)."""
        eng = self._engine
        with _gcpause.paused(len(items)):  # (no cycles made: see _gcpause)
            # (None: item by item; a single remember does not get that far)
            block = _bulkcheck.prepare_block(eng, self.name, items) \
                if len(items) >= _bulkcheck.MIN_BLOCK else None
            if block is not None:
                _bulkcheck.embed_block(eng, block, prog)
                if prog is not None:
                    prog("write", 0, 1)
                ids = eng.write([("remember_block", block)])
                if prog is not None:
                    prog("write", 1, 1)
                return ids
            prepared = prepare_remember(eng, self.name, items, set())
            if not prepared:
                return []
            if prog is None:
                embed_missing(eng, prepared)
            else:
                from ._progress import embed
                todo = [p for p in prepared if p[7] is None]
                if todo:
                    for p, v in zip(todo, embed(eng.require_embedder(), [p[2] for p in todo],
                                                prog)):
                        p[7] = v
                prog("write", 0, 1)
            ids = eng.write([tuple(p) for p in prepared])
        if prog is not None:
            prog("write", 1, 1)
        return ids

    def batch(self) -> "Batch":
        """A context manager that applies many writes in one transaction, at its end.

        ``remember`` in a batch returns a :class:`~mnemos_kv.PendingId`, whose ``.id``
        is set when the batch commits (ids are assigned in the transaction); pass it
        to the batch's ``connect``/``forget`` to refer to that memory before then.
        All or nothing: an error at commit (or in the ``with`` block) writes nothing.
        See docs/concurrency.md.
        """
        from ._batch import Batch
        self._engine.check_writable()
        return Batch(self)

    def ingest_document(self, text: str, chunk_size: int = 512, overlap: int = 50, *,
                        doc_id: str | None = None, metadata: Mapping[str, Any] | None = None,
                        unit: str = "words", type: str = "semantic", timestamp: Any = None,
                        progress: bool | Callable[[str, int, int], Any] | None = None) -> Document:
        """Chunk ``text`` into fixed windows and store them, linked, in one transaction.

        Windows of ``chunk_size`` units (``"words"`` or ``"chars"``) overlapping by
        ``overlap``. Chunk ``i`` gets the key ``f"{doc_id}#{i}"``; the document itself is
        a memory with the key ``doc_id`` (default: derived from the text's SHA-256);
        chunks are linked ``next`` to the following chunk and ``part_of`` to the
        document. Ingesting the same document again writes nothing; a changed one
        replaces its old chunks. ``progress`` shows a tqdm bar while embedding (None:
        only for long documents on a terminal, when tqdm is installed), or is a callback
        ``progress(phase, done, total)``: ``"embed"`` (texts embedded: the document's
        and its chunks'), then ``"write"`` (0 of 1, 1 of 1).
        """
        from ._chunking import ingest
        return ingest(self, text, chunk_size, overlap, doc_id=doc_id, metadata=metadata,
                      unit=unit, type_=type, timestamp=timestamp, progress=progress)

    def update(self, id: MemoryId, *, text: str | None = None,
               metadata: Mapping[str, Any] | None = None, type: str | None = None,
               timestamp: Any = None) -> Memory:
        """Change a memory of this namespace, keeping its id, key, edges and pin.

        Only the given fields change: ``metadata`` replaces the whole dict, a new
        ``text`` is re-embedded and re-indexed (BM25), ``timestamp`` moves it in time.
        One logged op in one transaction; readers see the old or the new version,
        never a mix. ``updated_at`` becomes the clock's now, unless nothing differs
        (then nothing is written). Returns the memory as it now is.

        :raises MemoryNotFoundError: no such memory in this namespace.
        :raises InvalidInputError: nothing to change, or a bad value (before anything is written).
        """
        from ._mutate import check_fields
        eng = self._engine
        eng.check_writable()
        mid = _check_id(id)
        fields = check_fields(text, metadata, type, timestamp, None, eng.dim, require_text=False)
        with eng.snapshot() as snap:
            self._own(snap, mid)  # unknown or foreign: refused before embedding
        if "text" in fields:
            fields["vec"] = embed_checked(eng.require_embedder(), [fields["text"]])[0]
        rec = eng.write([("update", self.name, mid, fields, to_us(eng.clock(), "clock()"))])[0]
        return _to_memory(rec, self.name)

    def upsert(self, key: str, text: str, metadata: Mapping[str, Any] | None = None, *,
               type: str = "episodic", timestamp: Any = None, vector: Any = None) -> MemoryId:
        """Insert a memory under ``key``, or replace the one that has it; returns the id.

        A new key is remembered like :meth:`remember` (``timestamp`` default: now). An
        existing key keeps its id, edges and pin, and gets this text, metadata and
        type (and ``timestamp`` when given; else it keeps its own), as :meth:`update`
        does; writing the same values again changes nothing.

        :raises InvalidInputError: bad key, text, metadata, type, timestamp or vector.
        """
        from ._mutate import check_fields
        eng = self._engine
        eng.check_writable()
        k = R.check_key(key)
        if k is None:
            raise InvalidInputError("upsert needs a key (a non-empty str), got None")
        fields = check_fields(text, metadata, type, timestamp, vector, eng.dim, require_text=True)
        if "vec" not in fields:
            fields["vec"] = embed_checked(eng.require_embedder(), [fields["text"]])[0]
        now = to_us(eng.clock(), "clock()")
        return int(eng.write([("upsert", self.name, k, fields, now, False)])[0])

    def forget(self, id: MemoryId) -> None:
        """Delete a memory and every edge touching it. :raises MemoryNotFoundError:"""
        self._engine.write([("forget", self.name, _check_id(id))])

    def forget_many(self, ids: Iterable[MemoryId]) -> None:
        """Delete several memories in one transaction; all or nothing."""
        from . import _forget
        raw = as_list(ids, "ids")
        mids = raw if all(type(i) is int and 0 < i <= _MAX_ID for i in raw) else \
            [_check_id(i) for i in raw]
        if len(set(mids)) != len(mids):
            raise InvalidInputError("forget_many got the same id twice")
        if len(mids) >= _forget.MIN_BULK:  # one pass over each table (the same ops)
            self._engine.write([("forget_many", self.name, mids)])
        elif mids:
            self._engine.write([("forget", self.name, mid) for mid in mids])

    def forget_where(self, filter: Mapping[str, Any]) -> int:
        """Forget every memory of this namespace whose metadata matches ``filter``, in one
        transaction (logged as ``forget`` ops, like :meth:`forget_many`); returns how
        many. The filter is checked before anything is read or written; an empty
        filter (``{}``) is refused rather than taken to mean "everything".

        :raises InvalidInputError: a malformed filter (see docs/filters.md).
        """
        node = _parse_filter(filter)
        if node is None:
            raise InvalidInputError(
                f"forget_where needs a non-empty filter dict, got {filter!r}")
        eng = self._engine
        eng.check_writable()
        return int(eng.write([("forget_where", self.name, node)])[0])

    def pin(self, id: MemoryId) -> None:
        """Protect a memory from capacity eviction (a logged op). :raises MemoryNotFoundError:"""
        self._engine.write([("pin", self.name, _check_id(id), True)])

    def unpin(self, id: MemoryId) -> None:
        """Make a pinned memory evictable again (a logged op). :raises MemoryNotFoundError:"""
        self._engine.write([("pin", self.name, _check_id(id), False)])

    def is_pinned(self, id: MemoryId) -> bool:
        """Whether the memory is pinned. :raises MemoryNotFoundError:"""
        mid = _check_id(id)
        with self._engine.snapshot() as snap:
            rec = self._own(snap, mid)
            return snap.is_pinned(rec.ns, mid)

    def explain_eviction(self, id: MemoryId) -> dict[str, Any]:
        """Why a memory was evicted, or where a live one stands in the eviction order.

        For an evicted memory (``status "evicted"``): the seq of its ``evict`` op, the
        limit and scope that evicted it, and its retention score ``2 ** -x`` with
        ``x = age / half_life`` at that moment. For a live one (``status "live"``): its
        retention now, whether it is pinned, and per limit that applies its
        ``position`` in the eviction order (1 = next to go). ``"reason"`` says it in one
        sentence. A memory that is gone for another reason gives ``status "gone"``.

        :raises MemoryNotFoundError: an id this store never gave out (or of another namespace).
        """
        from ._capacity import explain
        mid = _check_id(id)
        with self._engine.snapshot() as snap:
            confined = self._readable is not None
            nid = self._nid(snap)
            return explain(snap, self.name, nid, mid, confined=confined)

    def summarize_older(self, than: Any, *, summarizer: Callable[[list[Memory]], str] | None = None,
                        window: float = 86_400.0, min_group: int = 2,
                        types: Sequence[str] = ("episodic",)) -> list[dict[str, Any]]:
        """Replace groups of old memories of this namespace by one summary memory each.

        ``than`` is an age (seconds, a ``timedelta`` or "30 days", counted back from the clock's
        now) or a cutoff ``datetime``: memories with an earlier timestamp qualify when
        their type is in ``types`` and they are neither pinned nor keyed. They are
        grouped by time window (``window`` seconds, aligned to the epoch); each group of
        at least ``min_group`` memories becomes one ``"semantic"`` memory whose text is
        ``summarizer(memories)`` (default: :func:`mnemos_kv.extractive_summary`,
        deterministic; any callable, e.g. an LLM client, works), whose timestamp is the
        group's newest, and whose metadata records ``summary_of`` (the replaced ids)
        and ``summary_window``. Edges of the replaced memories to memories outside the
        group move to the summary; the replaced memories are forgotten. All of it is
        logged ops in one transaction, so replay reproduces it without calling the
        summarizer. Returns one dict per summary: ``id``, ``replaced``, ``window``.
        """
        from ._semantic import summarize_older
        return summarize_older(self, than, summarizer=summarizer, window=window,
                               min_group=min_group, types=types)

    def connect(self, a: MemoryId, b: MemoryId, relation: str = "related",
                weight: float = 1.0) -> None:
        """Add (or re-weight) the directed edge ``a -> b``; both must be in this namespace."""
        a, b = _check_id(a, "a"), _check_id(b, "b")
        if a == b:
            raise InvalidInputError(f"cannot connect memory {a} to itself")
        self._engine.write([("connect", self.name, a, b, check_relation(relation),
                             check_weight(weight))])

    def disconnect(self, a: MemoryId, b: MemoryId, relation: str | None = None) -> None:
        """Remove the edge ``a -> b`` (with ``relation``, or all relations)."""
        a, b = _check_id(a, "a"), _check_id(b, "b")
        relation = check_relation_filter(relation)
        self._engine.write([("disconnect", self.name, a, b, relation)])

    # -- reads --------------------------------------------------------------------------

    def _nid(self, snap: Reader) -> int | None:
        return snap.ns_id(self.name)

    def _memory(self, snap: Reader, rec: R.Record, score: float | None = None,
                explain: dict[str, float] | None = None) -> Memory:
        return _to_memory(rec, snap.ns_name(rec.ns), score, explain)

    def _own(self, snap: Reader, mid: int) -> R.Record:
        nid = self._nid(snap)
        rec = snap.record(mid) if nid is not None else None
        if rec is None or rec.ns != nid:
            raise MemoryNotFoundError(f"no memory with id {mid} in namespace {self.name!r}")
        return rec

    def get(self, id: MemoryId) -> Memory:
        """The memory with this id. :raises MemoryNotFoundError: unknown, forgotten or foreign."""
        mid = _check_id(id)
        with self._engine.snapshot() as snap:
            return self._memory(snap, self._own(snap, mid))

    def get_by_key(self, key: str) -> Memory:
        """The memory remembered with ``key=``. :raises MemoryNotFoundError:"""
        key = R.check_key(key)  # type: ignore[assignment]
        with self._engine.snapshot() as snap:
            nid = self._nid(snap)
            mid = snap.key_id(nid, key) if nid is not None else None
            if mid is None:
                raise MemoryNotFoundError(f"no memory with key {key!r} in namespace {self.name!r}")
            return self._memory(snap, self._own(snap, mid))

    def __contains__(self, id: object) -> bool:
        try:
            self.get(id)  # type: ignore[arg-type]
            return True
        except (MemoryNotFoundError, InvalidInputError):
            return False

    def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Live memories in this namespace; with ``filter``, those whose metadata
        matches it (see docs/filters.md; answered from the filter index)."""
        eng = self._engine
        eng.check_open()
        node = _parse_filter(filter)
        with eng.snapshot() as snap:
            if node is not None:
                nid = self._nid(snap)
                if nid is None:
                    return 0
                return snap.count(nid, node)
            return snap.ns_count(self.name)

    def __len__(self) -> int:
        return self.count()

    def memories(self, *, since: Any = None, until: Any = None,
                 filter: Mapping[str, Any] | None = None) -> Iterator[Memory]:
        """Every live memory of this namespace in time order (then id), from one snapshot;
        ``since``/``until`` bound the timestamps, ``filter`` matches the metadata."""
        eng = self._engine
        node = _parse_filter(filter)
        lo = to_us(since, "since") if since is not None else None
        hi = to_us(until, "until") if until is not None else None
        with eng.snapshot() as snap:
            nid = self._nid(snap)
            if nid is None:
                return
            for rec in snap.memories(nid, lo, hi, node):
                yield self._memory(snap, rec)

    def get_vector(self, id: MemoryId) -> np.ndarray:
        """The stored (L2-normalised, float32) vector of a memory, as a copy."""
        mid = _check_id(id)
        with self._engine.snapshot() as snap:
            rec = self._own(snap, mid)
            return np.array(snap.vector(rec), dtype=np.float32)

    def neighbors(self, id: MemoryId, *, relation: str | None = None,
                  direction: str = "both") -> list[Edge]:
        """Edges touching ``id``: ``direction`` is ``"out"``, ``"in"`` or ``"both"``."""
        if direction not in ("out", "in", "both"):
            raise InvalidInputError(f"direction must be 'out', 'in' or 'both', got {direction!r}")
        mid = _check_id(id)
        with self._engine.snapshot() as snap:
            self._own(snap, mid)
            edges = snap.edges(mid, direction)
        return [Edge(s, d, r, w) for s, d, r, w in edges if relation is None or r == relation]

    def ask(self, query: str | None = None, top_k: int = 5, *, vector: Any = None,
            mode: str = "hybrid", use_graph: bool = False,
            recency_bias: bool | str | float | Any = False,
            types: str | Sequence[str] | Mapping[str, float] | None = None,
            since: Any = None, until: Any = None, namespaces: Sequence[str] | None = None,
            filter: Mapping[str, Any] | None = None, explain: bool = False,
            now: Any = None, rerank: Any = None) -> list[Memory]:
        """The ``top_k`` memories most relevant to ``query`` (text) and/or ``vector``, best first.

        ``mode="hybrid"`` (default): vector similarity fused with BM25 over the stored
        words, plus a share of the score of each memory's time-adjacent neighbours (see
        docs/retrieval.md); ``use_graph`` also lets memories linked (1-2 edges) to the
        best hits surface; ``recency_bias`` (True, or a half-life like ``"7d"``, ``"7 days"``, ``"12h"``, seconds
        or a timedelta) favours newer memories; ``types`` as a dict ``{type: weight}``
        sets ranking weights (default ``episodic`` 1.0, ``semantic`` 1.1,
        ``procedural`` 1.05). ``mode="vector"``: pure cosine order, ``Memory.score`` is
        the cosine similarity; ``mode="lexical"``: BM25 only (memories sharing no word
        with the query are not returned), ``Memory.score`` is the BM25 score. The pure
        modes rank by their one signal, so they refuse ``use_graph``, ``recency_bias``
        and type weights (a list of ``types`` still filters).

        ``vector``: the caller's query vector (the store's dimension, real and finite);
        without it the text is embedded (with the embedder's ``embed_query`` when it
        has one). Give text, a vector, or both (hybrid: the vector scores, the text
        feeds BM25; in vector mode a given vector is used and the text is not embedded).
        Filters, in every mode: ``types`` keeps only the given memory types;
        ``since``/``until`` (epoch seconds, datetime, date or ISO-8601 string) keep
        memories whose timestamp is in that (inclusive) range; ``namespaces`` searches
        several namespaces at once (a handle may name
        only its own and those it was granted read access to); ``filter`` keeps
        memories whose metadata matches a filter (see :mod:`mnemos_kv.filters` and
        docs/filters.md). ``explain=True`` fills each ``Memory.explain`` with the parts
        of its score.

        Dates in the query ("in October", "last week") favour memories of that time
        (hybrid mode); ``now`` (default: the store's clock) anchors the relative ones.
        ``rerank``: a callable ``(query, texts) -> scores`` (or an object with a
        ``rerank`` method, e.g. ``CrossEncoderReranker``) that reorders the best
        candidates; ``Memory.score`` is then its score.

        :raises InvalidInputError: bad query, vector, mode, filter or option.
        """
        from .embedders import check_query_vector, embed_query_checked
        eng = self._engine
        eng.check_open()
        if mode not in ASK_MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(ASK_MODES)}; got {mode!r}")
        if query is None and vector is None:
            raise InvalidInputError("ask needs a query text, a vector, or both")
        q = R.check_text(query, "query") if query is not None else ""
        if mode == "lexical" and query is None:
            raise InvalidInputError("mode='lexical' needs a query text")
        k = _check_top_k(top_k)
        node = _parse_filter(filter)
        for flag, val in (("use_graph", use_graph), ("explain", explain)):
            if not isinstance(val, (bool, np.bool_)):
                raise InvalidInputError(f"{flag} must be True or False, got {val!r}")
        half_life = _retrieval.parse_half_life(recency_bias)
        type_codes, type_weights = _check_types(types)
        if mode != "hybrid":
            extra = [n for n, on in (("use_graph", bool(use_graph)),
                                     ("recency_bias", half_life is not None),
                                     ("type weights", isinstance(types, Mapping))) if on]
            if extra:
                raise InvalidInputError(
                    f"mode={mode!r} ranks by {'cosine' if mode == 'vector' else 'BM25'} only; "
                    f"{', '.join(extra)} need mode='hybrid'")
        since_us = to_us(since, "since") if since is not None else None
        until_us = to_us(until, "until") if until is not None else None
        if since_us is not None and until_us is not None and since_us > until_us:
            raise InvalidInputError(f"since ({since!r}) is after until ({until!r})")
        now_us = to_us(now if now is not None else eng.clock(), "now")
        if rerank is not None:
            _rerank.check(rerank)
            if not q:
                raise InvalidInputError("rerank needs a query text (it scores (query, text) pairs)")
        names = self._search_names(namespaces)
        if vector is not None:
            qvec = check_query_vector(vector, eng.dim)
            embedder = eng.embedder
        elif mode == "lexical":
            qvec, embedder = np.zeros(eng.dim, np.float32), eng.embedder
        else:
            embedder = eng.require_embedder()
            qvec = embed_query_checked(embedder, q)
        with eng.snapshot() as snap:
            nids = tuple(n for n in (snap.ns_id(nm) for nm in names) if n is not None)
            plan = _retrieval.Query(
                text=q, vector=qvec, ns_ids=nids,
                top_k=k if rerank is None else _rerank.candidates(k),
                vector_weight=_retrieval.vector_weight_for(embedder, eng.embedder_name)
                if q else 1.0,
                use_graph=bool(use_graph), half_life_s=half_life, type_codes=type_codes,
                type_weights=type_weights, since_us=since_us, until_us=until_us,
                explain=bool(explain), neighbour_weight=_retrieval.NEIGHBOUR_WEIGHT,
                mode=mode, now_us=now_us)
            out = [self._memory(snap, rec, hit.score, hit.parts)
                   for hit, rec in snap.search(plan, node)]
        return out if rerank is None else _rerank.apply(rerank, q, out, k)

    def graph(self, namespace: str | Sequence[str] | None = None) -> Any:
        """A ``networkx.MultiDiGraph`` of the memories and edges of a namespace.

        ``namespace``: this handle's own namespace (None), or a name or list of names
        it may read. Nodes are memory ids (attributes ``text``, ``namespace``,
        ``type``, ``created_at``, ``metadata``, ``key``); edges carry ``relation``
        (also the edge key) and ``weight``. A copy: changing it changes nothing stored.
        """
        names = self._search_names(namespace)
        with self._engine.snapshot() as snap:
            nids = [n for n in (snap.ns_id(nm) for nm in names) if n is not None]
            return snap.graph(nids)

    def _search_names(self, namespaces: Sequence[str] | None) -> list[str]:
        if namespaces is None:
            return [self.name]
        if isinstance(namespaces, str):
            namespaces = [namespaces]
        names = [check_namespace(n) for n in namespaces]
        if not names:
            raise InvalidInputError("namespaces must name at least one namespace")
        if self._readable is not None:
            denied = sorted(set(names) - self._readable)
            if denied:
                raise InvalidInputError(
                    f"namespace handle {self.name!r} may not read {denied}; it may read "
                    f"{sorted(self._readable)}")
        return sorted(set(names))


class Namespace(_Handle):
    """A handle confined to one namespace; get it with ``db.namespace(name)``."""

    def __init__(self, engine: Backend, name: str, read: Iterable[str] = ()) -> None:
        self._engine = engine
        self.name = check_namespace(name)
        self._readable = frozenset([self.name, *(check_namespace(n) for n in as_list(read, "read"))])

    def set_capacity(self, max_entries: int | None = None, *, max_bytes: int | None = None) -> None:
        """Limit this namespace's live memories (count and/or bytes); None removes a limit.

        Each call replaces the namespace's whole policy (``set_capacity()`` removes it).
        Exceeding memories are evicted at once, lowest retention first, and from then on
        by every write that would exceed the limit; other namespaces are never touched.
        See :meth:`Mnemos.set_capacity` for the retention score.

        :raises InvalidInputError: a limit is not a positive int or None.
        :raises CapacityError: the limit cannot be met without evicting pinned memories.
        """
        from ._capacity import check_limit
        me = check_limit(max_entries, "max_entries")
        mb = check_limit(max_bytes, "max_bytes")
        self._engine.write([("capacity", self.name, me, mb)])

    def drop(self) -> int:
        """Delete this namespace: every memory, edge (also edges from other namespaces
        into it), key, index entry, capacity limit and counter, in one logged op and
        one transaction. Returns how many memories it held (0: it did not exist). The
        handle stays usable: a later write creates the namespace afresh."""
        self._engine.check_writable()
        return int(self._engine.write([("drop", self.name)])[0])

    def capacity(self) -> dict[str, int | None]:
        """This namespace's limits: ``{"max_entries": n or None, "max_bytes": n or None}``."""
        with self._engine.snapshot() as snap:
            nid = self._nid(snap)
            lim = snap.limits()["ns"].get(nid, {}) if nid is not None else {}
            return {"max_entries": lim.get("max_entries"), "max_bytes": lim.get("max_bytes")}

    def __repr__(self) -> str:
        return f"<Namespace {self.name!r} of {self._engine.path!r}>"


class Mnemos(_Handle):
    """An embedded memory store: a directory holding LMDB, the vector files and the log.

    Open it with :meth:`Mnemos.open`; use it as a context manager or call
    :meth:`close`. Calls act on the ``"default"`` namespace.
    """

    def __init__(self, engine: Backend) -> None:
        self._engine = engine
        self.name = DEFAULT_NS
        self._readable = None  # type: ignore[assignment]  # the root may read every namespace
        self._on_evict: Callable[[list[Memory]], Any] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, embedder: Any = None,
             clock: Callable[[], float] | None = None, readonly: bool = False,
             map_size: int = DEFAULT_MAP_SIZE, durability: str = "full",
             on_evict: Callable[[list[Memory]], Any] | None = None,
             ann: bool | str | None = None) -> "Mnemos":
        """Open (or create) the store at ``path``.

        ``embedder``: an object with ``name``, ``dim`` and ``embed(texts)``, or a
        callable; default: the built-in hashing embedder (no model). A store keeps the
        embedder it was created with; opening it with another raises
        EmbedderMismatchError. ``clock`` returns seconds since the epoch (default
        ``time.time``): inject one for reproducible runs. ``readonly`` opens without
        write access (works while other processes write). ``map_size`` is the initial
        LMDB map size in bytes; it grows on demand. ``durability`` is ``"full"`` (every
        write is durable when it returns) or ``"fast"`` (a machine crash may undo the
        last committed write until the next write or :meth:`sync`; a process crash
        loses nothing); see docs/durability.md. Any number of processes may open the
        same store at once (see docs/concurrency.md). ``on_evict`` is called with the
        list of ``Memory`` objects a write of this process evicted, after its commit
        (see :attr:`on_evict`). ``ann`` chooses the vector candidate stage of ``ask``:
        None (default) uses the IVF index from ``mnemos_kv._ann.THRESHOLD`` slots on,
        True whenever the store is big enough to have one (4096 slots), False never;
        either way answers equal the exact scan's (the index answers a
        ``mode="vector"`` ask only when its bound proves the top k exact; the first such
        ask of a new epoch builds it, logged with its expected time). ``"approximate"``
        uses it for every ask, exact or not (faster, lower recall on unclustered
        vectors). See docs/retrieval.md.

        ``path`` may also be a PostgreSQL URL, ``postgresql://user@host:port/db?schema=name``
        (or ``postgres://``): the store lives in that schema (default ``mnemos``; made on
        first open) of a server with pgvector, behind this same API (extra
        ``mnemos-kv[postgres]``; what differs: docs/postgres.md). Query
        parameters other than ``schema`` and libpq's own are refused.

        :raises NotAStoreError: ``path`` is a file or a foreign directory.
        :raises FormatVersionError: the store was written by a newer mnemos-kv.
        """
        if clock is not None and not callable(clock):
            raise InvalidInputError(f"clock must be callable, got {type(clock).__name__}")
        if isinstance(path, str) and path.split(":", 1)[0].lower() in ("postgresql", "postgres") \
                and ":" in path:
            return cls._open_postgres(path, embedder=embedder, clock=clock, readonly=readonly,
                                      durability=durability, on_evict=on_evict, ann=ann)
        if isinstance(map_size, bool) or not isinstance(map_size, int) or \
                not (1 << 20) <= map_size <= MAX_MAP_SIZE:
            raise InvalidInputError(
                f"map_size must be an int from 1 MiB to 2**48 bytes, got {map_size!r}")
        if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes) or not os.fspath(path):
            raise InvalidInputError(f"path must be a non-empty str or os.PathLike, got {path!r}")
        if durability not in DURABILITY_MODES:
            raise InvalidInputError(
                f"durability must be one of {sorted(DURABILITY_MODES)}, got {durability!r}")
        if not any(ann is m or (isinstance(ann, str) and ann == m) for m in _ann.MODES):
            raise InvalidInputError(
                f"ann must be None, True, False or 'approximate', got {ann!r}")
        emb = resolve(embedder)
        if on_evict is not None and not callable(on_evict):
            raise InvalidInputError(f"on_evict must be callable, got {type(on_evict).__name__}")
        engine = Engine(path, embedder=emb, embedder_given=embedder is not None,
                        clock=clock or time.time, readonly=bool(readonly), map_size=map_size,
                        durable=durability == "full")
        engine.ann_mode = ann
        db = cls(engine)
        db.on_evict = on_evict
        return db

    @classmethod
    def _open_postgres(cls, url: str, *, embedder: Any, clock: Callable[[], float] | None,
                       readonly: bool, durability: str, on_evict: Any, ann: bool | str | None
                       ) -> "Mnemos":
        """``open`` of a ``postgresql://`` URL: the PostgreSQL engine (docs/postgres.md)."""
        from ._pg import open_engine
        if not is_postgres_url(url):
            raise InvalidInputError(
                f"{url.split('://')[0].split(':')[0]}: paths are PostgreSQL URLs; expected "
                f"'postgresql://user@host:port/db?schema=name', got {url!r}")
        if durability not in DURABILITY_MODES:
            raise InvalidInputError(
                f"durability must be one of {sorted(DURABILITY_MODES)}, got {durability!r}")
        if ann:
            raise InvalidInputError(f"ann={ann!r} is for the embedded store; a PostgreSQL "
                                    "store scans its candidates exactly")
        emb = resolve(embedder)
        if on_evict is not None and not callable(on_evict):
            raise InvalidInputError(f"on_evict must be callable, got {type(on_evict).__name__}")
        engine = open_engine(url, embedder=emb, embedder_given=embedder is not None,
                             clock=clock or time.time, readonly=bool(readonly),
                             durable=durability == "full")
        db = cls(engine)
        db.on_evict = on_evict
        return db

    @property
    def backend(self) -> str:
        """Which engine holds the store: ``"embedded"`` (a local directory) or ``"postgres"``."""
        return str(getattr(self._engine, "kind", "embedded"))

    @property
    def on_evict(self) -> Callable[[list[Memory]], Any] | None:
        """Called after a commit with the memories that write (of this process, any
        handle) evicted, as ``Memory`` objects; None for no callback. Its exceptions
        become ``RuntimeWarning``s: the write is durable either way."""
        return self._on_evict

    @on_evict.setter
    def on_evict(self, fn: Callable[[list[Memory]], Any] | None) -> None:
        if fn is not None and not callable(fn):
            raise InvalidInputError(f"on_evict must be callable or None, got {type(fn).__name__}")
        self._on_evict = fn
        eng = self._engine
        if fn is None:
            eng.on_evict = None
            return

        def hook(records: list[R.Record]) -> None:
            with eng.snapshot() as snap:
                mems = [_to_memory(r, snap.ns_name(r.ns)) for r in records]
            fn(mems)
        eng.on_evict = hook

    def set_capacity(self, max_entries: int | None = None, *, max_bytes: int | None = None) -> None:
        """Limit the live memories of the whole store (count and/or bytes); None removes it.

        Each call replaces the store-wide policy (``set_capacity()`` removes it); use
        ``db.namespace(name).set_capacity(...)`` for one namespace. The call is a logged
        op; memories over the new limit are evicted at once, and from then on every
        write that would exceed it evicts in the same transaction — exactly down to the
        limit — so no commit ever exceeds it. Eviction order: ascending retention
        ``2 ** -(age / half_life)``, age counted back from the newest memory of the
        scope, half-life 7 days (episodic), 30 (semantic), 90 (procedural); pinned
        memories are never evicted; ties go to the smaller id. A memory's bytes are its
        UTF-8 text, CBOR metadata, key and 4 bytes per vector dimension.

        :raises InvalidInputError: a limit is not a positive int or None.
        :raises CapacityError: the limit cannot be met without evicting pinned memories.
        """
        from ._capacity import check_limit
        me = check_limit(max_entries, "max_entries")
        mb = check_limit(max_bytes, "max_bytes")
        self._engine.write([("capacity", None, me, mb)])

    def capacity(self) -> dict[str, Any]:
        """Every limit: ``{"store": {...} or None, "namespaces": {name: {...}}}``."""
        with self._engine.snapshot() as snap:
            lims = snap.limits()
            return {"store": dict(lims["store"]) if lims["store"] else None,
                    "namespaces": {snap.ns_name(n): dict(v)
                                   for n, v in sorted(lims["ns"].items())}}

    @property
    def path(self) -> str:
        """The store directory (a PostgreSQL store: its URL, password redacted)."""
        return self._engine.path

    @property
    def readonly(self) -> bool:
        """Whether the store was opened read-only (writes raise ReadOnlyError)."""
        return self._engine.readonly

    @property
    def durability(self) -> str:
        """``"full"`` or ``"fast"``: what a returned write survives (docs/durability.md)."""
        return "full" if self._engine.durable else "fast"

    def sync(self) -> None:
        """Make every write committed so far durable, whatever the durability mode.

        In ``"fast"`` mode, call it where losing the last write to a power cut would
        matter; in both modes it also syncs the vector files, so the next open has
        nothing to redo. :raises ReadOnlyError: the store is open read-only.
        """
        self._engine.sync()

    @property
    def embedder(self) -> Any:
        """The embedder in use (None when opened without the store's custom embedder)."""
        return self._engine.embedder

    def namespace(self, name: str, *, read: Iterable[str] = ()) -> Namespace:
        """A handle confined to namespace ``name`` (created on its first write).

        ``read`` names other namespaces the handle may search with
        ``ask(namespaces=[...])``, typically a shared one; it can never change them.
        """
        self._engine.check_open()
        if isinstance(read, str):
            read = [read]
        return Namespace(self._engine, name, read)

    def drop_namespace(self, name: str) -> int:
        """Delete namespace ``name`` and everything in it (see :meth:`Namespace.drop`);
        returns how many memories it held (0: it did not exist). ``"default"`` is
        emptied and stays. One logged op: replay, export and compaction follow it."""
        name = check_namespace(name)
        self._engine.check_writable()
        return int(self._engine.write([("drop", name)])[0])

    def dump(self, file: str | os.PathLike[str] | IO[str], *, namespaces: Sequence[str] | None = None,
             vectors: bool = False, progress: Callable[[str, int, int], Any] | None = None) -> int:
        """Write the store's logical state as JSON Lines (one consistent snapshot).

        ``file`` is a path or a text file. Lines: the store (counters, limits), each
        namespace, each memory (in id order; with ``vectors``, its stored vector), each
        edge; the format is in docs/api.md. :meth:`load` is its inverse. ``namespaces``
        keeps only those. ``progress("memories", done, total)``. Returns the lines written.
        """
        from ._dump import dump
        from ._progress import check
        prog = check(progress)
        eng = self._engine.local("dump")
        eng.check_open()
        names = [namespaces] if isinstance(namespaces, str) else \
            None if namespaces is None else [check_namespace(n) for n in namespaces]
        if isinstance(file, (str, os.PathLike)):
            from ._replay import check_out_path
            check_out_path(file, "dump file")
            with open(file, "w", encoding="utf-8") as f:
                return dump(eng, f, namespaces=names, vectors=bool(vectors), progress=prog)
        return dump(eng, file, namespaces=names, vectors=bool(vectors), progress=prog)

    def load(self, file: str | os.PathLike[str] | Iterable[str], *,
             progress: Callable[[str, int, int], Any] | None = None) -> int:
        """Load a :meth:`dump` into this empty store: the same ids, counters, records,
        vectors (embedded again when the dump has none), keys, pins, limits and edges,
        so ``state_digest()`` equals the source's. ``file`` is a path or an iterable of
        lines. Everything is validated before anything is written. ``progress(phase,
        done, total)``: ``"embed"`` (when embedding), ``"restore"``. Returns the memories.

        :raises ReplayError: the store is not empty.
        :raises InvalidInputError: a malformed dump (the message names the line).
        :raises EmbedderMismatchError: the dump's vectors come from another embedder.
        """
        from ._dump import load
        from ._progress import check
        prog = check(progress)
        eng = self._engine.local("load")
        eng.check_writable()
        if isinstance(file, (str, os.PathLike)):
            if os.path.isdir(file):
                raise InvalidInputError(f"dump file {os.fspath(file)!r} is a directory")
            try:
                f = open(file, encoding="utf-8")
            except FileNotFoundError:
                raise InvalidInputError(f"dump file {os.fspath(file)!r} does not exist") from None
            except OSError as exc:
                raise InvalidInputError(f"dump file {os.fspath(file)!r} cannot be read: "
                                        f"{exc.strerror}") from None
            with f:
                return load(eng, f, prog)
        return load(eng, file, prog)

    def namespaces(self) -> list[str]:
        """Names of every namespace that exists (sorted)."""
        with self._engine.snapshot() as snap:
            return list(snap.namespaces())

    def stats(self) -> dict[str, Any]:
        """Counts per namespace and in total, format version, embedder, files and sizes,
        capacity limits and evicted counts: ``evicted`` (memories evicted by capacity
        limits, in total) and ``capacity`` (the store limit, per namespace its limit and
        evicted count, and the capacity bytes of the live memories — None in a store made
        before byte counting, until its first ``max_bytes`` limit)."""
        return self._engine.stats()

    def state_digest(self, namespaces: Sequence[str] | None = None) -> str:
        """A stable SHA-256 (hex) of the logical state: memories with their vectors,
        edges, namespaces and id counters. Two stores with equal digests answer every
        call the same way. ``namespaces`` limits it to those namespaces' content."""
        from ._replay import state_digest
        if isinstance(namespaces, str):
            namespaces = [namespaces]
        with self._engine.snapshot() as snap:
            return state_digest(self._engine, snap, namespaces)

    def export_replay(self, path: str | os.PathLike[str], *, namespaces: Sequence[str] | None = None,
                      since_seq: int | None = None,
                      progress: Callable[[str, int, int], Any] | None = None) -> "ExportInfo":
        """Write a portable replay file of this store's history (one consistent snapshot).

        By default: the base snapshot of the last compaction (if any) plus every logged
        operation after it, and a digest of the state at the end. ``namespaces`` keeps
        only those namespaces' operations; ``since_seq`` only the operations after that
        sequence number (an incremental export, applied with ``replay(resume=True)``).
        ``progress("log", frames, total)`` is called every 10,000 logged frames.
        """
        from ._progress import check
        from ._replay import check_out_path
        prog = check(progress)
        self._engine.check_open()
        check_out_path(path, "export path")
        return self._engine.export_replay(os.fspath(path), namespaces=namespaces,
                                          since_seq=since_seq, progress=prog)

    def replay(self, path: str | os.PathLike[str], *, strict: bool = True,
               resume: bool = False,
               progress: Callable[[str, int, int], Any] | None = None) -> "ReplayResult":
        """Apply a replay file: same ids, records, edges, timestamps, vectors and answers.

        The store must be empty, unless ``resume=True``: then it must be at exactly the
        sequence number the (incremental) file continues from. The logged times and
        vectors are used; the clock and the embedder are not called. A corrupted or
        truncated file raises LogCorruptionError naming the frame and byte offset and
        applies nothing; with ``strict=False`` the intact prefix is applied and the
        result says where it stopped. A file of a newer format or another embedder is
        refused before anything is applied.

        ``progress(phase, done, total)``: ``"restore"`` (base snapshot ops), ``"replay"``
        (frames applied).

        :raises ReplayError: the store is not empty, or the result's digest differs.
        """
        from ._progress import check
        if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes) or not os.fspath(path):
            raise InvalidInputError(f"path must be a replay file path (str), got {path!r}")
        prog = check(progress)
        return self._engine.replay(os.fspath(path), strict=strict, resume=resume, progress=prog)

    @staticmethod
    def recover(path: str | os.PathLike[str], *, to: str | os.PathLike[str] | None = None,
                embedder: Any = None) -> "RecoveryReport":
        """Rebuild a damaged store's LMDB file and vector files from its base snapshot and log.

        Use it when opening raises :class:`~mnemos_kv.NeedsRecoveryError` (or ``verify``
        reports damage). Every operation whose log frame is intact is re-applied (same
        ids, records, edges, vectors); the report lists what could not be restored (e.g.
        the frames after a damaged one). With ``to``, the rebuilt store is written there
        and ``path`` is left untouched; in place, every replaced file is moved aside as
        ``<name>.damaged-<n>`` (nothing is deleted) and no other process may have the
        store open. ``embedder`` is needed only when data.mdb is too damaged to say which
        embedder the store uses (see docs/durability.md).
        """
        from ._recover import recover
        return recover(path, to=None if to is None else os.fspath(to), embedder=embedder)  # type: ignore[arg-type]

    def verify(self, *, deep: bool = True,
               progress: Callable[[str, int, int], Any] | None = None) -> "VerifyReport":
        """Check LMDB records, vector file, slot columns and log against each other.

        Runs in one snapshot (safe while other processes write); returns a report
        whose ``ok`` is True when nothing is wrong. First every page of data.mdb is
        checked without LMDB, so a damaged file is reported, never a crash. ``deep``
        checks the checksum of every vector row and compares every logged record and
        vector with the stored one; ``deep=False`` checks an even sample of 4096 rows.
        ``progress(phase, done, total)``: ``"records"``, ``"log"`` (every 10,000).
        """
        from ._progress import check
        from ._verify import verify
        prog = check(progress)
        eng = self._engine.local("verify")
        eng.check_open()
        return verify(eng, deep=deep, progress=prog)

    def compact(self, *, merge_similar: float | None = None,
                progress: Callable[[str, int, int], Any] | None = None) -> dict[str, Any]:
        """Recover the space of forgotten, evicted and merged memories in every file.

        Rewrites the vector and slot files without dead rows into a new generation,
        checkpoints the replay log (a base snapshot + a new, empty segment) and, when no
        other process has the store open, rewrites the LMDB file without free pages
        (otherwise it is left for a later compaction: see ``lmdb_compacted`` and
        ``lmdb_note``). Live memories, ids, edges and answers are unchanged; other
        processes keep working and move to the new files on their next read. A crash
        at any point leaves the old or the new state, complete.

        ``merge_similar`` (a cosine threshold in (0, 1]) first merges near-duplicates
        within each namespace and type: the oldest id is kept, gets the union of the
        metadata (its own values win) and ``merged_from``, and inherits the edges of
        the memories merged into it, which are forgotten — all logged ops.
        ``progress(phase, done, total)`` is called as the work goes on.

        Returns slot counts (``slots_before``/``slots_after``), ``merged``,
        ``generation``, ``seq``, ``lmdb_compacted``/``lmdb_note``, ``files_before``/
        ``files_after`` (bytes on disk per file) and ``seconds``.
        """
        from ._compaction import compact
        return compact(self._engine.local("compact"), merge_similar=merge_similar, progress=progress)

    def close(self) -> None:
        """Close the store; later calls raise ClosedError. Idempotent."""
        self._engine.close()

    def __enter__(self) -> "Mnemos":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._engine.closed else ("read-only" if self.readonly else "open")
        return f"<Mnemos {self._engine.path!r} {state}>"
