"""``db.batch()``: many writes, one transaction, committed when the ``with`` block ends.

A batch collects requests; every call validates its arguments at once (a bad one
raises there and is not recorded), texts are embedded together, in one embedder
call, at commit, and the engine applies the whole list in one write transaction: one
log sync and one commit for the lot, all or nothing.

Memory ids are assigned inside the transaction (other processes may write between
now and the commit), so ``remember`` returns a :class:`PendingId`. Pass it to the
same batch's ``forget``/``connect``/``disconnect`` to refer to that memory; read its
``.id`` after the batch has committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ._engine import Ref
from ._validate import (check_id as _check_id, check_namespace, check_relation,
                        check_relation_filter, check_weight, embed_missing, prepare_remember)
from .embedders import embed_checked
from .errors import InvalidInputError

if TYPE_CHECKING:
    from .store import _Handle

__all__ = ["Batch", "BatchNamespace", "PendingId"]


class PendingId:
    """The id of a memory remembered in a batch; ``.id`` is known once the batch commits."""

    __slots__ = ("_batch", "_index", "_id")

    def __init__(self, batch: "Batch", index: int) -> None:
        self._batch = batch
        self._index = index
        self._id: int | None = None

    @property
    def committed(self) -> bool:
        """True once the batch has committed and ``id`` is set."""
        return self._id is not None

    @property
    def id(self) -> int:
        """The memory id. :raises InvalidInputError: the batch has not committed (yet)."""
        if self._id is None:
            state = "failed" if self._batch._state == "failed" else (
                "was discarded" if self._batch._state == "discarded" else "has not committed yet")
            raise InvalidInputError(
                f"batch item {self._index} has no id: its batch {state}; ids are assigned "
                "when the batch commits")
        return self._id

    def __int__(self) -> int:
        return self.id

    def __index__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PendingId):
            return self is other or (self._id is not None and self._id == other._id)
        return self._id is not None and other == self._id

    def __hash__(self) -> int:
        return hash(self._id) if self._id is not None else id(self)

    def __repr__(self) -> str:
        return f"PendingId({self._id})" if self._id is not None else f"PendingId(<item {self._index}>)"


class BatchNamespace:
    """The write API of a batch, confined to one namespace."""

    def __init__(self, batch: "Batch", name: str) -> None:
        self._batch = batch
        self.name = name

    def remember(self, text: str, metadata: Mapping[str, Any] | None = None, *,
                 type: str = "episodic", timestamp: Any = None, key: str | None = None,
                 vector: Any = None, pinned: bool = False) -> PendingId:
        """Queue a memory (validated now, embedded and written at commit); the
        arguments are those of ``Mnemos.remember``."""
        return self.remember_many([{"text": text, "metadata": metadata, "type": type,
                                    "timestamp": timestamp, "key": key, "vector": vector,
                                    "pinned": pinned}])[0]

    def remember_many(self, items: Iterable[str | Mapping[str, Any]]) -> list[PendingId]:
        """Queue many memories (texts or dicts, as ``Mnemos.remember_many`` takes)."""
        b = self._batch
        b._check_open()
        if isinstance(items, (str, bytes, Mapping)):
            raise InvalidInputError("remember_many takes a list of texts or dicts, not a single item")
        keys = set(b._keys)
        prepared = prepare_remember(b._engine, self.name, items, keys, first=len(b._requests))
        b._keys = keys
        out = []
        for p in prepared:
            pid = PendingId(b, len(b._requests))
            b._requests.append(p)
            b._pending.append(pid)
            out.append(pid)
        return out

    def update(self, id: int | PendingId, *, text: str | None = None,
               metadata: Mapping[str, Any] | None = None, type: str | None = None,
               timestamp: Any = None) -> None:
        """Queue a change of a memory of this namespace (``Mnemos.update``'s arguments;
        a new text is embedded at commit with the batch's other texts)."""
        from ._mutate import check_fields
        from ._timeutil import to_us
        b = self._batch
        b._check_open()
        ref = b._ref(id, "id")
        fields = check_fields(text, metadata, type, timestamp, None, b._engine.dim,
                              require_text=False)
        if "text" in fields:
            b._to_embed.append(fields)
        b._add(("update", self.name, ref, fields, to_us(b._engine.clock(), "clock()")))

    def upsert(self, key: str, text: str, metadata: Mapping[str, Any] | None = None, *,
               type: str = "episodic", timestamp: Any = None, vector: Any = None) -> PendingId:
        """Queue an insert-or-replace by ``key`` (``Mnemos.upsert``'s arguments); the
        returned :class:`PendingId` is the memory's id after the commit."""
        from . import _records as R
        from ._mutate import check_fields
        from ._timeutil import to_us
        b = self._batch
        b._check_open()
        k = R.check_key(key)
        if k is None:
            raise InvalidInputError("upsert needs a key (a non-empty str), got None")
        fields = check_fields(text, metadata, type, timestamp, vector, b._engine.dim,
                              require_text=True)
        if "vec" not in fields:
            b._to_embed.append(fields)
        pid = PendingId(b, len(b._requests))
        b._add(("upsert", self.name, k, fields, to_us(b._engine.clock(), "clock()"), False))
        b._pending.append(pid)
        return pid

    def forget(self, id: int | PendingId) -> None:
        """Queue the deletion of a memory (and its edges) of this namespace."""
        b = self._batch
        b._check_open()
        b._add(("forget", self.name, b._ref(id, "id")))

    def forget_where(self, filter: Mapping[str, Any]) -> None:
        """Queue forgetting every memory of this namespace whose metadata matches
        ``filter`` at that point of the batch (memories remembered earlier in it
        included). The filter is checked now; how many it forgot is not reported
        (``db.forget_where`` outside a batch returns it)."""
        from .filters import parse
        b = self._batch
        b._check_open()
        if not isinstance(filter, Mapping) or not filter:
            raise InvalidInputError(f"forget_where needs a non-empty filter dict, got {filter!r}")
        b._add(("forget_where", self.name, parse(filter)))

    def connect(self, a: int | PendingId, b: int | PendingId, relation: str = "related",
                weight: float = 1.0) -> None:
        """Queue the edge ``a -> b`` (both in this namespace)."""
        bt = self._batch
        bt._check_open()
        ra, rb = bt._ref(a, "a"), bt._ref(b, "b")
        if ra == rb:
            raise InvalidInputError(f"cannot connect memory {a!r} to itself")
        bt._add(("connect", self.name, ra, rb, check_relation(relation), check_weight(weight)))

    def disconnect(self, a: int | PendingId, b: int | PendingId, relation: str | None = None) -> None:
        """Queue the removal of the edge ``a -> b`` (one relation, or all)."""
        bt = self._batch
        bt._check_open()
        relation = check_relation_filter(relation)
        bt._add(("disconnect", self.name, bt._ref(a, "a"), bt._ref(b, "b"), relation))

    def __repr__(self) -> str:
        return f"<BatchNamespace {self.name!r}: {len(self._batch)} queued>"


class Batch(BatchNamespace):
    """Writes queued for one transaction; use as ``with db.batch() as b: ...``.

    The batch writes into its handle's namespace; from the root store,
    ``b.namespace(name)`` queues writes for another namespace in the same
    transaction. Not thread-safe: one batch belongs to one thread.
    """

    def __init__(self, handle: "_Handle") -> None:
        self._handle = handle
        self._engine = handle._engine
        self._requests: list[Any] = []
        self._pending: list[PendingId] = []
        self._keys: set[str] = set()
        self._to_embed: list[dict[str, Any]] = []  # update/upsert fields whose text needs a vector
        self._state = "open"  # open -> committed | failed | discarded
        super().__init__(self, handle.name)

    # -- building ------------------------------------------------------------------

    def drop_namespace(self, name: str) -> None:
        """Queue the drop of namespace ``name`` (see ``Mnemos.drop_namespace``); a batch
        of a namespace handle may drop only its own namespace."""
        self._check_open()
        check_namespace(name)
        if name != self._handle.name and self._handle._readable is not None:
            raise InvalidInputError(
                f"a batch of namespace {self._handle.name!r} cannot drop namespace {name!r}")
        self._add(("drop", name))

    def namespace(self, name: str) -> BatchNamespace:
        """Queue writes for namespace ``name`` in this batch (root store batches only)."""
        check_namespace(name)
        if name != self._handle.name and self._handle._readable is not None:
            raise InvalidInputError(
                f"a batch of namespace {self._handle.name!r} cannot write namespace {name!r}")
        return BatchNamespace(self, name)

    def _check_open(self) -> None:
        self._engine.check_writable()
        if self._state != "open":
            raise InvalidInputError(f"this batch is {self._state}; start a new one with db.batch()")

    def _ref(self, mid: Any, what: str) -> Any:
        """A committed id as an int, a pending id of this batch as a Ref to its request."""
        if isinstance(mid, PendingId):
            if mid._id is not None:
                return mid._id
            if mid._batch is not self:
                raise InvalidInputError(
                    f"{what} {mid!r} belongs to another batch that has not committed")
            return Ref(mid._index)
        return _check_id(mid, what)

    def _add(self, req: tuple[Any, ...]) -> None:
        if any(isinstance(x, Ref) for x in req):
            req = ("bind", req)
        self._requests.append(req)

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def ids(self) -> list[int]:
        """Ids of the memories remembered or upserted in this batch, in order (after commit)."""
        return [p.id for p in self._pending]

    # -- committing ----------------------------------------------------------------

    def commit(self) -> list[int]:
        """Embed, then apply every queued write in one transaction; returns the new ids.

        Called by the ``with`` block's end. All or nothing: on any error nothing is
        written and the batch is marked failed.
        """
        self._check_open()
        try:
            reqs = self._requests
            embed_missing(self._engine, [r for r in reqs if isinstance(r, list)])
            if self._to_embed:
                vecs = embed_checked(self._engine.require_embedder(),
                                     [f["text"] for f in self._to_embed])
                for f, v in zip(self._to_embed, vecs):
                    f["vec"] = v
            if reqs:
                results = self._engine.write([tuple(r) if isinstance(r, list) else r for r in reqs])
                for pid in self._pending:
                    pid._id = int(results[pid._index])
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed"
        return self.ids

    def discard(self) -> None:
        """Drop every queued write; nothing is written."""
        if self._state == "open":
            self._state = "discarded"
        self._requests = []

    def __enter__(self) -> "Batch":
        if self._state != "open":
            raise InvalidInputError(f"this batch is {self._state}; start a new one with db.batch()")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.discard()
            return
        if self._state == "open":
            self.commit()

    def __repr__(self) -> str:
        return f"<Batch {self.name!r} {self._state}: {len(self._requests)} queued>"

