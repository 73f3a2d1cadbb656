"""Logging through logging.getLogger("mnemos_kv"): silent by default, INFO for slow or
surprising events, DEBUG for the rest."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest

from mnemos_kv import Mnemos
from mnemos_kv import _records as R

LOGGER = "mnemos_kv"


def _infos(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


def test_silent_by_default(store_path: str, capsys) -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger(LOGGER).handlers)
    with Mnemos.open(store_path) as db:
        db.remember("hello")
        db.compact()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_open_close_and_writes_are_debug(store_path: str, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with Mnemos.open(store_path) as db:
        db.remember("hello")
    msgs = [r for r in caplog.records if r.name == LOGGER]
    assert any("opened" in r.getMessage() and r.levelno == logging.DEBUG for r in msgs)
    assert any("closed" in r.getMessage() and r.levelno == logging.DEBUG for r in msgs)
    assert any("committed 1 requests" in r.getMessage() for r in msgs)
    assert _infos(caplog) == []  # nothing slow or surprising happened


def test_compaction_phases_are_info(store_path: str, caplog) -> None:
    with Mnemos.open(store_path) as db:
        ids = db.remember_many([f"note {i}" for i in range(10)])
        db.forget(ids[0])
        caplog.set_level(logging.INFO, logger=LOGGER)
        db.compact(merge_similar=0.99)
    infos = _infos(caplog)
    assert any("compaction started" in m for m in infos)
    assert any("merged" in m for m in infos)
    assert any("wrote generation 2 (10 -> 9 slots)" in m for m in infos)
    assert any("LMDB file rewritten" in m for m in infos)
    assert any("compaction done" in m for m in infos)


def test_skipped_lmdb_rewrite_is_info(store_path: str, caplog, monkeypatch) -> None:
    from mnemos_kv import _openlock

    @contextlib.contextmanager
    def busy(root, fd):
        yield "another process has the store open"
    monkeypatch.setattr(_openlock, "exclusive", busy)
    with Mnemos.open(store_path) as db:
        db.remember("x")
        caplog.set_level(logging.INFO, logger=LOGGER)
        out = db.compact()
    assert not out["lmdb_compacted"]
    assert any("LMDB rewrite skipped: another process has the store open" in m
               for m in _infos(caplog))


def test_map_growth_is_info(store_path: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Mnemos.open(store_path, map_size=1 << 20) as db:
        db.remember_many([f"memory {i} " + "word " * 2000 for i in range(300)])
    assert any("LMDB map grown to" in m for m in _infos(caplog))


def test_reindex_on_open_is_info(store_path: str, caplog) -> None:
    with Mnemos.open(store_path) as db:
        db.remember_many(["one", "two", "three"])
        env = db._engine.env

        def drop_version(txn):
            txn.delete(b"version", db=env.db("lexstats"))
        env.write(drop_version)
    from mnemos_kv import _lexical_index
    getattr(_lexical_index.ensure_built, "cache_clear", lambda: None)()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Mnemos.open(store_path) as db:
        assert [h.text for h in db.ask("two", top_k=1)] == ["two"]
    infos = _infos(caplog)
    assert any("building the BM25 index" in m for m in infos)
    assert any("over 3 memories" in m for m in infos)


def test_recovery_on_open_is_info(store_path: str, caplog) -> None:
    from mnemos_kv._log import encode_frame, log_file
    with Mnemos.open(store_path) as db:
        db.remember("committed")
        seq = db.stats()["seq"]
    vec = np.zeros(512, np.float32).tobytes()
    op = {"op": "mem", "id": 2, "ns": 0, "text": "ghost", "meta": {}, "type": 0, "ts": 0, "vec": vec}
    with open(log_file(store_path, 1), "ab") as f:
        f.write(encode_frame(seq + 1, R.encode(op)))
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Mnemos.open(store_path) as db:
        assert db.count() == 1
    infos = _infos(caplog)
    assert any("recovering on open" in m for m in infos)
    assert any("dropping" in m and "uncommitted log bytes" in m for m in infos)


def test_vector_recovery_is_info(store_path: str, caplog) -> None:
    from mnemos_kv import _storage
    with Mnemos.open(store_path) as s:
        s.remember_many([f"memory number {i}" for i in range(300)])
        s.remember("late")  # its rows are not synced yet
        st = s._engine.read_state()
        assert st.vsync_seq < st.seq
        s._engine.closed = True  # "crash": no sync on the way out
        s._engine.vectors.close()
        s._engine.log.close()
        _storage.release(s._engine.env)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Mnemos.open(store_path) as s:
        assert s.count() == 301
    assert any("re-applying log frames" in m and "(1 rows" in m for m in _infos(caplog))
