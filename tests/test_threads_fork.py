"""One store shared by threads; fork rules; the map-resize gate inside one process."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from mnemos_kv import ClosedError, MapFullError, Mnemos, StoreError
from mnemos_kv import _storage
from mnemos_kv._log import LogGone
from mnemos_kv._vectors import GenerationGone


def test_threads_share_one_store_while_the_map_grows(store_path: str) -> None:
    """Writers and readers in threads of one process, a 1 MiB map that must grow."""
    db = Mnemos.open(store_path, map_size=1 << 20)
    filler = " ".join(f"word{j}" for j in range(300))
    errors: list[BaseException] = []
    stop = threading.Event()
    done: list[list[int]] = [[] for _ in range(3)]

    def writer(i: int) -> None:
        try:
            ns = db.namespace(f"t{i}")
            for k in range(120):
                done[i].append(ns.remember(f"thread {i} item {k} {filler}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            last = 0
            while not stop.is_set():
                n = db.stats()["total"]
                assert n >= last
                last = n
                for name in db.namespaces():
                    for m in db.namespace(name).memories():
                        assert m.text.startswith("thread")
                db.ask("thread item", top_k=3, namespaces=db.namespaces())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ws = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    rs = [threading.Thread(target=reader) for _ in range(2)]
    for t in ws + rs:
        t.start()
    for t in ws:
        t.join(60)
    stop.set()
    for t in rs:
        t.join(60)
    try:
        assert errors == []
        assert db._engine.env.map_size_now() > 1 << 20
        ids = [m for d in done for m in d]
        assert sorted(ids) == list(range(1, 361))
        assert db.verify().ok
    finally:
        db.close()


def test_growing_the_map_while_this_thread_holds_a_read_is_a_clear_error(store_path: str) -> None:
    with Mnemos.open(store_path, map_size=1 << 20) as db:
        db.remember_many([f"seed {i}" for i in range(3)])
        big = "x" * 200_000
        it = db.memories()
        next(it)  # an open read snapshot in this thread
        with pytest.raises(MapFullError, match="still holds an open read"):
            for i in range(20):
                db.remember(f"{i} {big}")
        it.close()
        db.remember(f"now it grows {big}")  # the snapshot is gone: the map grows
        assert db.verify().ok


def test_a_forked_child_cannot_use_or_reopen_its_parents_store(store_path: str) -> None:
    db = Mnemos.open(store_path)
    db.remember("parent memory")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            try:
                db.count()
                code |= 1
            except ClosedError as exc:
                code |= 0 if "before this process was forked" in str(exc) else 2
            try:
                Mnemos.open(store_path)
                code |= 4
            except StoreError as exc:
                code |= 0 if "'spawn'" in str(exc) else 8
        except BaseException:
            code |= 16
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 1)
    os.close(r)
    assert status == 0 and got == b"\x00", got
    # the parent is unharmed: its reader slots and writer work
    assert db.count() == 1
    db.remember("parent again")
    assert db.verify().ok
    db.close()


def test_a_forked_child_opens_a_store_its_parent_had_not_opened(tmp_path) -> None:
    path = str(tmp_path / "child.mem")
    pid = os.fork()
    if pid == 0:
        try:
            with Mnemos.open(path) as db:
                db.remember("made by the child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    with Mnemos.open(path) as db:
        assert [m.text for m in db.memories()] == ["made by the child"]


def test_two_handles_in_one_process_share_one_environment(store_path: str) -> None:
    a = Mnemos.open(store_path)
    b = Mnemos.open(store_path, durability="fast")
    try:
        assert a._engine.env is b._engine.env
        x = a.remember("from a")
        y = b.remember("from b")
        assert (x, y) == (1, 2) and a.count() == b.count() == 2
        assert np.array_equal(a.get_vector(y), b.get_vector(y))
    finally:
        a.close()
        assert b.count() == 2  # the environment lives on with its other user
        b.close()
    assert _storage._registry.get(os.path.realpath(store_path)) is None


def test_reading_an_older_log_segment_leaves_the_writers_log_alone(store_path: str) -> None:
    """A reader of a snapshot from before a compaction (new log segment) gets the old
    segment without switching the engine's current log back under a writer thread."""
    with Mnemos.open(store_path) as db:
        first = db.remember("before the checkpoint")
        eng = db._engine
        old_state = eng.read_state()
        with eng.snapshot() as snap:  # a reader's arrays, taken before the compaction
            old_matrix, old_slots = snap.matrix, snap.slots
        db.compact()
        current = eng.log
        assert current.segment > old_state.log_seg
        with pytest.raises(LogGone):  # removed by the compaction: readers retry newer
            eng.open_log(old_state)
        assert eng.log is current
        assert eng.open_log(eng.read_state()) is current
        # likewise the vector files: arrays a reader took before the compaction still
        # read the old generation (their mapping outlives the removed files); a new view
        # of it is refused (a snapshot then retries on a newer one) and does not move
        # the writers' generation (what sync() flushes)
        new_state = eng.read_state()
        assert new_state.gen > old_state.gen
        assert int(old_slots["id"][0]) == first
        assert np.array_equal(old_matrix[0], db.get_vector(first))
        with pytest.raises(GenerationGone):
            eng.vectors.view(old_state.gen, old_state.n_slots)
        assert eng.vectors.gen == new_state.gen
        db.remember("after the checkpoint")
        assert eng.vectors.gen == new_state.gen
        assert db.verify().ok


def test_nested_reads_in_a_thread_do_not_stall_a_map_growth(store_path: str, monkeypatch) -> None:
    """One thread iterates memories() with a read per item; another fills the map."""
    monkeypatch.setattr(_storage, "RESIZE_WAIT_S", 10.0)
    db = Mnemos.open(store_path, map_size=1 << 20)
    ids = db.remember_many([f"seed memory {i}" for i in range(300)])
    errors: list[BaseException] = []
    started, stop = threading.Event(), threading.Event()

    def iterate() -> None:
        try:
            while not stop.is_set():
                for m in db.memories():
                    started.set()
                    db.get_vector(m.id)  # a nested read transaction
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=iterate)
    t.start()
    started.wait(10)
    big = " ".join(f"filler{j % 40}" for j in range(12_000))  # ~100 KB, few distinct words
    try:
        for i in range(30):
            db.remember(f"{i} {big}")
    finally:
        stop.set()
    t.join(60)
    try:
        # (a stall would have ended in MapFullError from remember after RESIZE_WAIT_S)
        assert errors == []
        assert db._engine.env.map_size_now() > 1 << 20
        assert db.count() == len(ids) + 30
    finally:
        db.close()


def test_threads_asking_many_namespaces_while_one_writes(store_path: str) -> None:
    """Per committed state, each store keeps the candidates of its last few namespace
    sets (_retrieval.UNIVERSE_CACHE): threads asking more namespaces than that, while
    another thread writes, each get their own namespace's memories."""
    from mnemos_kv import _retrieval
    n_ns = _retrieval.UNIVERSE_CACHE + 4
    errors: list[BaseException] = []
    with Mnemos.open(store_path) as db:
        mine = {f"ns{i}": db.namespace(f"ns{i}").remember_many(
            [f"note {j} of namespace {i} about topic{i}" for j in range(20)]) for i in range(n_ns)}
        stop = threading.Event()

        def writer() -> None:
            k = 0
            while not stop.is_set():
                db.namespace("busy").remember(f"filler {k}")
                k += 1

        def reader(t: int) -> None:
            try:
                for r in range(12):
                    name = f"ns{(t + r) % n_ns}"
                    got = db.namespace(name).ask(f"topic{name[2:]} note", top_k=5)
                    assert len(got) == 5 and {m.id for m in got} <= set(mine[name]), name
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        w = threading.Thread(target=writer)
        w.start()
        readers = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
        for th in readers:
            th.start()
        for th in readers:
            th.join()
        stop.set()
        w.join()
    assert not errors, errors[0]
