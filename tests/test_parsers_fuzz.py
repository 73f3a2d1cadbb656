"""Fuzzing every parser of on-disk bytes: log frames and headers, base snapshots, replay
files (header and body, also through ``replay``), record CBOR, vector/slot headers and
LMDB meta pages / page headers. Each must return a correct result or raise a
MnemosError: never another exception, a hang or a crash.

Inputs are valid files mutated (bytes flipped, cut, spliced) plus raw random bytes;
hypothesis runs derandomized with a fixed budget (``MNEMOS_FUZZ_EXAMPLES``, default
60 per parser). ``scripts/fuzz_parsers.py`` runs the same properties much longer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import Mnemos, MnemosError
from mnemos_kv import _lmdbcheck
from mnemos_kv import _records as R
from mnemos_kv._log import FILE_HEADER, LogFile, iter_file_frames, iter_frames, log_file
from mnemos_kv._replay import _parse
from mnemos_kv._snapshot import snapshot_frames
from mnemos_kv._vectors import SLOT_DTYPE, SLOT_MAGIC, VEC_MAGIC, _MappedFile

EXAMPLES = int(os.environ.get("MNEMOS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
COUNT: dict[str, int] = {}

_CORPUS: dict[str, bytes] = {}


def corpus() -> dict[str, bytes]:
    """Valid files of a small compacted store (made once)."""
    if _CORPUS:
        return _CORPUS
    tmp = tempfile.mkdtemp(prefix="mnemos-fuzz-")
    path = os.path.join(tmp, "s")
    with Mnemos.open(path) as db:
        ids = db.remember_many([{"text": f"memory {i}", "metadata": {"i": i, "b": b"\x00"},
                                 "key": f"k{i}"} for i in range(8)])
        db.connect(ids[0], ids[1])
        db.forget(ids[2])
        db.compact()
        db.remember("after", {"nested": {"a": [1, 2.5, None, True]}})
        db.export_replay(os.path.join(tmp, "x.replay"))
    for name in os.listdir(path):
        if name.startswith(("log.", "base.", "data.mdb")):
            with open(os.path.join(path, name), "rb") as f:
                _CORPUS[name.split(".")[0]] = f.read()
    for name, f in (("vectors", "vectors.000002.f32"), ("slots", "slots.000002.bin")):
        with open(os.path.join(path, f), "rb") as fh:
            _CORPUS[name] = fh.read(4096 + 4 * 2048)
    with open(os.path.join(tmp, "x.replay"), "rb") as f:
        _CORPUS["replay"] = f.read()
    with Mnemos.open(path, readonly=True) as db:
        with db._engine.env.read() as txn:
            _CORPUS["record"] = txn.get((1).to_bytes(8, "big"), db=db._engine.env.db("records"))
    shutil.rmtree(tmp)
    return _CORPUS


@st.composite
def mutated(draw: Any, kind: str) -> bytes:
    """A valid ``kind`` file with a few flipped/overwritten bytes, maybe cut or spliced;
    or (sometimes) raw random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(corpus()[kind])
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        else:
            data[pos] = draw(st.integers(0, 255))
    how = draw(st.integers(0, 3))
    if how == 1 and data:
        data = data[: draw(st.integers(0, len(data)))]
    elif how == 2:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def _file(data: bytes, name: str = "f") -> str:
    d = tempfile.mkdtemp(prefix="mnemos-fuzz-")
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def _mnemos_or_result(fn: Callable[[], Any], what: str) -> Any:
    COUNT[what] = COUNT.get(what, 0) + 1
    try:
        return fn()
    except MnemosError:
        return None


@FUZZ
@given(mutated("log"))
def test_log_frames(data: bytes) -> None:
    def run() -> int:
        n = 0
        for _o, _s, payload in iter_frames(data, FILE_HEADER, len(data)):
            R.decode(payload, "log frame")
            n += 1
        return n
    _mnemos_or_result(run, "log frames (in memory)")
    p = _file(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        _mnemos_or_result(lambda: list(iter_file_frames(fd, FILE_HEADER, len(data))),
                          "log frames (chunked file reader)")
    finally:
        os.close(fd)
    root = os.path.dirname(p)
    os.rename(p, log_file(root, 2))
    _mnemos_or_result(lambda: LogFile(root, 2, True).close(), "log header")
    shutil.rmtree(root)


@FUZZ
@given(mutated("base"))
def test_base_snapshot(data: bytes) -> None:
    p = _file(data)
    _mnemos_or_result(lambda: [R.decode(x[2]) for x in snapshot_frames(p)], "base snapshot")
    shutil.rmtree(os.path.dirname(p))


@FUZZ
@given(mutated("replay"))
def test_replay_file_parse(data: bytes) -> None:
    p = _file(data)
    _mnemos_or_result(lambda: _parse(p), "replay file header and body")
    shutil.rmtree(os.path.dirname(p))


def _replay_header_with(**fields: Any) -> bytes:
    """The corpus replay file with header fields replaced (the header has no checksum)."""
    import struct as _struct
    raw = corpus()["replay"]
    magic, base_len, log_len, hdr_len = _struct.unpack_from("<8sQQI", raw, 0)
    header = R.decode(raw[28:28 + hdr_len])
    header.update(fields)
    head = R.encode(header)
    return _struct.pack("<8sQQI", magic, base_len, log_len, len(head)) + head + raw[28 + hdr_len:]


def test_replay_header_fields_of_the_wrong_type_are_refused(tmp_path) -> None:
    """Found by scripts/fuzz_parsers.py: ``"namespaces": 0`` in a header was a TypeError."""
    for fields in ({"namespaces": 0}, {"namespaces": [1]}, {"since_seq": "x"}, {"dim": -1},
                   {"embedder": 5}, {"renumbered": 1}, {"base_seq": None}):
        p = str(tmp_path / "x.replay")
        with open(p, "wb") as f:
            f.write(_replay_header_with(**fields))
        with Mnemos.open(str(tmp_path / f"t{len(os.listdir(tmp_path))}")) as db:
            with pytest.raises(MnemosError, match="malformed header"):
                db.replay(p, strict=False)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
@given(mutated("replay"), st.booleans())
def test_replay_into_a_store(data: bytes, strict: bool) -> None:
    p = _file(data)
    target = os.path.join(os.path.dirname(p), "t")
    db = Mnemos.open(target)
    try:
        res = _mnemos_or_result(lambda: db.replay(p, strict=strict), "replay (apply)")
        if res is not None:
            assert db.verify().ok
    finally:
        db.close()
        shutil.rmtree(os.path.dirname(p))


@FUZZ
@given(mutated("record"))
def test_record_decoding(data: bytes) -> None:
    rec = _mnemos_or_result(lambda: R.Record.from_bytes(data), "record (checksum + CBOR)")
    if rec is not None:  # what decodes is a well-typed record
        assert isinstance(rec.text, str) and isinstance(rec.metadata, dict)
    _mnemos_or_result(lambda: R.decode(data[5:]), "CBOR value")


@FUZZ
@given(st.sampled_from(["vectors", "slots"]).flatmap(lambda k: st.tuples(st.just(k), mutated(k))))
def test_vector_and_slot_headers(arg: tuple[str, bytes]) -> None:
    kind, data = arg
    p = _file(data)
    if kind == "vectors":
        make = lambda: _MappedFile(p, VEC_MAGIC, 512, 2, 2048, np.dtype("<f4"), (512,), True)  # noqa: E731
    else:
        make = lambda: _MappedFile(p, SLOT_MAGIC, 32, 2, 32, SLOT_DTYPE, (), True)  # noqa: E731
    f = _mnemos_or_result(make, "vector/slot header")
    if f is not None:
        assert f.capacity == max(0, (len(data) - 4096) // f.row_bytes)
        f.close()
    shutil.rmtree(os.path.dirname(p))


@FUZZ
@given(mutated("data"))
def test_lmdb_meta_and_page_walk(data: bytes) -> None:
    p = _file(data, "data.mdb")
    _mnemos_or_result(lambda: _lmdbcheck.check_meta(p), "LMDB meta pages")
    COUNT["LMDB page walk"] = COUNT.get("LMDB page walk", 0) + 1
    problems, pages = _lmdbcheck.walk(p)  # never raises: problems are lines
    assert isinstance(problems, list) and pages >= 0
    _mnemos_or_result(lambda: _lmdbcheck.read_table(p, b"meta"), "LMDB table read (recover)")
    shutil.rmtree(os.path.dirname(p))


def test_fuzz_counts() -> None:
    """Prints the inputs tried per parser (run after the properties, in file order)."""
    if COUNT:
        print("\nfuzz inputs per parser: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNT.items())))
        print(f"fuzz inputs in total: {sum(COUNT.values())}")
