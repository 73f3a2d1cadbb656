"""Write-ahead ordering: a log tail beyond the committed end is dropped, never applied."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mnemos_kv import CorruptionError, Mnemos
from mnemos_kv import _records as R
from mnemos_kv._log import encode_frame, log_file


def _append_uncommitted(path: str, ops: list[dict], first_seq: int) -> int:
    """Simulate a writer that made its frames durable and died before the LMDB commit."""
    blob = b"".join(encode_frame(first_seq + i, R.encode(op)) for i, op in enumerate(ops))
    with open(log_file(path, 1), "ab") as f:
        f.write(blob)
    return len(blob)


def test_uncommitted_tail_is_dropped_on_open(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        a = s.remember("committed")
        seq, end = s.stats()["seq"], s.stats()["log"]["bytes"]
    vec = np.zeros(512, np.float32).tobytes()
    _append_uncommitted(store_path, [{"op": "mem", "id": 2, "ns": 0, "text": "ghost", "meta": {},
                                      "type": 0, "ts": 0, "vec": vec},
                                     {"op": "forget", "id": a}], seq + 1)
    with open(log_file(store_path, 1), "ab") as f:
        f.write(b"\x07\x00\x00")  # and a torn frame header after them
    assert os.path.getsize(log_file(store_path, 1)) > end
    with Mnemos.open(store_path) as s:
        assert os.path.getsize(log_file(store_path, 1)) == end
        assert s.get(a).text == "committed"
        assert s.count() == 1
        assert s.remember("next") == 2  # the ghost's id was never committed


def test_uncommitted_forget_does_not_hide_live_memory(store_path: str) -> None:
    """A writer died after marking a slot dead but before committing the forget."""
    with Mnemos.open(store_path) as s:
        a = s.remember("payments go through Stripe")
        seq = s.stats()["seq"]
    _append_uncommitted(store_path, [{"op": "forget", "id": a}], seq + 1)
    # the dead column was written (it is written after the log frame is durable)
    from mnemos_kv._vectors import slot_file, HEADER, SLOT_DTYPE
    arr = np.memmap(slot_file(store_path, 1), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
    arr["dead"][0] = seq + 1
    arr.flush()
    del arr
    with Mnemos.open(store_path, readonly=True) as r:  # a reader before repair: still live
        assert [h.id for h in r.ask("Stripe")] == [a]
    with Mnemos.open(store_path) as s:  # the next writer repairs
        b = s.remember("another memory")
        assert [h.id for h in s.ask("Stripe payments", top_k=2)] == [a, b]


def test_log_shorter_than_committed_is_corruption(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        s.remember("x")
        end = s.stats()["log"]["bytes"]
    os.truncate(log_file(store_path, 1), end - 5)
    with pytest.raises(CorruptionError, match="truncated outside"):
        Mnemos.open(store_path)


def test_missing_vector_file_is_reported(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        s.remember("x")
    os.unlink(os.path.join(store_path, "vectors.000001.f32"))
    with pytest.raises(CorruptionError, match="vectors.000001.f32"):
        Mnemos.open(store_path)


def test_failure_after_log_append_leaves_no_trace(store_path: str, monkeypatch) -> None:
    """An I/O error late in the transaction (after the frames are durable, before the
    commit) aborts it: the log is cut back, the dead mark is undone, nothing is visible."""
    with Mnemos.open(store_path) as s:
        a = s.remember("keep me")
        before = s.stats()
        eng = s._engine

        def boom(ctx) -> None:
            raise OSError(5, "simulated I/O failure")
        monkeypatch.setattr(eng, "_flush_ns_counts", boom)
        from mnemos_kv import StorageError
        with pytest.raises(StorageError, match="simulated"):
            s.forget(a)
        with pytest.raises(StorageError):
            s.remember("lost")
        monkeypatch.undo()
        assert s.stats()["log"] == before["log"] and s.stats()["seq"] == before["seq"]
        assert os.path.getsize(log_file(store_path, 1)) == before["log"]["bytes"]
        assert [h.id for h in s.ask("keep me")] == [a]
        assert s.remember("works again") == a + 1


def test_vector_rows_lost_since_last_file_sync_are_rebuilt_from_log(store_path: str) -> None:
    """A machine crash may lose mmap writes not yet fdatasync'ed; the log has them."""
    from mnemos_kv._vectors import slot_file, vector_file, HEADER, SLOT_DTYPE
    with Mnemos.open(store_path) as s:
        ids = s.remember_many([f"memory number {i}" for i in range(300)])  # one sync at the end
        late = [s.remember(f"late memory {i}") for i in range(5)]          # not synced yet
        s.forget(ids[7])                                                    # dead mark not synced
        want = {i: s.get_vector(i) for i in late}
        st = s._engine.read_state()
        assert st.vsync_seq < st.seq
        hits = [(h.id, h.score) for h in s.ask("late memory 3", top_k=5)]
        # simulate the lost page cache: zero the unsynced rows and the dead mark, then
        # "crash" (skip close so nothing is synced on the way out)
        vec = np.memmap(vector_file(store_path, 1), dtype="<f4", mode="r+", offset=HEADER).reshape(-1, 512)
        cols = np.memmap(slot_file(store_path, 1), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
        vec[st.vsync_slots:st.n_slots] = 0
        cols[st.vsync_slots:st.n_slots] = np.zeros(1, SLOT_DTYPE)
        cols["dead"][:] = 0
        vec.flush(); cols.flush()
        del vec, cols
        s._engine.closed = True
        s._engine.vectors.close(); s._engine.log.close()
        from mnemos_kv import _storage
        _storage.release(s._engine.env)
    with Mnemos.open(store_path) as s:
        for i, v in want.items():
            assert np.array_equal(s.get_vector(i), v)
        assert [(h.id, h.score) for h in s.ask("late memory 3", top_k=5)] == hits
        assert ids[7] not in [h.id for h in s.ask("memory number 7", top_k=300)]
        st = s._engine.read_state()
        assert st.vsync_seq == st.seq
