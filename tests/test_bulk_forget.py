"""Bulk forget (``_forget``): forget_many, forget_where and replay of a run of forget ops
leave exactly what one ``forget`` op per memory leaves: log bytes, every LMDB table,
dead marks, digest and answers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnemos_kv import Mnemos, _forget, _lexical_index, _sweep
from mnemos_kv import _records as R
from mnemos_kv import _storage as S
from mnemos_kv._batchwords import SEPARATOR
from mnemos_kv._replay import state_digest
from mnemos_kv.errors import MemoryNotFoundError

from conftest import Clock

WORDS = ["paint", "paintings", "yoga", "Straße", "don't", "she's", "日本語", "café", "been",
         "doing", "the", "of", "running", "x" * 300, "?", "42", "w7"]


def _text(i: int) -> str:
    r = np.random.default_rng(i)
    return " ".join(WORDS[j] for j in r.integers(0, len(WORDS), int(r.integers(1, 9))))


def _fill(db: Mnemos, n: int = 400) -> list[int]:
    """Memories over two namespaces with keys, metadata (nested, long, overflowing,
    empty), questions, duplicate texts, pins and edges."""
    other = db.namespace("other")
    ids = []
    for i in range(n):
        meta: dict = {"cat": i % 7}
        if i % 3 == 0:
            meta["user"] = {"tier": i % 4, "name": f"u{i % 5}"}
        if i % 11 == 0:
            meta["long"] = "z" * 400
        if i % 13 == 0:
            meta = {}
        if i % 17 == 0:
            meta["p" * 250] = 1  # a path too long to be a key (overflow list)
        target = other if i % 5 == 0 else db
        text = _text(i) if i % 9 else "shared text about yoga?"
        ids.append(target.remember(text, metadata=meta, key=f"k{i}" if i % 4 == 0 else None))
    for i in range(0, 60, 2):
        if (i % 5 == 0) == ((i + 1) % 5 == 0):
            ns = other if i % 5 == 0 else db
            ns.connect(ids[i], ids[i + 1], "r")
    for i in range(1, 100, 10):
        (other if i % 5 == 0 else db).pin(ids[i])
    return ids


def _tables(db: Mnemos, skip: tuple[str, ...] = ("meta",)) -> dict[str, list]:
    """Every (key, value) of every LMDB table but ``skip``: ``meta`` (its vsync
    counters depend on when files were synced), and for stores that flushed at other
    times (a replay), ``vrows`` and ``pending`` (rows and frames not yet flushed)."""
    env = db._engine.env
    from mnemos_kv import _lexstage
    if env.has_db(_lexstage.DB):  # staged postings merged (as the next flush would): a
        env.write(lambda txn: _lexstage.merge(txn, env))  # small write stages, a big one not
    out = {}
    with env.read() as txn:
        for raw in S.DB_NAMES:
            name = raw.decode()  # (the names are bytes: compared as str, nothing matched)
            if name not in skip and env.has_db(name):
                out[name] = list(txn.cursor(db=env.db(name)))
    assert out, "no table read"
    return out


def _log_bytes(path: str) -> bytes:
    logs = sorted(f for f in os.listdir(path) if f.startswith("log."))
    return b"".join(open(os.path.join(path, f), "rb").read() for f in logs)


def _pair(tmp_path, n: int = 400) -> tuple[Mnemos, Mnemos, list[int]]:
    a = Mnemos.open(str(tmp_path / "a"), clock=Clock())
    b = Mnemos.open(str(tmp_path / "b"), clock=Clock())
    ids = _fill(a, n)
    assert _fill(b, n) == ids
    return a, b, ids


def _same(a: Mnemos, b: Mnemos) -> None:
    pa, pb = a._engine.path, b._engine.path
    assert _log_bytes(pa) == _log_bytes(pb)
    assert _tables(a) == _tables(b)
    with a._engine.snapshot() as sa, b._engine.snapshot() as sb:
        assert state_digest(a._engine, sa) == state_digest(b._engine, sb)
        assert {k: v for k, v in sa.state.to_dict().items() if not k.startswith("vsync")} == \
            {k: v for k, v in sb.state.to_dict().items() if not k.startswith("vsync")}
        assert sa.slots.tobytes() == sb.slots.tobytes()
    for q in ("yoga", "paint café", "what about 42?", "been doing"):
        for ns in ("default", "other"):
            ra = [(m.id, m.score) for m in a.namespace(ns).ask(q, top_k=10)]
            rb = [(m.id, m.score) for m in b.namespace(ns).ask(q, top_k=10)]
            assert ra == rb
            fa = [m.id for m in a.namespace(ns).ask(q, top_k=10, filter={"cat": 3})]
            assert fa == [m.id for m in b.namespace(ns).ask(q, top_k=10, filter={"cat": 3})]
    assert a.verify().ok and b.verify().ok


@pytest.fixture(params=["sweep", "sweep-search", "tokens"])
def postings_path(request, monkeypatch) -> str:
    """Both ways of finding the forgotten postings: sweeping the namespace's postings
    (``_sweep``; the forgotten ids in a bitmap, or searched) and re-tokenising the
    forgotten texts, whatever share goes."""
    monkeypatch.setattr(_forget, "SWEEP_SHARE", 0 if request.param == "tokens" else 10 ** 9)
    if request.param == "sweep-search":
        monkeypatch.setattr(_sweep, "BITMAP_SPAN", 0)
    calls = []
    real = _sweep.sweep
    monkeypatch.setattr(_sweep, "sweep", lambda *a: calls.append(1) or real(*a))
    yield request.param
    assert bool(calls) == (request.param != "tokens")


def test_forget_many_bulk_equals_per_id(tmp_path, monkeypatch, postings_path) -> None:
    a, b, ids = _pair(tmp_path)
    mine = [i for k, i in enumerate(ids) if k % 5]  # the default namespace's
    gone = mine[::3][::-1] + mine[1:40:3]  # unsorted, with keys, pins, edges, questions
    a.forget_many(gone)
    monkeypatch.setattr(_forget, "MIN_BULK", 10 ** 9)
    b.forget_many(gone)
    _same(a, b)
    a.close()
    b.close()


def test_forget_where_bulk_equals_per_id(tmp_path, monkeypatch, postings_path) -> None:
    a, b, ids = _pair(tmp_path)
    flt = {"cat": {"$in": [1, 2, 3, 4]}}
    na = a.forget_where(flt)
    monkeypatch.setattr(_forget, "MIN_BULK", 10 ** 9)
    assert b.forget_where(flt) == na > 64
    _same(a, b)
    a.close()
    b.close()


def test_rewrite_of_large_keys(tmp_path, monkeypatch) -> None:
    """Keys losing most of their entries are rewritten whole: the same tables."""
    monkeypatch.setattr(_forget, "REWRITE_MIN", 4)
    a, b, ids = _pair(tmp_path)
    mine = [i for k, i in enumerate(ids) if k % 5]
    calls = []
    real = _forget._rewrite
    monkeypatch.setattr(_forget, "_rewrite", lambda *a: calls.append(a[1]) or real(*a))
    a.forget_many(mine[:250])
    assert len(calls) > 5
    monkeypatch.setattr(_forget, "MIN_BULK", 10 ** 9)
    b.forget_many(mine[:250])
    _same(a, b)
    a.close()
    b.close()


@pytest.mark.parametrize("rewrite_min,chunk", [(1, 1 << 18), (10 ** 9, 1 << 18), (1, 3)])
def test_sweep_rewrites_or_deletes(tmp_path, monkeypatch, rewrite_min, chunk) -> None:
    """The sweep's three ways of removing a key's forgotten postings (the whole key, a
    rewrite of the survivors, one by one) leave what forgetting one by one leaves; so
    does a sweep taking the keys a few at a time (chunks where nothing goes, or only
    keys with several postings)."""
    monkeypatch.setattr(_forget, "SWEEP_SHARE", 10 ** 9)
    monkeypatch.setattr(_sweep, "REWRITE_MIN_DEAD", rewrite_min)
    monkeypatch.setattr(_sweep, "CHUNK_KEYS", chunk)
    a, b, ids = _pair(tmp_path)
    mine = [i for k, i in enumerate(ids) if k % 5]
    calls = []
    real = _sweep._rewrite
    monkeypatch.setattr(_sweep, "_rewrite", lambda *a: calls.append(1) or real(*a))
    gone = mine[:150] + mine[200::4]  # some keys lose every posting, most lose some
    a.forget_many(gone)
    assert bool(calls) == (rewrite_min == 1)
    monkeypatch.setattr(_forget, "MIN_BULK", 10 ** 9)
    b.forget_many(gone)
    _same(a, b)
    a.close()
    b.close()


def test_sweep_of_keys_that_lose_nothing(tmp_path, monkeypatch) -> None:
    """Chunks of keys of which none loses a posting, and memories without any posting."""
    monkeypatch.setattr(_forget, "SWEEP_SHARE", 10 ** 9)
    monkeypatch.setattr(_sweep, "CHUNK_KEYS", 1)
    texts = ["alpha beta"] * 70 + ["gamma delta"] * 70 + ["the of"] * 70
    dbs = [Mnemos.open(str(tmp_path / name), clock=Clock()) for name in "ab"]
    ids = [db.remember_many(texts) for db in dbs][0]
    gone = ids[:70] + ids[140:]
    dbs[0].forget_many(gone)
    monkeypatch.setattr(_forget, "MIN_BULK", 10 ** 9)
    dbs[1].forget_many(gone)
    assert _tables(dbs[0]) == _tables(dbs[1])
    assert _log_bytes(dbs[0]._engine.path) == _log_bytes(dbs[1]._engine.path)
    assert [m.id for m in dbs[0].ask("gamma alpha")] == [m.id for m in dbs[1].ask("gamma alpha")]
    for db in dbs:
        db.close()


def test_bulk_forget_refuses_before_writing(tmp_path) -> None:
    a = Mnemos.open(str(tmp_path / "a"), clock=Clock())
    ids = _fill(a, 200)
    other = [i for k, i in enumerate(ids) if k % 5 == 0]
    mine = [i for k, i in enumerate(ids) if k % 5]
    with a._engine.snapshot() as s:
        before = state_digest(a._engine, s)
    for bad in (mine[:100] + [other[0]], mine[:100] + [10 ** 6]):
        with pytest.raises(MemoryNotFoundError, match=str(bad[-1])):
            a.forget_many(bad)
    with pytest.raises(MemoryNotFoundError):
        a.namespace("nope").forget_many(mine[:100])
    with a._engine.snapshot() as s:
        assert state_digest(a._engine, s) == before
    a.forget_many(mine[:100])
    with pytest.raises(MemoryNotFoundError):  # forgotten ones are gone
        a.forget_many(mine[50:150])
    a.close()


def test_replay_of_bulk_forgets(tmp_path, monkeypatch, postings_path) -> None:
    """A store that used bulk forget replays (itself in bulk) to the same state."""
    runs = []
    real = _forget.apply
    monkeypatch.setattr(_forget, "apply", lambda e, c, ids, r: runs.append(len(ids)) or
                        real(e, c, ids, r))
    a = Mnemos.open(str(tmp_path / "a"), clock=Clock())
    ids = _fill(a, 300)
    mine = [i for k, i in enumerate(ids) if k % 5]
    a.forget_many(mine[::2])
    a.forget_where({"cat": 2})
    a.export_replay(str(tmp_path / "x.mreplay"))
    b = Mnemos.open(str(tmp_path / "b"), clock=Clock())
    n_live = len(runs)
    b.replay(str(tmp_path / "x.mreplay"))
    assert n_live >= 1 and len(runs) > n_live  # the replay applied runs in bulk too
    with a._engine.snapshot() as sa, b._engine.snapshot() as sb:
        assert state_digest(a._engine, sa) == state_digest(b._engine, sb)
    flushed = ("meta", "vrows", "pending")  # (the replay flushed at other times)
    assert _tables(a, flushed) == _tables(b, flushed)
    for q in ("yoga", "paint café"):
        assert [m.id for m in a.ask(q)] == [m.id for m in b.ask(q)]
    assert b.verify().ok
    a.close()
    b.close()


def test_forget_payload_is_canonical_cbor() -> None:
    for mid in (0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1):
        assert _forget._forget_payload(mid) == R.encode({"op": "forget", "id": mid})


def test_doc_terms_many_equals_doc_terms() -> None:
    rnd = np.random.default_rng(7)
    alpha = WORDS + ["e\u0301", "\u0301x", "ß", "？", "'s", "n't", "a", " ", "\n", "\x00", "_",
                     "ﬁne", "Ⅻ", "won't", "I", SEPARATOR]
    batches = [[_text(i) for i in range(50)], [], [""], ["?"],
               ["Melanie: I painted calmly?", "Dr. Lee: take two", "user: user again",
                "Ann Ann: hi", "no label here", "10:30 is not a label", "Bob: " + SEPARATOR]]
    for _ in range(200):
        batches.append(["".join(alpha[j] + [" ", "", ",", "-"][int(rnd.integers(0, 4))]
                                for j in rnd.integers(0, len(alpha), int(rnd.integers(0, 12))))
                        for _ in range(int(rnd.integers(0, 6)))])
    for texts in batches:
        bt = _lexical_index.doc_terms_many(texts)
        got: dict[int, dict[bytes, tuple[int, int]]] = {}
        for k, d, tf, dl in zip(bt.key.tolist(), bt.doc.tolist(), bt.tf.tolist(), bt.dl.tolist()):
            got.setdefault(d, {})[bt.keys[k]] = (tf, dl)
        for i, t in enumerate(texts):
            terms, sl, ul = _lexical_index.doc_terms(t)
            assert list(got.get(i, {}).items()) == list(terms.items()), t
            assert (int(bt.stem_len[i]), int(bt.surface_len[i])) == (sl, ul)


# -- bulk indexing of added memories (Engine.flush_index) ----------------------------------------

def _ingest(db: Mnemos) -> None:
    other = db.namespace("other")
    items = [{"text": _text(i) if i % 9 else "shared text about yoga?",
              "metadata": {"cat": i % 7, "user": {"tier": i % 4}} if i % 13 else {},
              "key": f"k{i}" if i % 4 == 0 else None, "pinned": i % 50 == 1}
             for i in range(300)]
    db.remember_many(items[:200])
    other.remember_many(items[200:])  # a new namespace: its first memory creates it
    with db.batch() as b:  # the index must be written before the forget_where reads it
        b.remember_many([dict(it, key=None) for it in items[:80]])
        b.forget_where({"cat": 3})
        b.remember("after the forget_where?", metadata={"cat": 3})


def test_bulk_indexing_equals_one_by_one(tmp_path, monkeypatch) -> None:
    """Postings and filter entries written per run (deferred) are those of one by one."""
    from mnemos_kv import _engine
    a = Mnemos.open(str(tmp_path / "a"), clock=Clock())
    calls = []
    real = _lexical_index.doc_terms_many
    monkeypatch.setattr(_lexical_index, "doc_terms_many", lambda t: calls.append(len(t)) or real(t))
    _ingest(a)
    assert max(calls) >= 100  # runs were indexed at once
    assert a.count(filter={"cat": 3}) == 1
    orig = _engine._Ctx.__init__

    def init(self, *args, **kw):  # every added memory indexed as its op is applied
        kw["pending"] = None
        orig(self, *args, **kw)
    monkeypatch.setattr(_engine._Ctx, "__init__", init)
    b = Mnemos.open(str(tmp_path / "b"), clock=Clock())
    _ingest(b)
    _same(a, b)
    a.close()
    b.close()


def test_bulk_forget_names_a_damaged_record(tmp_path) -> None:
    """The records are decoded at once; a damaged one is still found and named."""
    from mnemos_kv.errors import CorruptionError
    a = Mnemos.open(str(tmp_path / "a"), clock=Clock())
    ids = a.remember_many([f"note {i}" for i in range(200)])
    env = a._engine.env
    victim = ids[77]
    def damage(txn) -> None:
        raw = bytearray(txn.get(S.u64(victim), db=env.db("records")))
        raw[-2] ^= 0x40  # the checksum no longer matches
        txn.put(S.u64(victim), bytes(raw), db=env.db("records"))
    env.write(damage)
    with pytest.raises(CorruptionError, match=f"memory {victim}"):
        a.forget_many(ids[:100])
    a.forget_many(ids[100:])  # the others go
    assert a.count() == 100
    a.close()


def test_decode_many_equals_decode() -> None:
    items = [{"i": 1, "t": "x"}, {"m": {"a": [1, 2.5, None]}, "t": "日本語"}, 7, "s", []]
    blob = b"".join(R.encode(x) for x in items)
    assert R.decode_many(blob, len(items)) == [R.decode(R.encode(x)) for x in items]
    from mnemos_kv.errors import CorruptionError
    for bad, count in ((blob, len(items) + 1), (blob + b"\x00", len(items)),
                       (blob[:-1], len(items)), (b"\xc1\x00", 1)):  # (0xc1: a tag)
        with pytest.raises(CorruptionError):
            R.decode_many(bad, count)


@pytest.mark.parametrize("span", [0, 64])
def test_sweep_marks_forgotten_ids(monkeypatch, span) -> None:
    """The forgotten ids are found in a bitmap over their span or by binary search (a
    span too wide for a bitmap): the same marks."""
    monkeypatch.setattr(_sweep, "BITMAP_SPAN", span)
    rnd = np.random.default_rng(5)
    for mids in (np.array([7]), np.unique(rnd.integers(1, 10 ** 6, 500)),
                 np.array([3, 2 ** 40])):
        ids = np.concatenate([mids, mids - 1, mids + 1, [0, 2 ** 47],
                              rnd.integers(0, 2 ** 41, 200)]).astype(np.int64)
        assert (_sweep._marker(mids.astype(np.int64))(ids) == np.isin(ids, mids)).all()


# -- crash safety --------------------------------------------------------------------------------

KILLED_FORGET = textwrap.dedent("""
    import os, signal, sys
    from mnemos_kv import Mnemos, _engine, _forget, _log, _sweep

    path, where = sys.argv[1], sys.argv[2]

    def die(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    def then_die(real):
        return lambda *a, **k: (real(*a, **k), die())[0]

    _sweep.CHUNK_KEYS = 16
    if where == "sweep":  # after the first keys' postings were deleted
        _sweep._sweep_keys = then_die(_sweep._sweep_keys)
    elif where == "applied":  # every table changed, no frame written
        _forget.apply = then_die(_forget.apply)
    elif where == "logged":  # the frames durable in the log, nothing committed
        _log.LogFile.append = then_die(_log.LogFile.append)
    elif where == "marked":  # the dead marks set in the slot file, nothing committed
        _engine.Engine._flush_ns_counts = then_die(_engine.Engine._flush_ns_counts)
    db = Mnemos.open(path)
    db.forget_many(list(range(1, 401, 2)))
    print("returned", flush=True)
    die()
""")


def test_sigkill_during_bulk_forget(tmp_path) -> None:
    """A writer killed inside a bulk forget (in the sweep, with every table changed, with
    the frames in the log, with the dead marks set) leaves the store as it was; killed
    once forget_many returned, the store has forgotten them all. It opens, verifies and
    takes the same forget again."""
    base = str(tmp_path / "base")
    with Mnemos.open(base, clock=Clock()) as db:
        db.remember_many([{"text": f"note {i} about topic{i % 7} w{i * 31 % 50}",
                           "metadata": {"cat": i % 3}} for i in range(400)])
        before = db.state_digest()
    done = str(tmp_path / "done")
    shutil.copytree(base, done)
    with Mnemos.open(done, clock=Clock()) as db:
        db.forget_many(list(range(1, 401, 2)))
        after = db.state_digest()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for where in ("sweep", "applied", "logged", "marked", "returned"):
        path = str(tmp_path / where)
        shutil.copytree(base, path)
        child = subprocess.run([sys.executable, "-c", KILLED_FORGET, path, where],
                               capture_output=True, text=True, env=env, timeout=300)
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        assert ("returned" in child.stdout) == (where == "returned")
        with Mnemos.open(path, clock=Clock()) as db:
            assert db.verify().ok
            assert db.state_digest() == (after if where == "returned" else before), where
            if where != "returned":
                db.forget_many(list(range(1, 401, 2)))
                assert db.state_digest() == after
                assert db.verify().ok
