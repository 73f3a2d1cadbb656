"""Damaged and lost files: opening refuses instead of forgetting, recover rebuilds from the log.

Each test damages a copy of a closed store the way a disk, a careless copy or a
truncating tool would, and checks that nothing committed is silently lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mnemos_kv import CorruptionError, Mnemos, NeedsRecoveryError
from mnemos_kv.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make(path: str, *, compacted: bool = False) -> tuple[str, list[int]]:
    with Mnemos.open(path) as db:
        ids = db.remember_many([f"fact number {i} about topic {i % 7}" for i in range(40)])
        db.connect(ids[0], ids[1], relation="next")
        db.forget(ids[2])
        db.namespace("other").remember("a memory of another namespace")
        if compacted:
            db.compact()
            ids += db.remember_many([f"after compaction {i}" for i in range(5)])
        return db.state_digest(), ids


def _log(path: str) -> str:
    return os.path.join(path, sorted(n for n in os.listdir(path) if n.endswith(".mlog"))[-1])


@pytest.mark.parametrize("damage", ["empty", "missing", "fresh"])
def test_lost_lmdb_is_refused_and_the_log_kept(tmp_path, damage: str) -> None:
    path = str(tmp_path / "s")
    digest, _ = _make(path)
    log = _log(path)
    size = os.path.getsize(log)
    data = os.path.join(path, "data.mdb")
    if damage == "empty":
        open(data, "w").close()
    elif damage == "missing":
        os.unlink(data)
        os.unlink(os.path.join(path, "lock.mdb"))
    else:  # a valid LMDB file holding no store (e.g. copied from a fresh directory)
        other = str(tmp_path / "fresh")
        import lmdb
        lmdb.open(other, max_dbs=4).close()
        shutil.copy(os.path.join(other, "data.mdb"), data)
    for readonly in (False, True):
        with pytest.raises(NeedsRecoveryError, match="recover"):
            Mnemos.open(path, readonly=readonly)
    assert os.path.getsize(log) == size  # the log was not cut
    rep = Mnemos.recover(path)
    assert rep.complete, rep
    with Mnemos.open(path) as db:
        assert db.state_digest() == digest
        assert db.verify().ok
    assert any(n.startswith("data.mdb.damaged-") for n in os.listdir(path)) or damage == "missing"


def test_truncated_lmdb_is_refused_not_a_crash(tmp_path) -> None:
    path = str(tmp_path / "s")
    digest, _ = _make(path)
    data = os.path.join(path, "data.mdb")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) - 4096)
    # in a child: on main this dies of SIGBUS
    code = ("import sys; from mnemos_kv import Mnemos, NeedsRecoveryError\n"
            "try:\n    Mnemos.open(sys.argv[1])\nexcept NeedsRecoveryError as e:\n"
            "    print('REFUSED', e); sys.exit(0)\nsys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code, path], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "truncated" in out.stdout, (out.returncode, out.stdout, out.stderr)
    rep = Mnemos.recover(path, to=str(tmp_path / "new"))
    assert rep.complete
    with Mnemos.open(str(tmp_path / "new")) as db:
        assert db.state_digest() == digest
    assert os.path.getsize(data) % 4096 == 0 and not any(".damaged-" in n for n in os.listdir(path))


def test_recover_compacted_store_and_cli(tmp_path, capsys) -> None:
    path = str(tmp_path / "s")
    digest, _ = _make(path, compacted=True)
    os.unlink(os.path.join(path, "data.mdb"))
    assert cli_main(["recover", path, "--to", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "from the base snapshot" in out
    with Mnemos.open(str(tmp_path / "r")) as db:
        assert db.state_digest() == digest
        assert db.verify().ok
    assert cli_main(["verify", path]) == 1  # the original is still the damaged one
    assert "recover" in capsys.readouterr().err


def test_recover_stops_at_a_damaged_frame_and_says_so(tmp_path) -> None:
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        first = [db.remember(f"early memory {i}") for i in range(5)]
        later = [db.remember(f"later memory {i}") for i in range(5)]
    log = _log(path)
    from mnemos_kv._log import FILE_HEADER, iter_file_frames
    fd = os.open(log, os.O_RDONLY)
    offs = [off for off, _s, _p in iter_file_frames(fd, FILE_HEADER, os.path.getsize(log))]
    os.close(fd)
    # frame 6 holds the first "later" memory (frame 0 is... memory 1)
    with open(log, "r+b") as f:
        f.seek(offs[5] + 40)
        b = f.read(1)
        f.seek(offs[5] + 40)
        f.write(bytes([b[0] ^ 0x10]))
    os.unlink(os.path.join(path, "data.mdb"))
    rep = Mnemos.recover(path)
    assert not rep.complete and "checksum" in " ".join(rep.lost)
    with Mnemos.open(path) as db:
        assert [m.id for m in db.memories()] == first
        assert db.verify().ok
    assert later  # the later ones were after the damaged frame: reported, not restored


def test_log_tail_that_does_not_continue_lmdb_is_not_cut(tmp_path) -> None:
    """data.mdb older than the log (restored from a copy): open must not cut the log."""
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        db.remember("one")
    shutil.copy(os.path.join(path, "data.mdb"), str(tmp_path / "old.mdb"))
    with Mnemos.open(path) as db:
        db.remember("two")
        db.remember("three")
    shutil.copy(str(tmp_path / "old.mdb"), os.path.join(path, "data.mdb"))
    log = _log(path)
    size = os.path.getsize(log)
    # the tail continues LMDB's seq (2, 3), so this is what a crashed writer leaves and
    # is cut; make it not continue it by dropping its first frame's worth: simulate a
    # data.mdb two writes behind with the log one write behind
    with Mnemos.open(path, readonly=True) as db:
        assert db.count() == 1
    from mnemos_kv._log import FILE_HEADER, iter_file_frames
    fd = os.open(log, os.O_RDONLY)
    frames = list(iter_file_frames(fd, FILE_HEADER, size))
    os.close(fd)
    assert [s for _o, s, _p in frames] == [1, 2, 3]
    # rewrite the log without seq 2: its tail now starts at seq 3
    from mnemos_kv._log import encode_frame
    with open(log, "r+b") as f:
        f.seek(frames[1][0])
        f.write(encode_frame(3, frames[2][2]))
        f.truncate()
    size = os.path.getsize(log)
    with pytest.raises(NeedsRecoveryError, match="disagree"):
        Mnemos.open(path)
    assert os.path.getsize(log) == size


@pytest.mark.parametrize("which", ["vectors", "slots"])
@pytest.mark.parametrize("cut", [100, 4096 + 100, -2048])
def test_truncated_vector_files_raise_corruption(tmp_path, which: str, cut: int) -> None:
    path = str(tmp_path / "s")
    _make(path)
    f = os.path.join(path, [n for n in os.listdir(path) if n.startswith(which)][0])
    with open(f, "r+b") as fh:
        fh.truncate(cut if cut > 0 else 4096 + 10 * 32)  # keep only the first rows
    for readonly in (True, False):
        with pytest.raises(CorruptionError, match=os.path.basename(f)):
            with Mnemos.open(path, readonly=readonly) as db:
                db.ask("fact number 3")
    assert cli_main(["verify", path]) == 1


def _flip_everywhere(path: str, needle: bytes, bit: int = 0x01) -> int:
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        n, at = 0, data.find(needle)
        while at >= 0:
            data[at + len(needle) // 2] ^= bit
            n += 1
            at = data.find(needle, at + 1)
        f.seek(0)
        f.write(data)
    return n


def test_flipped_bit_in_a_record_is_detected(tmp_path) -> None:
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        a = db.remember("the quick brown fox jumps over the lazy dog", {"k": 1})
        db.remember("an unrelated memory about payments")
    assert _flip_everywhere(os.path.join(path, "data.mdb"), b"quick brown fox") >= 1
    with Mnemos.open(path, readonly=True) as db:
        with pytest.raises(CorruptionError, match=rf"memory {a}\b.*data\.mdb"):
            db.get(a)
        with pytest.raises(CorruptionError, match=rf"memory {a}\b"):
            db.ask("quick brown fox lazy dog", top_k=2)
        rep = db.verify()
        assert not rep.ok and any(f"memory {a}" in p and "checksum" in p for p in rep.problems)
    rep = Mnemos.recover(path, to=str(tmp_path / "r"))
    with Mnemos.open(str(tmp_path / "r")) as db:
        assert db.get(a).text == "the quick brown fox jumps over the lazy dog"


def test_flipped_bit_in_a_vector_is_detected(tmp_path) -> None:
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        ids = db.remember_many([f"memory number {i} about gardening" for i in range(5)])
        good = db.get_vector(ids[3])
    vec = os.path.join(path, "vectors.000001.f32")
    with open(vec, "r+b") as f:  # one bit of one float of slot 3
        off = 4096 + 3 * 512 * 4 + 4 * int(abs(good).argmax())
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x04]))
    with Mnemos.open(path, readonly=True) as db:
        with pytest.raises(CorruptionError, match=rf"memory {ids[3]}\b.*vectors\.000001\.f32"):
            db.get_vector(ids[3])
        with pytest.raises(CorruptionError, match=rf"memory {ids[3]}"):
            db.ask("memory number 3 about gardening", top_k=5)
        rep = db.verify()
        assert any(f"memory {ids[3]}" in p and "checksum" in p for p in rep.problems), rep
        assert any(f"memory {ids[3]}" in p and "differs from" in p and "log" in p
                   for p in rep.problems), rep
    with Mnemos.open(path) as db:  # compaction must not bake the damaged row into a base
        with pytest.raises(CorruptionError, match=rf"memory {ids[3]}"):
            db.compact()
        assert db.verify().problems  # still reported, nothing was replaced
    Mnemos.recover(path)
    with Mnemos.open(path) as db:
        assert (db.get_vector(ids[3]) == good).all() and db.verify().ok


def test_folded_row_check_catches_what_the_row_check_catches() -> None:
    """``rows_pass`` (one CRC over the shifted XOR of the rows) against ``bad_rows`` (one
    CRC per row): every damage confined to one row, at any position of the fold, and the
    same bits flipped in two rows (which a plain XOR would cancel) are caught. Every
    third row carries a folded CRC-32 (format 6, checked one by one) among the CRC-16
    rows (formats 2-5) of an upgraded store."""
    import numpy as np

    from mnemos_kv._vectors import (CHECKED, CHECKED32, FOLD_ROWS, SLOT_DTYPE, bad_rows, crc16,
                                    fold, row_crc, rows_pass)
    rng = np.random.default_rng(7)
    n, dim = 3 * FOLD_ROWS, 24
    mat = rng.standard_normal((n, dim)).astype(np.float32)
    slots = np.zeros(n, SLOT_DTYPE)
    slots["flags"] = CHECKED
    slots["pad"] = [crc16(mat[i].tobytes()) for i in range(n)]
    slots["flags"][::3] = CHECKED32
    slots["pad"][::3] = [fold(row_crc(mat[i].tobytes())) for i in range(0, n, 3)]
    slots["flags"][5] = 0  # a row written before checksums: never checked
    every = list(range(n))
    assert rows_pass(mat, slots, every) and rows_pass(mat, slots, []) and not bad_rows(mat, slots, every)
    for trial in range(300):
        rows = rng.choice(n, size=int(rng.integers(1, 2 * FOLD_ROWS)), replace=False).tolist()
        bad = mat.copy()
        raw = bad.view(np.uint8)
        hit = int(rng.choice(rows))
        width = int(rng.integers(1, 3))  # a one- or two-byte burst
        at = int(rng.integers(0, dim * 4 - width + 1))
        raw[hit, at:at + width] ^= rng.integers(1, 256, size=width, dtype=np.uint8)
        assert rows_pass(bad, slots, rows) == (not bad_rows(bad, slots, rows)), (trial, hit)
        assert rows_pass(bad, slots, rows) == (hit == 5)
    for a, b in ((3, 4), (3, 40), (0, n - 1)):  # the same flip at the same offset of two rows
        bad = mat.copy()
        bad.view(np.uint8)[[a, b], 17] ^= 0x20
        assert not rows_pass(bad, slots, [a, b, 9]) and bad_rows(bad, slots, [a, b, 9]) == [a, b]
    bad = mat.copy()
    bad.view(np.uint8)[7, 3] ^= 1
    assert not rows_pass(bad, slots, [7, 7, 7])  # repeated rows are checked once, not cancelled


def test_ask_names_the_best_ranked_of_several_damaged_vectors(tmp_path) -> None:
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        ids = db.remember_many([f"memory number {i} about gardening" for i in range(6)])
        order = [m.id for m in db.ask("memory number 4 about gardening", top_k=6)]
    vec = os.path.join(path, "vectors.000001.f32")
    damaged = [order[1], order[4]]  # the ranked second and fifth
    with open(vec, "r+b") as f:
        for mid in damaged:
            off = 4096 + ids.index(mid) * 512 * 4 + 8
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x10]))
    with Mnemos.open(path, readonly=True) as db:
        assert [m.id for m in db.ask("memory number 4 about gardening", top_k=1)] == order[:1]
        with pytest.raises(CorruptionError, match=rf"memory {order[1]}\b.*vectors\.000001\.f32"):
            db.ask("memory number 4 about gardening", top_k=6)
        rep = db.verify()
        assert {p.split(":")[0] for p in rep.problems if "checksum" in p} == {
            f"memory {m}" for m in damaged}


def test_dump_reads_one_snapshot_while_another_process_writes(tmp_path) -> None:
    """main's dump read each memory and its edges in separate snapshots: a forget in
    between made it fail ("no memory with id N")."""
    path = str(tmp_path / "s")
    code = ("import sys\nfrom mnemos_kv import Mnemos\n"
            "with Mnemos.open(sys.argv[1]) as db:\n"
            "    db.forget_many([m.id for m in db.memories()])\n")

    class Out:
        """A text sink that, at the first line, lets another process forget everything."""

        def __init__(self) -> None:
            self.lines: list[str] = []

        def write(self, text: str) -> int:
            if not self.lines:
                subprocess.run([sys.executable, "-c", code, path], cwd=ROOT, check=True, timeout=120)
            self.lines.append(text)
            return len(text)

    with Mnemos.open(path) as db:
        ids = db.remember_many([f"note {i}" for i in range(30)])
        for a, b in zip(ids, ids[1:]):
            db.connect(a, b)
        out = Out()
        db.dump(out)  # type: ignore[arg-type]
        assert db.count() == 0  # the forget happened while the dump ran
    rows = [json.loads(x) for x in out.lines]
    assert [r["id"] for r in rows if r["kind"] == "memory"] == ids
    assert len([r for r in rows if r["kind"] == "edge"]) == len(ids) - 1


@pytest.mark.parametrize("damage", ["log missing", "log header", "log frame", "base missing"])
def test_lost_history_files_are_rebuilt_from_an_intact_lmdb(tmp_path, damage: str) -> None:
    path = str(tmp_path / "s")
    digest, ids = _make(path, compacted=damage == "base missing")
    log = _log(path)
    if damage == "log missing":
        os.unlink(log)
    elif damage == "log header":
        with open(log, "r+b") as f:
            f.write(bytes(8))
    elif damage == "log frame":
        with open(log, "r+b") as f:
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 0x40]))
    else:
        os.unlink(os.path.join(path, [n for n in os.listdir(path) if n.startswith("base.")][0]))
    if damage in ("log missing", "log header"):
        with pytest.raises(NeedsRecoveryError, match="recover"):
            Mnemos.open(path)
    rep = Mnemos.recover(path)
    assert rep.complete, rep
    assert "data.mdb is intact" in str(rep), str(rep)
    with Mnemos.open(path) as db:
        assert db.state_digest() == digest
        assert db.verify().ok
        assert rep.memories == db.stats()["total"] == len(ids)  # one forgotten, one in "other"
        db.remember("and the store goes on")
        db.export_replay(str(tmp_path / "x.replay"))
    with Mnemos.open(str(tmp_path / "copy")) as copy:  # the new history replays
        assert copy.replay(str(tmp_path / "x.replay")).digest_matches


def test_quick_verify_checks_a_sample_of_rows_deep_checks_all(tmp_path, monkeypatch) -> None:
    from mnemos_kv import _verify
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        ids = db.remember_many([f"row {i} of a small store" for i in range(10)])
    vec = os.path.join(path, "vectors.000001.f32")
    with open(vec, "r+b") as f:  # corrupt rows 0 (sampled: first) and 4 (not sampled)
        for slot in (0, 4):
            f.seek(4096 + slot * 2048 + 8)
            b = f.read(1)
            f.seek(4096 + slot * 2048 + 8)
            f.write(bytes([b[0] ^ 0x01]))
    monkeypatch.setattr(_verify, "QUICK_ROWS", 2)
    with Mnemos.open(path, readonly=True) as db:
        quick = db.verify(deep=False)
        deep = db.verify()
    bad = lambda rep: {p.split(":")[0] for p in rep.problems if "checksum" in p}  # noqa: E731
    assert bad(quick) == {f"memory {ids[0]}"} and quick.checked["vector_checksums"] == 2
    assert bad(deep) == {f"memory {ids[0]}", f"memory {ids[4]}"}


def test_meta_pages_read_across_other_commits_are_read_again_not_called_damage(
        tmp_path, monkeypatch) -> None:
    """A reader's two meta-page reads can straddle several commits of other processes
    (page 0 from before, page 1 from after: transaction ids 3 apart). That is not damage:
    the pages are read again. A meta page damaged on disk is still reported."""
    from mnemos_kv import _lmdbcheck

    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        db.remember("first")
    data = os.path.join(path, "data.mdb")
    before = _lmdbcheck.check_meta(data)
    with open(data, "rb") as f:
        old_page0 = f.read(before.psize)
    with Mnemos.open(path) as db:
        for i in range(3):
            db.remember(f"later {i}")
    after = _lmdbcheck.check_meta(data)
    assert after.txnid - before.txnid >= 3

    real_pread = os.pread
    stale = {"left": 1}

    def pread(fd: int, n: int, off: int) -> bytes:
        if off == 0 and stale["left"]:  # the first read of page 0 is from before the commits
            stale["left"] -= 1
            return old_page0[:n]
        return real_pread(fd, n, off)

    monkeypatch.setattr(os, "pread", pread)
    assert _lmdbcheck.check_meta(data) == after
    assert stale["left"] == 0
    stale["left"] = _lmdbcheck.META_READS  # stale on every read: reported
    with pytest.raises(CorruptionError, match="transaction ids"):
        _lmdbcheck.check_meta(data)


def test_verify_starts_again_when_a_compaction_supersedes_its_snapshot(tmp_path, monkeypatch) -> None:
    """A compaction in another process removes the log files a snapshot's check reads:
    verify starts again on a newer snapshot, and when compactions keep doing so it says
    so with a StoreError (the private signal never reaches the caller, as it did after
    five attempts)."""
    from mnemos_kv import StoreError, _verify
    with Mnemos.open(str(tmp_path / "s")) as db:
        db.remember("a memory")
        real = _verify._verify_once
        calls = {"n": 0}

        def superseded_twice(*a, **k):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise _verify._Superseded()
            return real(*a, **k)
        monkeypatch.setattr(_verify, "_verify_once", superseded_twice)
        assert db.verify().ok and calls["n"] == 3

        def always(*a, **k):
            calls["n"] += 1
            raise _verify._Superseded()
        monkeypatch.setattr(_verify, "_verify_once", always)
        calls["n"] = 0
        with pytest.raises(StoreError, match="compacted the store"):
            db.verify()
        assert calls["n"] == _verify.VERIFY_ATTEMPTS
