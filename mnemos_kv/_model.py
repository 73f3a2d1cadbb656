"""Public value types returned by the API: Memory and Edge."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Memory:
    """One remembered item, as returned by ``get`` and ``ask``.

    ``created_at`` is the event time in seconds since the Unix epoch (UTC): the
    ``timestamp=`` given to ``remember`` or the clock's time of the call. ``score``
    is set by ``ask``: in ``mode="hybrid"`` the fused relevance (vector + BM25 +
    neighbours [+ graph], times type and recency weights; higher is better, comparable
    within one ``ask``), in ``mode="vector"`` the cosine similarity, in
    ``mode="lexical"`` the BM25 score; None elsewhere; ``explain`` holds the parts of the score when ``ask(explain=True)``
    (see docs/retrieval.md). ``updated_at`` is the store clock's time (epoch seconds) of
    the last ``update``/``upsert`` that changed the memory; equal to ``created_at`` for
    a memory never changed.
    """

    id: int
    text: str
    metadata: dict[str, Any]
    namespace: str
    type: str
    created_at: float
    score: float | None = None
    key: str | None = None
    explain: dict[str, float] | None = field(default=None, compare=False)
    updated_at: float = None  # type: ignore[assignment]  # None given: created_at

    def __post_init__(self) -> None:
        if self.updated_at is None:
            object.__setattr__(self, "updated_at", self.created_at)

    @property
    def created(self) -> _dt.datetime:
        """``created_at`` as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.created_at, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class Edge:
    """A directed, weighted, labelled link between two memories of one namespace."""

    src: int
    dst: int
    relation: str
    weight: float


@dataclass(frozen=True)
class Document:
    """What ``ingest_document`` stored: the document memory and its chunks, in order.

    ``changed`` is False when the same document was already stored (nothing written).
    """

    doc_id: str
    id: int
    chunk_ids: tuple[int, ...]
    changed: bool = True
