"""Bulk ingest (``_ingest``): a run of ``remember`` requests applied as one block leaves
exactly what one ``mem`` op per memory leaves: log bytes, every LMDB table, vector rows,
slot columns, digest and answers; and its hand-assembled CBOR is the canonical encoder's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnemos_kv import HashingEmbedder, Mnemos, _ingest
from mnemos_kv import _records as R
from mnemos_kv.errors import DuplicateKeyError, InvalidInputError

from conftest import Clock
from test_bulk_forget import WORDS, _log_bytes, _same, _tables


def _text(i: int) -> str:
    r = np.random.default_rng(i)
    return " ".join(WORDS[j] for j in r.integers(0, len(WORDS), int(r.integers(1, 9))))


METAS = [{}, {"cat": 3}, {"cat": 1, "user": {"tier": 2, "name": "u1"}}, {"long": "z" * 400},
         {"p" * 250: 1}, {"f": 1.5, "g": -0.0, "h": 1e300, "big": 2 ** 63, "neg": -(2 ** 63)},
         {"l": [1, "a", None, True, {"x": b"\x00\xff"}], "e": ""}, {"日本": "語", "b": False}]


def _items(n: int, seed: int = 0, keys: bool = True) -> list[dict]:
    r = np.random.default_rng(seed)
    vecs = r.standard_normal((n, 16)).astype(np.float32)
    out = []
    for i in range(n):
        it: dict = {"text": _text(seed * 1000 + i) if i % 9 else "shared text about yoga?",
                    "metadata": METAS[i % len(METAS)], "vector": vecs[i],
                    "type": ("episodic", "semantic", "procedural")[i % 3]}
        if i % 4 == 0 and keys:
            it["key"] = f"k{seed}-{i}" + ("é" * (i % 3))
        if i % 5 == 0:
            it["timestamp"] = [-10 ** 12, 0, 1, 2 ** 40, 1_767_225_600 + i][i % 5]
        if i % 7 == 0:
            it["pinned"] = True
        out.append(it)
    return out


def _E() -> HashingEmbedder:
    return HashingEmbedder(16)


def _pair(tmp_path):
    a = Mnemos.open(str(tmp_path / "a"), embedder=_E(), clock=Clock())
    b = Mnemos.open(str(tmp_path / "b"), embedder=_E(), clock=Clock())
    return a, b


def _fill(db: Mnemos) -> list:
    out = [db.remember_many(_items(300, 1))]
    out.append(db.namespace("other").remember_many(_items(40, 2)))
    out.append(db.remember_many(_items(5, 3)))  # below MIN_RUN: op by op in both
    with db.batch() as bt:  # new namespaces in the middle of one run
        bt.remember_many(_items(20, 4, keys=False))
        bt.namespace("third").remember_many(_items(20, 5))
        bt.remember_many(_items(20, 6))
        bt.namespace("fourth").remember("one")
        bt.namespace("other").remember_many(_items(20, 7))
    out.append(bt.ids)
    return out


def test_bulk_ingest_equals_op_by_op(tmp_path, monkeypatch) -> None:
    a, b = _pair(tmp_path)
    calls, blocks = [], []
    real, real_block = _ingest.apply_run, _ingest.apply_block
    monkeypatch.setattr(_ingest, "apply_run", lambda *x: calls.append(len(x[2])) or real(*x))
    monkeypatch.setattr(_ingest, "apply_block",
                        lambda *x: blocks.append(len(x[2])) or real_block(*x))
    ra = _fill(a)
    assert len(calls) >= 2 and sum(calls) >= 100  # (runs of requests: small calls, batches)
    assert blocks == [300]  # (a remember_many call validated by columns: _bulkcheck)
    monkeypatch.setattr(_ingest, "MIN_RUN", 10 ** 9)
    rb = _fill(b)
    assert ra == rb
    _same(a, b)
    for ns in ("third", "fourth"):
        assert [m.id for m in a.namespace(ns).ask("yoga")] == \
            [m.id for m in b.namespace(ns).ask("yoga")]
    a.close()
    b.close()
    # and after reopening (the vector rows and records were flushed and read back)
    a = Mnemos.open(str(tmp_path / "a"), embedder=_E())
    assert a.verify().ok
    a.close()


def test_small_bulk_writes_keep_pending_rows(tmp_path, monkeypatch) -> None:
    """A run small enough to stay in ``pending``/``vrows`` (no flush): the same tables."""
    a, b = _pair(tmp_path)
    for db in (a, b):
        if db is b:
            monkeypatch.setattr(_ingest, "MIN_RUN", 10 ** 9)
        for s in range(4):
            db.remember_many(_items(12, 10 + s))
    assert _log_bytes(a._engine.path) == _log_bytes(b._engine.path)
    assert _tables(a) == _tables(b)
    _same(a, b)
    a.close()
    b.close()


def test_single_remember_fast_path_equals_apply_op(tmp_path, monkeypatch) -> None:
    """A single ``remember`` assembles its record and log frame from its fields' CBOR
    (``_ingest.apply_one``): every byte of the store (log, tables, slots, vectors), every
    answer and the digest equal what ``apply_op`` of its ``mem`` op leaves, for keys,
    pins, metadata of every kind, non-ASCII text and keys, and several namespaces."""
    a, b = _pair(tmp_path)
    taken: list[object] = []
    real = _ingest.apply_one
    for db in (a, b):
        if db is a:
            monkeypatch.setattr(_ingest, "apply_one", lambda *x: taken.append(real(*x)) or taken[-1])
        else:
            monkeypatch.setattr(_ingest, "apply_one", lambda *x: None)  # apply_op throughout
        for i, item in enumerate(_items(60, 21)):
            (db.namespace("other") if i % 3 == 0 else db).remember(**item)
        db.forget(5)
        db.remember("after a forget", vector=np.ones(16, np.float32))
    assert len(taken) == 61 and None not in taken  # (every request took the fast path)
    _same(a, b)
    a.close()
    b.close()


def test_bulk_ingest_errors_write_nothing(tmp_path) -> None:
    a, _ = _pair(tmp_path)
    a.remember_many(_items(20, 1))
    before = _tables(a)
    dup = _items(20, 8)
    dup[13]["key"] = "k1-0"  # already stored
    with pytest.raises(DuplicateKeyError, match="k1-0"):
        a.remember_many(dup)
    with pytest.raises(InvalidInputError):  # twice in one call: refused by validation
        a.remember_many([{"text": "x", "key": "same"}, {"text": "y", "key": "same"}] * 5)
    with pytest.raises(DuplicateKeyError, match="'twice'"):  # twice in one write
        a._engine.write([("remember", "default", f"t{i}", {}, "episodic", 5,
                          "twice" if i in (3, 9) else None, np.ones(16, np.float32))
                         for i in range(12)])
    assert _tables(a) == before
    a.close()


def test_odd_vectors_fall_back_to_op_by_op(tmp_path) -> None:
    """Vectors of another shape are left to the per-op path (and its error)."""
    a, _ = _pair(tmp_path)
    reqs = [("remember", "default", f"t{i}", {}, "episodic", 5, None,
             np.ones(16 if i != 4 else 15, np.float32)) for i in range(12)]
    from mnemos_kv.errors import CorruptionError
    with pytest.raises(CorruptionError, match="15 floats"):
        a._engine.write(reqs)
    ok = [("remember", "default", f"t{i}", {}, "episodic", 5, None,
           np.full((1, 16), 0.25, np.float64)) for i in range(12)]
    assert a._engine.write(ok) == list(range(1, 13))
    assert a.verify().ok
    a.close()


_INTS = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(_INTS, max_size=40))
def test_cbor_ints_are_canonical(values: list[int]) -> None:
    edges = [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -1, -24, -25, -256,
             -257, -65536, -65537, -(2 ** 32), -(2 ** 32) - 1]
    vals = values + edges
    assert _ingest.cbor_ints(np.asarray(vals, np.int64)) == [R.encode(v) for v in vals]
    assert [_ingest.cbor_int(v) for v in vals] == [R.encode(v) for v in vals]
    assert _ingest.cbor_ints(np.asarray(values[:1] * 5, np.int64)) == [R.encode(v) for v in
                                                                         values[:1] * 5]


def _words_reference(text: str) -> list[str]:
    """``_lexical.words`` as it was written first: one translate table, one regex."""
    import unicodedata

    from mnemos_kv import _lexical as L
    if not text:
        return []
    norm = unicodedata.normalize("NFKC", text).casefold().translate(L._APOSTROPHES)
    return L._WORD_RE.findall(L._CLITIC_RE.sub(" ", norm))


_PIECES = ["n't", "'s", "'re", "'", "`", "\u2019", "\u2018", "\u02bc", "n", "t", "s", "don",
           "_", " ", "'ll", "'d", "'m", "'ve", "re", "é", "ß", "日本", "1", "?", "N'T", "'S",
           "\u2019S", "\u00a0", "-", "ﬁ", "Ｎ'Ｔ", "x"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14), st.text(max_size=12))
def test_words_equal_the_single_regex_version(pieces: list[str], tail: str) -> None:
    from mnemos_kv import _lexical as L
    for text in ("".join(pieces), "".join(pieces) + tail):
        assert L.words(text) == _words_reference(text)


_ASCII_PIECES = ["n't", "'s", "'re", "'", "`", "n", "t", "s", "don", "_", " ", "'ll", "'d",
                 "'m", "'ve", "re", "1", "?", "N'T", "'S", "-", "x", "Ab", "\t", "\x1c", "\x00",
                 ":", "#", "``s", "I'M"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_ASCII_PIECES), max_size=16),
       st.text(st.characters(max_codepoint=127), max_size=12))
def test_ascii_fast_path_equals_words(pieces: list[str], tail: str) -> None:
    """The batch tokeniser's ASCII path (lower, translate, split) is ``_lexical.words``."""
    from mnemos_kv import _batchwords
    from mnemos_kv import _lexical as L
    for text in ("".join(pieces), "".join(pieces) + tail, tail):
        assert _batchwords.ascii_words(text) == L.words(text) == _words_reference(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES + _ASCII_PIECES), max_size=8).map("".join),
                max_size=12))
def test_batch_words_of_mixed_batches(texts: list[str]) -> None:
    """ASCII and other texts are split in two passes and merged back in text order."""
    from mnemos_kv import _batchwords
    words, doc = _batchwords._batch_words(texts) if texts else ([], np.empty(0))
    assert list(zip(words, doc.tolist())) == [(w, i) for i, t in enumerate(texts)
                                              for w in _words_reference(t)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES + _ASCII_PIECES + [
    "-", "co-op", "e-Mail", " x-", "-y ", "A-b-C", "5-year", "covid-19", "de\u2010stress",
    "re\uff0dset", "_-a", "a-_", "\u00e9t\u00e9-hiver", "mother-in-law"]), max_size=8).map("".join),
                max_size=12))
def test_compounds_of_a_batch_are_each_texts(texts: list[str]) -> None:
    """The batch pass (ASCII texts joined, an ASCII pattern) finds each text's compounds."""
    from mnemos_kv import _lexical as L
    assert L.compounds_many(texts) == [(i, w) for i, t in enumerate(texts) for w in L.compounds(t)]


_KEY_WORDS = ["0", "7", "42", "2024", "007", "1" * 240, "1" * 241, "9" * 600, "\u0663", "\u00b2",
              "12a", "a12", "the", "calmly", "x" * 300, "a", "b", "z", "been", "how", "is",
              "\u00e9t\u00e9", "\u00df", "\u00e9" * 121, "\u00e9" * 119 + "x", "\U0001f600" * 61,
              "destress", "painting", "paintings", "_", "x" * 60, "x" * 61, "w123", "topic42",
              "caf\u00e9", "\u00e9", "ok", "tv", "x2", "2x", "calmly", "\u0131", "\u212a",
              "\u00e9" * 60 + "a", "1" * 60, "1" * 61, "\u00aa", "\u2160", "\u00bd", "5\u00b2"]


@pytest.mark.parametrize("word", _KEY_WORDS)
def test_posting_keys_of_words_are_the_terms_keys(word: str) -> None:
    """The bulk index's key functions (a memo for stems, a shortcut for numbers, C
    passes for surface words) give each field's key of :func:`doc_terms`, as text."""
    from mnemos_kv import _lexical as L
    from mnemos_kv import _lexical_index as LI
    for _ in range(2):  # (a miss, then from the memo)
        assert [k.encode() for k in LI.stem_keys([word, word])] == \
            [LI._key_bytes(L.field_stem(word), b"")] * 2
        assert [k.encode() for k in LI.surface_keys([word])] == \
            [LI._key_bytes(L.surface_term(word), LI.SURFACE_PREFIX)]
    LI._STEM_KEYS.cache_clear()
    stop = sorted(w for w in L.STOPWORDS | L.SURFACE_STOPWORDS if w.isdigit())
    for w in stop:  # (none today; a number made a stopword must stay dropped)
        assert LI.stem_keys([w]) == [LI._key_bytes(L.field_stem(w), b"").decode()]
    from mnemos_kv import _hashing as H
    H._TERMS.cache_clear()
    assert H._TERMS[word] == L.index_term(word)


def test_batch_keys_sort_and_number_as_bytes() -> None:
    """doc_terms_many numbers its keys by one np.unique of their UTF-8: the order and
    the keys of ``bytes`` (cut keys, high bytes, the question marker, dropped words)."""
    from mnemos_kv import _lexical_index as LI
    words = _KEY_WORDS + ["\uffff", "\U00010000", "\x7f", "\x80", "a\u00e9", "ab"]
    keys = [k for w in words for k in (LI.stem_keys([w]) + LI.surface_keys([w])
                                       + [LI._key_str(w, LI._SPEAKER_STR)]) if k]
    keys += [LI._QUESTION_STR, "", ""]
    got, codes = LI._sorted_codes(keys)
    want = sorted({k.encode() for k in keys if k})
    assert got == want and all(type(k) is bytes for k in got)
    assert [got[c] if c >= 0 else b"" for c in codes.tolist()] == [k.encode() for k in keys]
    assert LI._sorted_codes(["b", "a"]) == ([b"a", b"b"], pytest.approx([1, 0]))
    assert LI.encode_keys([]) == [] and LI._sorted_codes([])[0] == []


def test_batch_words_cache_gives_the_same_words() -> None:
    from mnemos_kv import _batchwords
    texts = [_text(i) + f" don't {i}" for i in range(200)]
    first = _batchwords.batch_words(texts)
    again = _batchwords.batch_words(list(texts))  # the same objects: from the cache
    assert again[0] is first[0]
    third = _batchwords.batch_words(texts)  # used once: computed again (and equal)
    assert third[0] is not first[0] and third[0] == first[0]
    other = _batchwords.batch_words([t + " more" for t in texts])  # other texts: computed
    assert other[0] != first[0]
    ref = [(w, i) for i, t in enumerate(texts) for w in _words_reference(t)]
    assert list(zip(first[0], first[1].tolist())) == ref


def test_equal_metadata_is_checked_once_but_kept_exactly(tmp_path) -> None:
    """Validation computes equal flat metadata once; values that compare equal but are
    stored differently (1, 1.0, True; 0.0, -0.0) keep their own form."""
    import math
    db = Mnemos.open(str(tmp_path / "m"), embedder=_E())
    vals = [1, 1.0, True, 0.0, -0.0, 1, -0.0, 0.0, True, 1.0, "1", None, 2 ** 63]
    ids = db.remember_many([{"text": f"t{i}", "metadata": {"v": v}} for i, v in enumerate(vals)])
    for mid, v in zip(ids, vals):
        got = db.get(mid).metadata["v"]
        assert type(got) is type(v) and got == v
        if isinstance(v, float):
            assert math.copysign(1, got) == math.copysign(1, v)
    metas = [db.get(m).metadata for m in ids[:2]]
    metas[0]["v"] = 5  # a copy each: changing one changes no other
    assert db.get(ids[5]).metadata == {"v": 1}
    with pytest.raises(InvalidInputError, match="finite"):
        db.remember_many([{"text": "a", "metadata": {"v": 1.5}},
                          {"text": "b", "metadata": {"v": float("nan")}}])
    db.close()


_SPEAKER_PIECES = ["Mel", "anie", ":", " ", "\n", "Dr.", " Lee", "-", "'", "1", "é", "x" * 30,
                   "user", "::", ". ", "?", "_", "Ｍ", "\t"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_SPEAKER_PIECES), max_size=10).map("".join),
                max_size=10))
def test_speaker_keys_of_a_batch_equal_text_by_text(texts: list[str]) -> None:
    """The bulk index memoises speaker labels by the text up to its first colon."""
    from mnemos_kv import _lexical
    from mnemos_kv import _lexical_index as LI
    ref = [(i, LI._key_bytes(w, LI.SPEAKER_PREFIX)) for i, t in enumerate(texts)
           for w in dict.fromkeys(_lexical.speaker_words(t))]
    doc, keys = LI._speaker_keys(texts)
    assert [(i, k.encode()) for i, k in zip(doc.tolist(), keys)] == ref and len(doc) == len(keys)


def test_bulk_postings_of_older_ids_are_put_in_place(tmp_path) -> None:
    """Bulk postings are appended to their term lists (new ids are the largest); a
    batch whose ids are not (not expected) is put again in place, whole."""
    from mnemos_kv import _lexical_index as LI
    db = Mnemos.open(str(tmp_path / "s"), embedder=_E())
    db.remember_many([f"painting yoga note {i}" for i in range(40)])
    env = db._engine.env
    with env.read() as txn:
        ns = db._engine.ns_id("default", txn)
    items = [(ns, 1000 + i, f"painting yoga extra {i}", None) for i in range(20)]
    older = [(ns, 500 + i, f"painting extra older {i}", None) for i in range(20)]

    def body(txn) -> None:
        LI.add_many(txn, env, items)
        LI.add_many(txn, env, older)
    env.write(body)
    with env.read() as txn, txn.cursor(db=env.db("postings")) as cur:
        ids = LI.fetch(cur, ns, b"paint")["id"].tolist()
    assert ids == sorted(ids) and len(ids) == 80
    assert set(range(500, 520)) <= set(ids) and set(range(1000, 1020)) <= set(ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "?", "\uff1f", "\u061f", "é", " ", "x?y", ":"]),
                         max_size=6).map("".join), max_size=8))
def test_questions_of_a_batch_are_each_texts(texts: list[str]) -> None:
    """The batch's question marker (one C pass per mark) is is_question of each text."""
    from mnemos_kv import _lexical as L
    assert L.questions_many(texts).tolist() == [L.is_question(t) for t in texts]


def test_stem_key_memo_starts_over_when_full(monkeypatch) -> None:
    """The stem memo starts over before it would overflow; a batch larger than it is
    keyed from its own table (the memo keeps none of it). The keys never change."""
    from mnemos_kv import _lexical as L
    from mnemos_kv import _lexical_index as LI
    monkeypatch.setattr(LI, "KEY_MEMO_MAX", 8)
    words = ["painting", "42", "w7", "calmly", "the", "x" * 300, "café", "é"] * 2 + ["1" * 70]
    ref = [LI._key_bytes(L.field_stem(w), b"").decode() for w in words]
    LI._STEM_KEYS.cache_clear()
    assert LI.stem_keys(words[:8]) == ref[:8] and len(LI._STEM_KEYS) == 8
    assert LI.stem_keys(words[:3]) == ref[:3] and len(LI._STEM_KEYS) == 8  # (hits)
    assert LI.stem_keys(["yoga", "42"]) == ["yoga", "42"] and len(LI._STEM_KEYS) == 1
    assert LI.stem_keys(words) == ref and len(LI._STEM_KEYS) == 0  # (9 distinct > 8)
    LI._STEM_KEYS.cache_clear()
