"""Every bad argument is a MnemosError naming it (each of these escaped as another
exception, or was silently accepted, on v0.1's main)."""

from __future__ import annotations

import errno
import os

import lmdb
import numpy as np
import pytest

from mnemos_kv import DiskFullError, InvalidInputError, MnemosError, Mnemos, NotAStoreError
from mnemos_kv import _storage as S

BIG = 1 << 64


@pytest.fixture
def two(db):
    return db, db.remember("hello"), db.remember("world")


CASES = {
    "get: id beyond u64": (lambda db, a, b, d: db.get(BIG), "id"),
    "forget: id beyond u64": (lambda db, a, b, d: db.forget(1 << 70), "id"),
    "connect: id beyond u64": (lambda db, a, b, d: db.connect(a, BIG), "b"),
    "get_vector: id beyond u64": (lambda db, a, b, d: db.get_vector(BIG), "id"),
    "neighbors: id beyond u64": (lambda db, a, b, d: db.neighbors(BIG), "id"),
    "pin: id beyond u64": (lambda db, a, b, d: db.pin(BIG), "id"),
    "explain_eviction: id beyond u64": (lambda db, a, b, d: db.explain_eviction(BIG), "id"),
    "metadata key with a lone surrogate": (lambda db, a, b, d: db.remember("x", {"\ud800": 1}), "metadata key"),
    "nested metadata key with a lone surrogate": (
        lambda db, a, b, d: db.remember("x", {"a": {"\udc00": 1}}), "metadata key"),
    "metadata key not a str": (lambda db, a, b, d: db.remember("x", {1: "a"}), "metadata keys"),
    "metadata with a set": (lambda db, a, b, d: db.remember("x", {"a": {1, 2}}), "metadata"),
    "remember_many(None)": (lambda db, a, b, d: db.remember_many(None), "items"),
    "forget_many(None)": (lambda db, a, b, d: db.forget_many(None), "ids"),
    "forget_many(5)": (lambda db, a, b, d: db.forget_many(5), "ids"),
    "namespace(read=None)": (lambda db, a, b, d: db.namespace("x", read=None), "read"),
    "namespace(read=5)": (lambda db, a, b, d: db.namespace("x", read=5), "read"),
    "namespace name ending in a newline": (lambda db, a, b, d: db.namespace("abc\n"), "namespace"),
    "relation ending in a newline": (lambda db, a, b, d: db.connect(a, b, relation="rel\n"), "relation"),
    "complex vector": (lambda db, a, b, d: db.remember("x", vector=np.ones(512, dtype=complex)), "vector"),
    "bool vector": (lambda db, a, b, d: db.remember("x", vector=np.ones(512, dtype=bool)), "vector"),
    "object vector": (lambda db, a, b, d: db.remember("x", vector=np.array(["a"] * 512, dtype=object)), "vector"),
    "weight beyond float": (lambda db, a, b, d: db.connect(a, b, weight=1 << 2000), "weight"),
    "open(None)": (lambda db, a, b, d: Mnemos.open(None), "path"),
    "open('')": (lambda db, a, b, d: Mnemos.open(""), "path"),
    "open(map_size=2**70)": (lambda db, a, b, d: Mnemos.open(os.path.join(d, "m"), map_size=1 << 70), "map_size"),
    "open: a path below a file": (lambda db, a, b, d: Mnemos.open(os.path.join(d, "f", "x")), "f"),
    "export into a missing directory": (
        lambda db, a, b, d: db.export_replay(os.path.join(d, "nope", "x.replay")), "does not exist"),
    "export onto a directory": (lambda db, a, b, d: db.export_replay(d), "directory"),
    "export_replay(None)": (lambda db, a, b, d: db.export_replay(None), "export path"),
    "replay of a directory": (lambda db, a, b, d: Mnemos.open(os.path.join(d, "t1")).replay(d), "directory"),
    "replay(None)": (lambda db, a, b, d: Mnemos.open(os.path.join(d, "t2")).replay(None), "path"),
    "recover(None)": (lambda db, a, b, d: Mnemos.recover(None), "path"),
    "dump into a missing directory": (lambda db, a, b, d: db.dump(os.path.join(d, "no", "x.jsonl")),
                                      "does not exist"),
    "load of a directory": (lambda db, a, b, d: Mnemos.open(os.path.join(d, "t3")).load(d), "directory"),
    "recover of a missing path": (lambda db, a, b, d: Mnemos.recover(os.path.join(d, "nope")), "not a directory"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_argument_is_a_mnemos_error_naming_it(two, tmp_path, name: str) -> None:
    db, a, b = two
    open(tmp_path / "f", "w").close()
    call, mentions = CASES[name]
    with pytest.raises(MnemosError) as info:
        call(db, a, b, str(tmp_path))
    assert mentions in str(info.value), str(info.value)
    assert db.count() == 2  # nothing was written


def test_valid_neighbours_of_the_bad_inputs_still_work(db) -> None:
    a = db.remember("x", {"ключ": "значение"}, vector=np.arange(512, dtype=np.int32) + 1)
    b = db.namespace("abc").remember("y")
    c = db.remember("z")
    db.connect(a, c, relation="rel next", weight=2)
    assert db.get(a).metadata == {"ключ": "значение"} and b
    assert (1 << 63) - 1 not in db


def test_unwritable_directory_is_a_store_error(tmp_path, monkeypatch) -> None:
    def deny(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", a[0])
    monkeypatch.setattr(os, "makedirs", deny)
    with pytest.raises(MnemosError, match="permission denied"):
        Mnemos.open(str(tmp_path / "new"))


def test_efbig_is_disk_full() -> None:
    err = S.translate(OSError(errno.EFBIG, "File too large"))
    assert isinstance(err, DiskFullError) and "EFBIG" in str(err)
    err = S.translate(lmdb.Error("mdb_txn_commit: File too large"))
    assert isinstance(err, DiskFullError)


def test_path_below_a_file_is_not_a_store(tmp_path) -> None:
    open(tmp_path / "f", "w").close()
    with pytest.raises(NotAStoreError, match="file"):
        Mnemos.open(str(tmp_path / "f" / "x"))
    with pytest.raises(InvalidInputError):
        Mnemos.open(b"/tmp/bytes-path")  # type: ignore[arg-type]
