"""verify(): a healthy store passes; each kind of damage is reported, never repaired."""

from __future__ import annotations

import os

import lmdb
import numpy as np
import pytest

from mnemos_kv import Mnemos
from mnemos_kv._log import log_file
from mnemos_kv._vectors import HEADER, SLOT_DTYPE, slot_file, vector_file
from mnemos_kv.cli import main


@pytest.fixture
def filled(store_path: str) -> str:
    with Mnemos.open(store_path) as db:
        ids = db.remember_many([f"memory {i} about topic {i % 3}" for i in range(40)])
        db.connect(ids[0], ids[1])
        db.namespace("b").remember("other namespace", key="k")
        db.forget(ids[5])
        db.compact()
        db.remember("after compaction")
        assert db.verify().ok, str(db.verify())
    return store_path


def test_healthy_store_verifies(filled: str, capsys) -> None:
    with Mnemos.open(filled, readonly=True) as db:
        rep = db.verify()
        assert rep.ok and rep.checked["records"] == 41 and rep.checked["edges"] == 1
    assert main(["verify", filled]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_flipped_vector_byte_is_found(filled: str, capsys) -> None:
    mm = np.memmap(vector_file(filled, 2), dtype="<f4", mode="r+", offset=HEADER)
    mm[3 * 512] += 0.5
    mm.flush()
    del mm
    with Mnemos.open(filled, readonly=True) as db:
        rep = db.verify()
    assert not rep.ok and any("norm" in p or "differs from its log" in p for p in rep.problems)
    assert main(["verify", filled]) == 1


def test_slot_column_damage_is_found(filled: str) -> None:
    cols = np.memmap(slot_file(filled, 2), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
    cols["ns"][2] = 7
    cols["dead"][4] = 1
    cols.flush()
    del cols
    with Mnemos.open(filled, readonly=True) as db:
        probs = "\n".join(db.verify().problems)
    assert "slot columns" in probs and "marked dead" in probs


def test_missing_mirror_edge_and_time_entry_are_found(filled: str) -> None:
    env = lmdb.open(filled, max_dbs=32)
    with env.begin(write=True) as txn:
        edges_in = env.open_db(b"edges_in", txn=txn)
        time_db = env.open_db(b"time", txn=txn)
        with txn.cursor(db=edges_in) as cur:
            assert cur.first()
            cur.delete()
        with txn.cursor(db=time_db) as cur:
            assert cur.first()
            cur.delete()
    env.close()
    with Mnemos.open(filled, readonly=True) as db:
        probs = "\n".join(db.verify().problems)
    assert "no matching edges_in" in probs and "time index" in probs


def test_corrupted_log_frame_is_found(filled: str) -> None:
    path = log_file(filled, 2)  # compaction started segment 2
    assert not os.path.exists(log_file(filled, 1))
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with Mnemos.open(filled, readonly=True) as db:
        probs = "\n".join(db.verify().problems)
    assert "checksum mismatch" in probs or "truncated" in probs


def test_damaged_base_snapshot_is_found(filled: str) -> None:
    from mnemos_kv._snapshot import snapshot_file
    with Mnemos.open(filled, readonly=True) as db:
        base = db._engine.open_log(db._engine.read_state()).base_seq
    path = snapshot_file(filled, base)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x55
    open(path, "wb").write(bytes(data))
    with Mnemos.open(filled, readonly=True) as db:
        probs = "\n".join(db.verify().problems)
    assert "base." in probs
