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
import itertools
import zlib

import numpy as np

from . import _lexical
from ._batchwords import batch_words

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


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + l)`` for each start and length."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def _batch_features(texts: list[str], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket, value, text) of every feature of the batch, laid out as the per-text
    loop of :func:`_text_features` adds them: per text, each kept word's buckets in word
    order, then its bigrams. One tokeniser pass; features computed once per distinct
    word (memoised) and gathered with numpy."""
    words, doc = batch_words(texts)
    terms = list(map(_lexical.index_term, words))
    kept = np.fromiter(map(bool, terms), bool, len(terms))
    pairs = [p for p, k in zip(zip(words, terms), kept.tolist()) if k]
    pdoc = doc[kept]
    distinct = list(dict.fromkeys(pairs))
    where = {p: i for i, p in enumerate(distinct)}
    pid = np.fromiter(map(where.__getitem__, pairs), np.int64, len(pairs))
    feats = [_word_features(w, t, dim) for w, t in distinct]
    lens = np.fromiter((len(k) for k, _ in feats), np.int64, len(feats))
    fkeys = np.fromiter(itertools.chain.from_iterable(k for k, _ in feats), np.int64, int(lens.sum()))
    fvals = np.fromiter(itertools.chain.from_iterable(v for _, v in feats), np.float64,
                        int(lens.sum()))
    offsets = np.cumsum(lens) - lens
    occ_len = lens[pid]
    take = _ranges(offsets[pid], occ_len)
    wk, wv, wd = fkeys[take], fvals[take], np.repeat(pdoc, occ_len)
    # bigrams: adjacent kept words of the same text
    same = np.flatnonzero(pdoc[1:] == pdoc[:-1])
    kept_terms = [t for _, t in pairs]
    big = [_bigram_feature(kept_terms[i], kept_terms[i + 1], dim) for i in same.tolist()]
    bk = np.fromiter((k for k, _ in big), np.int64, len(big))
    bv = np.fromiter((v for _, v in big), np.float64, len(big))
    bd = pdoc[same]
    rows = np.concatenate([wd, bd])
    order = np.argsort(rows * 2 + np.concatenate([np.zeros(wd.size, np.int64),
                                                  np.ones(bd.size, np.int64)]), kind="stable")
    return np.concatenate([wk, bk])[order], np.concatenate([wv, bv])[order], rows[order]


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
    out: np.ndarray = np.zeros((n, dim), dtype=np.float64)
    if n == 1:  # one text (a query): the per-text loop, without the batch's numpy set-up
        one_keys, one_vals = _text_features(texts[0], dim)
        if one_keys:  # distinct buckets, each summed in the same order: the same bits
            out[0, one_keys] = one_vals
    else:
        keys, vals, rows = _batch_features(texts, dim)
        if keys.size:
            out = np.bincount(rows * dim + keys, weights=vals, minlength=n * dim).reshape(n, dim)
    out = np.sign(out) * np.log1p(np.abs(out))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)
