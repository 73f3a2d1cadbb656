"""Durability modes, db.sync(), and full disks: what a crash or ENOSPC can cost."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

from mnemos_kv import DiskFullError, InvalidInputError, Mnemos, ReadOnlyError
from mnemos_kv import _pending, _storage
from mnemos_kv._log import log_file


def _crash(db: Mnemos) -> None:
    """Drop a store without closing it (no final sync), as a killed process would."""
    eng = db._engine
    eng.closed = True
    eng.vectors.close()
    eng.log.close()
    _storage.release(eng.env)


def _count_syncs(monkeypatch, env: _storage.Environment) -> list[int]:
    calls: list[int] = []
    real = env.sync_to_disk
    monkeypatch.setattr(env, "sync_to_disk", lambda: (calls.append(1), real())[1])
    return calls


def test_durability_is_validated(store_path: str) -> None:
    with pytest.raises(InvalidInputError, match="'sometimes'"):
        Mnemos.open(store_path, durability="sometimes")
    assert not os.path.exists(store_path)  # validated before anything is made


def test_full_mode_syncs_every_write_fast_mode_does_not(store_path: str, monkeypatch) -> None:
    with Mnemos.open(store_path) as db:
        assert db.durability == "full"
        calls = _count_syncs(monkeypatch, db._engine.env)
        db.remember("one")
        db.remember_many(["two", "three"])
        assert len(calls) == 2
    monkeypatch.undo()
    with Mnemos.open(store_path, durability="fast") as db:
        assert db.durability == "fast"
        calls = _count_syncs(monkeypatch, db._engine.env)
        a = db.remember("four")
        db.forget(a)
        assert calls == []
        db.sync()
        assert len(calls) == 1
        st = db._engine.read_state()
        assert st.vsync_seq == st.seq  # sync() also synced the vector files
        assert db.count() == 3


def test_one_sync_per_small_write_frames_durable_in_pending(store_path: str, monkeypatch) -> None:
    """A small write syncs nothing but LMDB: its frames are committed into ``pending`` (so
    LMDB never durably references a frame that is durable nowhere), in both modes; a
    write that sets dead marks fdatasyncs the log before setting them (write-ahead)."""
    order: list[str] = []
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        order.append(os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        real_fdatasync(fd)
    for mode in ("full", "fast"):
        with Mnemos.open(store_path, durability=mode) as db:
            eng = db._engine
            monkeypatch.setattr(os, "fdatasync", spy)
            order.clear()
            mid = db.remember(f"a {mode} memory")
            monkeypatch.undo()
            assert not any(name.endswith((".mlog", ".f32", ".bin")) for name in order)
            st = eng.read_state()
            assert st.log_sync < st.log_end
            with eng.env.read() as txn:
                frames = [_pending.unpack(v)[0] for _k, v in txn.cursor(db=eng.env.db("pending"))]
            assert b"".join(frames) == eng.log.read(st.log_sync, st.log_end)
            monkeypatch.setattr(os, "fdatasync", spy)
            order.clear()
            db.forget(mid)
            monkeypatch.undo()
            assert order[0].endswith(".mlog")
            st = eng.read_state()
            assert st.log_sync == st.log_end
            with eng.env.read() as txn:  # (the remember's entry stays for its row until
                kept = list(_pending.entries(txn, eng.env.db("pending")))  # the flush)
            assert kept and all(off < st.log_sync and _pending.unpack(v)[2] for _s, off, v in kept)


def test_fast_mode_machine_crash_loses_at_most_the_last_commit(store_path: str) -> None:
    """Simulate a power cut in fast mode: LMDB's last meta page never reached the disk.

    The data file is put back as it was at the last sync; the log (synced before every
    commit) and the vector files keep what they had. The store opens, verifies, and
    holds everything up to the lost commit.
    """
    db = Mnemos.open(store_path, durability="fast")
    kept = db.remember_many([f"kept memory {i}" for i in range(20)])
    db.forget(kept[3])
    db.sync()
    shutil.copy(os.path.join(store_path, "data.mdb"), os.path.join(store_path, "..", "saved.mdb"))
    late = db.remember("the last memory before the power cut")
    log_size = os.path.getsize(log_file(store_path, 1))
    _crash(db)
    shutil.copy(os.path.join(store_path, "..", "saved.mdb"), os.path.join(store_path, "data.mdb"))
    assert os.path.getsize(log_file(store_path, 1)) == log_size  # the lost commit's frame is there
    with Mnemos.open(store_path, readonly=True) as ro:  # opens before any repair, consistent
        assert ro.verify().ok
        assert ro.count() == 19
    with Mnemos.open(store_path, durability="fast") as db:
        assert db.verify().ok
        assert db.count() == 19 and late not in db and kept[3] not in db
        assert all(m in db for m in kept if m != kept[3])
        assert os.path.getsize(log_file(store_path, 1)) < log_size  # the frame was dropped
        assert db.remember("after the crash") == late  # the lost id is handed out again


def test_sync_on_read_only_store_raises(store_path: str) -> None:
    Mnemos.open(store_path).close()
    with Mnemos.open(store_path, readonly=True) as ro:
        with pytest.raises(ReadOnlyError):
            ro.sync()


# -- full disks -------------------------------------------------------------------------


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _snapshot(db: Mnemos) -> tuple:
    st = db._engine.read_state()
    return (st.to_dict(), os.path.getsize(log_file(db.path, st.log_seg)))


def test_log_append_enospc_keeps_everything(db: Mnemos, monkeypatch) -> None:
    ids = db.remember_many([f"memory {i}" for i in range(10)])
    before = _snapshot(db)
    monkeypatch.setattr(os, "pwrite", _enospc)
    with pytest.raises(DiskFullError, match="No space left"):
        db.remember("does not fit")
    with pytest.raises(DiskFullError):
        with db.batch() as b:
            b.remember("nor does this")
            b.forget(ids[0])
    monkeypatch.undo()
    assert _snapshot(db) == before
    assert db.verify().ok
    assert [m.id for m in db.memories()] == ids
    assert db.remember("space again") == ids[-1] + 1


def test_vector_file_growth_enospc_keeps_everything(db: Mnemos, monkeypatch) -> None:
    ids = db.remember_many([f"memory {i}" for i in range(1000)])
    before = _snapshot(db)
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    monkeypatch.setattr(os, "ftruncate", _enospc)
    with pytest.raises(DiskFullError):
        db.remember_many([f"overflow {i}" for i in range(100)])  # needs a bigger vector file
    monkeypatch.undo()
    assert _snapshot(db) == before
    assert db.verify().ok
    assert db.count() == 1000
    assert db.remember_many(["fits now"]) == [ids[-1] + 1]


def test_fallocate_unsupported_falls_back_to_truncate(db: Mnemos, monkeypatch) -> None:
    def unsupported(*_a):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    ids = db.remember_many([f"memory {i}" for i in range(1500)])
    assert db.verify().ok and len(ids) == 1500


@pytest.fixture
def tiny_disk(tmp_path):
    """A 6 MiB tmpfs (needs root and mount(2); skipped elsewhere)."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_really_full_disk(tiny_disk: str) -> None:
    """Write until the disk is full: a DiskFullError, every returned write kept, and the
    store works again once space is freed."""
    path = os.path.join(tiny_disk, "s.mem")
    filler = os.path.join(tiny_disk, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (1 << 20))
    got: list[int] = []
    text = "a long memory about disks and their limits " * 20
    with Mnemos.open(path, map_size=1 << 20) as db:
        with pytest.raises(DiskFullError):
            for i in range(100_000):
                if i % 7 == 6:
                    with db.batch() as b:
                        pend = [b.remember(f"{i}.{j} {text}") for j in range(4)]
                    got.extend(p.id for p in pend)
                else:
                    got.append(db.remember(f"{i} {text}"))
        assert len(got) > 100
        rep = db.verify()
        assert rep.ok, str(rep)
        assert db.count() == len(got)
        os.unlink(filler)
        more = db.remember("room again")
        assert more == got[-1] + 1
    with Mnemos.open(path) as db:
        assert db.verify().ok
        assert db.count() == len(got) + 1
        for mid in got[:: max(1, len(got) // 50)]:
            v = db.get_vector(mid)
            assert np.isclose(np.linalg.norm(v), 1.0)
