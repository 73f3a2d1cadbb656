"""Batch ingest: the vectorised hashing embedder and vector checks give the same bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mnemos_kv import InvalidInputError, Mnemos
from mnemos_kv import _hashing
from mnemos_kv.embedders import check_vectors

TEXTS = ["We chose Stripe for payments", "", "the and of", "Café naïve résumé — 東京 2024!",
         "Bob's API isn't rate-limited; it's fine", "a b c d e f", "x" * 300,
         "Hello hello HELLO world world", "run running runner ran"]

#: sha256 of hash_embed(TEXTS, dim) as computed by the per-text implementation of v0.1
GOLDEN = {
    512: "dd8c8585c0e3133efd54b354926655d0c48b14dc66ab177de30b5aa8268c10fd",
    384: "f5847a954e34dc7235bc37493e83f65815239f25c7f19236c45b3fc3fe49fa47",
    64: "5814cbc55c0f7f9ccd141b52ef3dc02392309b47a192b89675c50a4add480a2a",
}


def test_hash_embed_bytes_unchanged_from_v0_1() -> None:
    for dim, digest in GOLDEN.items():
        assert hashlib.sha256(_hashing.hash_embed(TEXTS, dim).tobytes()).hexdigest() == digest


def _per_text_reference(text: str, dim: int) -> np.ndarray:
    """The v0.1 algorithm for one text: dict accumulation, then damping and norm."""
    keys, vals = _hashing._text_features(text, dim)
    row = np.zeros(dim, np.float64)
    row[np.asarray(keys, np.int64)] = vals
    row = np.sign(row) * np.log1p(np.abs(row))
    norm = np.linalg.norm(row)
    if norm > 0:
        row /= norm
    return row.astype(np.float32)


def test_batch_equals_one_text_at_a_time() -> None:
    rng = np.random.default_rng(4)
    vocab = ["memory", "agent", "payments", "Berlin", "the", "deploy", "naïve", "API", "run",
             "running", "x", "42", "東京", "don't", "we're"]
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(0, 30)))) for _ in range(300)]
    batch = _hashing.hash_embed(texts, 256)
    for i, t in enumerate(texts):
        assert batch[i].tobytes() == _per_text_reference(t, 256).tobytes()
        assert batch[i].tobytes() == _hashing.hash_embed([t], 256)[0].tobytes()


def test_batch_vector_check_equals_single(tmp_path) -> None:
    rng = np.random.default_rng(8)
    vecs = rng.standard_normal((400, 48)).astype(np.float32) * 5
    batch = check_vectors(vecs, 400, 48)
    for i in range(400):
        assert batch[i].tobytes() == check_vectors(vecs[i], 1, 48)[0].tobytes()

    class Given:
        name, dim = "given", 48

        def embed(self, texts):
            raise AssertionError("vectors are given")
    with Mnemos.open(str(tmp_path / "a.mem"), embedder=Given()) as db:
        ids = db.remember_many([{"text": f"t{i}", "vector": vecs[i]} for i in range(200)])
        one = db.remember("single", vector=vecs[200])
        for i in (0, 57, 199):
            assert db.get_vector(ids[i]).tobytes() == batch[i].tobytes()
        assert db.get_vector(one).tobytes() == batch[200].tobytes()
        # a bad vector is reported by its item number, nothing written
        bad = [{"text": "ok", "vector": vecs[0]}, {"text": "bad", "vector": [1.0] * 47}]
        with pytest.raises(InvalidInputError, match="item 1 vector"):
            db.remember_many(bad)
        assert db.count() == 201
