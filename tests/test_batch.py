"""db.batch(): many writes in one transaction; ids assigned at commit."""

from __future__ import annotations

import numpy as np
import pytest

from mnemos_kv import (DuplicateKeyError, InvalidInputError, MemoryNotFoundError, Mnemos,
                       PendingId, ReadOnlyError)


from conftest import verified

# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


def test_batch_commits_once_at_exit(db: Mnemos, monkeypatch) -> None:
    writes = []
    real = db._engine.write
    monkeypatch.setattr(db._engine, "write", lambda reqs, **kw: (writes.append(len(reqs)), real(reqs, **kw))[1])
    with db.batch() as b:
        a = b.remember("We chose Stripe for payments", metadata={"topic": "billing"})
        c = b.remember("Invoices go out on the first of the month")
        more = b.remember_many(["one", {"text": "two", "type": "semantic"}])
        b.connect(a, c, relation="about")
        assert not a.committed and len(b) == 5
        with pytest.raises(InvalidInputError, match="has not committed yet"):
            a.id
        assert db.count() == 0  # nothing visible before the end of the block
    assert writes == [5]
    assert [a.id, c.id] + [m.id for m in more] == [1, 2, 3, 4] == b.ids
    assert int(a) == 1 and a == 1 and repr(a) == "PendingId(1)"
    assert db.get(a.id).metadata == {"topic": "billing"}
    assert db.get(more[1].id).type == "semantic"
    assert [(e.src, e.dst, e.relation) for e in db.neighbors(a.id)] == [(1, 2, "about")]
    assert [h.id for h in db.ask("payment provider", top_k=1)] == [a.id]


def test_batch_equals_the_same_calls_one_by_one(opener) -> None:
    one, two = opener("one.mem"), opener("two.mem")
    ids1 = [one.remember(f"memory {i}") for i in range(5)]
    one.connect(ids1[0], ids1[1])
    one.forget(ids1[2])
    with two.batch() as b:
        p = [b.remember(f"memory {i}") for i in range(5)]
        b.connect(p[0], p[1])
        b.forget(p[2])
    assert b.ids == ids1
    for mid in ids1:
        assert (mid in one) == (mid in two)
        if mid in one:
            assert one.get(mid) == two.get(mid)
            assert np.array_equal(one.get_vector(mid), two.get_vector(mid))
    assert one.neighbors(ids1[0]) == two.neighbors(ids1[0])
    assert one.stats()["seq"] == two.stats()["seq"]


def test_error_in_block_writes_nothing(db: Mnemos) -> None:
    db.remember("before")
    with pytest.raises(RuntimeError):
        with db.batch() as b:
            pend = b.remember("never")
            raise RuntimeError("agent crashed mid-batch")
    assert db.count() == 1
    with pytest.raises(InvalidInputError, match="discarded"):
        pend.id
    with pytest.raises(InvalidInputError, match="discarded"):
        b.remember("too late")


def test_error_at_commit_writes_nothing(db: Mnemos) -> None:
    db.remember("taken", key="k")
    before = db.stats()["seq"]
    with pytest.raises(DuplicateKeyError):
        with db.batch() as b:
            b.remember("fine")
            b.remember("clash", key="k")
    with pytest.raises(MemoryNotFoundError):
        with db.batch() as b2:
            b2.remember("fine")
            b2.forget(999)
    assert db.stats()["seq"] == before and db.count() == 1
    assert "failed" in repr(b2)


def test_bad_input_raises_at_the_call_and_is_not_queued(db: Mnemos) -> None:
    with db.batch() as b:
        with pytest.raises(InvalidInputError):
            b.remember("")
        with pytest.raises(InvalidInputError):
            b.remember("x", vector=[float("nan")] * 512)
        with pytest.raises(InvalidInputError):
            b.connect(1, 1)
        with pytest.raises(InvalidInputError, match="relation"):
            b.connect(1, 2, relation=" spaced ")
        with pytest.raises(InvalidInputError, match="positive int"):
            b.forget("seven")
        b.remember("keyed", key="a")
        with pytest.raises(InvalidInputError, match="twice"):
            b.remember("keyed again", key="a")
        ok = b.remember("ok")
    assert len(b) == 2 and db.count() == 2 and ok.id == 2


def test_pending_id_of_another_open_batch_is_rejected(db: Mnemos) -> None:
    b1, b2 = db.batch(), db.batch()
    p = b1.remember("first")
    with pytest.raises(InvalidInputError, match="another batch"):
        b2.forget(p)
    b1.commit()
    b2.remember("second")
    b2.forget(p)  # committed now: its id is used
    b2.commit()
    assert p.id not in db and db.count() == 1


def test_batch_spans_namespaces_from_the_root(db: Mnemos) -> None:
    with db.batch() as b:
        a = b.namespace("planner").remember("Draft the outline first")
        s = b.namespace("shared").remember("The report is due Friday")
    assert db.namespace("planner").get(a.id).namespace == "planner"
    assert db.namespace("shared").get(s.id).text == "The report is due Friday"
    ns = db.namespace("planner")
    with ns.batch() as nb:
        nb.remember("planner only")
        nb.namespace("planner")
        with pytest.raises(InvalidInputError, match="cannot write namespace 'shared'"):
            nb.namespace("shared")
    assert ns.count() == 2


def test_connect_across_namespaces_in_a_batch_fails_whole(db: Mnemos) -> None:
    with pytest.raises(MemoryNotFoundError):
        with db.batch() as b:
            a = b.namespace("x").remember("in x")
            y = b.namespace("y").remember("in y")
            b.namespace("x").connect(a, y)
    assert db.namespaces() == ["default"]  # namespaces made in the failed batch are gone too
    with db.batch() as b:
        b.namespace("x").remember("x again")
    assert db.namespace("x").count() == 1


def test_read_only_store_has_no_batch(store_path: str) -> None:
    Mnemos.open(store_path).close()
    with Mnemos.open(store_path, readonly=True) as ro:
        with pytest.raises(ReadOnlyError):
            ro.batch()


def test_empty_batch_writes_nothing(db: Mnemos) -> None:
    seq = db.stats()["seq"]
    with db.batch() as b:
        pass
    assert b.ids == [] and db.stats()["seq"] == seq


def test_large_batch_is_one_transaction(db: Mnemos) -> None:
    with db.batch() as b:
        pend = b.remember_many([f"bulk memory {i}" for i in range(3000)])
        for i in range(0, 3000, 2):
            b.connect(pend[i], pend[i + 1])
    assert b.ids == list(range(1, 3001))
    assert isinstance(pend[0], PendingId)
    assert db.count() == 3000 and verified(db)
    assert len(db.neighbors(pend[10].id)) == 1
