"""Base snapshots in zlib-compressed blocks (format 4): smaller on disk, the same frames
inside, replay files unchanged, format-3 snapshots (frames stored plainly) still read,
and a damaged block ends the readable part like a damaged frame."""

from __future__ import annotations

import os
import struct

import pytest

from mnemos_kv import LogCorruptionError, Mnemos
from mnemos_kv import _records as R
from mnemos_kv import _snapshot
from mnemos_kv._replay import iter_ops
from mnemos_kv._snapshot import snapshot_file, snapshot_frames


def _build(path: str) -> tuple[int, str]:
    """A compacted store (memories, metadata, keys, edges, a forget); (base seq, digest)."""
    with Mnemos.open(path) as db:
        ids = db.remember_many([{"text": f"note {i} about the topic {i % 7} of the week",
                                 "metadata": {"i": i, "tag": f"t{i % 3}"}} for i in range(60)])
        db.namespace("other").remember("a memory of another namespace", key="k1")
        db.connect(ids[0], ids[1], relation="next")
        db.forget(ids[3])
        db.compact()
        return db._engine.log.base_seq, db.state_digest()


def _blocks(path: str) -> list[tuple[int, int, int]]:
    """(offset, raw length, compressed length) of every block of a compressed snapshot."""
    data = open(path, "rb").read()
    assert data[:8] == _snapshot.SNAP_MAGIC_Z
    out, pos = [], _snapshot._SNAP_HDR.size
    while pos < len(data):
        raw_len, comp_len, _crc = _snapshot._BLOCK.unpack_from(data, pos)
        out.append((pos, raw_len, comp_len))
        pos += _snapshot._BLOCK.size + comp_len
    assert pos == len(data)
    return out


def _as_plain(path: str) -> None:
    """Rewrite a compressed snapshot as a format-3 one: the same frames, stored plainly."""
    with open(path, "rb") as f:
        head = f.read(_snapshot._SNAP_HDR.size)
    _magic, seq, gen = _snapshot._SNAP_HDR.unpack(head)
    frames = b"".join(_snapshot.encode_frame(s, p) for _o, s, p in snapshot_frames(path))
    with open(path, "wb") as f:
        f.write(_snapshot._SNAP_HDR.pack(_snapshot.SNAP_MAGIC, seq, gen) + frames)


def test_snapshot_blocks_hold_the_frames_and_replay_files_are_unchanged(
        store_path: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_snapshot, "BLOCK_RAW", 700)  # several blocks from a small store
    base_seq, digest = _build(store_path)
    spath = snapshot_file(store_path, base_seq)
    blocks = _blocks(spath)
    assert len(blocks) > 3 and all(raw >= 700 for _o, raw, _c in blocks[:-1])
    assert sum(c for _o, _r, c in blocks) < sum(r for _o, r, _c in blocks) / 2
    seqs = [s for _o, s, _p in snapshot_frames(spath)]
    assert seqs == list(range(1, len(seqs) + 1))
    compressed = str(tmp_path / "compressed.replay")
    with Mnemos.open(store_path) as db:
        assert db.verify().ok
        db.export_replay(compressed)
    # the same snapshot stored plainly (as format 3 wrote it) is read, and exports the
    # same bytes: the container changed, not the ops
    _as_plain(spath)
    plain = str(tmp_path / "plain.replay")
    with Mnemos.open(store_path, readonly=True) as db:
        assert db.verify().ok
        db.export_replay(plain)
    assert open(compressed, "rb").read() == open(plain, "rb").read()
    assert all(isinstance(op["vec"], bytes) for _s, _q, op in iter_ops(compressed)
               if op["op"] == "mem")
    with Mnemos.open(str(tmp_path / "copy")) as copy:
        copy.replay(compressed)
        assert copy.state_digest() == digest


def test_replay_header_keeps_the_op_format(store_path: str, tmp_path) -> None:
    _build(store_path)
    out = str(tmp_path / "x.replay")
    with Mnemos.open(store_path) as db:
        db.export_replay(out)
    data = open(out, "rb").read()
    assert R.FORMAT_VERSION >= 4 and R.REPLAY_FORMAT_VERSION == 3  # (formats 4-5: not the ops)
    # the CBOR header follows the fixed prefix; format_version is the op encoding's
    assert b"nformat_version\x03" in data[:256]


def test_a_damaged_block_ends_the_snapshot_there(store_path: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_snapshot, "BLOCK_RAW", 700)
    base_seq, _digest = _build(store_path)
    spath = snapshot_file(store_path, base_seq)
    blocks = _blocks(spath)
    before = [(s, p) for _o, s, p in snapshot_frames(spath)]
    bad_at, _raw, comp = blocks[2]
    good = sum(1 for o, _s, _p in snapshot_frames(spath) if o < bad_at)
    data = bytearray(open(spath, "rb").read())
    data[bad_at + _snapshot._BLOCK.size + comp // 2] ^= 0x10
    open(spath, "wb").write(bytes(data))
    got = []
    with pytest.raises(LogCorruptionError) as err:
        for _o, s, p in snapshot_frames(spath):
            got.append((s, p))
    assert got == before[:good] and err.value.offset == bad_at and err.value.good_seq == good
    with Mnemos.open(store_path, readonly=True) as db:
        probs = "\n".join(db.verify().problems)
    assert "base." in probs and "checksum mismatch in a compressed block" in probs
    # with data.mdb lost too, recover rebuilds the memories of the intact blocks and says
    # what it lost
    intact = {int(op["id"]) for op in (R.decode(p) for _s, p in before[:good])
              if op["op"] == "mem" and op["ns"] == 0}
    for name in ("data.mdb", "lock.mdb"):
        os.unlink(os.path.join(store_path, name))
    rep = Mnemos.recover(store_path, to=str(tmp_path / "rebuilt"))
    assert any("checksum mismatch in a compressed block" in x for x in rep.lost)
    with Mnemos.open(str(tmp_path / "rebuilt")) as db:
        assert intact and {m.id for m in db.memories()} == intact


@pytest.mark.parametrize("cut", ["header", "oversized", "garbage"])
def test_malformed_blocks_are_corruption_errors(store_path: str, cut: str) -> None:
    base_seq, _digest = _build(store_path)
    spath = snapshot_file(store_path, base_seq)
    data = bytearray(open(spath, "rb").read())
    pos = _snapshot._SNAP_HDR.size
    if cut == "header":
        data = data[: pos + 5]
    elif cut == "oversized":
        struct.pack_into("<I", data, pos, _snapshot.MAX_BLOCK_RAW + 1)
    else:  # the CRC matches, the bytes are not zlib
        junk = b"not zlib at all"
        data[pos:] = _snapshot._BLOCK.pack(100, len(junk), __import__("zlib").crc32(junk)) + junk
    open(spath, "wb").write(bytes(data))
    with pytest.raises(LogCorruptionError):
        list(snapshot_frames(spath))
    assert os.path.exists(spath)
