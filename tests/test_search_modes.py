"""ask by vector, by text or both; the hybrid, vector and lexical modes; embed_query."""

from __future__ import annotations

import numpy as np
import pytest

from mnemos_kv import InvalidInputError, Mnemos

from conftest import Clock


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


TEXTS = ["the invoice was paid by card", "we chose Stripe for payments", "lunch was pasta",
         "the card payment failed twice", "book the flight to Lisbon", "invoices go out monthly"]


@pytest.fixture
def filled(db: Mnemos) -> list[int]:
    return db.remember_many([{"text": t, "metadata": {"i": i}} for i, t in enumerate(TEXTS)])


def test_vector_mode_is_pure_cosine_order(db: Mnemos, filled: list[int]) -> None:
    rng = np.random.default_rng(7)
    q = rng.standard_normal(db._engine.dim)
    hits = db.ask(vector=q, mode="vector", top_k=len(TEXTS))
    mat = np.stack([db.get_vector(i) for i in filled])
    cos = mat @ (q / np.linalg.norm(q)).astype(np.float32)
    order = sorted(range(len(filled)), key=lambda j: (-cos[j], filled[j]))
    assert [h.id for h in hits] == [filled[j] for j in order]
    assert [h.score for h in hits] == pytest.approx([float(cos[j]) for j in order], abs=1e-5)
    # a memory's own vector finds it first, with cosine 1
    top = db.ask(vector=db.get_vector(filled[2]), mode="vector", top_k=1)[0]
    assert top.id == filled[2] and top.score == pytest.approx(1.0, abs=1e-5)


def test_vector_mode_with_text_embeds_the_text(db: Mnemos, filled: list[int]) -> None:
    by_text = db.ask("card payment", mode="vector", top_k=3)
    qv = db.embedder.embed(["card payment"])[0]
    by_vec = db.ask(vector=qv, mode="vector", top_k=3)
    assert [m.id for m in by_text] == [m.id for m in by_vec]
    assert [m.score for m in by_text] == pytest.approx([m.score for m in by_vec], abs=1e-5)


def test_vector_mode_filters_and_refuses_ranking_terms(db: Mnemos, filled: list[int]) -> None:
    q = db.get_vector(filled[0])
    assert [m.id for m in db.ask(vector=q, mode="vector", filter={"i": {"$gte": 3}}, top_k=10)] \
        and all(m.metadata["i"] >= 3 for m in db.ask(vector=q, mode="vector",
                                                     filter={"i": {"$gte": 3}}, top_k=10))
    assert {m.type for m in db.ask(vector=q, mode="vector", types=["semantic"])} <= {"semantic"}
    for kw in (dict(use_graph=True), dict(recency_bias="7d"), dict(types={"episodic": 2.0})):
        for mode in ("vector", "lexical"):
            with pytest.raises(InvalidInputError, match="hybrid"):
                db.ask("card", mode=mode, **kw)


def test_lexical_mode_is_bm25_only(db: Mnemos, filled: list[int]) -> None:
    hits = db.ask("invoice", mode="lexical", top_k=10)
    assert {m.id for m in hits} == {filled[0], filled[5]}  # only those with the word (stemmed)
    assert all(m.score > 0 for m in hits)
    assert db.ask("zebra", mode="lexical") == []
    with pytest.raises(InvalidInputError, match="text"):
        db.ask(vector=db.get_vector(filled[0]), mode="lexical")
    exp = db.ask("card payment", mode="lexical", explain=True, top_k=2)
    assert [m.explain["bm25"] for m in exp] == [m.score for m in exp]
    assert exp[0].score >= exp[1].score


def test_hybrid_with_a_vector_and_with_both(db: Mnemos, filled: list[int]) -> None:
    v = db.get_vector(filled[4])
    assert db.ask(vector=v)[0].id == filled[4]
    both = db.ask("invoice", vector=v, top_k=6, explain=True)
    parts = {m.id: m.explain for m in both}
    # the vector scores (its own memory has the best vector part), the text feeds BM25
    assert max(parts, key=lambda i: (parts[i]["vector"], -i)) == filled[4]
    assert parts[filled[4]]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert {i for i in parts if parts[i]["bm25"] > 0} == {filled[0], filled[5]}
    assert db.ask("invoice card")  # text only: unchanged default


@pytest.mark.parametrize("bad, needle", [
    (np.array([1 + 2j] * 512), "complex"),
    (np.array(["1.0"] * 512), "strings"),
    (np.array([1.0] * 512, dtype=object), "objects"),
    (np.array([True] * 512), "bools"),
    ([1.0] * 511, "shape"),
    (np.ones((2, 512)), "shape"),
    ([float("nan")] + [1.0] * 511, "NaN"),
    ([float("inf")] + [1.0] * 511, "NaN or infinity"),
    ([0.0] * 512, "zeros"),
    ("not a vector", "strings"),
])
def test_bad_query_vectors_are_refused(db: Mnemos, filled: list[int], bad, needle) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        db.ask(vector=bad, mode="vector")


def test_query_vector_accepts_ints_rows_and_huge_values(db: Mnemos, filled: list[int]) -> None:
    v = db.get_vector(filled[1])
    ref = [m.id for m in db.ask(vector=v, mode="vector", top_k=3)]
    assert [m.id for m in db.ask(vector=v[None, :].astype(np.float64) * 1e300, mode="vector", top_k=3)] == ref
    assert [m.id for m in db.ask(vector=v.astype(np.float64) * 1e-300, mode="vector", top_k=3)] == ref
    assert db.ask(vector=np.arange(512), mode="vector", top_k=1)


def test_ask_needs_text_or_vector_and_a_known_mode(db: Mnemos, filled: list[int]) -> None:
    with pytest.raises(InvalidInputError, match="text, a vector"):
        db.ask()
    with pytest.raises(InvalidInputError, match="mode"):
        db.ask("x", mode="semantic")
    with pytest.raises(InvalidInputError, match="query"):
        db.ask("   ")


class QueryAware:
    """A toy embedder whose queries are embedded differently from documents."""

    name, dim = "toy-query-aware", 8

    def __init__(self) -> None:
        self.query_calls: list[list[str]] = []

    def embed(self, texts):
        return np.array([[len(t) % 7 + 1.0] + [float(i == len(t) % 7) for i in range(7)]
                         for t in texts], np.float32)

    def embed_query(self, texts):
        self.query_calls.append(list(texts))
        return np.array([[1.0] + [0.0] * 7 for _ in texts], np.float32)


def test_embed_query_is_used_for_queries_only(tmp_path) -> None:
    emb = QueryAware()
    with Mnemos.open(str(tmp_path / "q.mem"), embedder=emb, clock=Clock()) as db:
        db.remember_many(["a", "bb", "ccc"])
        assert emb.query_calls == []  # documents go through embed()
        hits = db.ask("anything at all", mode="vector", top_k=3)
        assert emb.query_calls == [["anything at all"]]
        q = np.array([1.0] + [0.0] * 7, np.float32)
        assert [(m.id, m.score) for m in hits] == \
            [(m.id, m.score) for m in db.ask(vector=q, mode="vector", top_k=3)]
        db.ask(vector=q)  # a caller's vector: nothing embedded
        assert len(emb.query_calls) == 1


def test_sentence_transformer_query_prefix() -> None:
    pytest.importorskip("sentence_transformers")
    from mnemos_kv import SentenceTransformerEmbedder
    emb = SentenceTransformerEmbedder(query_prefix="query: ")
    a = emb.embed_query(["hello"])[0]
    b = emb.embed(["query: hello"])[0]
    assert np.allclose(a, b, atol=1e-5)
