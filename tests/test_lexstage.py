"""Staged BM25 postings (format 5, ``_lexstage``): a small write puts one ``lexstage`` key
per memory instead of one posting per term, and the next flush merges them into
``postings``. Every reader must see exactly what it saw without staging: the same ask
answers with the same scores in the same order, the same state digest, in this process
and in others, and after a writer killed in the middle of a merge."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from mnemos_kv import CorruptionError, Mnemos
from mnemos_kv import _lexical_index as L
from mnemos_kv import _lexstage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("deploy service review thursday alice bob budget launch meeting notes coffee "
         "garden paper train hiking rust python database index cache e-mail").split()
# (Bob's and Alice's numbered turns name rare things: the named person's specifics read
# document frequencies; "databse" and "reviw" are typos looked up among the indexed
# words; "email" meets the compound "e-mail")
QUERIES = ["deploy service review", "alice budget", "did the meeting happen",
           "Bob hiking train", "python database cache", "Alice what about the garden",
           "what did Bob say about the databse", "Alice reviw the email"]


def _clock() -> object:
    """A deterministic clock (one second per call): the same writes, the same timestamps."""
    it = itertools.count()
    return lambda: 1_767_225_600.0 + next(it)


def _text(rng: np.random.Generator, i: int) -> str:
    words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))).tolist())
    kind = i % 5
    if kind == 0:
        return f"Alice: {words}?"  # a speaker label and a question
    if kind == 1:
        return f"Bob: {words} number {i}"
    if kind == 2:
        return f"did we {words} {i}?"
    return f"{words} item {i}"


def _answers(db: Mnemos) -> list[object]:
    out: list[object] = []
    for q in QUERIES:
        for ns in ("a", "b"):
            if ns in db.namespaces():
                hits = db.namespace(ns).ask(q, top_k=12)
                out.append([(h.id, h.score) for h in hits])  # exact floats
    return out


def _workload(db: Mnemos, check) -> None:  # type: ignore[no-untyped-def]
    """Bulk and single writes in two namespaces, asks between them, forgets and updates of
    staged and merged memories, a namespace drop; ``check(db)`` after each phase."""
    rng = np.random.default_rng(7)
    a, b = db.namespace("a"), db.namespace("b")
    a.remember_many([_text(rng, i) for i in range(40)])          # bulk: straight to postings
    check(db)
    ids = []
    for i in range(40, 70):                                       # single writes: staged
        ids.append((a if i % 3 else b).remember(_text(rng, i)))
        if i % 7 == 0:
            check(db)
    check(db)
    a.forget(ids[4])                                               # a staged memory
    a.forget(3)                                                    # a merged one
    check(db)
    a.update(ids[7], text="Alice: the garden budget moved to thursday?")  # staged, updated
    for i in range(70, 80):
        a.remember(_text(rng, i))
    check(db)
    b.remember_many([_text(rng, i) for i in range(80, 100)])      # bulk ids after staged ones
    for i in range(100, 106):
        b.remember(_text(rng, i))
    check(db)
    db.drop_namespace("b")
    for i in range(106, 112):
        (a if i % 2 else b).remember(_text(rng, i))
    check(db)


def _run(path: str) -> tuple[list[object], str, list[int]]:
    seen: list[object] = []
    staged: list[int] = []

    def check(db: Mnemos) -> None:
        seen.append(_answers(db))
        env = db._engine.env
        with env.read() as txn:
            staged.append(_lexstage.staged_count(txn, env))

    with Mnemos.open(path, clock=_clock()) as db:
        _workload(db, check)
        digest = db.state_digest()
    return seen, digest, staged


def _tables(path: str) -> dict[str, list[tuple[bytes, bytes]]]:
    with Mnemos.open(path, readonly=True) as db:
        env = db._engine.env
        out = {}
        with env.read() as txn:
            for name in ("postings", "lexstats", _lexstage.DB):
                with txn.cursor(db=env.db(name)) as cur:
                    out[name] = list(cur.iternext())
        return out


def test_staged_postings_give_the_same_answers(tmp_path, monkeypatch) -> None:
    staged_path, plain_path = str(tmp_path / "staged"), str(tmp_path / "plain")
    got, digest, counts = _run(staged_path)
    assert max(counts) >= 20  # the mechanism under test was used
    monkeypatch.setattr(_lexstage, "STAGE_MAX", 0)  # every posting straight to the table
    want, want_digest, plain_counts = _run(plain_path)
    assert max(plain_counts) == 0
    assert got == want and digest == want_digest
    staged, plain = _tables(staged_path), _tables(plain_path)  # (closed: merged)
    assert staged == plain and not staged[_lexstage.DB]


def _stage_terms(txn, env, items) -> None:  # type: ignore[no-untyped-def]
    """What formats 5-6 staged: the memory's postings themselves."""
    for ns, mid, text, _meta in items:
        txn.put(mid.to_bytes(8, "big"), _lexstage.encode(ns, L.doc_terms(text)[0]),
                db=env.db(_lexstage.DB), append=True)


def test_window_staging_equals_staged_terms(tmp_path, monkeypatch) -> None:
    """Format 7 stages a window of ids and derives their postings from their records'
    texts; formats 5-6 staged the postings themselves in the ``lexstage`` table (which
    readers and the merge still read): every answer, digest and merged table is the
    same."""
    def staged(db: Mnemos) -> tuple[int, int]:
        env = db._engine.env
        with env.read() as txn:
            lo, hi = _lexstage.window(txn, env)
            return hi - lo, _lexstage._table_count(txn, env)

    seen: list[tuple[int, int]] = []

    def run(path: str) -> tuple[list[object], str]:
        def check(db: Mnemos) -> None:
            seen.append(staged(db))
        with Mnemos.open(path, clock=_clock()) as db:
            _workload(db, check)
            return [_answers(db)], db.state_digest()

    window = run(str(tmp_path / "window"))
    assert max(w for w, _t in seen) >= 10 and all(t == 0 for _w, t in seen)
    monkeypatch.setattr(L, "stage_many", _stage_terms)
    seen.clear()
    terms = run(str(tmp_path / "terms"))
    assert max(t for _w, t in seen) >= 10 and all(w == 0 for w, _t in seen)
    assert window == terms
    assert _tables(str(tmp_path / "window")) == _tables(str(tmp_path / "terms"))


def test_a_staged_id_whose_record_is_gone_is_corruption(store_path: str) -> None:
    """A staged memory's postings are read from its record: a missing one is reported,
    not skipped."""
    with Mnemos.open(store_path) as db:
        mid = db.remember("Alice: the deploy review is on thursday")
        env = db._engine.env

        def drop(txn) -> None:  # type: ignore[no-untyped-def]
            txn.delete(mid.to_bytes(8, "big"), db=env.db("records"))
        env.write(drop)
        with pytest.raises(CorruptionError, match=f"memory {mid} is staged"):
            db.ask("deploy review", mode="lexical")
        assert any("staged postings of memory" in p for p in db.verify().problems)


def test_a_single_write_stages_one_key_and_a_flush_merges(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many([f"bulk memory {i} about the deploy" for i in range(20)])
        mid = db.remember("Alice: when is the deploy review?")
        env = db._engine.env
        with env.read() as txn, txn.cursor(db=env.db("postings")) as cur:
            assert _lexstage.staged_count(txn, env) == 1
            assert mid not in L.fetch(cur, 0, b"deploi")["id"].tolist()  # not in the table
            view = _lexstage.view(txn, env)
            assert mid in L.fetch(cur, 0, b"deploi", view)["id"].tolist()  # in the union
        assert db.ask("deploy review", top_k=1)[0].id == mid
        db.sync()
        with env.read() as txn, txn.cursor(db=env.db("postings")) as cur:
            assert _lexstage.staged_count(txn, env) == 0
            assert mid in L.fetch(cur, 0, b"deploi")["id"].tolist()


def test_a_bulk_write_is_not_staged(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many([f"memory {i}" for i in range(_lexstage.STAGE_MAX)])
        env = db._engine.env
        with env.read() as txn:
            assert _lexstage.staged_count(txn, env) == 0


def test_the_staged_value_round_trips() -> None:
    terms, _n, _s = L.doc_terms("Alice: did the deploy of the deploy service move?")
    ns, got = _lexstage.decode(_lexstage.encode(3, terms))
    assert ns == 3 and got == [(t, tf, dl) for t, (tf, dl) in terms.items()]
    for cut in (b"\0\0", _lexstage.encode(3, terms)[:-2], _lexstage.encode(3, terms) + b"\0"):
        with pytest.raises(CorruptionError, match="lexstage"):
            _lexstage.decode(cut)


_READER = r"""
import json, sys
sys.path.insert(0, %(root)r)
sys.path.insert(0, %(tests)r)
from mnemos_kv import Mnemos
from test_lexstage import _answers
db = Mnemos.open(sys.argv[1], readonly=sys.argv[2] == "1")
for line in sys.stdin:  # one answer set per line asked for (the handle stays open)
    print(json.dumps(_answers(db)), flush=True)
db.close()
"""


def _reader(path: str, readonly: bool) -> subprocess.Popen:
    code = _READER % {"root": ROOT, "tests": os.path.dirname(os.path.abspath(__file__))}
    return subprocess.Popen([sys.executable, "-c", code, path, "1" if readonly else "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ask(proc: subprocess.Popen) -> list[object]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("ask\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


@pytest.mark.parametrize("readonly", [True, False])
def test_other_processes_see_staged_postings(tmp_path, readonly: bool, monkeypatch) -> None:
    """A reader process keeps its handle (and its cache of staged entries) open while
    this process stages, merges and stages again: it answers as a store that never
    staged (the same writes, ``STAGE_MAX = 0``)."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "staged")
    with Mnemos.open(path, clock=_clock()) as db, \
            Mnemos.open(str(tmp_path / "plain"), clock=_clock()) as ref:

        def both(ns: str, texts: list[str]) -> None:
            db.namespace(ns).remember_many(texts)
            with monkeypatch.context() as m:
                m.setattr(_lexstage, "STAGE_MAX", 0)
                ref.namespace(ns).remember_many(texts)

        def same() -> None:
            assert _ask(proc) == json.loads(json.dumps(_answers(ref)))

        both("a", [_text(rng, i) for i in range(30)])
        both("b", [_text(rng, 30)])
        proc = _reader(path, readonly)
        try:
            for i in range(31, 60):
                both("a" if i % 2 else "b", [_text(rng, i)])
                if i % 6 == 0:
                    same()
            db.sync()  # merged
            same()
            for i in range(60, 66):  # a new run of staged entries
                both("a", [_text(rng, i)])
                same()
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=120) == 0


_KILLED = r"""
import os, signal, sys
sys.path.insert(0, %(root)r)
sys.path.insert(0, %(tests)r)
import numpy as np
from mnemos_kv import Mnemos, _lexstage
from test_lexstage import _clock, _text
real = _lexstage.merge
def merge(txn, env):
    n = real(txn, env)  # every posting moved, the table emptied: not committed
    if n:
        os.kill(os.getpid(), signal.SIGKILL)
    return n
_lexstage.merge = merge
rng = np.random.default_rng(5)
db = Mnemos.open(sys.argv[1], clock=_clock())
a = db.namespace("a")
a.remember_many([_text(rng, i) for i in range(30)])
for i in range(30, 50):
    print(a.remember(_text(rng, i)), flush=True)
db.sync()  # the flush merges: killed inside it
print("not killed", flush=True)
"""


def test_a_writer_killed_in_the_middle_of_a_merge_loses_nothing(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "killed")
    code = _KILLED % {"root": ROOT, "tests": os.path.dirname(os.path.abspath(__file__))}
    res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    returned = [int(x) for x in res.stdout.split()]
    assert len(returned) == 20
    # the same writes with every posting put straight into the table
    monkeypatch.setattr(_lexstage, "STAGE_MAX", 0)
    rng = np.random.default_rng(5)
    with Mnemos.open(str(tmp_path / "plain"), clock=_clock()) as ref:
        a = ref.namespace("a")
        a.remember_many([_text(rng, i) for i in range(30)])
        for i in range(30, 50):
            a.remember(_text(rng, i))
        want, want_digest = _answers(ref), ref.state_digest()
    monkeypatch.undo()
    with Mnemos.open(path, readonly=True) as db:  # as the kill left it
        env = db._engine.env
        with env.read() as txn:  # the merge never committed; the writes are all there
            assert _lexstage.staged_count(txn, env) == 20
        assert {m.id for m in db.namespace("a").memories()} >= set(returned)
        assert _answers(db) == want and db.state_digest() == want_digest
    with Mnemos.open(path) as db:  # the first read-write open flushes: this time it commits
        env = db._engine.env
        with env.read() as txn:
            assert _lexstage.staged_count(txn, env) == 0
        assert _answers(db) == want and db.state_digest() == want_digest
        assert db.verify().ok


def test_a_reader_opened_before_the_upgrade_sees_staged_postings(store_path: str, monkeypatch
                                                                  ) -> None:
    """A read-only handle opened on a store without the staging table (an older format)
    opens the table once another process has made it."""
    with Mnemos.open(store_path) as db:
        db.remember_many([f"plain memory {i} about gardens" for i in range(20)])
        env = db._engine.env
        env.write(lambda txn: txn.drop(env.db(_lexstage.DB), delete=True))  # as format 4
    reader = Mnemos.open(store_path, readonly=True)
    try:
        assert not reader._engine.env.has_db(_lexstage.DB)
        code = (f"import sys; sys.path.insert(0, {ROOT!r}); from mnemos_kv import Mnemos\n"
                f"db = Mnemos.open({store_path!r}); print(db.remember('the garden party'))\n"
                f"db._engine.closed = True")  # (no flush: the posting stays staged)
        mid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
        assert reader.ask("garden party", top_k=1)[0].id == mid
    finally:
        reader.close()


def test_verify_checks_the_staged_postings(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many([f"memory {i} of the garden" for i in range(20)])
        a = db.remember("the garden party moved")
        b = db.remember("Alice: the budget meeting?")
        rep = db.verify()
        assert rep.ok and rep.checked["staged_postings"] == 2
        env = db._engine.env
        terms = L.doc_terms("the garden party moved")[0]
        env.write(lambda txn: txn.put(a.to_bytes(8, "big"),
                                      _lexstage.encode(0, dict(list(terms.items())[:-1])),
                                      db=env.db(_lexstage.DB)))
        env.write(lambda txn: txn.put(b.to_bytes(8, "big"), b"\0\0\0\0\x05ab",
                                      db=env.db(_lexstage.DB)))
        env.write(lambda txn: txn.put((999).to_bytes(8, "big"), _lexstage.encode(0, terms),
                                      db=env.db(_lexstage.DB)))
        problems = " | ".join(db.verify().problems)
        assert f"memory {a}: its staged postings differ" in problems
        assert f"memory {b}: data.mdb: a staged postings entry (lexstage) is cut" in problems
        assert "staged postings of memory 999" in problems
        env.write(lambda txn: txn.drop(env.db(_lexstage.DB), delete=False))  # (not merged)


def test_prefixed_lists_what_a_scan_of_every_staged_term_lists(store_path: str) -> None:
    """``View.prefixed`` (a binary search in each namespace's sorted staged terms) gives
    the terms a scan of every staged term gives, for every snapshot's length (an older
    snapshot's view shares the build a newer one grew)."""
    rng = np.random.default_rng(7)
    with Mnemos.open(store_path, clock=_clock()) as db:
        eng = db._engine
        views = []
        for i in range(40):
            db.namespace("ab"[i % 2]).remember(_text(rng, i))
            if i % 9 == 0:
                with eng.snapshot() as snap:
                    views.append(snap.staged())
        with eng.snapshot() as snap:
            views.append(snap.staged())
            assert views[-1] is not None
            assert views[-1]._n == _lexstage.staged_count(snap.txn, eng.env) == 40
        nids = [eng.ns_id(n) for n in "ab"]
        for view in views:
            for ns in nids + [999]:
                for prefix in (b"", b"\x01", b"\x01d", b"\x01da", b"\x01zz", b"da", b"\x02",
                               b"\x02a"):
                    scan = sorted(t for (s, t), (idx, _rows) in view._terms.items()
                                  if s == ns and t.startswith(prefix) and idx and idx[0] < view._n)
                    assert view.prefixed(ns, prefix) == scan
        assert any(views[0].prefixed(nids[0], b"\x01")) and \
            len(views[0].prefixed(nids[0], b"")) < len(views[-1].prefixed(nids[0], b""))
