"""One sync per small write (format 3): committed frames wait in LMDB's ``pending`` table
until a flush fdatasyncs the log file. A crash at every instant of that scheme keeps
every returned write: between a commit and the flush (process kill, or a machine crash
that loses the unsynced log and vector pages), during the flush, and after it."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from mnemos_kv import CorruptionError, Mnemos, NeedsRecoveryError, StorageError
from mnemos_kv import _engine, _pending, _storage
from mnemos_kv._log import log_file
from mnemos_kv._vectors import HEADER, SLOT_DTYPE, slot_file, vector_file

DIM = 512


def _drop(db: Mnemos) -> None:
    """Leave the store as a killed process would: nothing closed, nothing synced."""
    eng = db._engine
    eng.closed = True
    eng.vectors.close()
    eng.log.close()
    _storage.release(eng.env)


def _lose_page_cache(path: str, st: _engine.State, log_cut: str = "sync") -> None:
    """What a machine crash may do to the files mnemos-kv did not fdatasync: the log loses
    (or zeroes) what follows ``log_sync``, the vector and slot rows written since the last
    flush are zeroed, and dead marks since then are lost. (LMDB is as it committed.)"""
    lp = log_file(path, st.log_seg)
    if log_cut == "sync":
        os.truncate(lp, st.log_sync)
    elif log_cut == "middle":  # cut inside the unsynced range, mid-frame
        os.truncate(lp, (st.log_sync + st.log_end) // 2)
    elif log_cut == "zeros":  # the size reached the disk, the data did not
        with open(lp, "r+b") as f:
            f.seek(st.log_sync)
            f.write(b"\0" * (st.log_end - st.log_sync))
    vec = np.memmap(vector_file(path, st.gen), dtype="<f4", mode="r+", offset=HEADER).reshape(-1, DIM)
    cols = np.memmap(slot_file(path, st.gen), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
    vec[st.vsync_slots:] = 0
    cols[st.vsync_slots:] = np.zeros(1, SLOT_DTYPE)
    vec.flush()
    cols.flush()
    del vec, cols


def _workload(db: Mnemos) -> dict[int, tuple[str, np.ndarray]]:
    ids = db.remember_many([f"bulk memory {i}" for i in range(40)])
    db.sync()  # a flush: everything so far is in the synced files
    db.forget(ids[3])  # syncs the log before its dead mark, not the vector files
    for i in range(12):  # small writes: frames only in ``pending`` and the page cache
        mid = db.remember(f"small memory {i}", {"i": i})
        if i % 4 == 0:
            db.connect(mid, ids[0], relation="about")
    return {m.id: (m.text, db.get_vector(m.id)) for m in db.memories()}


@pytest.mark.parametrize("log_cut", ["sync", "middle", "zeros", "none"])
def test_machine_crash_between_commit_and_flush(store_path: str, log_cut: str) -> None:
    db = Mnemos.open(store_path)
    want = _workload(db)
    digest = db.state_digest()
    hits = [(h.id, h.score) for h in db.ask("small memory 7", top_k=5)]
    st = db._engine.read_state()
    assert st.log_sync < st.log_end and st.vsync_seq < st.seq  # the instant under test
    _drop(db)
    if log_cut != "none":
        _lose_page_cache(store_path, st, log_cut)
    with Mnemos.open(store_path) as db:
        st2 = db._engine.read_state()
        assert st2.log_sync == st2.log_end and st2.vsync_seq == st2.seq  # flushed on open
        assert os.path.getsize(log_file(store_path, st.log_seg)) == st.log_end
        assert db.verify().ok
        assert db.state_digest() == digest
        got = {m.id: (m.text, db.get_vector(m.id)) for m in db.memories()}
        assert got.keys() == want.keys()
        for mid, (text, vec) in want.items():
            assert got[mid][0] == text and np.array_equal(got[mid][1], vec)
        assert [(h.id, h.score) for h in db.ask("small memory 7", top_k=5)] == hits
        with db._engine.env.read() as txn:
            assert txn.stat(db._engine.env.db("pending"))["entries"] == 0
        # the replay log is whole again: an export replays to the same state
        out = os.path.join(os.path.dirname(store_path), "x.replay")
        db.export_replay(out)
    with Mnemos.open(os.path.join(os.path.dirname(store_path), "copy")) as copy:
        copy.replay(out)
        assert copy.state_digest() == digest


@pytest.mark.parametrize("log_cut", ["sync", "zeros"])
def test_machine_crash_after_a_log_sync_takes_rows_from_kept_entries(store_path: str,
                                                                      log_cut: str) -> None:
    """Format 7 keeps a write's vector rows in its ``pending`` entry until the vector flush,
    also after a later write synced the log (a forget): a machine crash that loses the
    unflushed rows of the vector file gets them back from those entries."""
    db = Mnemos.open(store_path)
    ids = db.remember_many([f"bulk memory {i}" for i in range(40)])
    db.sync()
    early = [db.remember(f"early memory {i}", {"i": i}) for i in range(6)]
    db.forget(ids[5])  # a log sync: the six entries stay (their frames are in the log now)
    late = [db.remember(f"late memory {i}") for i in range(3)]
    want = {m.id: (m.text, db.get_vector(m.id)) for m in db.memories()}
    digest = db.state_digest()
    st = db._engine.read_state()
    with db._engine.env.read() as txn:
        kept = [off for _s, off, v in _pending.entries(txn, db._engine.env.db("pending"))
                if _pending.unpack(v)[2]]
    assert sum(off < st.log_sync for off in kept) == 6 and len(kept) == 9  # the instant
    _drop(db)
    _lose_page_cache(store_path, st, log_cut)
    with Mnemos.open(store_path) as db:
        assert db.verify().ok and db.state_digest() == digest
        for mid in early + late:
            assert np.array_equal(db.get_vector(mid), want[mid][1])
        assert db.ask("early memory 4", top_k=1)[0].id == early[4]


def test_kill_with_pending_frames_then_other_writer(store_path: str) -> None:
    """A killed process leaves ``pending`` full; the next writer (another handle) keeps
    appending after it and the first flush empties it."""
    db = Mnemos.open(store_path)
    first = [db.remember(f"before kill {i}") for i in range(5)]
    _drop(db)
    with Mnemos.open(store_path) as db:
        assert db.count() == 5
        more = [db.remember(f"after kill {i}") for i in range(5)]
        assert db._engine.read_state().log_sync < db._engine.read_state().log_end
        assert db.verify().ok
    with Mnemos.open(store_path, readonly=True) as ro:
        assert [m.id for m in ro.memories()] == first + more
        st = ro._engine.read_state()
        assert st.log_sync == st.log_end  # close flushed


def test_crash_during_flush_keeps_pending(store_path: str, monkeypatch) -> None:
    """A flush that fails after the log fdatasync but before its commit (e.g. the vector
    file sync fails, or the process dies there): the transaction aborts, ``pending``
    and ``log_sync`` stay as committed, and the machine-crash repair still works."""
    db = Mnemos.open(store_path)
    ids = [db.remember(f"memory {i}") for i in range(6)]
    st = db._engine.read_state()
    assert st.log_sync < st.log_end

    def fail(gen=None) -> None:
        raise OSError(5, "simulated I/O failure in the flush")
    monkeypatch.setattr(db._engine.vectors, "sync", fail)
    with pytest.raises(StorageError, match="simulated"):
        db.sync()
    monkeypatch.undo()
    assert db._engine.read_state() == st
    _drop(db)
    _lose_page_cache(store_path, st, "sync")
    with Mnemos.open(store_path) as db:
        assert [m.id for m in db.memories()] == ids and db.verify().ok


def test_crash_after_flush_before_next_write(store_path: str) -> None:
    """After a flush commits, ``pending`` is empty and the files hold everything."""
    db = Mnemos.open(store_path)
    ids = [db.remember(f"memory {i}") for i in range(6)]
    db.sync()
    st = db._engine.read_state()
    assert st.log_sync == st.log_end and st.vsync_seq == st.seq
    _drop(db)
    _lose_page_cache(store_path, st, "sync")  # nothing unsynced to lose
    with Mnemos.open(store_path) as db:
        assert [m.id for m in db.memories()] == ids and db.verify().ok


def test_flush_every_vsync_ops(store_path: str) -> None:
    """``pending`` never holds more than VSYNC_EVERY operations' frames."""
    with Mnemos.open(store_path) as db:
        eng = db._engine
        worst = 0
        for i in range(_engine.VSYNC_EVERY + 10):
            db.remember(f"m {i}")
            with eng.env.read() as txn:
                worst = max(worst, txn.stat(eng.env.db("pending"))["entries"])
        assert 0 < worst <= _engine.VSYNC_EVERY


def test_big_write_syncs_the_log_instead(store_path: str, monkeypatch) -> None:
    monkeypatch.setattr(_engine, "PENDING_MAX_BYTES", 4096)
    with Mnemos.open(store_path) as db:
        db.remember("small")
        st = db._engine.read_state()
        assert st.log_sync < st.log_end
        db.remember_many([f"a larger batch {i}" for i in range(10)])
        st = db._engine.read_state()
        assert st.log_sync == st.log_end  # log fdatasync'ed, pending emptied
        with db._engine.env.read() as txn:
            assert txn.stat(db._engine.env.db("pending"))["entries"] == 0


def test_compaction_with_pending_frames(store_path: str, tmp_path) -> None:
    db = Mnemos.open(store_path)
    ids = [db.remember(f"memory {i}") for i in range(8)]
    db.forget(ids[0])
    db.remember("after the forget")
    db.compact()
    st = db._engine.read_state()
    assert st.log_sync == st.log_end
    with db._engine.env.read() as txn:
        assert txn.stat(db._engine.env.db("pending"))["entries"] == 0
    late = db.remember("after compaction")
    st = db._engine.read_state()
    _drop(db)
    _lose_page_cache(store_path, st, "sync")
    with Mnemos.open(store_path) as db:
        assert late in db and ids[0] not in db and db.verify().ok


def test_damaged_pending_with_lost_log_needs_recovery(store_path: str) -> None:
    db = Mnemos.open(store_path)
    [db.remember(f"memory {i}") for i in range(3)]
    st = db._engine.read_state()
    env = db._engine.env

    def body(txn) -> None:
        k, v = next(iter(txn.cursor(db=env.db("pending"))))
        at = len(v) - len(_pending.unpack(v)[2]) - 1  # the frames' last byte (rows follow)
        txn.put(k, v[:at] + bytes([v[at] ^ 1]) + v[at + 1:], db=env.db("pending"))
    env.write(body)
    saved = os.path.join(os.path.dirname(store_path), "saved.mdb")
    _drop(db)
    shutil.copy(os.path.join(store_path, "data.mdb"), saved)
    # the log is intact: the damaged copy is not needed, the store opens
    with Mnemos.open(store_path) as db:
        assert db.count() == 3 and db.verify().ok
    # the log lost its unsynced part and the copy in data.mdb is damaged: refuse
    shutil.copy(saved, os.path.join(store_path, "data.mdb"))
    os.truncate(log_file(store_path, st.log_seg), st.log_sync)
    with pytest.raises(NeedsRecoveryError, match="checksum"):
        Mnemos.open(store_path)


def _damage_row_copy(v: bytes, row_bytes: int) -> bytes:
    """One bit of the entry's row copy flipped (its frames and header intact)."""
    assert [s for s, _r in _pending.rows_of(v, row_bytes)] == [1]
    return v[:-5] + bytes([v[-5] ^ 1]) + v[-4:]


def _damage_header(v: bytes, row_bytes: int) -> bytes:
    """The entry's header says its frames are longer than the whole value: nothing in it
    can be told apart (its rows included)."""
    assert v[:4] == _pending.MARK
    bad = v[:4] + (len(v) + 1).to_bytes(4, "little") + v[8:]
    with pytest.raises(CorruptionError):
        _pending.unpack(bad)
    return bad


@pytest.mark.parametrize("damage", [_damage_row_copy, _damage_header], ids=["row", "header"])
def test_damaged_pending_entry_is_needed_only_when_the_file_lost_the_row(
        store_path: str, caplog, damage) -> None:
    """A write's unflushed vector row is kept in its ``pending`` entry (format 7). A damaged
    copy -- a bad row, or a header too damaged to read the entry at all (left out with a
    warning, as ``recover`` does) -- is not needed while the vector file holds the row
    (the store opens whole); when the file lost it too (a machine crash), opening for
    writing refuses rather than guess, naming the row."""
    db = Mnemos.open(store_path)
    ids = [db.remember(f"memory {i}") for i in range(3)]
    vec = db.get_vector(ids[1])
    st = db._engine.read_state()
    env = db._engine.env
    row_bytes = 4 * db._engine.dim

    def body(txn) -> None:
        k, v = list(txn.cursor(db=env.db("pending")))[1]
        txn.put(k, damage(v, row_bytes), db=env.db("pending"))
    env.write(body)
    saved = os.path.join(os.path.dirname(store_path), "saved.mdb")
    _drop(db)
    shutil.copy(os.path.join(store_path, "data.mdb"), saved)
    with caplog.at_level(logging.WARNING, logger="mnemos_kv"):
        with Mnemos.open(store_path) as db:  # the file's row is intact: taken as it is
            db.remember("one more")  # (a writer: the unflushed rows are re-applied)
            assert db.count() == 4 and np.array_equal(db.get_vector(ids[1]), vec)
            assert db.verify().ok
    warned = any("damaged" in r.getMessage() and "pending" in r.getMessage()
                 for r in caplog.records)
    assert warned == (damage is _damage_header)  # (a bad row copy is caught by its CRC)
    shutil.copy(saved, os.path.join(store_path, "data.mdb"))
    with open(vector_file(store_path, st.gen), "r+b") as f:  # ... and lost from the file
        f.seek(HEADER + row_bytes)
        f.write(bytes(row_bytes))
    with pytest.raises(NeedsRecoveryError, match="unflushed vector row 1"):
        Mnemos.open(store_path).remember("one more")


def test_pending_rows_in_skips_damaged_entries() -> None:
    """``rows_in`` (shared by the engine and ``recover``) keeps every decodable entry's
    rows and counts the others."""
    row = bytes(range(8))
    good = _pending.pack(b"frames", 4, row + row[::-1])
    cut = _pending.pack(b"frames", 9, row)[:-1]          # rows not whole
    head = _pending.MARK + (99).to_bytes(4, "little")     # header cut short
    rows, bad = _pending.rows_in([good, cut, head, b"plain frames"], len(row))
    assert rows == {4: row, 5: row[::-1]} and bad == 2


def test_recover_takes_lost_log_bytes_from_pending(store_path: str) -> None:
    """A machine crash lost the unflushed log tail, and the vector file is lost too (open
    refuses): ``recover`` rebuilds from base snapshot + log, the log's lost committed
    bytes read from data.mdb's ``pending`` table (by pread, without LMDB)."""
    db = Mnemos.open(store_path)
    want = _workload(db)
    digest = db.state_digest()
    st = db._engine.read_state()
    _drop(db)
    _lose_page_cache(store_path, st, "middle")
    os.unlink(vector_file(store_path, st.gen))
    with pytest.raises(NeedsRecoveryError):
        Mnemos.open(store_path)
    rep = Mnemos.recover(store_path)
    assert rep.complete, rep
    assert any("taken from data.mdb" in n for n in rep.notes)
    with Mnemos.open(store_path) as db:
        assert db.verify().ok and db.state_digest() == digest
        assert {m.id: m.text for m in db.memories()} == {k: v[0] for k, v in want.items()}
        for mid, (_t, vec) in want.items():
            assert np.array_equal(db.get_vector(mid), vec)


def test_check_meta_picks_the_newest_meta_page(store_path: str) -> None:
    """Regression: the pread check of data.mdb returned meta page 1 whatever the txnids,
    so ``recover`` read the state a transaction behind after every even one."""
    from mnemos_kv import _lmdbcheck
    with Mnemos.open(store_path) as db:
        seen = set()
        for i in range(4):
            db.remember(f"m {i}")
            last = db._engine.env.env.info()["last_txnid"]
            meta = _lmdbcheck.check_meta(os.path.join(store_path, "data.mdb"))
            assert meta.txnid == last and meta.page == last % 2
            seen.add(meta.page)
        assert seen == {0, 1}


# -- vectors stored once: base snapshots name their rows in the vector file -------------


def test_base_snapshot_names_rows_and_export_inlines_them(store_path: str, tmp_path) -> None:
    from mnemos_kv._snapshot import snapshot_file, snapshot_gen, snapshot_ops
    with Mnemos.open(store_path) as db:
        ids = db.remember_many([f"memory {i}" for i in range(30)])
        db.forget(ids[4])
        db.compact()
        db.remember("after compaction")
        digest = db.state_digest()
        base_seq = db._engine.log.base_seq
        path = snapshot_file(store_path, base_seq)
        assert snapshot_gen(path) == db._engine.read_state().gen
        mems = [op for op in snapshot_ops(path) if op["op"] == "mem"]
        assert mems and all("vec" not in op and "vrow" in op for op in mems)
        # the snapshot is now small: no vector bytes in it
        assert os.path.getsize(path) < 30 * DIM * 4 / 4
        out = str(tmp_path / "x.replay")
        db.export_replay(out)
        vecs = {m.id: db.get_vector(m.id) for m in db.memories()}
    from mnemos_kv._replay import iter_ops
    assert all(isinstance(op["vec"], bytes) for _s, _q, op in iter_ops(out) if op["op"] == "mem")
    with Mnemos.open(str(tmp_path / "copy")) as copy:
        copy.replay(out)
        assert copy.state_digest() == digest
        assert all(np.array_equal(copy.get_vector(i), v) for i, v in vecs.items())


def test_recover_reembeds_a_damaged_base_row(store_path: str) -> None:
    """A flipped bit in a vector row that only the vector file holds (the base snapshot
    names it): with data.mdb lost too, ``recover`` embeds the text again; the default
    embedder is deterministic, so the CRC-16 confirms the very same vector."""
    with Mnemos.open(store_path) as db:
        ids = db.remember_many([f"memory about topic {i}" for i in range(20)])
        db.compact()
        digest = db.state_digest()
        vecs = {i: db.get_vector(i) for i in ids}
        st = db._engine.read_state()
        with db._engine.env.read() as txn:
            slot = db._engine.record(txn, ids[5]).slot
    vec = np.memmap(vector_file(store_path, st.gen), dtype="<f4", mode="r+", offset=HEADER)
    vec[slot * DIM + 7] = np.float32(0.5)
    vec.flush()
    del vec
    os.unlink(os.path.join(store_path, "data.mdb"))
    rep = Mnemos.recover(store_path)
    assert rep.complete, rep
    assert any("embedded again" in n and "1 identical" in n for n in rep.notes), rep.notes
    with Mnemos.open(store_path) as db:
        assert db.verify().ok and db.state_digest() == digest
        assert all(np.array_equal(db.get_vector(i), v) for i, v in vecs.items())


def test_recover_without_the_embedder_of_a_damaged_row_says_so(store_path: str) -> None:
    from mnemos_kv import StoreError
    from mnemos_kv.embedders import CallableEmbedder
    emb = CallableEmbedder(lambda texts: np.ones((len(texts), 8), np.float32), name="ones", dim=8)
    with Mnemos.open(store_path, embedder=emb) as db:
        db.remember_many(["a", "b"], )
        db.compact()
        st = db._engine.read_state()
    os.unlink(vector_file(store_path, st.gen))
    os.unlink(os.path.join(store_path, "data.mdb"))
    with pytest.raises(StoreError, match="embedder="):
        Mnemos.recover(store_path)
    rep = Mnemos.recover(store_path, embedder=emb)
    assert rep.complete and any("embedded again" in n for n in rep.notes)


def test_read_only_export_after_machine_crash_refuses_until_repaired(store_path: str, tmp_path) -> None:
    db = Mnemos.open(store_path)
    [db.remember(f"memory {i}") for i in range(4)]
    st = db._engine.read_state()
    _drop(db)
    os.truncate(log_file(store_path, st.log_seg), st.log_sync)
    with Mnemos.open(store_path, readonly=True) as ro:
        with pytest.raises(CorruptionError, match="committed"):
            ro.export_replay(str(tmp_path / "a.replay"))
        assert not ro.verify().ok
    with Mnemos.open(store_path) as db:  # the read-write open repairs
        db.export_replay(str(tmp_path / "b.replay"))
        assert db.verify().ok and db.count() == 4


def test_verify_checks_pending_against_the_log(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        [db.remember(f"memory {i}") for i in range(3)]
        rep = db.verify()
        assert rep.ok and rep.checked["pending_bytes"] > 0
        st = db._engine.read_state()
        with open(log_file(store_path, st.log_seg), "r+b") as f:  # damage the unflushed tail
            f.seek(st.log_end - 3)
            f.write(b"\x00\x01\x02")
        rep = db.verify()
        assert not rep.ok and any("pending" in p for p in rep.problems), rep
        env = db._engine.env

        def body(txn) -> None:
            k, _v = next(iter(txn.cursor(db=env.db("pending"))))
            txn.delete(k, db=env.db("pending"))
        env.write(body)
        assert any("covers" in p or "outside" in p for p in db.verify().problems)
        db._engine.closed = True  # (leave it damaged; the test store is discarded)
        db._engine.vectors.close()
        db._engine.log.close()
        _storage.release(db._engine.env)


def test_log_frames_name_rows_and_pending_holds_them_until_the_flush(store_path: str,
                                                                     tmp_path) -> None:
    """Each vector is stored once: a log frame names its row, and until the flush the row
    is also in the write's ``pending`` entry (format 7; ``vrows`` before), which a log
    sync (a forget) keeps and the flush empties."""
    from mnemos_kv import _records as R

    def kept(eng) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
        with eng.env.read() as txn:
            assert txn.stat(eng.env.db("vrows"))["entries"] == 0  # (formats 3-6 only)
            out: dict[int, bytes] = {}
            for _seg, _off, v in _pending.entries(txn, eng.env.db("pending")):
                out.update(_pending.rows_of(v, 4 * eng.dim))
            return out

    with Mnemos.open(store_path) as db:
        eng = db._engine
        ids = [db.remember(f"memory {i}") for i in range(5)]
        st = eng.read_state()
        ops = [R.decode(p) for _o, _s, p in eng.log.frames(st.vsync_off, st.log_end)]
        mems = [op for op in ops if op["op"] == "mem"]
        assert [op["id"] for op in mems] == ids
        assert all("vec" not in op and op["vrow"] == st.n_slots - 5 + k for k, op in enumerate(mems))
        rows = kept(eng)
        assert sorted(rows) == [op["vrow"] for op in mems]
        for op in mems:
            assert rows[op["vrow"]] == db.get_vector(op["id"]).tobytes()
        db.forget(ids[0])  # a log sync, not a vector flush: the rows stay
        assert kept(eng) == rows
        assert db.verify().ok
        out = str(tmp_path / "x.replay")
        db.export_replay(out)
        digest = db.state_digest()
        db.sync()  # the flush empties pending
        assert kept(eng) == {}
        with eng.env.read() as txn:
            assert txn.stat(eng.env.db("pending"))["entries"] == 0
    from mnemos_kv._replay import iter_ops
    assert all(isinstance(op["vec"], bytes) and "vrow" not in op
               for _s, _q, op in iter_ops(out) if op["op"] == "mem")
    with Mnemos.open(str(tmp_path / "copy")) as copy:
        copy.replay(out)
        assert copy.state_digest() == digest


def test_verify_finds_a_row_that_differs_from_its_log_frame(store_path: str) -> None:
    with Mnemos.open(store_path) as db:
        ids = [db.remember(f"memory {i}") for i in range(3)]
        db.sync()
        with db._engine.env.read() as txn:
            slot = db._engine.record(txn, ids[1]).slot
        st = db._engine.read_state()
        vec = np.memmap(vector_file(store_path, st.gen), dtype="<f4", mode="r+", offset=HEADER)
        vec[slot * DIM + 3] += np.float32(0.25)
        vec.flush()
        del vec
        rep = db.verify()
        assert not rep.ok and any(f"memory {ids[1]}" in p for p in rep.problems), rep


def test_fast_mode_machine_crash_undoes_only_the_last_commit(store_path: str) -> None:
    """``"fast"``: the last commit's meta page may not reach the disk. With the unflushed
    log and vector pages lost too, the store opens with every earlier commit."""
    db = Mnemos.open(store_path, durability="fast")
    ids = [db.remember(f"memory {i}") for i in range(6)]
    db.sync()  # every commit so far durable, meta page included
    more = [db.remember(f"later memory {i}") for i in range(4)]
    saved = os.path.join(os.path.dirname(store_path), "saved.mdb")
    shutil.copy(os.path.join(store_path, "data.mdb"), saved)  # (fast: one more commit may go)
    st_saved = db._engine.read_state()
    late = db.remember("the commit a power cut undoes")
    _drop(db)
    shutil.copy(saved, os.path.join(store_path, "data.mdb"))
    _lose_page_cache(store_path, st_saved, "sync")
    with Mnemos.open(store_path, durability="fast") as db:
        assert db.verify().ok
        assert [m.id for m in db.memories()] == ids + more and late not in db
        assert db.remember("after the crash") == late
