"""MnemosVectorStore: LangChain's standard VectorStore suite (both ranking modes, sync
and async) and the parts the suite does not cover (filters, MMR, persistence, errors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra is not installed "
                    '(pip install "mnemos-kv[langchain]")')
lc_tests = pytest.importorskip("langchain_tests.integration_tests",
                               reason="langchain-tests is not installed (the adapters-test extra)")
pytest.importorskip("pytest_asyncio", reason="pytest-asyncio runs the suite's async tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402

from mnemos_kv import EmbedderMismatchError, InvalidInputError, Mnemos  # noqa: E402
from mnemos_kv.langchain import MnemosVectorStore  # noqa: E402

from conftest import Clock  # noqa: E402

VectorStoreIntegrationTests = lc_tests.VectorStoreIntegrationTests


class TestStandardHybrid(VectorStoreIntegrationTests):
    """langchain-tests' VectorStoreIntegrationTests, hybrid ranking."""

    mode = "hybrid"

    @pytest.fixture()
    def vectorstore(self, tmp_path) -> Iterator[MnemosVectorStore]:  # type: ignore[override]
        vs = MnemosVectorStore(str(tmp_path / "lc.mem"), self.get_embeddings(), mode=self.mode,
                               clock=Clock())
        try:
            yield vs
        finally:
            vs.close()


class TestStandardVector(TestStandardHybrid):
    """The same suite with pure cosine ranking."""

    mode = "vector"


# ------------------------------------------------------------------------------ beyond the suite

EMB = DeterministicFakeEmbedding(size=16)


def _ids(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


@pytest.fixture(params=["hybrid", "vector"])
def vs(request, tmp_path) -> Iterator[MnemosVectorStore]:
    store = MnemosVectorStore(str(tmp_path / "vs.mem"), EMB, mode=request.param, clock=Clock())
    try:
        yield store
    finally:
        store.close()


def _fill(vs: MnemosVectorStore) -> None:
    vs.add_texts(["apples are red", "bananas are yellow", "cherries are red",
                  "grapes are green", "lemons are yellow"],
                 [{"fruit": "apple", "n": 1, "tags": {"color": "red"}},
                  {"fruit": "banana", "n": 2, "tags": {"color": "yellow"}},
                  {"fruit": "cherry", "n": 3, "tags": {"color": "red"}},
                  {"fruit": "grape", "n": 4, "tags": {"color": "green"}},
                  {"fruit": "lemon", "n": 5}],
                 ids=["a", "b", "c", "g", "l"])


def test_metadata_filters(vs: MnemosVectorStore) -> None:
    _fill(vs)
    assert sorted(_ids(vs.similarity_search("fruit", k=10, filter={"n": {"$gte": 3}}))) == ["c", "g", "l"]
    assert sorted(_ids(vs.similarity_search("fruit", k=10, filter={"tags.color": "red"}))) == ["a", "c"]
    assert sorted(_ids(vs.similarity_search(
        "fruit", k=10, filter={"$or": [{"fruit": "apple"}, {"n": {"$in": [4, 5]}}]}))) == ["a", "g", "l"]
    assert sorted(_ids(vs.similarity_search("fruit", k=10, filter={"tags": {"$exists": False}}))) == ["l"]
    assert vs.similarity_search("fruit", k=10, filter={"fruit": "kiwi"}) == []
    # the filter applies inside the ranking: k results even when the best ones do not match
    for doc_id, fruit in (("l", "lemon"), ("g", "grape"), ("a", "apple")):
        assert _ids(vs.similarity_search("apples are red", k=1, filter={"fruit": fruit})) == [doc_id]
    with pytest.raises(InvalidInputError):
        vs.similarity_search("fruit", filter={"n": {"$regex": "x"}})


def test_vector_mode_scores_are_cosine(tmp_path) -> None:
    import numpy as np
    with MnemosVectorStore(str(tmp_path / "v.mem"), EMB, mode="vector", clock=Clock()) as vs:
        _fill(vs)
        q = np.asarray(EMB.embed_query("red fruit"))
        got = vs.similarity_search_with_score("red fruit", k=5)
        assert len(got) == 5
        for doc, score in got:
            v = np.asarray(EMB.embed_documents([doc.page_content])[0])
            assert score == pytest.approx(float(q @ v / np.linalg.norm(q) / np.linalg.norm(v)), abs=1e-5)
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)
        rel = vs.similarity_search_with_relevance_scores("red fruit", k=5)
        assert all(0.0 <= r <= 1.0 for _, r in rel)
        # by vector: the stored vector of a document finds that document first
        top = vs.similarity_search_by_vector(EMB.embed_documents(["grapes are green"])[0], k=1)
        assert _ids(top) == ["g"]


class _ConstantEmbedding(Embeddings):
    """Every text gets the same vector: only the words can tell texts apart."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0, 0.0, 0.0]


def test_hybrid_ranks_by_words_vector_mode_does_not(tmp_path) -> None:
    with MnemosVectorStore(str(tmp_path / "h.mem"), _ConstantEmbedding(), mode="hybrid",
                           clock=Clock()) as vs:
        _fill(vs)
        assert vs.store.stats()["embedder"] == {"name": "langchain:_ConstantEmbedding", "dim": 4}
        # equal vectors: BM25 decides in hybrid mode
        assert sorted(_ids(vs.similarity_search("yellow", k=2))) == ["b", "l"]
        # pure cosine: every score is 1.0, ties go to the older memory
        got = vs.similarity_search_with_score("yellow", k=2, mode="vector")
        assert [(d.id, round(s, 6)) for d, s in got] == [("a", 1.0), ("b", 1.0)]


def test_mmr_diversifies(vs: MnemosVectorStore) -> None:
    vs.add_texts(["same text", "same text", "other words entirely"], ids=["x1", "x2", "y"])
    docs = vs.max_marginal_relevance_search("same text", k=2, fetch_k=3, lambda_mult=0.1)
    assert len(docs) == 2 and set(_ids(docs)) != {"x1", "x2"}  # the duplicate is not picked twice
    by_vec = vs.max_marginal_relevance_search_by_vector(EMB.embed_query("same text"), k=2,
                                                        fetch_k=3, lambda_mult=0.1)
    assert "y" in _ids(by_vec)
    assert vs.max_marginal_relevance_search("same text", k=2, filter={"nope": 1}) == []


def test_replace_keeps_one_document_and_delete_all(vs: MnemosVectorStore) -> None:
    vs.add_texts(["one", "two"], [{"v": 1}, {"v": 2}], ids=["1", "2"])
    vs.add_texts(["uno"], [{"v": 10}], ids=["1"])
    assert vs.store.namespace("default").count() == 2
    assert vs.get_by_ids(["2", "1", "missing"]) == [
        Document(id="2", page_content="two", metadata={"v": 2}),
        Document(id="1", page_content="uno", metadata={"v": 10})]
    # the same id twice in one call: the last one wins, nothing duplicated
    assert vs.add_texts(["a", "b"], ids=["dup", "dup"]) == ["dup", "dup"]
    assert [d.page_content for d in vs.get_by_ids(["dup"])] == ["b"]
    vs.delete()
    assert vs.similarity_search("one", k=5) == []
    assert vs.store.namespace("default").count() == 0


def test_namespaces_are_separate_and_persistent(tmp_path) -> None:
    path = str(tmp_path / "p.mem")
    with MnemosVectorStore(path, EMB, namespace="alice", clock=Clock()) as a:
        a.add_texts(["alice likes tea"], ids=["t"])
        with MnemosVectorStore(a.store, EMB, namespace="bob") as b:
            b.add_texts(["bob likes coffee"], ids=["t"])
            assert [d.page_content for d in b.similarity_search("likes", k=5)] == ["bob likes coffee"]
        assert [d.page_content for d in a.get_by_ids(["t"])] == ["alice likes tea"]
    # reopened from the path: the recorded embedder matches, the data is there
    with MnemosVectorStore(path, EMB, namespace="alice") as again:
        assert [d.page_content for d in again.similarity_search("tea", k=1)] == ["alice likes tea"]
        assert again.store.stats()["embedder"] == {"name": "langchain:DeterministicFakeEmbedding:16",
                                                    "dim": 16}
    with pytest.raises(EmbedderMismatchError):
        MnemosVectorStore(path, DeterministicFakeEmbedding(size=8))


def test_from_texts_retriever_and_ids(tmp_path) -> None:
    counter = iter(range(100))
    vs = MnemosVectorStore.from_texts(["the deploy runs on Fridays", "lunch is at noon"], EMB,
                                      [{"k": 1}, {"k": 2}], path_or_store=str(tmp_path / "r.mem"),
                                      id_factory=lambda: f"id-{next(counter)}", clock=Clock())
    try:
        assert sorted(d.id for d in vs.get_by_ids(["id-0", "id-1"])) == ["id-0", "id-1"]
        docs = vs.as_retriever(search_kwargs={"k": 1}).invoke("when is the deploy?")
        assert [d.id for d in docs] == ["id-0"]
        mmr = vs.as_retriever(search_type="mmr", search_kwargs={"k": 1, "fetch_k": 2})
        assert len(mmr.invoke("deploy")) == 1
    finally:
        vs.close()
    with pytest.raises(InvalidInputError):
        MnemosVectorStore.from_texts(["x"], EMB)


def test_bad_input_is_rejected_before_writing(vs: MnemosVectorStore) -> None:
    with pytest.raises(InvalidInputError):
        vs.add_texts(["a", "b"], [{"x": 1}])
    with pytest.raises(InvalidInputError):
        vs.add_texts(["a"], ids=[""])
    with pytest.raises(InvalidInputError):
        vs.add_texts(["ok", ""], ids=["1", "2"])  # empty text: nothing written
    with pytest.raises(InvalidInputError):
        vs.similarity_search("x", k=0)
    with pytest.raises(InvalidInputError):
        MnemosVectorStore(vs.store, EMB, mode="bm25")
    assert vs.store.namespace("default").count() == 0
    assert vs.get_by_ids(["1"]) == []


def test_open_store_dimension_must_match(tmp_path, clock) -> None:
    with Mnemos.open(str(tmp_path / "d.mem"), clock=clock) as db:  # hashing embedder, dim 512
        with pytest.raises(EmbedderMismatchError):
            MnemosVectorStore(db, EMB, dim=16)
        vs = MnemosVectorStore(db, DeterministicFakeEmbedding(size=512), namespace="docs")
        vs.add_texts(["kept in the store's own file"], ids=["k"])
        vs.close()  # not owned: the store stays open
        assert db.namespace("docs").get_by_key("k").text == "kept in the store's own file"


def test_import_mnemos_kv_does_not_import_langchain() -> None:
    code = ("import sys, mnemos_kv; m = mnemos_kv.Mnemos; "
            "bad = [n for n in sys.modules if n.startswith(('langchain', 'langgraph'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=str(Path(__file__).resolve().parents[1]))


def _doc_example(page: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_example_runs(tmp_path) -> None:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _doc_example("langchain.md")], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": root}, check=True,
                         capture_output=True, text=True).stdout
    assert out.splitlines() == [
        "deploys | Deploys run every Friday at 11:00 from the release branch.",
        "hotfix | The on-call engineer approves hotfix deploys outside the Friday window.",
        "['deploys', 'hotfix']"]
