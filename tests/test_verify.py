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


def _swap_first_two_keys(path: str, table: bytes) -> tuple[bytes, bytes]:
    """Swap the first two keys (of one size) of ``table``'s first leaf page in data.mdb,
    leaving every page well formed: the tree a py-lmdb 2.0.0 append bug once left."""
    from mnemos_kv import _lmdbcheck as C
    mdb = os.path.join(path, "data.mdb")
    meta = C.check_meta(mdb)
    rd = C._Reader(mdb, meta)
    try:
        root = next(C._DB.unpack(d)[7] for k, f, d in rd.tree(meta.main_root, "main", descend=False)
                    if k == table)
        pgno = root
        while True:  # down the leftmost branch to the first leaf
            raw = rd.page(pgno, C.P_BRANCH | C.P_LEAF)
            nodes = list(rd.nodes(raw, pgno))
            if not C._PAGE.unpack_from(raw, 0)[2] & C.P_BRANCH:
                break
            pgno = nodes[0][1] | (nodes[0][0] << 32)
    finally:
        rd.close()
    (_, _, off0, k0, _), (_, _, off1, k1, _) = nodes[0], nodes[1]
    assert len(k0) == len(k1) and k0 < k1
    page = bytearray(raw)
    ks = C._NODE.size
    page[off0 + ks:off0 + ks + len(k0)], page[off1 + ks:off1 + ks + len(k1)] = k1, k0
    with open(mdb, "r+b") as f:
        f.seek(pgno * meta.psize)
        f.write(page)
    return k0, k1


@pytest.mark.parametrize("table", [b"records", b"postings"])
def test_keys_out_of_order_are_found(filled: str, capsys, table: bytes) -> None:
    k0, k1 = _swap_first_two_keys(filled, table)
    with Mnemos.open(filled, readonly=True) as db:
        rep = db.verify()
    assert not rep.ok
    assert any("out of order" in p and table.decode() in p and repr(k0)[:20] in p
               for p in rep.problems), rep.problems
    assert main(["verify", filled]) != 0
