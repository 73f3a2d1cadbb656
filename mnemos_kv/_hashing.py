"""Deterministic feature-hashing text embedder: the built-in default embedder, no model needed.

A text becomes a bag of weighted features, each hashed with a stable hash (CRC-32)
into one of ``dim`` buckets with a sign taken from the same hash (signed feature
hashing, Weinberger et al. 2009), then the row is L2-normalised:

* word unigrams — the stemmed, stopword-free terms of :func:`_lexical.tokenize`, weight
  ``UNIGRAM_WEIGHT``;
* word bigrams — adjacent pairs of those terms, weight ``BIGRAM_WEIGHT``;
* character n-grams (n = ``CHAR_NGRAMS``) of each kept surface word wrapped as
  ``<word>``, their total weight per word ``CHAR_WEIGHT`` (spread evenly), so that
  morphological variants and typos still overlap.

A word's unigram and n-gram weights are scaled by ``min(1, len(word) / LENGTH_PRIOR)``:
a model-free stand-in for idf (Zipf's law of abbreviation: short words are the
frequent, less informative ones). Each bucket's accumulated value ``x`` is damped
to ``sign(x) * ln(1 + |x|)`` so that one repeated word cannot dominate a long text.
Features are namespaced (``w|``, ``b|``, ``c|``) so that they never collide by
construction, only by bucket.
Per-word feature vectors are memoised, and the scatter into the output matrix is
one ``np.bincount`` for the whole batch. Same input → same bytes, on every
machine and process (no use of Python's salted ``hash()``).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from . import _lexical

__all__ = [
    "DEFAULT_DIM",
    "UNIGRAM_WEIGHT",
    "BIGRAM_WEIGHT",
    "CHAR_WEIGHT",
    "CHAR_NGRAMS",
    "LENGTH_PRIOR",
    "hash_embed",
]

#: Default dimension: 512 buckets (2 KiB per float32 vector). A short memory has
#: ~20-80 features; on LoCoMo 512 beat 384 and 256 (fewer collisions), see bench.
DEFAULT_DIM: int = 512
UNIGRAM_WEIGHT: float = 1.0
BIGRAM_WEIGHT: float = 0.25
CHAR_WEIGHT: float = 0.6
CHAR_NGRAMS: tuple[int, ...] = (3, 4)
LENGTH_PRIOR: int = 8


def _bucket(feature: str, dim: int) -> tuple[int, float]:
    """Stable (bucket, sign) of a feature string: CRC-32, low bits → bucket, top bit → sign."""
    h = zlib.crc32(feature.encode("utf-8"))
    return h % dim, (-1.0 if h & 0x80000000 else 1.0)


@functools.lru_cache(maxsize=262144)
def _word_features(word: str, term: str, dim: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Signed buckets of one word: its stemmed unigram plus its character n-grams."""
    feats: dict[int, float] = {}
    scale = min(1.0, len(word) / LENGTH_PRIOR)
    idx, sign = _bucket("w|" + term, dim)
    feats[idx] = feats.get(idx, 0.0) + sign * UNIGRAM_WEIGHT * scale
    wrapped = "<" + word + ">"
    grams = [wrapped[i : i + n] for n in CHAR_NGRAMS for i in range(len(wrapped) - n + 1)]
    if grams:
        w = CHAR_WEIGHT * scale / len(grams)
        for g in grams:
            idx, sign = _bucket("c|" + g, dim)
            feats[idx] = feats.get(idx, 0.0) + sign * w
    keys = tuple(sorted(feats))
    return keys, tuple(feats[k] for k in keys)


@functools.lru_cache(maxsize=262144)
def _bigram_feature(left: str, right: str, dim: int) -> tuple[int, float]:
    idx, sign = _bucket("b|" + left + " " + right, dim)
    return idx, sign * BIGRAM_WEIGHT


def _words_and_terms(text: str) -> list[tuple[str, str]]:
    """(surface word, stemmed term) pairs of the words :func:`_lexical.tokenize` keeps."""
    out: list[tuple[str, str]] = []
    for word in _lexical.words(text):
        term = _lexical.index_term(word)
        if term:
            out.append((word, term))
    return out


def _text_features(text: str, dim: int) -> tuple[list[int], list[float]]:
    pairs = _words_and_terms(text)
    acc: dict[int, float] = {}
    for word, term in pairs:
        keys, vals = _word_features(word, term, dim)
        for k, v in zip(keys, vals):
            acc[k] = acc.get(k, 0.0) + v
    for (_, left), (_, right) in zip(pairs, pairs[1:]):
        k, v = _bigram_feature(left, right, dim)
        acc[k] = acc.get(k, 0.0) + v
    order = sorted(acc)
    return order, [acc[k] for k in order]


def hash_embed(texts: list[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed ``texts`` as an ``(len(texts), dim)`` float32 matrix of L2-normalised rows.

    A text with no features (empty, only stopwords/punctuation) gets a zero row.
    Each bucket is damped to ``sign(x) * ln(1 + |x|)`` before L2 normalisation.
    Deterministic: the same texts give the same bytes in every process.

    Vectorised over the batch: the features of every text are laid out in text order
    (each word's buckets, then the bigrams) and summed by one ``np.bincount``, which
    adds each bucket's values in that order: the same float64 sums, bit for bit, as
    accumulating one text at a time (:func:`_text_features`).
    """
    if dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    n = len(texts)
    keys: list[int] = []
    vals: list[float] = []
    counts = np.zeros(n, np.int64)
    for r, text in enumerate(texts):
        pairs = _words_and_terms(text)
        start = len(keys)
        for word, term in pairs:
            k, v = _word_features(word, term, dim)
            keys.extend(k)
            vals.extend(v)
        for (_, left), (_, right) in zip(pairs, pairs[1:]):
            k1, v1 = _bigram_feature(left, right, dim)
            keys.append(k1)
            vals.append(v1)
        counts[r] = len(keys) - start
    out: np.ndarray = np.zeros((n, dim), dtype=np.float64)
    if keys:
        flat = np.repeat(np.arange(n, dtype=np.int64) * dim, counts) + np.asarray(keys, np.int64)
        out = np.bincount(flat, weights=np.asarray(vals, np.float64),
                          minlength=n * dim).reshape(n, dim)
    out = np.sign(out) * np.log1p(np.abs(out))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)
