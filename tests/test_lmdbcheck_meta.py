"""check_meta reads the two LMDB meta pages with two preads: writers in other processes
may commit in between, so ids that are not consecutive are read again before they are
called damage (a reader opening a busy store once failed so, under load)."""

from __future__ import annotations

import os
import struct

import pytest

from mnemos_kv import CorruptionError, Mnemos
from mnemos_kv import _lmdbcheck as C

_TXNID_AT = C.PAGEHDR + C._META.size + 2 * C._DB.size + 8  # after last_pg


def _store(path: str) -> str:
    with Mnemos.open(path) as db:
        for i in range(5):
            db.remember(f"memory {i}")
    return os.path.join(path, "data.mdb")


def _txnids(data: str) -> tuple[int, int]:
    raw = open(data, "rb").read(8192)
    return (struct.unpack_from("<Q", raw, _TXNID_AT)[0],
            struct.unpack_from("<Q", raw, 4096 + _TXNID_AT)[0])


def test_a_commit_between_the_two_reads_is_read_again(store_path: str, monkeypatch) -> None:
    data = _store(store_path)
    t0, t1 = _txnids(data)
    real = C._read_metas
    calls = []

    def racing(path: str):
        head, second, size, psize = real(path)
        calls.append(1)
        if len(calls) == 1:  # page 1 read three commits later than page 0
            second = bytearray(second)
            struct.pack_into("<Q", second, _TXNID_AT, (max(t0, t1) + 4) | 1)  # odd: page 1's
            second = bytes(second)
        return head, second, size, psize
    monkeypatch.setattr(C, "_read_metas", racing)
    meta = C.check_meta(data)
    assert len(calls) == 2 and meta.txnid == max(t0, t1)


def test_ids_that_stay_apart_are_damage(store_path: str) -> None:
    data = _store(store_path)
    t0, t1 = _txnids(data)
    with open(data, "r+b") as f:  # meta page 1 claims an odd id far beyond page 0's
        f.seek(4096 + _TXNID_AT)
        f.write(struct.pack("<Q", (max(t0, t1) + 6) | 1))
    t0b, t1b = _txnids(data)
    assert t1b % 2 == 1 and abs(t1b - t0b) > 1
    with pytest.raises(CorruptionError, match="must be consecutive"):
        C.check_meta(data)
