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
Per-word feature vectors are memoised (a batch: :class:`_WordTable`, unseen words
computed together by :func:`_word_runs`; one text: ``lru_cache``), and the scatter
into the output matrix is one ``np.bincount`` for the whole batch. Same input → same
bytes, on every machine and process (no use of Python's salted ``hash()``), whatever
the memos hold.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import threading
import zlib
from typing import Iterable

import numpy as np

from . import _batchmemo, _lexical
from ._batchwords import batch_vocab
from ._crc32 import crc32_fixed, crc32_spans, register, utf8_spans

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
    step = max(1, (1 << 18) // dim)
    cuts = np.searchsorted(flat, np.arange(0, n + step, step, dtype=np.int64) * dim)
    for c, lo in enumerate(range(0, n, step)):
        hi = min(n, lo + step)
        a, b = int(cuts[c]), int(cuts[c + 1])
        if a == b:
            continue
        out = np.bincount(flat[a:b] - lo * dim, weights=vals[a:b],
                          minlength=(hi - lo) * dim).reshape(hi - lo, dim)
        # sign(0) * log1p(0) = 0: only the others change (found through a bool mask:
        # numpy's nonzero of a bool array is much faster than of a float one)
        mask = out != 0
        nz = np.flatnonzero(mask)
        x = out.reshape(-1)[nz]
        # sign(x) * log1p(|x|): the product by +-1 is exact, so copysign gives it
        y = np.copysign(np.log1p(np.abs(x)), x)
        out.reshape(-1)[nz] = y
        norms = np.linalg.norm(out, axis=1, keepdims=True)  # (whole rows: the same sums)
        # each row divided by its norm, the float64 quotients cast into the float32 result
        # (a row whose norm is 0 is all zeros: the result's zeros stay)
        np.divide(out, norms, out=res[lo:hi], where=norms > 0)
    return res


class _Crc32Memo(dict):  # type: ignore[type-arg]
    """``feature -> zlib.crc32(prefix + feature)`` computed on first use (a plain dict's
    lookup: ``map(memo.__getitem__, features)`` runs in C for the hits)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def cache_clear(self) -> None:
        """Forget every entry (as ``functools.lru_cache`` offers; benchmarks use it)."""
        self.clear()

    def __missing__(self, feature: str) -> int:
        if len(self) >= MEMO_MAX:
            self.clear()  # (the values are a pure function of the keys)
        h = zlib.crc32((self.prefix + feature).encode("utf-8"))
        self[feature] = h
        return h

    def many(self, features: list[str]) -> np.ndarray:
        """The CRC-32 of each of ``features`` (int64): the memo's in one C pass, the
        batch's unseen ones computed together (C passes too) and kept."""
        got = _batchmemo.lookup(self, features, lambda miss: list(map(
            zlib.crc32, map(str.encode, map(self.prefix.__add__, miss)))), MEMO_MAX)
        return np.fromiter(got, np.int64, len(features))  # type: ignore[arg-type]


#: Entries kept by each memo (character n-grams, bigrams, words) before it starts over.
MEMO_MAX: int = 1 << 18
_GRAM_CRC = _Crc32Memo("c|")  # (the n-grams of words that are not ASCII)


class _Terms(dict):  # type: ignore[type-arg]
    """``word -> _lexical.index_term(word)`` for a batch's words (a dict lookup in C for
    the words seen before); a number (ASCII digits, not a stopword) is its own term."""

    def cache_clear(self) -> None:
        """Forget every entry (as ``functools.lru_cache`` offers; benchmarks use it)."""
        self.clear()

    def __missing__(self, word: str) -> str:
        if len(self) >= MEMO_MAX:
            self.clear()
        if word.isdigit() and word.isascii() and word not in _lexical.STOPWORDS:
            term = self[word] = word
        else:
            term = self[word] = _lexical.index_term(word)
        return term

    def many(self, words: list[str]) -> list[str]:
        """The term of each of ``words``: the memo's in one C pass, the unseen numbers
        found by C passes (each its own term), the other unseen words stemmed."""
        return _batchmemo.lookup(self, words, self._terms_of, MEMO_MAX)

    def _terms_of(self, miss: list[str]) -> list[str]:
        """The terms of unseen words: numbers by C passes, the others stemmed."""
        num = list(map(operator.and_, map(str.isdigit, miss), map(str.isascii, miss)))
        out = list(miss)  # (a number is its own term)
        other: Iterable[int] = itertools.compress(range(len(miss)), map(operator.not_, num)) \
            if _lexical.STOPWORDS.isdisjoint(itertools.compress(miss, num)) \
            else range(len(miss))  # (no stopword is a number today; were one: __missing__)
        for j in other:
            out[j] = self[miss[j]]
        return out


_TERMS = _Terms()


def _buckets(h: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_bucket` of CRC-32 values: (bucket ``h % dim``, sign -1.0 or 1.0 from the top bit)."""
    h = h.astype(np.int64, copy=False)
    return h % dim, np.where(h & 0x80000000, -1.0, 1.0)


def _unique(codes: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` of codes below ``bound``, sorted as
    32-bit integers when they fit (faster; the same values and order)."""
    if bound <= 1 << 31:
        codes = codes.astype(np.int32)
    u, inv = np.unique(codes, return_inverse=True)
    return u, inv.reshape(-1)


def _word_runs(words: list[str], terms: list[str], dim: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_word_features` of many words at once: (every word's sorted buckets, one
    run after the other; their summed values; each run's length).

    A word's features are laid out in the order :func:`_word_features` adds them (the
    unigram, then the 3-grams, then the 4-grams) and summed per (word, bucket) by one
    ``np.bincount``, which adds each bin's values in input order starting from 0.0:
    the same float64 sums, bit for bit, as the dict accumulation (every product is the
    same IEEE operation on the same operands)."""
    nw = len(words)
    wl = np.fromiter(map(len, words), np.int64, nw)
    scale = np.minimum(1.0, wl / LENGTH_PRIOR)
    ub, us = _buckets(crc32_spans(_W_REG, *utf8_spans(terms)), dim)
    ng = np.zeros(nw, np.int64)  # grams per word (>= 1)
    for n in CHAR_NGRAMS:
        ng += np.maximum(0, wl + 3 - n)
    gb, gs = _buckets(_gram_crcs(words, wl, ng), dim)
    gw = CHAR_WEIGHT * scale / ng
    # each word's unit: its unigram, then its grams (the order grams was built in)
    per = ng + 1
    first = np.cumsum(per) - per
    m = int(per.sum())
    owner = np.repeat(np.arange(nw, dtype=np.int64), per)
    bucket = np.empty(m, np.int64)
    value = np.empty(m, np.float64)
    is_uni = np.zeros(m, bool)
    is_uni[first] = True
    bucket[first] = ub
    value[first] = us * UNIGRAM_WEIGHT * scale
    gpos = np.flatnonzero(~is_uni)
    bucket[gpos] = gb
    value[gpos] = gs * gw[owner[gpos]]
    comb, inv = _unique(owner * dim + bucket, nw * dim)
    comb = comb.astype(np.int64, copy=False)
    sums = np.bincount(inv, weights=value, minlength=comb.size)
    return comb % dim, sums, np.bincount(comb // dim, minlength=nw)


_W_REG = register(b"w|")
_C_REG = register(b"c|")
_B_REG = register(b"b|")


def _span_index(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lens)])`` (int64)."""
    offs = np.cumsum(lens) - lens
    return np.repeat(starts - offs, lens) + np.arange(int(offs[-1] + lens[-1]) if lens.size
                                                      else 0, dtype=np.int64)


def _gram_crcs(words: list[str], wl: np.ndarray, ng: np.ndarray) -> np.ndarray:
    """The CRC-32 of ``"c|" + gram`` for each character n-gram of each word wrapped as
    ``<word>``, in :func:`_word_features`' order (a word's 3-grams, then its 4-grams;
    ``wl`` the words' lengths, ``ng`` their gram counts). The ASCII words' grams are
    spans of one buffer of the wrapped words (a character is a byte), hashed by
    :func:`_crc32.crc32_fixed`; the others' through the n-gram memo."""
    nw = len(words)
    out = np.empty(int(ng.sum()), np.int64)
    gofs = np.cumsum(ng) - ng
    asc = np.fromiter(map(str.isascii, words), bool, nw)
    a = np.flatnonzero(asc)
    if a.size:
        aw = words if a.size == nw else list(map(words.__getitem__, a.tolist()))
        buf = np.frombuffer(("<" + "><".join(aw) + ">").encode("ascii"), np.uint8)
        wrapped = wl[a] + 2
        ws = np.cumsum(wrapped) - wrapped
        before = gofs[a]  # each word's grams of the sizes before n
        for n in CHAR_NGRAMS:
            cnt = np.maximum(0, wrapped - n + 1)
            out[_span_index(before, cnt)] = crc32_fixed(_C_REG, buf, _span_index(ws, cnt), n)
            before = before + cnt
    if a.size < nw:
        o = np.flatnonzero(~asc)
        grams = [w[i:i + n] for w in ["<" + words[j] + ">" for j in o.tolist()]
                 for n in CHAR_NGRAMS for i in range(len(w) - n + 1)]
        out[_span_index(gofs[o], ng[o])] = _GRAM_CRC.many(grams)
    return out


class _WordTable:
    """Memo of :func:`_word_runs` per word for one ``dim``, as flat arrays (a batch
    gathers the runs of its words with numpy; only unseen words are computed). Rows are
    only ever appended (or the whole table replaced), under a lock, so arrays a caller
    already holds stay valid."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.row: dict[str, int] = {}
        self.start = np.empty(1024, np.int64)
        self.len = np.empty(1024, np.int64)
        self.keys = np.empty(16384, np.int64)
        self.vals = np.empty(16384, np.float64)
        self.rows = self.size = 0

    def runs(self, words: list[str], terms: list[str]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, run lengths) of ``words`` (with their ``terms``), in order."""
        with self.lock:
            rows = np.fromiter(map(self.row.get, words, itertools.repeat(-1)), np.int64,
                               len(words))
            miss = np.flatnonzero(rows < 0)
            if miss.size:
                if self.rows + miss.size > MEMO_MAX:
                    self._reset()
                    miss = np.arange(len(words), dtype=np.int64)
                ml = miss.tolist()
                mw = list(map(words.__getitem__, ml))
                k, v, ln = _word_runs(mw, list(map(terms.__getitem__, ml)), self.dim)
                self._append(mw, k, v, ln)
                rows[miss] = np.arange(self.rows - miss.size, self.rows, dtype=np.int64)
            start, length, keys, vals = self.start, self.len, self.keys, self.vals
        lens = length[rows]
        idx = _span_index(start[rows], lens)
        return keys[idx], vals[idx], lens

    def _append(self, words: list[str], k: np.ndarray, v: np.ndarray, ln: np.ndarray) -> None:
        r0, s0 = self.rows, self.size
        r1, s1 = r0 + len(words), s0 + k.size
        if r1 > self.start.size:
            cap = max(r1, 2 * self.start.size)
            self.start = np.concatenate((self.start[:r0], np.empty(cap - r0, np.int64)))
            self.len = np.concatenate((self.len[:r0], np.empty(cap - r0, np.int64)))
        if s1 > self.keys.size:
            cap = max(s1, 2 * self.keys.size)
            self.keys = np.concatenate((self.keys[:s0], np.empty(cap - s0, np.int64)))
            self.vals = np.concatenate((self.vals[:s0], np.empty(cap - s0, np.float64)))
        self.keys[s0:s1], self.vals[s0:s1] = k, v
        self.len[r0:r1] = ln
        self.start[r0:r1] = s0 + np.cumsum(ln) - ln
        self.row.update(zip(words, range(r0, r1)))
        self.rows, self.size = r1, s1


class _Tables(dict):  # type: ignore[type-arg]
    """The word tables by ``dim``; ``cache_clear`` forgets them (as the memos)."""

    def cache_clear(self) -> None:
        self.clear()


_TABLES: dict[int, _WordTable] = _Tables()
if hasattr(os, "register_at_fork"):  # a table's lock may be held by a parent's thread
    os.register_at_fork(after_in_child=_TABLES.clear)


def _table(dim: int) -> _WordTable:
    t = _TABLES.get(dim)
    if t is None:
        t = _TABLES.setdefault(dim, _WordTable(dim))
    return t


def _layout(texts: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat bucket ``text * dim + bucket``, value) of every feature of every text, in
    the order :func:`_text_features` accumulates them."""
    n = len(texts)
    distinct, wc, doc = batch_vocab(texts)
    if not wc.size:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    terms = _TERMS.many(distinct)
    kept = np.fromiter(map(bool, terms), bool, len(terms))
    keep = kept[wc]
    wc, doc = wc[keep], doc[keep]  # the kept words, in text order
    if not wc.size:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    # one table of feature runs: each distinct kept word's, then each distinct bigram's
    used = np.flatnonzero(kept).tolist()
    wkeys, wvals, wlens = _table(dim).runs([distinct[i] for i in used], [terms[i] for i in used])
    starts = np.zeros(len(distinct), np.int64)
    lens = np.zeros(len(distinct), np.int64)
    lens[used] = wlens
    starts[used] = np.cumsum(wlens) - wlens
    same = doc[1:] == doc[:-1]  # bigrams: adjacent kept words of one text
    bl, br = wc[:-1][same], wc[1:][same]
    bdoc = doc[1:][same]
    nd = len(distinct)
    pair, pinv = _unique(bl * nd + br, nd * nd)
    pair = pair.astype(np.int64, copy=False)
    base = wkeys.size
    # the CRC-32 of "b|left right": each term's register after "b|term " continued
    # over the right term's bytes (both spans of one buffer of the terms)
    buf, tstart, tlen = utf8_spans(terms, b" ")
    after = crc32_spans(_B_REG, buf, tstart, tlen + 1, final=False)
    right = pair % nd
    bk, bs = _buckets(crc32_spans(after[pair // nd], buf, tstart[right], tlen[right]), dim)
    fkeys = np.concatenate((wkeys, bk))
    fvals = np.concatenate((wvals, bs * BIGRAM_WEIGHT))
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
    ustart[bdst], ulen[bdst], udoc[bdst] = base + pinv, 1, bdoc
    idx = _span_index(ustart, ulen)
    return np.repeat(udoc * dim, ulen) + fkeys[idx], fvals[idx]
