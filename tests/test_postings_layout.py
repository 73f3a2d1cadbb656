"""12-byte BM25 postings (lexical index version 4): the same answers as the 16-byte
postings of versions 1-3, which a read-only open still reads and a read-write open
rebuilds; bulk and single adds and removes agree."""

from __future__ import annotations

import numpy as np
import pytest

from mnemos_kv import Mnemos, StoreError
from mnemos_kv import _lexical_index as L

TEXTS = [f"note {i}: the deploy of service {i % 7} moved to Thursday after review {i % 3}"
         for i in range(80)] + ["Alice: did the review happen?", "Bob: yes, on Thursday"]


def _table(db: Mnemos) -> list[tuple[bytes, bytes]]:
    env = db._engine.env
    with env.read() as txn, txn.cursor(db=env.db("postings")) as cur:
        return list(cur.iternext())


def _answers(db: Mnemos) -> list[list[tuple[int, float]]]:
    qs = ["deploy service 3", "Thursday review", "note 17", "Alice review"]
    return [[(m.id, round(m.score, 6)) for m in db.ask(q, top_k=8)] for q in qs]


def _to_v3(db: Mnemos) -> None:
    """Rewrite the postings as versions 1-3 stored them (16 bytes, version 3)."""
    env = db._engine.env
    old = _table(db)

    def body(txn) -> None:
        pdb = env.db("postings")
        txn.drop(pdb, delete=False)
        for k, v in old:
            p = L.decode_postings(np.frombuffer(v, np.uint8).reshape(1, -1), len(v))[0]
            txn.put(k, int(p["id"]).to_bytes(8, "big") + int(p["tf"]).to_bytes(4, "big")
                    + int(p["dl"]).to_bytes(4, "big"), db=pdb, dupdata=True)
        txn.put(b"version", (3).to_bytes(4, "big"), db=env.db("lexstats"))
    env.write(body)


def test_postings_are_12_bytes_and_round_trip(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many(TEXTS[:60])            # the bulk path
        for t in TEXTS[60:]:
            db.remember(t)                      # one by one (staged until the flush)
        db.sync()                               # (merges the staged postings)
        rows = _table(db)
        assert rows and all(len(v) == L.POSTING_BYTES == 12 for _k, v in rows)
        with db._engine.env.read() as txn, txn.cursor(db=db._engine.env.db("postings")) as cur:
            p = L.fetch(cur, 0, b"deploi")
            assert L.fetch(cur, 0, b"no-such-term").size == 0
        assert p["id"].tolist() == list(range(1, 81)) and set(p["tf"].tolist()) == {1}
        assert p["dl"].min() > 5


def test_a_version_3_store_reads_then_reindexes(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many(TEXTS)
        db.forget(5)
        want = _answers(db)
        _to_v3(db)
        assert all(len(v) == 16 for _k, v in _table(db))
    with Mnemos.open(store_path, readonly=True) as db:  # read as it is
        assert all(len(v) == 16 for _k, v in _table(db))
        assert _answers(db) == want
    with Mnemos.open(store_path) as db:  # rebuilt in the current layout
        assert all(len(v) == 12 for _k, v in _table(db))
        assert _answers(db) == want
        db.forget_many(list(range(10, 80)))  # bulk removal of 12-byte postings
        db.forget(81)
        after, table = _answers(db), _table(db)
    with Mnemos.open(store_path + "-copy") as fresh:  # the same state, built directly
        fresh.remember_many(TEXTS)
        fresh.forget(5)
        fresh.forget_many(list(range(10, 80)))
        fresh.forget(81)
        assert _answers(fresh) == after
        assert _table(fresh) == table


def test_posting_range_is_checked() -> None:
    assert L.posting(2**48 - 1, 2**24 - 1, 2**24 - 1) == b"\xff" * 12
    for bad in ((2**48, 1, 1), (1, 2**24, 1), (1, 1, -1)):
        with pytest.raises(StoreError):
            L.posting(*bad)
    with pytest.raises(StoreError):
        L.encode_postings(np.array([2**48]), np.array([1]), np.array([1]))
    ids, tf, dl = np.array([1, 2**40 + 3]), np.array([2, 70000]), np.array([9, 2**24 - 1])
    enc = L.encode_postings(ids, tf, dl)
    dec = L.decode_postings(np.frombuffer(enc, np.uint8).reshape(2, 12), 12)
    assert dec["id"].tolist() == ids.tolist() and dec["tf"].tolist() == tf.tolist()
    assert dec["dl"].tolist() == dl.tolist()
    assert enc[:12] == L.posting(1, 2, 9) and enc[12:] == L.posting(2**40 + 3, 70000, 2**24 - 1)
