"""Fault injection, as SQLite's I/O-error tests: every OS-level write, fsync, fdatasync,
rename, truncate, fallocate and mmap call (and LMDB's commit and file sync) of a write path, of
``compact()`` and of ``replay`` fails in turn with EIO, one injection point at a time,
enumerated deterministically. After each: the call raised a MnemosError (or returned,
when the failing call was a best-effort one), the store reopens (``recover`` if it says
so), ``verify()`` passes, every write that returned before is there, and the call's
effect is all or nothing.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
from typing import Any, Callable

import lmdb
import pytest

from mnemos_kv import Mnemos, MnemosError, NeedsRecoveryError
from mnemos_kv import _storage as S

#: The os functions through which mnemos-kv writes, syncs, renames, cuts or maps files.
OS_CALLS = ("write", "pwrite", "fsync", "fdatasync", "replace", "rename", "ftruncate",
            "truncate", "posix_fallocate")

TOTAL: dict[str, int] = {}


class Injector:
    """Counts the patched calls; the ``fail_at``-th one raises OSError(EIO)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.failed: str | None = None
        self.mp = monkeypatch
        for name in OS_CALLS:
            if hasattr(os, name):
                self._wrap(os, name, f"os.{name}")
        self._wrap(mmap, "mmap", "mmap.mmap")
        self._wrap(S, "env_sync", "lmdb sync")
        self._wrap(S, "txn_commit", "lmdb commit")

    def _wrap(self, owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def fake(*a: Any, **k: Any) -> Any:
            self.calls += 1
            if self.calls == self.fail_at:
                self.failed = label
                if label == "lmdb sync":  # what py-lmdb raises for a failed mdb_env_sync
                    raise lmdb.Error("mdb_env_sync: Input/output error (injected)")
                if label == "lmdb commit":  # a failed mdb_txn_commit: nothing committed
                    a[0].abort()
                    raise lmdb.Error("mdb_txn_commit: Input/output error (injected)")
                raise OSError(errno.EIO, f"injected I/O error in {label}")
            return real(*a, **k)
        self.mp.setattr(owner, name, fake)


def _state(db: Mnemos) -> tuple:
    mems = tuple(sorted((m.id, m.namespace, m.text) for m in db.memories()))
    edges = tuple(sorted((e.src, e.dst, e.relation) for mid, *_ in mems for e in db.neighbors(mid, direction="out")))
    return mems, edges


def _seed(path: str) -> None:
    with Mnemos.open(path) as db:
        ids = db.remember_many([f"seed memory {i} about apples" for i in range(6)])
        db.connect(ids[0], ids[1])
        db.namespace("team").remember_many(["a team memory", "another team memory"])


def _batch(db: Mnemos) -> None:
    with db.batch() as b:
        p = b.remember("batched memory about pears")
        b.connect(p, 1, relation="about")
        b.forget(3)


OPS: dict[str, Callable[[Mnemos, str], Any]] = {
    "remember": lambda db, x: db.remember("one new memory about plums"),
    "remember_many": lambda db, x: db.remember_many([f"many {i} about figs" for i in range(5)]),
    "batch": lambda db, x: _batch(db),
    "forget": lambda db, x: db.forget(2),
    "connect": lambda db, x: db.connect(4, 5, relation="likes"),
    "update": lambda db, x: db.update(1, text="seed memory 0, now about quinces"),
    "upsert": lambda db, x: db.upsert("fresh-key", "an upserted memory"),
    "drop_namespace": lambda db, x: db.drop_namespace("team"),
    "compact": lambda db, x: db.compact(),
    "replay": lambda db, x: db.replay(x),
    # grows the vector files past their first 1024 rows (fallocate, remap) and crosses
    # the vector-file sync every 256 ops
    "remember_many_grow": lambda db, x: db.remember_many([f"grow {i}" for i in range(1100)]),
    # a base snapshot section: restored in batches, then checkpointed
    "replay_compacted": lambda db, x: db.replay(x.replace("export.replay", "export2.replay")),
}


def _run(tmp_path, monkeypatch, op: str, fail_at: int | None) -> tuple[Injector, Any, Any, Any]:
    """Run ``op`` on a fresh copy with the ``fail_at``-th call failing; (injector,
    state before, state after success or None, outcome)."""
    tpl = str(tmp_path / "template")
    if not os.path.exists(tpl):
        _seed(tpl)
        with Mnemos.open(tpl) as db:
            db.forget(6)
            db.export_replay(str(tmp_path / "export.replay"))
        tpl2 = str(tmp_path / "template2")
        shutil.copytree(tpl, tpl2)
        with Mnemos.open(tpl2) as db:
            db.compact()
            db.remember("after the compaction")
            db.export_replay(str(tmp_path / "export2.replay"))
    work = str(tmp_path / "work")
    shutil.rmtree(work, ignore_errors=True)
    if op.startswith("replay"):
        Mnemos.open(work).close()
    else:
        shutil.copytree(tpl, work)
    db = Mnemos.open(work)
    before = _state(db)
    with monkeypatch.context() as mp:
        inj = Injector(mp, fail_at)
        try:
            OPS[op](db, str(tmp_path / "export.replay"))
            outcome: Any = "ok"
        except MnemosError as exc:
            outcome = exc
        # any other exception propagates: a test failure
        if outcome == "ok":
            after = _state(db)
        else:
            after = None
    if outcome != "ok":
        try:  # the same handle keeps working (or says why not)
            db.remember("written after the failure")
        except MnemosError:
            pass
    try:
        db.close()
    except MnemosError:
        pass
    return inj, before, after, outcome


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_io_call_failing_leaves_a_consistent_store(tmp_path, monkeypatch, op: str) -> None:
    inj, before, success, outcome = _run(tmp_path, monkeypatch, op, None)
    assert outcome == "ok" and inj.calls > 0
    points = inj.calls
    TOTAL[op] = points
    for n in range(1, points + 1):
        inj, b, after, outcome = _run(tmp_path, monkeypatch, op, n)
        assert b == before
        assert inj.failed is not None, f"point {n}: the call sequence changed"
        work = str(tmp_path / "work")
        try:
            db = Mnemos.open(work)
        except NeedsRecoveryError:
            Mnemos.recover(work)
            db = Mnemos.open(work)
        with db:
            rep = db.verify()
            assert rep.ok, f"{op}, failing {inj.failed} (point {n}): {rep}"
            mems, edges = _state(db)
            extra = {m for m in mems if m[2] == "written after the failure"}
            got = (tuple(m for m in mems if m not in extra), edges)
            if outcome == "ok":
                assert got == after, f"{op} returned after {inj.failed} failed (point {n}) but its effect differs"
            elif op.startswith("replay"):
                # replay commits in batches (the base snapshot, then the log): a failure
                # leaves a consistent prefix of the history, never a half-applied batch
                assert set(got[0]) <= set(success[0]) and set(got[1]) <= set(success[1]), \
                    f"{op}, failing {inj.failed} (point {n}): not a prefix of the history"
            else:
                assert got in (before, success), \
                    f"{op}, failing {inj.failed} (point {n}): half applied: {got} not in (before, after)"
    print(f"\nfault injection: {op}: {points} injection points")


def test_report_injection_points() -> None:
    """Prints the total (run after the parametrized test in file order)."""
    if TOTAL:
        print(f"\nfault injection points covered: {sum(TOTAL.values())} ({TOTAL})")
