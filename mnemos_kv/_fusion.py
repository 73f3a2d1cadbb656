"""Fusion of vector and lexical scores over candidate rows, plus neighbour expansion (pure numpy).

The planner has, for the same candidate rows, a cosine score per row (from the
embedder) and a BM25 score per row (from :mod:`_lexical`). They live on different
scales, so each is first mapped onto [0, 1] by :func:`normalize_scores`, then mixed
linearly (:func:`fuse_scores`); :func:`rrf_fuse` is the rank-based alternative.
:func:`neighbour_expand` then lets a row borrow part of the score of the rows just
before and after it in its conversation (time order).

Defaults (tuned on the LoCoMo dev split, see ``bench/locomo_bench.py``)::

    fused(r)    = w_vec * minmax(cos)(r) + (1 - w_vec) * minmax(bm25)(r)
                  w_vec = 0.5 for a sentence model (MiniLM), 0.15 for the hashing embedder
    expanded(r) = fused(r) + 0.2 * max(fused(prev(r)), fused(next(r)))

Min-max linear fusion beat z-score fusion (equal or slightly worse) and weighted RRF
(k=60; 3-10 points worse in recall@10 on LoCoMo, it throws away the score gaps). The
neighbour term is the "adjacency" prior of conversational memory: an answer often
sits in the turn next to the one that matches the question words (LoCoMo recall@10
+5 points for both embedders). prev/next are the memories just before/after in the
same namespace, in (timestamp, insertion sequence) order.

Everything is deterministic; ranking ties are broken by ascending row index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_VECTOR_WEIGHT",
    "DEFAULT_LEXICAL_WEIGHT",
    "DEFAULT_HASH_VECTOR_WEIGHT",
    "RRF_K",
    "NEIGHBOUR_WEIGHT",
    "REPLY_WEIGHT",
    "normalize_scores",
    "fuse_scores",
    "rrf_fuse",
    "neighbour_expand",
    "top_k",
]

#: Weights of the linear fusion when the embedder is a real sentence model.
DEFAULT_VECTOR_WEIGHT: float = 0.5
DEFAULT_LEXICAL_WEIGHT: float = 0.5
#: Vector weight when the embedder is the built-in feature-hashing one (lexical weight 1 - w):
#: it mostly re-measures word overlap, so BM25 leads.
DEFAULT_HASH_VECTOR_WEIGHT: float = 0.15
#: The classic reciprocal-rank-fusion constant (Cormack et al. 2009).
RRF_K: int = 60
#: How much of the best adjacent row's fused score a row borrows.
#: 0.25 scored best overall on LoCoMo (+5 points recall@10) but cost the small open-domain
#: category 2-3 points against BM25 alone; 0.2 keeps most of the gain (+4.5) and loses
#: no category by more than 2 points (bench/locomo_bench.py, docs/retrieval.md). With
#: it, the hashing embedder's weight is flat between 0.05 and 0.2; 0.15 was taken.
NEIGHBOUR_WEIGHT: float = 0.2
#: Share of a question's fused score that the turn right after it borrows (when more
#: than its neighbour term): the reply is scored as if it also held the question's
#: words, at half weight (see docs/retrieval.md, "Conversation structure").
REPLY_WEIGHT: float = 0.5


def normalize_scores(scores: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Map a 1-D score vector onto a comparable scale.

    ``minmax``: ``(s - min) / (max - min)``, all zeros when the range is 0.
    ``max``: ``s / max`` for non-negative scores (0 stays 0), all zeros when max <= 0.
    ``zscore``: ``(s - mean) / std``, all zeros when std is 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.astype(np.float32)
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        out = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    elif method == "max":
        hi = float(s.max())
        out = s / hi if hi > 0 else np.zeros_like(s)
    elif method == "zscore":
        sd = float(s.std())
        out = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    else:
        raise ValueError(f"unknown normalisation {method!r}: expected 'minmax', 'max' or 'zscore'")
    return out.astype(np.float32)


def fuse_scores(
    vector_scores: np.ndarray | None,
    lexical_scores: np.ndarray | None,
    vector_weight: float = DEFAULT_VECTOR_WEIGHT,
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    method: str = "minmax",
) -> np.ndarray:
    """Linear fusion of normalised scores: ``w_vec * norm(cos) + w_lex * norm(bm25)``.

    Either input may be ``None`` (that signal is absent). When every BM25 score is 0
    (no query term in any candidate) the lexical part contributes nothing.
    """
    parts: list[np.ndarray] = []
    if vector_scores is not None:
        parts.append(np.float32(vector_weight) * normalize_scores(vector_scores, method))
    if lexical_scores is not None:
        parts.append(np.float32(lexical_weight) * normalize_scores(lexical_scores, method))
    if not parts:
        raise ValueError("fuse_scores needs at least one score vector")
    if len(parts) == 2 and parts[0].shape != parts[1].shape:
        raise ValueError(f"score vectors differ in shape: {parts[0].shape} vs {parts[1].shape}")
    out = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    return out.astype(np.float32)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each row under descending score, ties by ascending row."""
    order = np.lexsort((np.arange(scores.shape[0]), -np.asarray(scores, dtype=np.float64)))
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, scores.shape[0] + 1)
    return ranks


def rrf_fuse(
    score_lists: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    k: int = RRF_K,
) -> np.ndarray:
    """Weighted reciprocal rank fusion: ``sum_i w_i / (k + rank_i(r))``."""
    if not score_lists:
        raise ValueError("rrf_fuse needs at least one score vector")
    ws = [1.0] * len(score_lists) if weights is None else list(weights)
    if len(ws) != len(score_lists):
        raise ValueError("rrf_fuse: one weight per score vector")
    out = np.zeros(np.asarray(score_lists[0]).shape[0], dtype=np.float64)
    for w, s in zip(ws, score_lists):
        out += w / (k + _ranks(np.asarray(s)))
    return out.astype(np.float32)


def neighbour_expand(
    scores: np.ndarray,
    prev_rows: np.ndarray,
    next_rows: np.ndarray,
    weight: float = NEIGHBOUR_WEIGHT,
) -> np.ndarray:
    """``s(r) + weight * max(s(prev(r)), s(next(r)))``, computed from the input scores.

    ``prev_rows[r]`` / ``next_rows[r]`` index the row just before / after ``r`` in the
    same sequence (conversation, session or namespace time order), ``-1`` for none.
    Scores should be non-negative (e.g. the output of :func:`fuse_scores`).
    """
    s = np.asarray(scores, dtype=np.float32)
    if weight == 0 or s.size == 0:
        return s.copy()
    pr = np.asarray(prev_rows, dtype=np.int64)
    nx = np.asarray(next_rows, dtype=np.int64)
    padded = np.concatenate([s, np.zeros(1, dtype=np.float32)])  # row -1 -> 0
    best = np.maximum(padded[pr], padded[nx])
    return (s + np.float32(weight) * best).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores, descending, ties by ascending row (deterministic)."""
    s = np.asarray(scores, dtype=np.float64)
    if k <= 0 or s.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(s.shape[0]), -s))
    return order[:k].astype(np.int64)
