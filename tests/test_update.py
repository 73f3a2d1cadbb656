"""update / upsert / drop_namespace: behaviour, MVCC, replay, capacity, compaction, recovery."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from mnemos_kv import (CapacityError, DuplicateKeyError, InvalidInputError, MemoryNotFoundError,
                       Mnemos)
from mnemos_kv.embedders import HashingEmbedder

from conftest import Clock, on_postgres, verified


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


def _seq(db: Mnemos) -> int:
    return db.stats()["seq"]


# -- update ----------------------------------------------------------------------------------

def test_update_text_reembeds_and_reindexes(db: Mnemos) -> None:
    a = db.remember("we pay with stripe", {"team": "core"}, key="pay")
    b = db.remember("the office cat is called Miso")
    db.connect(a, b, "about")
    db.pin(a)
    before = db.get(a)
    m = db.update(a, text="we moved payments to adyen")
    assert m.id == a and m.text == "we moved payments to adyen"
    assert m.key == "pay" and m.metadata == {"team": "core"}
    assert m.created_at == before.created_at and m.updated_at > before.updated_at
    assert db.get(a) == m
    emb = HashingEmbedder()
    assert np.allclose(db.get_vector(a), emb.embed(["we moved payments to adyen"])[0], atol=1e-6)
    assert db.ask("adyen", top_k=1)[0].id == a
    assert all(h.id != a or "adyen" in h.text for h in db.ask("stripe", top_k=2))
    assert a not in [h.id for h in db.ask("stripe", top_k=2, explain=True)
                     if h.explain and h.explain["bm25"] > 0]
    assert [e.dst for e in db.neighbors(a, direction="out")] == [b]
    assert db.is_pinned(a) and db.get_by_key("pay").id == a
    assert db.count() == 2
    assert verified(db)


def test_update_metadata_type_timestamp(db: Mnemos) -> None:
    a = db.remember("deploy on fridays is banned", {"a": 1, "b": 2}, timestamp=1000.0)
    db.remember("another memory", timestamp=2000.0)
    m = db.update(a, metadata={"c": 3})
    assert m.metadata == {"c": 3}  # the whole dict is replaced
    m = db.update(a, type="procedural")
    assert m.type == "procedural"
    assert [h.id for h in db.ask("deploy", types="procedural")] == [a]
    m = db.update(a, timestamp=3000.0)
    assert m.created_at == 3000.0
    assert [x.id for x in db.memories()] == [2, a]  # time order follows the new timestamp
    assert [x.id for x in db.memories(since=2500.0)] == [a]
    assert db.update(a, metadata={}).metadata == {}
    assert verified(db)


def test_update_with_nothing_different_writes_nothing(db: Mnemos) -> None:
    a = db.remember("same text", {"k": 1})
    seq = _seq(db)
    m = db.update(a, text="same text", metadata={"k": 1})
    assert _seq(db) == seq and m.updated_at == m.created_at


@pytest.mark.parametrize("kwargs, exc", [
    ({}, InvalidInputError),
    ({"text": ""}, InvalidInputError),
    ({"text": "   "}, InvalidInputError),
    ({"text": 5}, InvalidInputError),
    ({"metadata": "x"}, InvalidInputError),
    ({"metadata": {"f": float("nan")}}, InvalidInputError),
    ({"type": "nope"}, InvalidInputError),
    ({"timestamp": "yesterday-ish"}, InvalidInputError),
])
def test_update_rejects_bad_input_before_writing(db: Mnemos, kwargs, exc) -> None:
    a = db.remember("a memory")
    seq = _seq(db)
    with pytest.raises(exc):
        db.update(a, **kwargs)
    assert _seq(db) == seq and db.get(a).text == "a memory"


def test_update_unknown_or_foreign_id(db: Mnemos) -> None:
    other = db.namespace("other")
    x = other.remember("theirs")
    seq = _seq(db)
    with pytest.raises(MemoryNotFoundError):
        db.update(x, text="mine now")  # the root handle acts on "default"
    with pytest.raises(MemoryNotFoundError):
        db.update(999, text="nobody")
    with pytest.raises(InvalidInputError):
        db.update(0, text="bad id")
    assert _seq(db) == seq and other.get(x).text == "theirs"
    assert other.update(x, text="changed by its own handle").text == "changed by its own handle"


# -- upsert ----------------------------------------------------------------------------------

def test_upsert_inserts_then_replaces_keeping_the_id(db: Mnemos) -> None:
    i = db.upsert("pref:lang", "prefers Python", {"v": 1}, timestamp=1000.0)
    other = db.remember("unrelated")
    db.connect(i, other)
    assert db.get(i).key == "pref:lang" and db.get(i).created_at == 1000.0
    j = db.upsert("pref:lang", "prefers Rust", {"v": 2}, type="semantic")
    assert j == i
    m = db.get(i)
    assert (m.text, m.metadata, m.type, m.created_at) == ("prefers Rust", {"v": 2}, "semantic", 1000.0)
    assert m.updated_at > m.created_at
    assert db.ask("Rust", top_k=1)[0].id == i
    assert len(db.neighbors(i)) == 1 and db.count() == 2
    seq = _seq(db)
    assert db.upsert("pref:lang", "prefers Rust", {"v": 2}, type="semantic") == i
    assert _seq(db) == seq  # the same values again: nothing written
    assert db.upsert("pref:lang", "prefers Rust", {"v": 2}, type="semantic",
                     timestamp=5000.0) == i
    assert db.get(i).created_at == 5000.0
    with pytest.raises(DuplicateKeyError):
        db.remember("x", key="pref:lang")
    assert verified(db)


def test_upsert_with_vector_and_bad_input(db: Mnemos) -> None:
    v = np.zeros(db.embedder.dim, np.float32)
    v[3] = 1.0
    i = db.upsert("k", "text", vector=v)
    assert np.allclose(db.get_vector(i), v)
    w = np.zeros(db.embedder.dim, np.float32)
    w[5] = 2.0
    assert db.upsert("k", "text", vector=w) == i
    assert np.allclose(db.get_vector(i)[5], 1.0)  # normalised, replaced although the text is equal
    seq = _seq(db)
    for bad in [dict(key=None, text="x"), dict(key="", text="x"), dict(key="k", text=""),
                dict(key="k", text="x", vector=[1.0, 2.0])]:
        with pytest.raises(InvalidInputError):
            db.upsert(bad.pop("key"), **bad)
    assert _seq(db) == seq


def test_upsert_namespaces_are_separate(db: Mnemos) -> None:
    a = db.namespace("a").upsert("k", "in a")
    b = db.namespace("b").upsert("k", "in b")
    assert a != b
    assert db.namespace("a").get_by_key("k").text == "in a"


# -- drop_namespace ------------------------------------------------------------------------------

def test_drop_namespace_removes_everything(db: Mnemos) -> None:
    ns = db.namespace("scratch")
    ids = ns.remember_many([{"text": f"scratch note {i}", "key": f"k{i}"} for i in range(20)])
    ns.connect(ids[0], ids[1])
    ns.pin(ids[2])
    if not on_postgres(db):  # (set_capacity is embedded-only: docs/postgres.md)
        ns.set_capacity(100, max_bytes=1_000_000)
    keep = db.remember("default survives", key="k0")
    db.namespace("other").remember("other survives")
    assert db.drop_namespace("scratch") == 20
    assert "scratch" not in db.namespaces()
    st = db.stats()
    assert st["total"] == 2 and "scratch" not in st["namespaces"]
    assert "scratch" not in db.capacity()["namespaces"]
    assert ns.count() == 0 and list(ns.memories()) == []
    assert ns.ask("scratch note") == []
    with pytest.raises(MemoryNotFoundError):
        ns.get(ids[0])
    with pytest.raises(MemoryNotFoundError):
        ns.get_by_key("k1")
    assert db.get(keep).text == "default survives"
    assert verified(db)
    # the name can be used again: a fresh namespace with a new id, keys free again
    fresh = ns.remember("a new beginning", key="k1")
    assert fresh > max(ids) and ns.count() == 1
    assert ns.capacity() == {"max_entries": None, "max_bytes": None}
    assert [h.id for h in ns.ask("scratch note beginning")] == [fresh]
    assert verified(db)


def test_drop_default_empties_it_and_nonexistent_is_zero(db: Mnemos) -> None:
    db.remember_many(["one", "two"])
    assert db.drop_namespace("default") == 2
    assert db.namespaces() == ["default"] and db.count() == 0
    seq = _seq(db)
    assert db.drop_namespace("default") == 0
    assert db.drop_namespace("never-made") == 0
    assert _seq(db) == seq
    assert db.remember("again") == 3
    assert verified(db)
    with pytest.raises(InvalidInputError):
        db.drop_namespace("bad name!")


def test_namespace_handle_drops_only_itself(db: Mnemos) -> None:
    a, b = db.namespace("a"), db.namespace("b")
    a.remember("alpha")
    b.remember("beta")
    assert not hasattr(a, "drop_namespace")
    assert a.drop() == 1
    assert db.namespaces() == ["b", "default"] and b.count() == 1


def test_drop_in_a_batch_with_other_writes(db: Mnemos) -> None:
    ns = db.namespace("tmp")
    ns.remember_many(["x1", "x2"])
    with db.batch() as bt:
        bt.namespace("tmp").remember("x3")
        bt.drop_namespace("tmp")
        bt.namespace("tmp").remember("after the drop")
        pid = bt.remember("in default")
    assert [m.text for m in ns.memories()] == ["after the drop"]
    assert db.get(pid.id).text == "in default"
    assert verified(db)


# -- batch ---------------------------------------------------------------------------------

def test_batch_update_and_upsert(db: Mnemos) -> None:
    a = db.remember("old text")
    with db.batch() as bt:
        p = bt.remember("fresh")
        bt.update(p, metadata={"tag": 1})
        bt.update(a, text="new text")
        u = bt.upsert("key", "upserted")
    assert db.get(p.id).metadata == {"tag": 1}
    assert db.get(a).text == "new text" and db.ask("new", top_k=1)[0].id == a
    assert db.get_by_key("key").id == u.id
    with pytest.raises(InvalidInputError):
        with db.batch() as bt:
            bt.update(a)
    assert verified(db)


# -- MVCC -------------------------------------------------------------------------------------

@pytest.mark.embedded_only("the engine's snapshot internals (slots, matrix); the facade's snapshot behaviour is tested on both")
def test_old_snapshot_sees_the_old_version_whole(db: Mnemos) -> None:
    a = db.remember("version one")
    eng = db._engine
    with eng.snapshot() as snap:
        db.update(a, text="version two")
        rec = eng.record(snap.txn, a)
        assert rec.text == "version one" and snap.live_mask()[rec.slot]
        emb = HashingEmbedder()
        assert np.allclose(snap.matrix[rec.slot], emb.embed(["version one"])[0], atol=1e-6)
    with eng.snapshot() as snap:
        rec = eng.record(snap.txn, a)
        assert rec.text == "version two"
        live = snap.live_mask()
        assert int((snap.slots["id"][live] == a).sum()) == 1


@pytest.mark.embedded_only("the engine's snapshot internals (slots, matrix)")
def test_concurrent_readers_see_old_or_new_never_half(store_path: str) -> None:
    texts = ["alpha version of the fact", "beta version of the fact"]
    emb = HashingEmbedder()
    want = {t: emb.embed([t])[0] for t in texts}
    with Mnemos.open(store_path) as db:
        a = db.remember(texts[0], {"v": 0})
        for i in range(50):
            db.remember(f"filler memory {i}")
        stop = threading.Event()
        errors: list[str] = []

        def reader() -> None:
            eng = db._engine
            while not stop.is_set():
                with eng.snapshot() as snap:
                    rec = eng.record(snap.txn, a)
                    live = snap.live_mask()
                    n_live = int((snap.slots["id"][live] == a).sum())
                    vec = snap.matrix[rec.slot]
                    ok = (rec.text in want and np.allclose(vec, want[rec.text], atol=1e-6)
                          and rec.metadata["v"] == texts.index(rec.text) and n_live == 1
                          and live[rec.slot])
                    if not ok:
                        errors.append(f"{rec.text!r} {rec.metadata} live={n_live}")
                hits = db.ask("version of the fact", top_k=3)
                if [h.id for h in hits].count(a) != 1:
                    errors.append("ask returned the memory twice or not at all")

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(40):
            k = (i + 1) % 2
            db.update(a, text=texts[k], metadata={"v": k})
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert verified(db)


# -- replay, compaction, capacity ------------------------------------------------------------------

def _random_history(db: Mnemos, rng: random.Random, steps: int) -> None:
    words = "apple banana cherry delta echo foxtrot golf hotel india juliet".split()
    names = ["default", "a", "b"]

    def txt() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))

    for _ in range(steps):
        h = db if (n := rng.choice(names)) == "default" else db.namespace(n)
        live = [m.id for m in h.memories()]
        r = rng.random()
        if r < 0.3 or len(live) < 2:
            h.remember(txt(), {"n": rng.randint(0, 9)}, type=rng.choice(["episodic", "semantic"]))
        elif r < 0.5:
            h.update(rng.choice(live), text=txt())
        elif r < 0.6:
            h.update(rng.choice(live), metadata={"n": rng.randint(0, 9)}, timestamp=rng.randint(1, 10**6))
        elif r < 0.72:
            h.upsert(f"key{rng.randint(0, 4)}", txt(), {"u": True})
        elif r < 0.8:
            h.connect(*rng.sample(live, 2), relation=rng.choice(["next", "about"]))
        elif r < 0.88:
            h.forget(rng.choice(live))
        elif r < 0.93:
            h.pin(rng.choice(live))
        elif r < 0.97:
            db.drop_namespace(rng.choice(["a", "b"]))
        elif not on_postgres(db):  # (compact is embedded-only: docs/postgres.md)
            db.compact()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_update_upsert_drop_replay_to_the_same_digest(opener, tmp_path, seed: int) -> None:
    src = opener("src.mem")
    rng = random.Random(seed)
    _random_history(src, rng, 120)
    assert verified(src)
    info = src.export_replay(str(tmp_path / "h.rpl"))
    dst = opener(f"dst{seed}.mem")
    res = dst.replay(str(tmp_path / "h.rpl"))
    assert res.digest == src.state_digest() == info.digest
    assert verified(dst)
    q = "apple banana cherry"
    for name in ("default", "a", "b"):
        hs, hd = src.namespace(name), dst.namespace(name)
        assert [(m.id, m.text, m.updated_at) for m in hs.memories()] == \
            [(m.id, m.text, m.updated_at) for m in hd.memories()]
        assert [(h.id, h.score) for h in hs.ask(q, top_k=10)] == [(h.id, h.score) for h in hd.ask(q, top_k=10)]
    if on_postgres(src):
        return  # (compact is embedded-only: docs/postgres.md)
    # after a compaction the export starts from a base snapshot: still the same state
    src.compact()
    src.export_replay(str(tmp_path / "h2.rpl"))
    dst2 = opener(f"dst2-{seed}.mem")
    assert dst2.replay(str(tmp_path / "h2.rpl")).digest == src.state_digest()
    assert verified(dst2)


def test_namespace_filtered_export_keeps_updates_and_drops(opener, tmp_path) -> None:
    src = opener("src.mem")
    a = src.namespace("a")
    x = a.remember("first")
    a.update(x, text="first, revised")
    src.namespace("b").remember("other")
    a.drop()
    y = a.remember("after drop")
    a.upsert("k", "keyed")
    a.upsert("k", "keyed again")
    src.export_replay(str(tmp_path / "a.rpl"), namespaces=["a"])
    dst = opener("dst.mem")
    res = dst.replay(str(tmp_path / "a.rpl"))
    assert res.digest_matches
    assert [m.text for m in dst.namespace("a").memories()] == ["after drop", "keyed again"]
    assert dst.namespace("a").get(y).text == "after drop"


@pytest.mark.embedded_only("compact")
def test_compaction_after_updates_keeps_answers_and_sorts_slots(db: Mnemos) -> None:
    ids = db.remember_many([f"note {w}" for w in "red green blue cyan magenta".split()])
    db.update(ids[0], text="note about crimson")
    db.update(ids[2], metadata={"x": 1})
    db.forget(ids[3])
    before = [(h.id, h.text) for h in db.ask("note crimson", top_k=5)]
    vecs = {i: db.get_vector(i) for i in (ids[0], ids[1], ids[2], ids[4])}
    digest = db.state_digest(["default"])  # (the whole-store digest counts the compact op)
    assert db._engine.read_state().unsorted == 1
    out = db.compact()
    assert out["slots_after"] == 4
    st = db._engine.read_state()
    assert st.unsorted == 0
    with db._engine.snapshot() as snap:
        assert list(snap.slots["id"]) == sorted(vecs)
    assert [(h.id, h.text) for h in db.ask("note crimson", top_k=5)] == before
    assert all(np.array_equal(db.get_vector(i), v) for i, v in vecs.items())
    assert db.state_digest(["default"]) == digest
    assert verified(db)


@pytest.mark.embedded_only("set_capacity: capacity limits are not enforced by the PostgreSQL engine")
def test_update_respects_byte_capacity(db: Mnemos) -> None:
    ns = db.namespace("cap")
    ids = [ns.remember(f"short {i}", timestamp=1000.0 + i) for i in range(5)]
    used = db.stats()["capacity"]["namespaces"]["cap"]["bytes"]
    ns.set_capacity(max_bytes=used + 20)
    # growing the newest memory's text pushes the namespace over: the oldest goes
    ns.update(ids[4], text="short 4 " + "much longer now " * 3)
    assert ids[0] not in [m.id for m in ns.memories()]
    assert ids[4] in [m.id for m in ns.memories()]
    assert db.stats()["capacity"]["namespaces"]["cap"]["bytes"] <= used + 20
    assert verified(db)
    # an upsert replace does not count as a new entry
    ns.set_capacity(max_entries=ns.count())
    k = ns.upsert("k", "keyed")  # a new memory: one eviction
    n = ns.count()
    ns.upsert("k", "keyed, replaced")
    assert ns.count() == n and k in [m.id for m in ns.memories()]
    assert verified(db)


@pytest.mark.embedded_only("set_capacity: capacity limits are not enforced by the PostgreSQL engine")
def test_update_cannot_break_a_pinned_limit(db: Mnemos) -> None:
    ns = db.namespace("p")
    a = ns.remember("tiny", pinned=True)
    used = db.stats()["capacity"]["namespaces"]["p"]["bytes"] if db.stats()["capacity"]["namespaces"]["p"]["bytes"] else 0
    ns.set_capacity(max_bytes=used + 5)
    seq = _seq(db)
    with pytest.raises(CapacityError):
        ns.update(a, text="tiny but now much much longer than the limit allows")
    assert ns.get(a).text == "tiny" and _seq(db) == seq


# -- crash recovery ------------------------------------------------------------------------------

@pytest.mark.embedded_only("a writer killed mid-write is a rolled-back transaction on the server (no log tail or dead marks to undo)")
def test_uncommitted_update_and_drop_are_undone(store_path: str) -> None:
    from mnemos_kv import _records as R
    from mnemos_kv._log import encode_frame, log_file
    from mnemos_kv._vectors import HEADER, SLOT_DTYPE, slot_file
    with Mnemos.open(store_path) as s:
        a = s.remember("kept as it was")
        s.namespace("n").remember_many(["n one", "n two"])
        seq = s.stats()["seq"]
        ns_id = s._engine.ns_id("n")
    vec = np.zeros(512, np.float32).tobytes()
    ops = [{"op": "update", "id": a, "ns": 0, "text": "ghost", "meta": {}, "type": 0, "ts": 0,
            "vec": vec, "at": 0}, {"op": "drop", "ns": ns_id, "name": "n"}]
    with open(log_file(store_path, 1), "ab") as f:
        f.write(b"".join(encode_frame(seq + 1 + i, R.encode(op)) for i, op in enumerate(ops)))
    arr = np.memmap(slot_file(store_path, 1), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
    arr["dead"][:4] = [seq + 1, seq + 2, seq + 2, 0][:4]  # the dead marks a dying writer set
    arr.flush()
    del arr
    with Mnemos.open(store_path) as s:
        assert s.get(a).text == "kept as it was"
        assert s.namespace("n").count() == 2
        assert [h.id for h in s.ask("kept", top_k=1)] == [a]
        assert len(s.namespace("n").ask("n one", top_k=5)) == 2
        assert verified(s)


@pytest.mark.embedded_only("vector files and their recovery on open")
def test_lost_vector_rows_of_updates_and_drops_are_rebuilt(store_path: str) -> None:
    from mnemos_kv._vectors import HEADER, SLOT_DTYPE, slot_file, vector_file
    with Mnemos.open(store_path) as s:
        ids = s.remember_many([f"memory number {i}" for i in range(300)])  # synced at the end
        s.update(ids[5], text="memory five rewritten")
        s.namespace("gone").remember_many(["doomed one", "doomed two"])
        s.drop_namespace("gone")
        s.update(ids[6], metadata={"m": 1})
        want = {i: s.get_vector(i) for i in ids[:10]}
        st = s._engine.read_state()
        assert st.vsync_seq < st.seq
        hits = [(h.id, h.score) for h in s.ask("memory five rewritten", top_k=5)]
        digest = s.state_digest()
        vec = np.memmap(vector_file(store_path, 1), dtype="<f4", mode="r+", offset=HEADER).reshape(-1, 512)
        cols = np.memmap(slot_file(store_path, 1), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
        vec[st.vsync_slots:st.n_slots] = 0
        cols[st.vsync_slots:st.n_slots] = np.zeros(1, SLOT_DTYPE)
        cols["dead"][:] = 0
        vec.flush()
        cols.flush()
        del vec, cols
        s._engine.closed = True
        s._engine.vectors.close()
        s._engine.log.close()
        from mnemos_kv import _storage
        _storage.release(s._engine.env)
    with Mnemos.open(store_path) as s:
        for i, v in want.items():
            assert np.array_equal(s.get_vector(i), v)
        assert [(h.id, h.score) for h in s.ask("memory five rewritten", top_k=5)] == hits
        assert s.state_digest() == digest
        assert verified(s)


def test_update_and_drop_keep_the_filter_index_in_step(db: Mnemos) -> None:
    a = db.remember("alpha memory", {"stage": 1, "tags": {"x": "a"}})
    b = db.remember("beta memory", {"stage": 2})
    assert [m.id for m in db.ask("memory", filter={"stage": {"$gte": 2}})] == [b]
    db.update(a, metadata={"stage": 5})
    assert sorted(m.id for m in db.ask("memory", filter={"stage": {"$gte": 2}})) == [a, b]
    assert db.count(filter={"tags.x": "a"}) == 0
    ns = db.namespace("n")
    ns.remember_many([{"text": f"n {i}", "metadata": {"stage": i}} for i in range(5)])
    assert ns.count(filter={"stage": {"$lt": 3}}) == 3
    ns.drop()
    assert ns.count(filter={"stage": {"$lt": 3}}) == 0
    ns.remember("again", {"stage": 0})
    assert ns.count(filter={"stage": {"$lt": 3}}) == 1
    assert verified(db)


def test_drop_removes_edges_from_other_namespaces_into_it(db: Mnemos) -> None:
    a = db.remember("in default")
    b = db.namespace("x").remember("in x")
    # the public API links within one namespace; an op can link across (e.g. a replayed
    # history of another tool): the drop must not leave a dangling edge behind
    db._engine.write([("op", {"op": "link", "src": a, "dst": b, "rel": "about", "w": 1.0})])
    assert [e.dst for e in db.neighbors(a)] == [b]
    assert db.drop_namespace("x") == 1
    assert db.neighbors(a) == []
    assert verified(db)


def test_a_namespace_batch_cannot_drop_another_namespace(db: Mnemos) -> None:
    db.namespace("b").remember("keep me")
    bt = db.namespace("a").batch()
    with pytest.raises(InvalidInputError):
        bt.drop_namespace("b")
    bt.drop_namespace("a")  # its own: allowed
    bt.commit()
    assert db.namespace("b").count() == 1


@pytest.mark.embedded_only("its reader processes check the engine's snapshot internals (slots, matrix)")
def test_reader_processes_see_old_or_new_never_half(store_path: str, tmp_path) -> None:
    import os

    from _mp_workers import result, spawn
    with Mnemos.open(store_path) as db:
        t = "alpha version of the shared fact"
        a = db.remember(t, {"text": t})
        db.remember_many([f"filler memory {i}" for i in range(30)])
    stop = str(tmp_path / "stop")
    readers = [spawn("update_reader", store_path, stop, str(a)) for _ in range(2)]
    done = result(spawn("updater", store_path, str(a), "60"))
    open(stop, "w").close()
    seen = [result(r) for r in readers]
    assert done["updates"] == 60
    for s in seen:
        assert s["errors"] == [], s["errors"]
        assert s["iters"] >= 3
    with Mnemos.open(store_path) as db:
        assert db.get(a).text == "alpha version of the shared fact"  # 60 updates: back to alpha
        assert verified(db)
