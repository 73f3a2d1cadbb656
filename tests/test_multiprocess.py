"""Several processes on one store: writers serialise, readers keep consistent snapshots.

Children are separate interpreters (``tests/_mp_workers.py``) importing this
worktree's ``mnemos_kv``. Marked ``slow``: CI runs them (``pytest -q`` runs every test).
"""

from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mp_workers import expected_vector, result, spawn, writer_text  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUT = 120




def test_four_writers_two_readers(tmp_path) -> None:
    path = str(tmp_path / "shared.mem")
    stop = str(tmp_path / "stop")
    Mnemos.open(path).close()  # created once, so read-only readers can start at once
    readers = [spawn("reader", path, stop, "1"), spawn("reader", path, stop, "0")]
    writers = [spawn("writer", path, str(i), "500") for i in range(4)]
    t0 = time.monotonic()
    done = [result(w, TIMEOUT) for w in writers]
    write_s = time.monotonic() - t0
    open(stop, "w").close()
    seen = [result(r, TIMEOUT) for r in readers]

    for r in seen:
        assert r["errors"] == [], r["errors"]
        assert r["iters"] >= 3
    # readers watched the store grow: they saw many intermediate states
    assert all(r["distinct_counts"] >= 5 for r in seen), seen

    ids = [row[0] for d in done for row in d["done"]]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert sorted(ids) == list(range(1, 2001))  # ids are dense: no id lost to an aborted write
    with Mnemos.open(path, readonly=True) as db:
        assert db.stats()["total"] == 2000
        counts = {n: db.namespace(n).count() for n in db.namespaces()}
        assert counts == {"default": 0, "shared": 1000,
                          **{f"agent_{i}": 250 for i in range(4)}}
        for d, i in zip(done, range(4)):
            for k, (mid, ns, text) in enumerate(d["done"]):
                assert text == writer_text(i, k)
                m = db.namespace(ns).get(mid)
                assert m.text == text and m.metadata == {"w": i, "k": k}
                assert np.array_equal(db.namespace(ns).get_vector(mid), expected_vector(text))
        rep = db.verify()
        assert rep.ok, str(rep)
        assert rep.checked["log_frames"] == 2000 + 5  # 5 namespace creations
    assert cli_main(["verify", path]) == 0
    print(f"4 x 500 remembers in {write_s:.2f} s; reader iterations {[r['iters'] for r in seen]}")


def test_map_grows_across_processes(tmp_path) -> None:
    """A 1 MiB map fills many times over; writers grow it, everyone adopts the size."""
    path = str(tmp_path / "grow.mem")
    stop = str(tmp_path / "stop")
    Mnemos.open(path, map_size=1 << 20).close()
    reader = spawn("growth_reader", path, stop)
    writers = [spawn("growth_writer", path, str(i), "150") for i in range(3)]
    done = [result(w, TIMEOUT) for w in writers]
    open(stop, "w").close()
    seen = result(reader, TIMEOUT)
    assert seen["errors"] == [], seen["errors"]
    assert seen["map_size"] > 1 << 20  # the reader adopted the grown map
    assert all(d["map_size"] > 1 << 20 for d in done)
    ids = [m for d in done for m in d["done"]]
    assert len(set(ids)) == len(ids) == 3 * (135 + 15 * 5)
    with Mnemos.open(path, readonly=True) as db:
        assert db.stats()["total"] == len(ids)
        assert db._engine.env.map_size_now() > 4 << 20  # it grew, and this process adopted it
        rep = db.verify()
        assert rep.ok, str(rep)


def test_readers_survive_compaction_in_another_process(tmp_path) -> None:
    path = str(tmp_path / "compact.mem")
    stop = str(tmp_path / "stop")
    with Mnemos.open(path) as db:
        db.namespace("churn").remember_many([f"seed {j}: the plan item" for j in range(50)])
    reader = spawn("compaction_reader", path, stop)
    opener = spawn("opener", path, stop)
    comp = result(spawn("compactor", path, "25"), TIMEOUT)
    open(stop, "w").close()
    seen = result(reader, TIMEOUT)
    opened = result(opener, TIMEOUT)
    assert seen["errors"] == [], seen["errors"]
    assert opened["errors"] == [], opened["errors"]
    assert comp["generation"] == 26
    assert len(seen["generations"]) > 1  # the reader followed the store across generations
    with Mnemos.open(path) as db:
        assert db.verify().ok
        assert sorted(os.path.basename(p) for p in os.listdir(path) if p.startswith("vectors")) == \
            ["vectors.000026.f32"]


def _deleted_files_open(under: str) -> list[str]:
    """Names of the removed files under ``under`` this process still holds open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(under) and target.endswith(" (deleted)"):
            out.append(os.path.basename(target[: -len(" (deleted)")]))
    return sorted(set(out))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux) to list open files")
def test_a_long_lived_reader_lets_go_of_superseded_files(tmp_path) -> None:
    """A read-only handle that lives across compactions in another process holds none of
    the files they removed once it has read the newer generation (not the generation it
    first saw, the one before, nor its first log segment): their disk space is freed
    while it runs."""
    path = str(tmp_path / "s.mem")
    with Mnemos.open(path) as db:
        db.namespace("churn").remember_many([f"seed {j}: the plan item" for j in range(50)])
    with Mnemos.open(path, readonly=True) as ro:
        first = ro.stats()["generation"]
        assert ro.ask("the plan item", top_k=5, namespaces=["churn"])
        for _ in range(4):
            result(spawn("compactor", path, "1"), TIMEOUT)
            assert ro.ask("the plan item", top_k=5, namespaces=["churn"])  # (a snapshot of the newer generation)
        gen = ro.stats()["generation"]
        assert gen == first + 4
        gc.collect()  # (what is still reachable is held; a cycle would go later anyway)
        assert _deleted_files_open(os.path.realpath(path)) == []


def test_a_write_from_another_process_is_seen_on_the_next_read(tmp_path) -> None:
    path = str(tmp_path / "s.mem")
    with Mnemos.open(path) as db, Mnemos.open(path, readonly=True) as ro:
        assert db.count() == 0
        ids = result(spawn("remember_n", path, "3"), TIMEOUT)["done"]
        assert db.count() == 3 and ro.count() == 3
        assert [m.id for m in ro.memories()] == ids
        assert ro.get(ids[0]).text == "child memory 0"
        # and this process's writes continue after the other's, ids in order
        assert db.remember("parent memory") == ids[-1] + 1
        assert ro.get(ids[-1] + 1).text == "parent memory"


@pytest.mark.parametrize("op", ["remember", "forget"])
def test_a_failed_write_undoes_only_its_own_log_tail(tmp_path, monkeypatch, op) -> None:
    """A write that fails after appending to the log (a full map does, then retries)
    releases the writer lock when its transaction aborts; another process may commit
    before the failed write undoes its tail. The undo must not cut that commit's log
    frames (it did: "log is N bytes but the store committed M" on the next open)."""
    path = str(tmp_path / "s.mem")
    db = Mnemos.open(path)
    first = db.remember("a memory to forget")
    engine = db._engine
    real_put_state, real_undo = engine.put_state, type(engine.env)._undo
    child: dict = {}

    def failing_put_state(txn, st):  # after the log frames and dead marks are written
        raise RuntimeError("injected failure after the log append")

    def undo_after_a_commit_elsewhere(env, on_abort):
        # the failed transaction has aborted: another process takes the lock and commits
        # (and flushes: its frames are then in the log file only, not in ``pending``)
        child.update(result(spawn("remember_n", path, "1", "1"), TIMEOUT))
        real_undo(env, on_abort)

    monkeypatch.setattr(engine, "put_state", failing_put_state)
    monkeypatch.setattr(type(engine.env), "_undo", undo_after_a_commit_elsewhere)
    with pytest.raises(RuntimeError, match="injected"):
        if op == "remember":
            db.remember("the failed write")
        else:
            db.forget(first)
    monkeypatch.setattr(engine, "put_state", real_put_state)
    monkeypatch.undo()
    (theirs,) = child["done"]
    mine = db.remember("a write after the failure")
    assert db.get(theirs).text == "child memory 0"
    assert db.get(first).text == "a memory to forget"  # the failed forget left no dead mark
    assert [h.id for h in db.ask("a memory to forget", top_k=1)] == [first]
    db.close()
    with Mnemos.open(path) as again:  # opens without NeedsRecoveryError
        assert again.count() == 3
        assert {again.get(i).text for i in (first, theirs, mine)} == {
            "a memory to forget", "child memory 0", "a write after the failure"}
        report = again.verify()
        assert report.ok, report.problems
