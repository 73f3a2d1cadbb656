"""Deterministic tokeniser, Porter stemmer and vectorised BM25 scoring: the lexical half of retrieval.

Everything here is pure Python + numpy, has no state and no dependency on the rest of
the package, so the store can keep its postings anywhere (LMDB) and score with
:func:`bm25_scores`.

Pipeline of :func:`tokenize`::

    text --NFKC, casefold--> fold apostrophes --drop possessive 's and n't-->
    unicode word split ([^\\W_]+) --drop stopwords and 1-char latin tokens-->
    Porter stem (ASCII words only, memoised) --> list[str] in text order

The stemmer is the original Porter (1980) algorithm, written here from its published
description (steps 1a, 1b, 1c, 2, 3, 4, 5a, 5b); it is applied only to pure ASCII
alphabetic tokens, other scripts and digits pass through unchanged.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "STOPWORDS",
    "DEFAULT_K1",
    "DEFAULT_B",
    "tokenize",
    "words",
    "index_term",
    "SURFACE_STOPWORDS",
    "surface_term",
    "field_stem",
    "index_fields",
    "compounds",
    "is_question",
    "questions_many",
    "speaker_words",
    "stem",
    "term_frequencies",
    "bm25_idf",
    "bm25_scores",
]

#: BM25 defaults, tuned on the LoCoMo dev split (short conversational memories):
#: the usual tf saturation, and weaker length normalisation than the textbook 0.75
#: (short memories vary little in length and longer ones carry more facts;
#: recall@10 0.637 at b=0.75 -> 0.648 at b=0.3).
DEFAULT_K1: float = 1.2
DEFAULT_B: float = 0.3

# English stopwords: function words, auxiliaries, pronouns and chit-chat fillers.
# Kept deliberately free of content words (no "new", "first", "time", "like").
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been
    before being below between both but by can cannot could couldn did didn do does doesn
    doing don down during each few for from further had hadn has hasn have haven having he
    her here hers herself him himself his how i if in into is isn it its itself just let
    ll me more most mustn my myself no nor not now of off on once only or other ought our
    ours ourselves out over own re same shan she should shouldn so some such than that the
    their theirs them themselves then there these they this those through to too under
    until up us ve very was wasn we were weren what when where which while who whom why
    will with won would wouldn you your yours yourself yourselves s t d m o y ain
    also yeah yes oh hey hi wow okay ok um uh hmm ah really
    """.split()
)

#: Stopwords of the *surface* field of the lexical index (exact word forms): only
#: articles, conjunctions, prepositions, pronouns and the copula. Auxiliaries and
#: question-bearing words ("been", "doing", "how", "long", "before", "after") stay, so
#: "How long has she been doing yoga?" meets "Been doing it for 3 years" on "been doing";
#: BM25's idf keeps such frequent words weak.
SURFACE_STOPWORDS: frozenset[str] = frozenset(
    """
    a an the and or but nor of to in on at by for with from as into onto than
    is are was were be am it its i me my you your yours he him his she her hers we us
    our they them their this that these those there here so if then too very
    s t d m o y ll re ve oh um uh hmm ah
    """.split()
)

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_CLITIC_RE = re.compile(r"(?<=[^\W_])'(?:s|re|ve|ll|d|m)\b|n't\b", re.UNICODE)
_APOSTROPHE_CHARS = tuple(chr(c) for c in _APOSTROPHES)
#: _CLITIC_RE's two alternatives as two passes (the same result: their matches never
#: overlap, and neither pass makes or breaks a match of the other), each starting with
#: a literal, which the regex engine searches fast.
_CLITIC_AFTER_RE = re.compile(r"'(?<=[^\W_]')(?:s|re|ve|ll|d|m)\b", re.UNICODE)
_NT_RE = re.compile(r"n't\b", re.UNICODE)
_ASCII_ALPHA_RE = re.compile(r"^[a-z]+$")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into stemmed, lower-cased index terms, in text order.

    Deterministic (no locale, no randomness): NFKC + casefold, English clitics
    (``'s``, ``'re``, ``n't``...) removed, unicode word split, stopwords and
    one-letter latin tokens dropped, ASCII words Porter-stemmed.
    """
    return [t for t in map(index_term, words(text)) if t]


#: The last text :func:`words` split and its words: an ``ask`` splits its query three
#: times (the embedder's features, the lexical terms, the speaker words). Only texts up
#: to MEMO_CHARS characters are kept (a question, not a document).
_last_words: list[tuple[str, tuple[str, ...]]] = [("", ())]
MEMO_CHARS = 2048


def words(text: str) -> list[str]:
    """The normalised surface words of ``text`` (NFKC, casefolded, clitics removed), in order."""
    if not text:
        return []
    last = _last_words[0]  # one read: another thread may replace it meanwhile
    if last[0] == text:
        return list(last[1])
    norm = unicodedata.normalize("NFKC", text).casefold()
    if not norm.isascii():  # (str.replace is much faster than a translate table)
        for ch in _APOSTROPHE_CHARS:
            if ch in norm:
                norm = norm.replace(ch, "'")
    elif "`" in norm:
        norm = norm.replace("`", "'")
    if "'" in norm:  # _CLITIC_RE in two passes, each searching a literal prefix
        norm = _NT_RE.sub(" ", _CLITIC_AFTER_RE.sub(" ", norm))
    out: list[str] = _WORD_RE.findall(norm)
    if len(text) <= MEMO_CHARS:
        _last_words[0] = (text, tuple(out))
    return out


@functools.lru_cache(maxsize=65536)
def index_term(word: str) -> str:
    """Map one word of :func:`words` to its index term, or ``""`` if it is dropped."""
    if word in STOPWORDS:
        return ""
    if len(word) == 1 and word.isascii() and word.isalpha():
        return ""
    return stem(word)


@functools.lru_cache(maxsize=65536)
def surface_term(word: str) -> str:
    """Map one word of :func:`words` to its surface-field term (the word itself), or ``""``."""
    if word in SURFACE_STOPWORDS:
        return ""
    if len(word) == 1 and word.isascii() and word.isalpha():
        return ""
    return word


#: Letters after which a final "ly" is an adverb suffix (Porter2's valid li-endings), and
#: Porter2's words whose "ly" is not one.
_LI_ENDINGS = frozenset("cdeghkmnrt")
_LI_EXCEPTIONS = frozenset({"early", "only", "ugly", "idly", "gently", "singly"})


@functools.lru_cache(maxsize=65536)
def field_stem(word: str) -> str:
    """The stem-field term of one word: :func:`index_term`, plus Porter2's adverb rule.

    Porter (1980) stems "calmly" to "calmli", which never meets "calm"; Porter2 drops
    a final "ly" after a consonant that can end a stem ("calmly", "quickly",
    "weekly" -> "calm", "quick", "week"; not "reply", "family", "early"). Only the
    lexical index uses it: the hashing embedder keeps :func:`index_term` (its
    vectors must not change under a stored model name).
    """
    term = index_term(word)
    if (len(term) > 4 and term.endswith("li") and word.endswith("ly") and term[-3] in _LI_ENDINGS
            and word not in _LI_EXCEPTIONS and _measure(term[:-2]) > 0):
        return term[:-2]
    return term


#: A speaker label at the start of a memory: one to three words (the first starting
#: with a letter), then a colon and a space ("Melanie: ...", "user: ...", "Dr. Lee: ...").
_SPEAKER_RE = re.compile(r"^\s*([^\W\d_][^\W_]*(?:[ .'-]{1,2}[^\W_]+){0,2})\.?:\s", re.UNICODE)


def speaker_words(text: str) -> list[str]:
    """The words of ``text``'s speaker label ("Melanie: I went..." -> ["melanie"]), if any.

    In a conversation log each turn starts with who says it; the first-person words
    of the turn are about that speaker, which is what a question naming them asks
    about. Function words and one-letter tokens of the label are left out.
    """
    if not text:
        return []
    if ":" not in text[:64]:
        return []
    m = _SPEAKER_RE.match(text[:64])
    if m is None:
        return []
    return list(_label_words(m.group(1)))


@functools.lru_cache(maxsize=4096)
def _label_words(label: str) -> tuple[str, ...]:
    """The kept words of a speaker label (labels recur: one per speaker)."""
    return tuple(w for w in words(label) if surface_term(w))


#: Index hyphenated compounds as one word too (:func:`compounds`). A tokeniser switch
#: for measurements: it changes what the index holds, so a store must be built (or
#: reindexed) with the value its asks use.
COMPOUNDS: bool = True
#: Characters that join the parts of a compound ("de-stress"), after NFKC.
_HYPHENS = ("-", "\u2010")
#: ... and what NFKC maps onto them (checked in the raw text before normalising).
_HYPHEN_LIKE = ("-", "\u2010", "\u2011", "\ufe63", "\uff0d")
_COMPOUND_RE = re.compile(r"(?<![^\W_])[^\W\d_]+(?:[-\u2010][^\W\d_]+)+(?![^\W_])", re.UNICODE)
_HYPHEN_RE = re.compile(r"[-\u2010]")


def compounds(text: str) -> list[str]:
    """The hyphenated compounds of ``text`` written as one word ("de-stress" ->
    "destress", "e-mail" -> "email", "mother-in-law" -> "motherinlaw"), normalised as
    :func:`words`, in text order. Only letters: "covid-19" and "5-year" are not one.

    :func:`words` splits a compound at its hyphens; the same compound is written closed
    as often ("destress", "email", "icecream"), so the index holds it both ways.
    """
    if not COMPOUNDS or not text or not any(h in text for h in _HYPHEN_LIKE):
        return []
    norm = unicodedata.normalize("NFKC", text).casefold()
    if not any(h in norm for h in _HYPHENS):
        return []
    return [_HYPHEN_RE.sub("", m) for m in _COMPOUND_RE.findall(norm)]


#: :func:`compounds` of lowercased ASCII text (where ``[^\W\d_]`` is ``[a-z]`` and ``[^\W_]``
#: is ``[a-z0-9]``), and the test an ASCII text must pass to hold one (a letter, a
#: hyphen, a letter; it starts with a literal, so the regex engine finds it fast).
_ASCII_COMPOUND_RE = re.compile(r"(?<![a-z0-9])[a-z]+(?:-[a-z]+)+(?![a-z0-9])")
_ASCII_JOINT_RE = re.compile(r"-(?<=[A-Za-z]-)(?=[A-Za-z])")


def compounds_many(texts: Sequence[str]) -> list[tuple[int, str]]:
    """(text index, compound) of :func:`compounds` of every text, in text order. The
    ASCII texts that can hold one go through one pass (NFKC leaves ASCII as it is and
    casefolds it to ``lower()``; a compound never spans the newline joining them), the
    others one by one."""
    if not COMPOUNDS:
        return []
    out: list[tuple[int, str]] = []
    joint = _ASCII_JOINT_RE.search
    is_ascii = list(map(str.isascii, texts))  # (C passes: few texts hold a hyphen)
    dash = map(str.__contains__, texts, itertools.repeat("-"))
    asc = [i for i in itertools.compress(range(len(texts)), map(operator.and_, is_ascii, dash))
           if joint(texts[i])]
    for i in itertools.compress(range(len(texts)), map(operator.not_, is_ascii)):
        t = texts[i]
        if any(h in t for h in _HYPHEN_LIKE):
            out.extend((i, w) for w in compounds(t))
    if asc:
        parts = [texts[i] for i in asc]
        starts = list(itertools.accumulate((len(t) + 1 for t in parts), initial=0))
        joined = "\n".join(parts).lower()
        found = [(asc[bisect.bisect_right(starts, m.start()) - 1], m.group().replace("-", ""))
                 for m in _ASCII_COMPOUND_RE.finditer(joined)]
        if out:
            out.extend(found)
            out.sort(key=lambda p: p[0])  # (stable: each text's compounds keep their order)
        else:
            out = found
    return out


def index_fields(text: str) -> tuple[list[str], list[str]]:
    """The two fields of the lexical index: (stems as :func:`field_stem`, surface words).

    The stem field merges morphological variants ("painting" ~ "paintings" ~ "paint");
    the surface field keeps the exact forms and the auxiliaries the stem field drops,
    so an exact match counts more than a stem match and no word is lost to stemming
    or to the stopword list. Both end with the text's hyphenated compounds written as
    one word (:func:`compounds`; their parts are words of the text already).
    """
    ws = words(text)
    comp = compounds(text)
    if comp:
        ws = ws + comp
    stems = [t for t in map(field_stem, ws) if t]
    surface = [t for t in map(surface_term, ws) if t]
    return stems, surface


def is_question(text: str) -> bool:
    """Whether ``text`` asks something: it holds a question mark (ASCII, full-width or
    Arabic). A conversation turn that asks is usually answered by the next turn."""
    return "?" in text or "\uff1f" in text or "\u061f" in text


def questions_many(texts: Sequence[str]) -> np.ndarray:
    """:func:`is_question` of every text (bool array), one C pass per question mark."""
    out = np.fromiter(map(str.__contains__, texts, itertools.repeat("?")), bool, len(texts))
    if not "".join(texts).isascii():
        for mark in ("\uff1f", "\u061f"):
            out |= np.fromiter(map(str.__contains__, texts, itertools.repeat(mark)), bool,
                               len(texts))
    return out


def term_frequencies(tokens: Iterable[str]) -> dict[str, int]:
    """Count ``tokens``; the dict is returned in sorted term order (deterministic)."""
    counts: dict[str, int] = {}
    for tok in tokens:
        counts[tok] = counts.get(tok, 0) + 1
    return {t: counts[t] for t in sorted(counts)}


def bm25_idf(df: np.ndarray | int, n_docs: int) -> np.ndarray:
    """Lucene/BM25+ style non-negative idf: ``ln(1 + (N - df + 0.5) / (df + 0.5))``."""
    df_arr = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df_arr + 0.5) / (df_arr + 0.5))


def bm25_scores(
    query_terms: Iterable[str],
    postings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    doc_lengths: np.ndarray,
    n_docs: int,
    avgdl: float,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
) -> np.ndarray:
    """Okapi BM25 scores of every row of a dense document array.

    For each distinct query term ``t`` (duplicates in the query count once)::

        score(d) += idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
        idf(t)    = ln(1 + (n_docs - df(t) + 0.5) / (df(t) + 0.5))

    ``postings[t] = (doc_rows int64, tfs float32)`` lists the rows (indices into
    ``doc_lengths``) that contain ``t`` and its term frequency there; ``df(t)`` is
    ``len(doc_rows)``. Terms without postings are skipped. ``doc_lengths[r]`` is
    the number of index terms of row ``r`` (``len(tokenize(text))``). ``n_docs``
    and ``avgdl`` are the collection statistics (usually ``len(doc_lengths)`` and
    ``doc_lengths.mean()``, but a store may pass namespace-wide or global values).
    Returns float32 scores of shape ``doc_lengths.shape``; rows with no matching
    term score 0. Vectorised: one numpy scatter-add per query term.
    """
    dl = np.asarray(doc_lengths, dtype=np.float32)
    scores = np.zeros(dl.shape[0], dtype=np.float32)
    if n_docs <= 0 or dl.shape[0] == 0:
        return scores
    avg = float(avgdl) if avgdl and avgdl > 0 else 1.0
    norm = (k1 * (1.0 - b)) + (k1 * b / avg) * dl  # per-row length normaliser
    for term in sorted(set(query_terms)):
        post = postings.get(term)
        if post is None:
            continue
        rows = np.asarray(post[0], dtype=np.int64)
        if rows.size == 0:
            continue
        tfs = np.asarray(post[1], dtype=np.float32)
        idf = np.float32(bm25_idf(rows.size, n_docs))
        contrib = idf * tfs * np.float32(k1 + 1.0) / (tfs + norm[rows])
        np.add.at(scores, rows, contrib.astype(np.float32))
    return scores


# --------------------------------------------------------------------------- Porter stemmer

_VOWELS = frozenset("aeiou")
#: Longer "words" (hashes, base64, runs of letters) are left unstemmed: no English
#: word needs it, and Porter's steps are quadratic in the worst case.
MAX_STEM_LEN = 40


def _is_cons(w: str, i: int) -> bool:
    """Porter's consonant test; a 'y' is a consonant at the start or after a vowel.

    Iterative over a run of 'y's (a recursive version overflows the stack on
    'yyyy...'): consonant-ness alternates along the run.
    """
    ch = w[i]
    if ch in _VOWELS:
        return False
    if ch != "y":
        return True
    j = i
    while j > 0 and w[j - 1] == "y":
        j -= 1
    first = j == 0 or w[j - 1] in _VOWELS
    return first if (i - j) % 2 == 0 else not first


def _measure(stem_: str) -> int:
    """Porter's m: the number of VC sequences in ``stem_``."""
    m, i, n = 0, 0, len(stem_)
    while i < n and _is_cons(stem_, i):
        i += 1
    while i < n:
        while i < n and not _is_cons(stem_, i):
            i += 1
        if i >= n:
            break
        while i < n and _is_cons(stem_, i):
            i += 1
        m += 1
    return m


def _has_vowel(stem_: str) -> bool:
    return any(not _is_cons(stem_, i) for i in range(len(stem_)))


def _ends_double_cons(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _is_cons(w, len(w) - 1)


def _cvc(w: str) -> bool:
    n = len(w)
    if n < 3:
        return False
    return (
        _is_cons(w, n - 3)
        and not _is_cons(w, n - 2)
        and _is_cons(w, n - 1)
        and w[-1] not in "wxy"
    )


_STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
    ("izer", "ize"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"),
    ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"),
    ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
    ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
)
_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"),
    ("ical", "ic"), ("ful", ""), ("ness", ""),
)
_STEP4 = tuple(
    sorted(
        ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment",
         "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize"),
        key=lambda s: (-len(s), s),
    )
)


def _replace_suffixes(w: str, table: tuple[tuple[str, str], ...], min_m: int) -> str:
    for suf, rep in table:
        if w.endswith(suf):
            base = w[: -len(suf)]
            return base + rep if _measure(base) > min_m - 1 else w
    return w


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Porter (1980) stem of a lower-case word; non-ASCII/non-alpha or short words unchanged."""
    if len(word) <= 2 or len(word) > MAX_STEM_LEN or not _ASCII_ALPHA_RE.match(word):
        return word
    w = word
    # Step 1a
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies"):
        w = w[:-2]
    elif w.endswith("ss"):
        pass
    elif w.endswith("s"):
        w = w[:-1]
    # Step 1b
    step1b_extra = False
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    elif w.endswith("ed") and _has_vowel(w[:-2]):
        w, step1b_extra = w[:-2], True
    elif w.endswith("ing") and _has_vowel(w[:-3]):
        w, step1b_extra = w[:-3], True
    if step1b_extra:
        if w.endswith(("at", "bl", "iz")):
            w += "e"
        elif _ends_double_cons(w) and w[-1] not in "lsz":
            w = w[:-1]
        elif _measure(w) == 1 and _cvc(w):
            w += "e"
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # Steps 2-3
    w = _replace_suffixes(w, _STEP2, 1)
    w = _replace_suffixes(w, _STEP3, 1)
    # Step 4 (longest matching suffix only; "ion" needs a preceding s or t)
    for suf in _STEP4:
        if w.endswith(suf):
            base = w[: -len(suf)]
            if _measure(base) > 1 and (suf != "ion" or base.endswith(("s", "t"))):
                w = base
            break
    # Step 5a
    if w.endswith("e"):
        base = w[:-1]
        m = _measure(base)
        if m > 1 or (m == 1 and not _cvc(base)):
            w = base
    # Step 5b
    if _measure(w) > 1 and _ends_double_cons(w) and w.endswith("l"):
        w = w[:-1]
    return w
