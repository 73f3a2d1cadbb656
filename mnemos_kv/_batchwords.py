"""The surface words of a batch of texts from one pass of the tokeniser.

``_lexical.words`` over the texts joined by a separator word gives the words of every
text at once (NFKC, casefold and the regular expressions run once over the batch
instead of once per text); used by the bulk BM25 indexing.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from . import _lexical

__all__ = ["SEPARATOR", "ascii_words", "batch_vocab", "batch_words"]

#: A word no text holds in practice; it separates the texts in the joined batch (a
#: batch where some text holds it anyway is tokenised text by text). The spaces around
#: it keep every text's first and last word apart from it, and NFKC, casefolding and the
#: clitic rules act within a text exactly as they do on the text alone.
SEPARATOR = "zqxjmnemosbatchsepzqxj"


#: The last batch and its words: a text ingest tokenises the same texts twice (the
#: hashing embedder, then the BM25 index in the write), the second time for free.
#: [texts, distinct words, codes, doc, words or None]; the texts are compared by
#: identity, so it cannot go stale; it is used once (then dropped), and only batches of
#: _CACHE_MIN to _CACHE_MAX texts are kept (a huge batch's words are not held after its
#: call).
_last: list[Any] | None = None
_CACHE_MIN = 64
_CACHE_MAX = 100_000


def _take(texts: Sequence[str]) -> list[Any] | None:
    """The cached entry of ``texts`` (dropped from the cache), or None."""
    global _last
    hit = _last
    if hit is not None and len(hit[0]) == len(texts) and all(
            a is b for a, b in zip(hit[0], texts)):
        _last = None
        return hit
    return None


def _entry(texts: Sequence[str]) -> list[Any]:
    """The words of ``texts``, from the cache or computed (and then cached)."""
    global _last
    hit = _take(texts)
    if hit is not None:
        return hit
    distinct, wc, doc = _batch_vocab(texts)
    wc.setflags(write=False)
    doc.setflags(write=False)
    entry = [list(texts), distinct, wc, doc, None]
    if _CACHE_MIN <= len(texts) <= _CACHE_MAX:
        _last = entry
    return entry


def batch_words(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(every word of :func:`_lexical.words` of each text, in text order; the index of
    each word's text as int64). The caller must not change the lists it gets."""
    if not texts:
        return [], np.empty(0, np.int64)
    entry = _entry(texts)
    if entry[4] is None:
        entry[4] = list(map(entry[1].__getitem__, entry[2].tolist()))
    return entry[4], entry[3]


def batch_vocab(texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(the distinct words of the batch; for every word of :func:`batch_words` in text
    order, its index in them and its text's index, int64). The distinct words are in
    first-seen order when the texts are all ASCII or all not (else: the ASCII texts'
    words first-seen, then the others' new words); no result depends on that order.
    Shared like :func:`batch_words` (the embedder and the BM25 index both need it);
    the caller must not change what it gets."""
    if not texts:
        return [], np.empty(0, np.int64), np.empty(0, np.int64)
    entry = _entry(texts)
    return entry[1], entry[2], entry[3]


def _batch_words(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """:func:`batch_words` without the cache."""
    distinct, wc, doc = _batch_vocab(texts)
    return list(map(distinct.__getitem__, wc.tolist())), doc


def _batch_vocab(texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    n = len(texts)
    is_ascii = np.fromiter(map(str.isascii, texts), bool, n)
    na = int(np.count_nonzero(is_ascii))
    if na == n or not na:
        return _joined(texts, na == n)
    # most texts ASCII, a few not: each group in one pass, then the words in text order
    asc, other = np.flatnonzero(is_ascii), np.flatnonzero(~is_ascii)
    da, wa, ca = _joined(list(map(texts.__getitem__, asc.tolist())), True)
    do, wo, co = _joined(list(map(texts.__getitem__, other.tolist())), False)
    code = dict.fromkeys(da)
    code.update(dict.fromkeys(do))
    distinct = list(code)
    code = dict(zip(distinct, range(len(distinct))))
    remap = np.fromiter(map(code.__getitem__, do), np.int64, len(do))
    # each group's words in text order; a text's words all come from one group
    groups = ((asc[ca], wa), (other[co], remap[wo]))
    counts = [np.bincount(d, minlength=n) for d, _ in groups]
    total = counts[0] + counts[1]
    first = np.cumsum(total) - total
    wc = np.empty(int(total.sum()), np.int64)
    for (d, w), cnt in zip(groups, counts):
        wc[first[d] - (np.cumsum(cnt) - cnt)[d] + np.arange(d.size, dtype=np.int64)] = w
    return distinct, wc, np.repeat(np.arange(n, dtype=np.int64), total)


def _vocab(words: list[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct ``words`` in first-seen order, each word's index in them), by one
    dict pass: each word's first position (``setdefault`` of a running count), then the
    first positions, in first-seen order, numbered."""
    code: dict[str, int] = {}
    first = np.fromiter(map(code.setdefault, words, itertools.count()), np.int64, len(words))
    dense = np.empty(len(words), np.int64)
    dense[np.fromiter(code.values(), np.int64, len(code))] = np.arange(len(code), dtype=np.int64)
    return list(code), dense[first]


#: ``str.translate`` table of the ASCII fast path: every ASCII character that is not a
#: letter or a digit becomes a space.
_ASCII_SPLIT = str.maketrans({c: " " for c in range(128) if not chr(c).isalnum()})


def ascii_words(text: str) -> list[str]:
    """:func:`_lexical.words` of an ASCII ``text``, faster: NFKC leaves ASCII unchanged,
    casefolding it is ``lower()``, and the words (``[^\\W_]+``) are the runs of ASCII
    letters and digits, so the split is a translate and ``str.split`` (the clitic rules
    are ``_lexical``'s own). Checked against ``_lexical.words`` by the tests."""
    norm = text.lower()
    if "`" in norm:
        norm = norm.replace("`", "'")
    if "'" in norm:
        norm = _lexical._NT_RE.sub(" ", _lexical._CLITIC_AFTER_RE.sub(" ", norm))
    return norm.translate(_ASCII_SPLIT).split()


def _joined(texts: Sequence[str], ascii: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """:func:`batch_vocab` of ``texts`` (all ASCII when ``ascii``) from one pass over them
    joined (the separator words found and dropped by their code)."""
    joined = (" " + SEPARATOR + " ").join(texts)
    ws = ascii_words(joined) if ascii else _lexical.words(joined)
    distinct, c = _vocab(ws)
    if len(texts) > 1:
        s = distinct.index(SEPARATOR) if SEPARATOR in distinct else -1
        sep = c == s
        if s >= 0 and int(np.count_nonzero(sep)) == len(texts) - 1:
            keep = ~sep
            wc = c[keep]
            wc -= wc > s
            del distinct[s]
            return distinct, wc, np.cumsum(sep)[keep].astype(np.int64)
    elif SEPARATOR not in distinct:
        return distinct, c, np.zeros(c.size, np.int64)
    words: list[str] = []
    docs: list[int] = []
    for i, t in enumerate(texts):  # a text holds the separator: one by one
        w = _lexical.words(t)
        words.extend(w)
        docs.extend([i] * len(w))
    distinct, wc = _vocab(words)
    return distinct, wc, np.asarray(docs, dtype=np.int64)
