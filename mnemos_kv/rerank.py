"""Optional second-stage reranking for ``ask(..., rerank=...)``, and a cross-encoder adapter.

A reranker is any callable ``rerank(query, texts) -> scores`` (one number per text,
higher is better), or an object with such a ``rerank`` method. ``ask`` ranks as
usual, hands the best ``candidates(top_k)`` memories to the reranker, and returns
the ``top_k`` best by its scores (ties keep the first-stage order).
``Memory.score`` is then the reranker's score; with ``explain=True`` the first-stage
parts stay in ``Memory.explain`` (they add up to ``explain["first_stage"]``) next to
``explain["rerank"]``.

:class:`CrossEncoderReranker` wraps a sentence-transformers ``CrossEncoder`` (the
``[st]`` extra); nothing here imports it until one is built.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Sequence

from ._model import Memory
from .errors import InvalidInputError, MissingDependencyError

__all__ = ["Reranker", "CrossEncoderReranker", "candidates", "apply"]

#: Reranker = a callable (query, texts) -> scores, or an object with .rerank(query, texts).
Reranker = Any

#: How many first-stage candidates a reranker sees: RERANK_FACTOR * top_k, at least
#: RERANK_MIN, at most RERANK_MAX.
RERANK_FACTOR = 3
RERANK_MIN = 20
RERANK_MAX = 100


def candidates(top_k: int) -> int:
    """How many first-stage hits to rerank for a final ``top_k``."""
    return max(top_k, min(RERANK_MAX, max(RERANK_MIN, RERANK_FACTOR * top_k)))


def _scorer(rerank: Reranker) -> Callable[[str, list[str]], Any]:
    method = getattr(rerank, "rerank", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(rerank):
        return rerank  # type: ignore[no-any-return]
    raise InvalidInputError(
        f"rerank must be a callable (query, texts) -> scores or an object with a rerank() "
        f"method, got {type(rerank).__name__}")


def check(rerank: Reranker) -> None:
    """Reject a ``rerank`` argument that cannot be called (before any work)."""
    _scorer(rerank)


def apply(rerank: Reranker, query: str, hits: Sequence[Memory], top_k: int) -> list[Memory]:
    """The ``top_k`` of ``hits`` by the reranker's scores (stable: ties keep the order)."""
    if not hits:
        return []
    texts = [m.text for m in hits]
    raw = _scorer(rerank)(query, texts)
    try:
        scores = [float(x) for x in raw]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the reranker must return one number per text, got {raw!r}") from exc
    if len(scores) != len(texts):
        raise InvalidInputError(
            f"the reranker returned {len(scores)} scores for {len(texts)} texts")
    bad = [s for s in scores if not math.isfinite(s)]
    if bad:
        raise InvalidInputError(f"the reranker returned a non-finite score: {bad[0]!r}")
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[:top_k]
    out = []
    for i in order:
        m = hits[i]
        explain = None
        if m.explain is not None:
            explain = dict(m.explain, first_stage=float(m.score or 0.0), rerank=scores[i])
        out.append(dataclasses.replace(m, score=scores[i], explain=explain))
    return out


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder as a reranker (``pip install "mnemos-kv[st]"``).

    ``model``: a cross-encoder name or local directory (set ``HF_HUB_OFFLINE=1`` to
    forbid downloads), e.g. ``"cross-encoder/ms-marco-MiniLM-L-6-v2"``. Scores are the
    model's raw outputs for (query, text) pairs.
    """

    def __init__(self, model: str | os.PathLike[str], *, device: str = "cpu",
                 batch_size: int = 32, max_length: int | None = 512) -> None:
        try:
            from sentence_transformers import CrossEncoder  # type: ignore[import-not-found]
        except ImportError as exc:
            raise MissingDependencyError(
                'CrossEncoderReranker needs sentence-transformers: pip install "mnemos-kv[st]"'
            ) from exc
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise InvalidInputError(f"model must be a model name or a directory, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.model = CrossEncoder(os.fspath(model), device=device, max_length=max_length)

    def __call__(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text for ``query`` (higher is better)."""
        if not texts:
            return []
        out = self.model.predict([(query, t) for t in texts], batch_size=self.batch_size,
                                 show_progress_bar=False)
        return [float(x) for x in out]

    rerank = __call__
