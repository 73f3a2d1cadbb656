"""The read path's memo (``_rawmemo``): decoded posting lists and answer records are
kept by the stored bytes they were decoded from, so no write, snapshot, process,
namespace or compaction can make ``ask`` return a record or posting that is not the
one in the reader's own snapshot, and a caller changing what it got changes nothing
that a later ``ask`` returns."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from mnemos_kv import Mnemos, _lexical_index, _rawmemo, _retrieval
from mnemos_kv import _engine as E
from mnemos_kv.embedders import embed_query_checked

from conftest import Clock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mp_workers import result, spawn  # noqa: E402

FILLER = ["we walked to the harbour at noon", "the bakery sells rye bread",
          "my sister plays the cello", "a storm closed the mountain road",
          "the library opens at nine", "he painted the fence green"]


KITE2 = "a kite festival on the beach"


def _lexical(ns, query: str) -> list[str]:
    return [m.text for m in ns.ask(query, mode="lexical")]


@pytest.fixture(autouse=True)
def _fresh_memos():
    """Each test starts with empty memos (what it asks twice is a memo hit)."""
    E._RECORDS.clear()
    _lexical_index._DECODED.clear()
    yield


def _store(tmp_path, name: str = "m.mem") -> Mnemos:
    return Mnemos.open(str(tmp_path / name), clock=Clock())


def _answers(ns, query: str, **kw) -> list[tuple[int, str, dict, str]]:
    return [(m.id, m.text, m.metadata, m.namespace) for m in ns.ask(query, top_k=10, **kw)]


def _kite_store(tmp_path):
    db = _store(tmp_path)
    ns = db.namespace("n")
    mid = ns.remember("the red kite flies over the hill", {"v": 1, "tags": ["bird"]})
    ns.remember_many(FILLER)
    ns.remember(KITE2)  # (so the term "kite" keeps a posting list when the first leaves it)
    db.sync()  # (the staged postings of these small writes merged into the table)
    return db, ns, mid


def test_the_memo_is_used(tmp_path) -> None:
    """(So the tests below exercise it: the answers' records and the query's posting
    lists are kept, on every py-lmdb the suite runs on.)"""
    db, ns, mid = _kite_store(tmp_path)
    with db:
        assert _answers(ns, "red kite")[0][0] == mid
        assert len(E._RECORDS) > 0 and len(_lexical_index._DECODED) > 0
        for arr, _size in list(_lexical_index._DECODED._items.values()):
            assert not arr.flags.writeable  # shared: nobody may change it in place


def test_update_then_ask_in_the_same_process(tmp_path) -> None:
    db, ns, mid = _kite_store(tmp_path)
    with db:
        assert _answers(ns, "red kite")[0][:3] == (mid, "the red kite flies over the hill",
                                                   {"v": 1, "tags": ["bird"]})
        _answers(ns, "red kite")  # (now every part of that answer is kept)
        ns.update(mid, text="the grey heron wades in the reeds", metadata={"v": 2})
        top = _answers(ns, "grey heron")[0]
        assert top[:3] == (mid, "the grey heron wades in the reeds", {"v": 2})
        # the postings the old text had are gone from the term's list
        assert _lexical(ns, "kite") == [KITE2]
        assert [m.id for m in ns.ask("heron", mode="lexical")] == [mid]
        # metadata alone
        ns.update(mid, metadata={"v": 3})
        assert _answers(ns, "grey heron")[0][2] == {"v": 3}


def _plan(db: Mnemos, snap, nid: int, text: str) -> _retrieval.Query:
    eng = db._engine
    return _retrieval.Query(text=text, vector=embed_query_checked(eng.embedder, text),
                            ns_ids=(nid,), top_k=5,
                            vector_weight=_retrieval.vector_weight_for(eng.embedder,
                                                                       eng.embedder_name))


@pytest.mark.parametrize("old_first", [False, True])
def test_a_reader_in_an_older_snapshot_keeps_its_versions(tmp_path, old_first: bool) -> None:
    """A snapshot taken before an update reads the old record and postings, whichever
    version was decoded (and kept) first."""
    db, ns, mid = _kite_store(tmp_path)
    with db:
        eng = db._engine
        nid = eng.ns_id("n")
        with eng.snapshot() as old:
            if old_first:
                hits = old.search(_plan(db, old, nid, "red kite"), None)
                assert hits[0][1].text == "the red kite flies over the hill"
            ns.update(mid, text="the grey heron wades in the reeds", metadata={"v": 2})
            assert _answers(ns, "grey heron")[0][:3] == (mid, "the grey heron wades in the reeds",
                                                         {"v": 2})
            assert _lexical(ns, "kite") == [KITE2]
            # the old snapshot: the old text, metadata and postings
            rec = eng.record(old.txn, mid, memo=True)
            assert (rec.text, rec.metadata) == ("the red kite flies over the hill",
                                                {"v": 1, "tags": ["bird"]})
            hits = old.search(_plan(db, old, nid, "red kite"), None)
            assert hits[0][1].id == mid and hits[0][1].text == "the red kite flies over the hill"
            ids, _ = old.bm25_postings((nid,), [b"kite"])
            assert ids.tolist() == [mid, mid + 7]
        with eng.snapshot() as new:
            ids, _ = new.bm25_postings((nid,), [b"kite"])
            assert ids.tolist() == [mid + 7]
            assert eng.record(new.txn, mid, memo=True).text == "the grey heron wades in the reeds"


def test_another_processs_update_is_seen(tmp_path) -> None:
    db, ns, mid = _kite_store(tmp_path)
    with db:
        _answers(ns, "red kite")
        _answers(ns, "red kite")
        got = result(spawn("update_one", db.path, "n", str(mid), "the grey heron wades",
                           json.dumps({"v": 7, "by": "child"})))
        assert got["done"] == mid
        top = _answers(ns, "grey heron")[0]
        assert top[:3] == (mid, "the grey heron wades", {"v": 7, "by": "child"})
        assert _lexical(ns, "kite") == [KITE2]


def test_a_namespace_handle_never_sees_another_namespace(tmp_path) -> None:
    """Two namespaces holding the same texts and metadata: each ask answers from its own
    namespace (its own ids, its own posting lists), whichever was asked first."""
    with _store(tmp_path) as db:
        a, b = db.namespace("a"), db.namespace("b")
        ids_a = a.remember_many([{"text": t, "metadata": {"k": i}} for i, t in enumerate(FILLER)])
        ids_b = b.remember_many([{"text": t, "metadata": {"k": i}} for i, t in enumerate(FILLER)])
        b.remember("only b has the word zeppelin")
        db.sync()
        for _ in range(2):
            for ns, ids, other in ((a, ids_a, ids_b), (b, ids_b, ids_a)):
                got = _answers(ns, "the rye bread at the bakery")
                assert got and all(m[3] == ns.name for m in got)
                assert {m[0] for m in got} <= set(ids) | ({ids_b[-1] + 1} if ns is b else set())
                assert not {m[0] for m in got} & set(other)
        for _ in range(2):  # each namespace's own list of a term both hold
            assert [m.id for m in a.ask("rye bread", mode="lexical")] == [ids_a[1]]
            assert [m.id for m in b.ask("rye bread", mode="lexical")] == [ids_b[1]]
        assert a.ask("zeppelin", mode="lexical") == []
        assert [m.text for m in b.ask("zeppelin", mode="lexical")] == ["only b has the word zeppelin"]


def test_changing_what_ask_returned_changes_no_later_answer(tmp_path) -> None:
    with _store(tmp_path) as db:
        ns = db.namespace("n")
        meta = {"v": 1, "tags": ["bird", "red"], "nest": {"k": [1, {"deep": "x"}]}}
        mid = ns.remember("the red kite flies over the hill", meta)
        ns.remember_many(FILLER)
        db.sync()
        for _ in range(3):
            m = ns.ask("red kite", top_k=3)[0]
            assert m.id == mid and m.metadata == meta
            m.metadata["v"] = 99
            m.metadata["tags"].append("changed")
            m.metadata["nest"]["k"][1]["deep"] = "changed"
            m.metadata["nest"]["new"] = True
            m.metadata["added"] = 1
        assert ns.get(mid).metadata == meta


def test_forget_then_ask(tmp_path) -> None:
    db, ns, mid = _kite_store(tmp_path)
    with db:
        assert _answers(ns, "red kite")[0][0] == mid
        assert sorted(_lexical(ns, "kite")) == sorted([KITE2, "the red kite flies over the hill"])
        ns.forget(mid)
        assert mid not in [m[0] for m in _answers(ns, "red kite")]
        assert _lexical(ns, "kite") == [KITE2]


def test_compaction_between_asks(tmp_path) -> None:
    """Compaction moves memories to new slots (a record holds its slot): answers kept
    from before must not send a later ask to the old rows."""
    with _store(tmp_path) as db:
        ns = db.namespace("n")
        gone = ns.remember_many([f"old note {i} about the weather" for i in range(5)])
        mid = ns.remember("the red kite flies over the hill", {"v": 1})
        ns.remember_many(FILLER)
        db.sync()
        for _ in range(2):
            before = _answers(ns, "red kite hill")
        assert before[0][0] == mid
        ns.forget_many(gone)
        db.compact()
        after = _answers(ns, "red kite hill")
        assert after[0][:3] == (mid, "the red kite flies over the hill", {"v": 1})
        assert not {m[0] for m in after} & set(gone)
        for m in after:  # each answer is its memory as stored now
            assert (m[1], m[2]) == (ns.get(m[0]).text, ns.get(m[0]).metadata)
        assert db.verify().ok


def test_answers_are_the_same_without_the_memo(tmp_path, monkeypatch) -> None:
    db, ns, mid = _kite_store(tmp_path)
    with db:
        queries = ["red kite", "the bakery bread", "storm on the road", "cello sister"]

        def run() -> list:
            return [[(m.id, m.score, m.text, m.metadata) for m in ns.ask(q, top_k=5)]
                    for q in queries]
        with_memo = [run(), run()]
        monkeypatch.setattr(_rawmemo, "ENABLED", False)
        assert run() == with_memo[0] == with_memo[1]


def test_the_memo_is_bounded() -> None:
    memo: _rawmemo.RawMemo[int] = _rawmemo.RawMemo(max_bytes=100, max_item=40)
    for i in range(50):
        memo.put(bytes([i]) * 3, i, 10)
        assert memo.size <= 100 and len(memo) <= 10
    assert memo.get(bytes([49]) * 3) == 49 and memo.get(bytes([0]) * 3) is None  # oldest left
    memo.put(b"big", 1, 41)
    assert memo.get(b"big") is None
    memo.clear()
    assert len(memo) == 0 and memo.size == 0


def test_only_owned_bytes_are_keys() -> None:
    raw = b"stored bytes"
    assert _rawmemo.owned(raw) is raw
    assert _rawmemo.owned(memoryview(raw)) is raw
    assert _rawmemo.owned(memoryview(raw)[1:]) is None
    assert _rawmemo.owned(memoryview(bytearray(raw))) is None
    assert _rawmemo.owned(bytearray(raw)) is None
    assert np.frombuffer(raw, np.uint8).size == len(raw)


def test_a_returned_memory_is_the_dataclass_value() -> None:
    """``_to_memory`` sets the fields directly: the same value as the constructor's."""
    from mnemos_kv import Memory
    from mnemos_kv import _records as R
    from mnemos_kv.store import _to_memory
    for upd in (None, 1_767_225_700_000_000):
        rec = R.Record(id=3, ns=1, text="t", metadata={"a": [1]}, type="semantic",
                       ts=1_767_225_600_000_000, slot=2, key="k", upd=upd)
        got = _to_memory(rec, "n", 0.5, {"vector": 0.1})
        want = Memory(id=3, text="t", metadata={"a": [1]}, namespace="n", type="semantic",
                      created_at=1_767_225_600.0, score=0.5, key="k", explain={"vector": 0.1},
                      updated_at=1_767_225_700.0 if upd else None)
        assert got == want and vars(got) == vars(want)
        with pytest.raises(AttributeError):
            got.text = "x"  # type: ignore[misc]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_empty_memos_with_free_locks() -> None:
    """A lock held at the fork (a parent's thread mid-``put``) must not hang the child."""
    import signal
    import time
    memo = E._RECORDS
    memo.put(b"parent bytes", "kept", 1)  # type: ignore[arg-type]
    memo._lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:
            ok = len(memo) == 0 and memo.get(b"parent bytes") is None
            memo.put(b"child bytes", "x", 1)  # type: ignore[arg-type]
            os._exit(0 if ok and memo.get(b"child bytes") == "x" else 1)
    finally:
        memo._lock.release()
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung on the memo's lock")
        time.sleep(0.02)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert memo.get(b"parent bytes") == "kept"  # the parent's memo is untouched
