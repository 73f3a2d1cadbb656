"""Query understanding on the lexical side: which query words count, and typos.

Two rules applied to a query's BM25 terms (never to the stored postings, so neither
changes the index):

* **Function phrases.** In "what kind of art", "which types of yoga", "what sort of
  music" the noun before "of" is part of the question's determiner ("what kind of X"
  asks "what X"), not a word the answer holds; as a term it matches "your kind
  words" and the other speaker's "what kind of ... do you like?". Such a word gets
  the weight ``function_weight`` (0 in the planner: it does not match) unless the
  query also uses it outside such a phrase.
* **Typos.** A query word of at least TYPO_MIN_LEN letters that matches nothing in the
  asked namespaces (neither its stem nor the word itself is indexed) is looked up
  one typing slip away among the indexed words that start with its first two letters
  ("funraiser" -> "fundraiser", "torunament" -> "tournament", "recieved" ->
  "received"): a letter dropped, one added, or two adjacent ones swapped, never a
  substitution (a changed letter turns real words into other real words: "store" /
  "stone", "grandpa" / "grandma"). The words found are asked with the planner's
  TYPO_WEIGHT (a correction is a guess). A word that is indexed is never corrected, so a query
  without a typo is answered exactly as before, and the look-up runs only for unknown
  words.

Pure functions (the typo rule over a look-up callable), so both storage engines share
them: the planner asks the query's terms (:func:`weighted_terms`), learns which of them
have postings from that same read, and only then looks the unknown words up
(:func:`corrections`), whose terms it asks in a second read.
"""

from __future__ import annotations

from typing import Callable, Iterable

from . import _lexical
from ._lexical_index import SURFACE_PREFIX, _term_bytes, query_terms

__all__ = ["FUNCTION_NOUNS", "TYPO_MIN_LEN", "TYPO_PREFIX", "TYPO_SCAN_MAX", "function_words", "one_slip",
           "weighted_terms", "corrections"]

#: Nouns that, followed by "of", form a determiner with "what" / "which" ("what kind of").
FUNCTION_NOUNS: frozenset[str] = frozenset({"kind", "kinds", "type", "types", "sort", "sorts"})
#: Shorter words are never corrected: one slip away from a short word is another word.
TYPO_MIN_LEN = 6
#: A correction keeps the typed word's first TYPO_PREFIX letters (slips are rarely
#: there, and it bounds the look-up to the indexed words starting with them).
TYPO_PREFIX = 2
#: ... and when a namespace holds more than this many such words, none is corrected.
TYPO_SCAN_MAX = 4096


def function_words(words: list[str]) -> set[str]:
    """The words of ``words`` (a query's :func:`_lexical.words`) used only as the noun
    of a function phrase ("kind of", "types of")."""
    inside: set[str] = set()
    outside: set[str] = set()
    for i, w in enumerate(words):
        if w in FUNCTION_NOUNS:
            (inside if i + 1 < len(words) and words[i + 1] == "of" else outside).add(w)
    return inside - outside


def one_slip(typed: str, word: str) -> bool:
    """Whether ``typed`` is ``word`` with one typing slip: a letter dropped, a letter
    added, or two adjacent letters swapped (a changed letter is not one)."""
    n, m = len(typed), len(word)
    if abs(n - m) > 1 or typed == word:
        return False
    j = 0  # the first difference
    while j < min(n, m) and typed[j] == word[j]:
        j += 1
    if n == m:  # a swap of positions j and j + 1, the rest equal
        return (j + 1 < n and typed[j] == word[j + 1] and typed[j + 1] == word[j]
                and typed[j + 2:] == word[j + 2:])
    if n < m:  # a letter dropped
        return typed[j:] == word[j + 1:]
    return typed[j + 1:] == word[j:]  # a letter added


def _typo_candidates(words: Iterable[str]) -> list[str]:
    """The query words that may be typos: ASCII letters only, at least TYPO_MIN_LEN long,
    not dropped by the tokeniser (distinct, in order)."""
    return [w for w in dict.fromkeys(words)
            if len(w) >= TYPO_MIN_LEN and w.isascii() and w.isalpha() and _lexical.field_stem(w)]


def _keys(words: Iterable[str]) -> set[bytes]:
    """The posting keys (stem and surface field) of ``words``."""
    out = {_term_bytes(_lexical.field_stem(w)) for w in words}
    out.update(SURFACE_PREFIX + _term_bytes(w) for w in words if _lexical.surface_term(w))
    out.discard(b"")
    return out


def weighted_terms(text: str, surface: bool, function_weight: float
                   ) -> tuple[list[bytes], list[float] | None]:
    """The BM25 terms of a query and their weights (None: every term weighs 1):
    :func:`_lexical_index.query_terms` (sorted), the noun of a function phrase
    weighing ``function_weight`` (left out at 0; 1: the plain query)."""
    terms = query_terms(text, surface=surface)
    if function_weight == 1.0:
        return terms, None
    drop = function_words(_lexical.words(text))
    if not drop:
        return terms, None
    keys = _keys(drop)
    if function_weight <= 0:  # not a query term at all
        return [t for t in terms if t not in keys], None
    return terms, [function_weight if t in keys else 1.0 for t in terms]


def corrections(text: str, surface: bool, found: set[bytes],
                prefixed: Callable[[str], list[str] | None]) -> list[bytes]:
    """The posting terms of the indexed words one slip away from the query's unknown
    words (sorted; none of the query's own terms).

    ``found``: the query's terms that have postings in the asked namespaces (a word is
    unknown when neither its stem nor, with ``surface``, the word is among them);
    ``prefixed(p)``: the indexed surface words starting with ``p`` (None: too many to
    look at), called only for an unknown word.
    """
    out: set[bytes] = set()
    for w in _typo_candidates(_lexical.words(text)):
        if _term_bytes(_lexical.field_stem(w)) in found or (
                surface and SURFACE_PREFIX + _term_bytes(w) in found):
            continue
        n = len(w)
        for v in prefixed(w[:TYPO_PREFIX]) or ():
            if abs(len(v) - n) <= 1 and one_slip(w, v):
                stem_key = _term_bytes(_lexical.field_stem(v))
                if stem_key:
                    out.add(stem_key)
                if surface:
                    out.add(SURFACE_PREFIX + _term_bytes(v))
    if not out:
        return []
    return sorted(out - set(query_terms(text, surface=surface)))
