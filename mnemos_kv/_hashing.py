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
def _gram_bucket(gram: str, dim: int) -> tuple[int, float]:
    """:func:`_bucket` of a character n-gram feature (n-grams recur across words)."""
    return _bucket("c|" + gram, dim)


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
            idx, sign = _gram_bucket(g, dim)
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

    Vectorised over the batch: one tokeniser pass over every text
    (:func:`_batchwords.batch_words`), each distinct word's and bigram's features
    computed once, then the features of every text laid out in text order (each word's
    buckets, then the bigrams) by numpy gathers and summed by one ``np.bincount``, which
    adds each bucket's values in that order: the same float64 sums, bit for bit, as
    accumulating one text at a time (:func:`_text_features`).
    """
    if dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if len(texts) <= SMALL_BATCH:
        return _embed_each(texts, dim)
    return _embed_batch(texts, dim)


#: Batches of up to this many texts (a query, a single remember) are summed text by text:
#: the batch layout's fixed numpy cost (~60 us) is most of the time of one short text.
#: Both give the same bytes (tests/test_hashing.py).
SMALL_BATCH: int = 4


def _embed_each(texts: list[str], dim: int) -> np.ndarray:
    """:func:`hash_embed` one text at a time, through :func:`_text_features`."""
    out = np.zeros((len(texts), dim), np.float64)
    for r, text in enumerate(texts):
        keys, vals = _text_features(text, dim)
        if keys:
            out[r, keys] = vals
    out = np.sign(out) * np.log1p(np.abs(out))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def _embed_batch(texts: list[str], dim: int) -> np.ndarray:
    """:func:`hash_embed` vectorised over the batch (see there)."""
    n = len(texts)
    res = np.zeros((n, dim), dtype=np.float32)
    flat, vals = _layout(texts, dim)
    # in chunks of texts (the float64 rows stay in cache); every step works on whole
    # rows, as on the whole matrix at once
    step = max(1, (1 << 20) // dim)
    cuts = np.searchsorted(flat, np.arange(0, n + step, step, dtype=np.int64) * dim)
    for c, lo in enumerate(range(0, n, step)):
        hi = min(n, lo + step)
        a, b = int(cuts[c]), int(cuts[c + 1])
        if a == b:
            continue
        out = np.bincount(flat[a:b] - lo * dim, weights=vals[a:b],
                          minlength=(hi - lo) * dim).reshape(hi - lo, dim)
        nz = np.flatnonzero(out)  # sign(0) * log1p(0) = 0: only the others change
        x = out.reshape(-1)[nz]
        out.reshape(-1)[nz] = np.sign(x) * np.log1p(np.abs(x))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        res[lo:hi] = out
    return res


def _layout(texts: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat bucket ``text * dim + bucket``, value) of every feature of every text, in
    the order :func:`_text_features` accumulates them."""
    n = len(texts)
    words, doc = batch_words(texts)
    if not words:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    distinct = list(dict.fromkeys(words))
    terms = list(map(_lexical.index_term, distinct))
    code = {w: i for i, w in enumerate(distinct)}
    wc = np.fromiter(map(code.__getitem__, words), np.int64, len(words))
    kept = np.fromiter(map(bool, terms), bool, len(terms))
    keep = kept[wc]
    wc, doc = wc[keep], doc[keep]  # the kept words, in text order
    if not wc.size:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    # one table of feature runs: each distinct kept word's, then each distinct bigram's
    used = np.flatnonzero(kept)
    fkeys: list[int] = []
    fvals: list[float] = []
    starts = np.zeros(len(distinct), np.int64)
    lens = np.zeros(len(distinct), np.int64)
    for i in used.tolist():
        k, v = _word_features(distinct[i], terms[i], dim)
        starts[i] = len(fkeys)
        lens[i] = len(k)
        fkeys.extend(k)
        fvals.extend(v)
    same = doc[1:] == doc[:-1]  # bigrams: adjacent kept words of one text
    bl, br = wc[:-1][same], wc[1:][same]
    bdoc = doc[1:][same]
    pair, pinv = np.unique(bl * len(distinct) + br, return_inverse=True)
    base = len(fkeys)
    for pc in pair.tolist():
        k1, v1 = _bigram_feature(terms[pc // len(distinct)], terms[pc % len(distinct)], dim)
        fkeys.append(k1)
        fvals.append(v1)
    # units (a word's run or one bigram) in text order: each text's words, then its bigrams
    nw = np.bincount(doc, minlength=n)
    nb = np.bincount(bdoc, minlength=n)
    first = np.concatenate(([0], np.cumsum(nw + nb)[:-1]))
    wfirst = np.concatenate(([0], np.cumsum(nw)[:-1]))
    bfirst = np.concatenate(([0], np.cumsum(nb)[:-1]))
    m = wc.size + bdoc.size
    ustart = np.empty(m, np.int64)
    ulen = np.empty(m, np.int64)
    udoc = np.empty(m, np.int64)
    wdst = first[doc] + (np.arange(wc.size) - wfirst[doc])
    bdst = first[bdoc] + nw[bdoc] + (np.arange(bdoc.size) - bfirst[bdoc])
    ustart[wdst], ulen[wdst], udoc[wdst] = starts[wc], lens[wc], doc
    ustart[bdst], ulen[bdst], udoc[bdst] = base + pinv.reshape(-1), 1, bdoc
    total = int(ulen.sum())
    offs = np.cumsum(ulen) - ulen
    idx = np.repeat(ustart - offs, ulen) + np.arange(total, dtype=np.int64)
    keys = np.asarray(fkeys, np.int64)[idx]
    return np.repeat(udoc * dim, ulen) + keys, np.asarray(fvals, np.float64)[idx]
