"""Tests of the tokeniser, the Porter stemmer and the BM25 formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnemos_kv import _lexical


def test_tokenize_lowercases_drops_stopwords_and_clitics() -> None:
    toks = _lexical.tokenize("Hey Caroline! I'm swamped with the KIDS & work, don't you think?")
    assert toks == ["carolin", "swamp", "kid", "work", "think"]


def test_tokenize_is_deterministic_and_unicode_aware() -> None:
    text = "Café naïve Straße 東京 2023 — Melanie’s paintings"
    first = _lexical.tokenize(text)
    assert first == _lexical.tokenize(text)
    assert first == ["café", "naïve", "strass", "東京", "2023", "melani", "paint"]  # ß casefolds to ss


def test_tokenize_empty_and_punctuation_only() -> None:
    assert _lexical.tokenize("") == []
    assert _lexical.tokenize("!!! ... the a of") == []


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("caresses", "caress"),
        ("ponies", "poni"),
        ("cats", "cat"),
        ("agreed", "agre"),
        ("plastered", "plaster"),
        ("motoring", "motor"),
        ("hopping", "hop"),
        ("filing", "file"),
        ("happy", "happi"),
        ("relational", "relat"),
        ("conditional", "condit"),
        ("hopefulness", "hope"),
        ("adjustment", "adjust"),
        ("adoption", "adopt"),
        ("generalizations", "gener"),
        ("payments", "payment"),
        ("running", "run"),
        ("controll", "control"),
        ("sky", "sky"),
    ],
)
def test_porter_stemmer_cases(word: str, expected: str) -> None:
    assert _lexical.stem(word) == expected


def test_stem_leaves_non_ascii_and_short_words() -> None:
    assert _lexical.stem("naïve") == "naïve"
    assert _lexical.stem("as") == "as"
    assert _lexical.stem("abc123") == "abc123"


def test_term_frequencies_sorted() -> None:
    tf = _lexical.term_frequencies(["b", "a", "b", "c"])
    assert tf == {"a": 1, "b": 2, "c": 1}
    assert list(tf) == ["a", "b", "c"]


def _postings(docs: list[list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row, toks in enumerate(docs):
        for term, tf in _lexical.term_frequencies(toks).items():
            out.setdefault(term, ([], []))[0].append(row)
            out[term][1].append(float(tf))
    return {t: (np.asarray(r, np.int64), np.asarray(f, np.float32)) for t, (r, f) in out.items()}


def test_bm25_matches_hand_computed_example() -> None:
    docs = [["cat", "dog"], ["cat"], ["fish", "fish", "bird"]]
    post = _postings(docs)
    lengths = np.array([2, 1, 3], dtype=np.float32)
    k1, b, avgdl = 1.2, 0.75, 2.0
    cat = _lexical.bm25_scores(["cat"], post, lengths, 3, avgdl, k1=k1, b=b)
    idf_cat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # ln 1.6
    # d0: tf 1, |d| 2 -> 2.2 / (1 + 1.2 * (0.25 + 0.75)) = 1.0
    # d1: tf 1, |d| 1 -> 2.2 / (1 + 1.2 * (0.25 + 0.375)) = 2.2 / 1.75
    np.testing.assert_allclose(cat, [idf_cat * 1.0, idf_cat * 2.2 / 1.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(cat, [0.4700036, 0.5908617, 0.0], rtol=1e-6)
    both = _lexical.bm25_scores(["fish", "cat", "fish", "unknown"], post, lengths, 3, avgdl, k1=k1, b=b)
    idf_fish = math.log(1 + 2.5 / 1.5)
    # d2: tf 2, |d| 3 -> 2 * 2.2 / (2 + 1.2 * (0.25 + 1.125)); the repeated query term counts once
    np.testing.assert_allclose(both, [cat[0], cat[1], idf_fish * 4.4 / 3.65], rtol=1e-6)
    assert both.dtype == np.float32


def test_bm25_empty_inputs() -> None:
    assert _lexical.bm25_scores(["x"], {}, np.zeros(0), 0, 0.0).shape == (0,)
    post = _postings([["a"], ["b"]])
    np.testing.assert_array_equal(
        _lexical.bm25_scores([], post, np.array([1.0, 1.0]), 2, 1.0), np.zeros(2, np.float32)
    )


def test_long_and_y_runs_do_not_overflow() -> None:
    """Regression: the recursive 'y' test overflowed the stack on 'yyyy...'."""
    from mnemos_kv import _lexical
    assert _lexical.stem("y" * 5000) == "y" * 5000
    assert _lexical.tokenize("y" * 5000 + " payments") == ["y" * 5000, "payment"]
    for w in ("yyy", "syzygy", "played", "crying", "sayyid", "rayyan"):
        assert _lexical.stem(w)


def test_is_cons_matches_porter_definition() -> None:
    from mnemos_kv import _lexical

    def ref(w: str, i: int) -> bool:  # the recursive definition, for short words
        if w[i] in "aeiou":
            return False
        if w[i] == "y":
            return i == 0 or not ref(w, i - 1)
        return True
    for w in ("yyyyy", "ayyy", "byyya", "toy", "syzygy", "yay", "abyyyc"):
        assert [_lexical._is_cons(w, i) for i in range(len(w))] == [ref(w, i) for i in range(len(w))]


def test_words_of_a_repeated_text_are_a_fresh_copy() -> None:
    """``words`` keeps the last short text's words (an ask splits its query three times):
    a caller changing the list it got must not change the next answer."""
    from mnemos_kv import _lexical
    text = "How long has Bob been doing yoga?"
    first = _lexical.words(text)
    first.append("mutated")
    assert _lexical.words(text) == ["how", "long", "has", "bob", "been", "doing", "yoga"]
    assert _lexical.words("Another question?") == ["another", "question"]
    long_text = "word " * (_lexical.MEMO_CHARS + 1)
    assert _lexical.words(long_text) == ["word"] * (_lexical.MEMO_CHARS + 1)
    assert _lexical._last_words[0][0] == "Another question?"  # a document is not kept
