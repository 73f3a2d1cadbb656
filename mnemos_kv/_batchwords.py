"""The surface words of a batch of texts from one pass of the tokeniser.

``_lexical.words`` over the texts joined by a separator word gives the words of every
text at once (NFKC, casefold and the regular expressions run once over the batch
instead of once per text); used by the bulk BM25 indexing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _lexical

__all__ = ["SEPARATOR", "batch_words"]

#: A word no text holds in practice; it separates the texts in the joined batch (a
#: batch where some text holds it anyway is tokenised text by text). The spaces around
#: it keep every text's first and last word apart from it, and NFKC, casefolding and the
#: clitic rules act within a text exactly as they do on the text alone.
SEPARATOR = "zqxjmnemosbatchsepzqxj"


#: The last batch and its words: a text ingest tokenises the same texts twice (the
#: hashing embedder, then the BM25 index in the write), the second time for free.
#: (texts, words, doc); the texts are compared by identity, so it cannot go stale; it
#: is used once (then dropped), and only batches of _CACHE_MIN to _CACHE_MAX texts are
#: kept (a huge batch's words are not held after its call).
_last: tuple[list[str], list[str], np.ndarray] | None = None
_CACHE_MIN = 64
_CACHE_MAX = 100_000


def batch_words(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(every word of :func:`_lexical.words` of each text, in text order; the index of
    each word's text as int64). The caller must not change the lists it gets."""
    global _last
    if not texts:
        return [], np.empty(0, np.int64)
    hit = _last
    if hit is not None and len(hit[0]) == len(texts) and all(
            a is b for a, b in zip(hit[0], texts)):
        _last = None
        return hit[1], hit[2]
    words, doc = _batch_words(texts)
    doc.setflags(write=False)
    if _CACHE_MIN <= len(texts) <= _CACHE_MAX:
        _last = (list(texts), words, doc)
    return words, doc


def _batch_words(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    ws = _lexical.words((" " + SEPARATOR + " ").join(texts))
    arr = np.array(ws, dtype=object)
    sep = arr == SEPARATOR
    if int(np.count_nonzero(sep)) == len(texts) - 1:
        keep = ~sep
        return arr[keep].tolist(), np.cumsum(sep)[keep].astype(np.int64)
    words: list[str] = []
    docs: list[int] = []
    for i, t in enumerate(texts):  # a text holds the separator: one by one
        w = _lexical.words(t)
        words.extend(w)
        docs.extend([i] * len(w))
    return words, np.asarray(docs, dtype=np.int64)
