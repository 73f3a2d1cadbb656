"""The seam between the facade (``store``) and a storage engine.

``Mnemos``/``Namespace`` validate their input, then talk to an engine only through
these two protocols: :class:`Backend` (writes as *requests*, snapshots, lifecycle)
and :class:`Reader` (one consistent read view). Two engines implement them: the
embedded LMDB engine (``_engine.Engine`` and its ``Snapshot``) and the PostgreSQL
engine (``_pg``). A call only one engine has (``compact``, ``verify``, ``dump``...)
asks the backend for its embedded engine with :meth:`Backend.local`, which the
PostgreSQL engine answers with :class:`~mnemos_kv.errors.UnsupportedError`.

Write requests (tuples, resolved into logged ops inside the engine's transaction):
``("remember", ns, text, meta, type, ts_us, key, vec, pinned)``, ``("forget", ns, id)``,
``("connect", ns, src, dst, rel, w)``, ``("disconnect", ns, src, dst, rel)``,
``("update", ns, id, fields, at_us)``, ``("upsert", ns, key, fields, now_us, pinned)``,
``("drop", ns)``, ``("pin", ns, id, on)``, ``("capacity", ns or None, max_entries, max_bytes)``, ``("forget_where", ns, parsed filter)``, ``("forget_many", ns, ids)``, ``("bind", request)`` (batch references),
``("op", op)`` (replay), ``("apply", fn, n)`` (``fn(writer)`` resolves its own ops
through ``_semantic.LmdbWriter`` or ``_pg.write.PgWriter``; at most ``n`` new
memories) and ``("call", fn, n)`` (embedded engine only).
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence

import numpy as np

from . import _records as R
from .errors import EmbedderMismatchError, ReadOnlyError

__all__ = ["Backend", "EngineChecks", "Reader", "is_postgres_url"]


def is_postgres_url(path: Any) -> bool:
    """Whether ``path`` names a PostgreSQL store (``postgresql://`` or ``postgres://``)."""
    return isinstance(path, str) and path.split("://", 1)[0].lower() in ("postgresql", "postgres") \
        and "://" in path


class Reader(Protocol):
    """One consistent read view of a store (a snapshot); valid inside its ``with``."""

    state: Any  # counters: at least ``seq``, ``next_id``, ``next_ns``, ``live``

    def ns_id(self, name: str) -> int | None: ...
    def ns_name(self, nid: int) -> str: ...
    def namespaces(self) -> dict[str, dict[str, Any]]: ...
    def namespaces_from(self, head: str) -> Iterator[tuple[str, dict[str, Any]]]: ...
    def ns_count(self, name: str) -> int: ...
    def record(self, mid: int) -> R.Record | None: ...
    def key_id(self, nid: int, key: str) -> int | None: ...
    def vector(self, rec: R.Record) -> np.ndarray: ...
    def edges(self, mid: int, direction: str) -> list[tuple[int, int, str, float]]: ...
    def count(self, nid: int, node: Any) -> int: ...
    def memories(self, nid: int, since_us: int | None, until_us: int | None,
                 node: Any) -> Iterator[R.Record]: ...
    def search(self, plan: Any, node: Any) -> list[tuple[Any, R.Record]]: ...
    def graph(self, nids: Sequence[int]) -> Any: ...
    def is_pinned(self, nid: int, mid: int) -> bool: ...
    def limits(self) -> dict[str, Any]: ...
    def evicted_counts(self) -> dict[int, int]: ...
    def pinned_ids(self, nid: int | None) -> list[int]: ...
    def eviction_note(self, mid: int) -> dict[str, Any] | None: ...
    def capacity_columns(self, nid: int | None) -> tuple[np.ndarray, ...]: ...
    def digest_records(self) -> Iterator[tuple[R.Record, bytes]]: ...
    def digest_edges(self) -> Iterator[tuple[int, int, str, float, int | None]]: ...


class Backend(Protocol):
    """A storage engine behind the facade."""

    path: str
    readonly: bool
    dim: int
    embedder: Any
    embedder_name: str
    clock: Callable[[], float]
    closed: bool
    durable: bool
    ann_mode: bool | str | None
    on_evict: Callable[[list[R.Record]], None] | None

    def check_open(self) -> None: ...
    def check_writable(self) -> None: ...
    def require_embedder(self) -> Any: ...
    def snapshot(self) -> ContextManager[Any]: ...
    def write(self, requests: Sequence[tuple[Any, ...]]) -> list[Any]: ...
    def local(self, call: str) -> Any: ...
    def stats(self) -> dict[str, Any]: ...
    def export_replay(self, path: str, *, namespaces: Sequence[str] | None,
                      since_seq: int | None, progress: Any) -> Any: ...
    def replay(self, path: str, *, strict: bool, resume: bool, progress: Any) -> Any: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class EngineChecks:
    """The checks both engines make before a call, one copy (each engine has ``path``,
    ``readonly``, ``embedder``, ``embedder_name``, ``dim`` and its own ``check_open``)."""

    path: str
    readonly: bool
    embedder: Any
    embedder_name: str
    dim: int

    def check_open(self) -> None:  # pragma: no cover - each engine defines its own
        raise NotImplementedError

    def check_writable(self) -> None:
        """:raises ClosedError: closed. :raises ReadOnlyError: opened read-only."""
        self.check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.path!r} is open read-only")

    def require_embedder(self) -> Any:
        """The embedder text is embedded with; raises when the store was opened without
        the one it was made with."""
        if self.embedder is None:
            raise EmbedderMismatchError(
                f"store {self.path!r} was made with embedder {self.embedder_name!r} "
                f"(dim {self.dim}); pass it as Mnemos.open(..., embedder=...) to embed text")
        return self.embedder
