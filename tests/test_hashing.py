"""Tests of the deterministic feature-hashing embedder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mnemos_kv import _hashing

TEXTS = [
    "We chose Stripe for payments",
    "Caroline: I went to a LGBTQ support group yesterday",
    "Café naïve 東京 2023",
    "",
    "the of and !!!",
]

MEMORIES = [
    "We chose Stripe for payments",
    "The office coffee machine is broken again",
    "Alice prefers dark mode in the editor",
    "Deploys happen every Tuesday afternoon",
    "The database backups run nightly at 2am",
    "Bob is allergic to peanuts",
    "Our logo uses a teal and orange palette",
    "The team offsite will be in Lisbon this year",
    "We migrated the CI from Jenkins to GitHub Actions",
    "Remember to rotate the API keys every quarter",
    "The mobile app supports iOS 15 and later",
    "Carol is the on-call engineer this week",
    "The quarterly report is due on Friday",
    "Use UTC for all timestamps in logs",
    "The staging server has 32 GB of RAM",
    "Dave likes his coffee with oat milk",
    "Our support hours are 9 to 5 Central European Time",
    "The frontend is written in TypeScript with React",
    "Customer churn dropped by 3 percent last month",
    "We provide a free tier with 1,000 requests per day",
    "The marketing site is hosted on Netlify",
    "Eve booked the meeting room for Thursday",
    "Password resets expire after 24 hours",
    "Invoices are sent on the first of every month",
    "Pick a provider for email delivery next sprint",
    "She chose the blue dress for the wedding",
]


def test_shape_dtype_and_normalisation() -> None:
    vecs = _hashing.hash_embed(TEXTS, 512)
    assert vecs.shape == (len(TEXTS), 512)
    assert vecs.dtype == np.float32
    norms = np.linalg.norm(vecs, axis=1)
    np.testing.assert_allclose(norms[:3], 1.0, rtol=1e-5)
    assert norms[3] == 0.0 and norms[4] == 0.0  # no features -> zero row
    assert _hashing.hash_embed([], 64).shape == (0, 64)
    assert _hashing.hash_embed(["hello world"]).shape == (1, _hashing.DEFAULT_DIM)


def test_batch_independent() -> None:
    together = _hashing.hash_embed(TEXTS, 256)
    alone = np.stack([_hashing.hash_embed([t], 256)[0] for t in TEXTS])
    assert together.tobytes() == alone.tobytes()


def test_same_bytes_across_processes() -> None:
    code = (
        "import hashlib, sys\n"
        "from mnemos_kv import _hashing\n"
        f"texts = {TEXTS!r}\n"
        "sys.stdout.write(hashlib.sha256(_hashing.hash_embed(texts, 384).tobytes()).hexdigest())\n"
    )
    root = Path(__file__).resolve().parent.parent
    digests = set()
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(root))
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    here = hashlib.sha256(_hashing.hash_embed(TEXTS, 384).tobytes()).hexdigest()
    assert digests == {here}


def test_stripe_ranks_first() -> None:
    docs = _hashing.hash_embed(MEMORIES)
    query = _hashing.hash_embed(["What payment provider did we choose?"])[0]
    scores = docs @ query
    assert MEMORIES[int(np.argmax(scores))] == "We chose Stripe for payments"


def test_similar_texts_score_higher_than_unrelated() -> None:
    a, b, c = _hashing.hash_embed(
        ["my daughter loves painting sunsets", "she painted a sunset", "quarterly tax filing"]
    )
    assert float(a @ b) > float(a @ c)


def test_bad_dim_rejected() -> None:
    import pytest

    with pytest.raises(ValueError):
        _hashing.hash_embed(["x"], 0)


def _reference(texts: list[str], dim: int) -> np.ndarray:
    """One text at a time through ``_text_features`` (the definition of the sums)."""
    out = np.zeros((len(texts), dim), np.float64)
    for r, t in enumerate(texts):
        keys, vals = _hashing._text_features(t, dim)
        for k, v in zip(keys, vals):
            out[r, k] = v
    out = np.sign(out) * np.log1p(np.abs(out))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def test_batch_pass_equals_text_by_text() -> None:
    """The vectorised batch (one tokeniser pass, gathered features) gives the bytes of
    the per-text sums, also for texts holding the batch separator word."""
    from mnemos_kv._batchwords import SEPARATOR
    rng = np.random.default_rng(11)
    vocab = MEMORIES + TEXTS + ["paint paint paint", "don't she's", SEPARATOR, "x" * 40,
                                "e\u0301 ß ﬁne Ⅻ", "12 34 56"]
    batches = [TEXTS, MEMORIES, [], [""], [SEPARATOR + " a b"]]
    for _ in range(40):
        batches.append([" ".join(vocab[j] for j in rng.integers(0, len(vocab), int(rng.integers(0, 4))))
                        for _ in range(int(rng.integers(1, 8)))])
    for texts in batches:
        for dim in (64, 384):
            ref = _reference(texts, dim).tobytes()
            assert _hashing.hash_embed(texts, dim).tobytes() == ref
            # both paths, whatever the batch size (hash_embed takes one by size)
            assert _hashing._embed_batch(texts, dim).tobytes() == ref
            assert _hashing._embed_each(texts, dim).tobytes() == ref


def _generated_texts(n: int, seed: int) -> list[str]:
    """Texts of many distinct words (numbers, long words, accents, CJK, clitics), as
    an ingest of real notes meets them: most words are new to the embedder's memos."""
    rng = np.random.default_rng(seed)
    alpha = list("abcdefghijklmnopqrstuvwxyz0123456789   ") + ["é", "ß", "東", "'", "?", ":",
                                                             "-", "_", "ﬁ", "n't", "'s", "`"]
    return ["".join(rng.choice(alpha, size=int(rng.integers(1, 120)))) for _ in range(n)]


#: sha256 of hash_embed(_generated_texts(3000, 7), dim), in batches of 1000, as the
#: per-text implementation (v0.1) computes it
GENERATED_GOLDEN = {
    512: "bb150ee1a52e232cccfac99fe614f0c2463045262b11b25f12e4232dfdff426f",
    100: "977f1ca41689bf2c9a3068d3fa49cf99dcdb3537bfcbfca6089c42e21b8d34be",
}


def test_batch_embedding_of_new_words_keeps_the_bytes(monkeypatch) -> None:
    """The word table (each word's features summed once, many words at a time) gives
    the per-text bytes: on texts of mostly unseen words, with the table starting over
    in the middle of a batch, and against digests pinned from the v0.1 code."""
    import hashlib
    texts = _generated_texts(3000, 7)
    for dim, golden in GENERATED_GOLDEN.items():
        _hashing._TABLES.clear()
        h = hashlib.sha256()
        for lo in range(0, len(texts), 1000):
            got = _hashing.hash_embed(texts[lo:lo + 1000], dim).tobytes()
            assert got == _reference(texts[lo:lo + 1000], dim).tobytes()
            h.update(got)
        assert h.hexdigest() == golden
    monkeypatch.setattr(_hashing, "MEMO_MAX", 500)  # tables and memos start over often
    _hashing._TABLES.clear()
    for lo in range(0, 1200, 300):
        assert _hashing._embed_batch(texts[lo:lo + 300], 64).tobytes() == \
            _reference(texts[lo:lo + 300], 64).tobytes()


def test_word_runs_are_the_word_features_sums_exactly() -> None:
    """Each word's float64 sums from the vectorised pass are :func:`_word_features`'
    bit for bit (a different order or grouping of the products shows here even when
    the float32 output hides it)."""
    from mnemos_kv import _lexical
    from mnemos_kv._batchwords import batch_words
    words = list(dict.fromkeys(batch_words(_generated_texts(800, 3))[0]))
    words = [w for w in words if _lexical.index_term(w)]
    terms = [_lexical.index_term(w) for w in words]
    for dim in (512, 64):
        keys, vals, lens = _hashing._word_runs(words, terms, dim)
        ref = [_hashing._word_features(w, t, dim) for w, t in zip(words, terms)]
        assert lens.tolist() == [len(k) for k, _ in ref]
        assert keys.tolist() == [k for ks, _ in ref for k in ks]
        assert vals.tobytes() == np.asarray([v for _, vs in ref for v in vs], np.float64).tobytes()


def test_a_forked_child_embeds_while_a_parent_thread_holds_a_word_table() -> None:
    """The word tables start afresh in a forked child: a lock a parent's thread held at
    the fork would otherwise never be released there."""
    import os
    import pytest
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 3)]  # more than SMALL_BATCH
    table = _hashing._table(64)
    with table.lock:
        pid = os.fork()
        if pid == 0:  # the child: fail (not hang) if the embedder waits for the lock
            import signal
            signal.alarm(20)
            try:
                ok = _hashing.hash_embed(texts, 64).tobytes() == _reference(texts, 64).tobytes()
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_crc_memo_of_many_features(monkeypatch) -> None:
    """A batch's n-gram/bigram CRC-32s (memo hits in C, unseen ones computed together)
    are zlib.crc32 of prefix + feature; the memo starts over when it would overflow
    and keeps nothing from a batch larger than it."""
    import zlib
    memo = _hashing._Crc32Memo("b|")
    feats = ["a b", "é x", "a b", "", "日本 語", "x" * 300] + [f"w{i} v" for i in range(40)]
    ref = [zlib.crc32(("b|" + f).encode("utf-8")) for f in feats]
    for _ in range(2):  # unseen, then from the memo
        assert memo.many(feats).tolist() == ref
        assert memo.many([]).tolist() == []
    monkeypatch.setattr(_hashing, "MEMO_MAX", 10)
    assert memo.many(feats).tolist() == ref and len(memo) <= 46
    memo.clear()
    assert memo.many(feats).tolist() == ref and len(memo) == 0  # (43 distinct > 10)
    assert memo.many(feats[:8]).tolist() == ref[:8] and len(memo) == 7


def test_crc32_passes_are_zlibs() -> None:
    """The numpy CRC-32 passes give ``zlib.crc32`` of prefix + span: fixed-length spans,
    spans of every length (empty, and longer than ``_crc32.LONG``: zlib's own path),
    UTF-8 strings, and a span continued from per-span registers (bigram names)."""
    import zlib
    from mnemos_kv import _crc32
    rng = np.random.default_rng(5)
    buf = rng.integers(0, 256, 4000).astype(np.uint8)
    starts = rng.integers(0, 3800, 600)
    for n in (0, 1, 3, 4, 9):
        got = _crc32.crc32_fixed(_crc32.register(b"c|"), buf, starts, n)
        assert got.tolist() == [zlib.crc32(b"c|" + buf[s:s + n].tobytes()) for s in starts]
    lens = rng.integers(0, 2 * _crc32.LONG + 10, 600)
    got = _crc32.crc32_spans(_crc32.register(b"w|"), buf, starts, lens)
    assert got.tolist() == [zlib.crc32(b"w|" + buf[s:s + n].tobytes())
                            for s, n in zip(starts, lens)]
    strings = ["", "a", "é", "東京", "x" * 200, "ß" * 70, "don't", " "] + [
        "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(rng.integers(0, 90))))
        for _ in range(200)]
    ubuf, ustart, ulen = _crc32.utf8_spans(strings, b" ")
    got = _crc32.crc32_spans(_crc32.register(b"w|"), ubuf, ustart, ulen)
    assert got.tolist() == [zlib.crc32(("w|" + s).encode("utf-8")) for s in strings]
    after = _crc32.crc32_spans(_crc32.register(b"b|"), ubuf, ustart, ulen + 1, final=False)
    left = rng.integers(0, len(strings), 500)
    right = rng.integers(0, len(strings), 500)
    got = _crc32.crc32_spans(after[left], ubuf, ustart[right], ulen[right])
    assert got.tolist() == [zlib.crc32(("b|" + strings[a] + " " + strings[b]).encode("utf-8"))
                            for a, b in zip(left, right)]


ADVERSARIAL = [
    "", " ", "!!! ... ???", "-- :: ;;", "the of and", "12 007 3.14 1,000 #42",
    "x" * 70 + " " + "y" * 200 + " tail", "é" * 40 + " " + "東" * 80 + " word",
    "Café naïve 東京 déjà-vu ß straße ﬁne Ⅻ e\u0301", "don't she's it's we'll o'clock `tis",
    "a b c d e f g h", "ab" * 40, "mixed ascii and ünïcödé words in one text 2023",
    "\u200b\u00a0zero\u200bwidth", "emoji 🎉 party 🎉🎉", "TAB\tNEW\nLINE\r\nend",
    "Caroline: I went to a LGBTQ support group yesterday #17",
]


def _clear_embedder_memos() -> None:
    from mnemos_kv import _batchwords
    for memo in (_hashing._TABLES, _hashing._TERMS, _hashing._GRAM_CRC):
        memo.clear()
    _batchwords._last = None


def test_batch_of_adversarial_texts_equals_text_by_text() -> None:
    """Unicode, empty, punctuation-only, very long words (past the CRC passes' LONG),
    numbers, mixed ASCII and other words in one batch: the batch path's bytes are the
    per-text sums', with every word unseen (the vectorised n-gram, word and bigram
    hashes) and again from the memos."""
    rng = np.random.default_rng(23)
    batches = [ADVERSARIAL, ADVERSARIAL[::-1]]
    for _ in range(20):
        batches.append([" ".join(ADVERSARIAL[j] for j in rng.integers(0, len(ADVERSARIAL), 3))
                        for _ in range(int(rng.integers(5, 30)))])
    for dim in (512, 64):
        _clear_embedder_memos()
        for _ in range(2):  # unseen words, then the memos' entries
            for texts in batches:
                assert _hashing._embed_batch(texts, dim).tobytes() == \
                    _reference(texts, dim).tobytes()


def test_locomo_turns_batch_equals_text_by_text() -> None:
    """LoCoMo conversation turns (what bench/ingest_bench.py ingests): the batch path's
    bytes are the per-text sums', from cold memos."""
    import json
    import pytest
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "locomo_dev.json"
    if not path.exists():
        path = Path("/work/shared/data/locomo/locomo_dev.json")
    if not path.exists():
        pytest.skip("LoCoMo data not present")
    data = json.loads(path.read_text())
    turns = [f"{t['speaker']}: {t['text']}" for conv in data
             for k, sess in sorted(conv["conversation"].items())
             if k.startswith("session_") and isinstance(sess, list) for t in sess if t.get("text")]
    texts = [f"{t} #{i}" for i, t in enumerate(turns[:3000])]
    _clear_embedder_memos()
    for lo in range(0, len(texts), 1000):
        chunk = texts[lo:lo + 1000]
        assert _hashing.hash_embed(chunk, 512).tobytes() == _reference(chunk, 512).tobytes()
