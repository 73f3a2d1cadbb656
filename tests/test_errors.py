"""Bad input gets a clear MnemosError and writes nothing."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import lmdb

from mnemos_kv import (ClosedError, CorruptionError, DuplicateKeyError, EmbedderMismatchError,
                       FormatVersionError, InvalidInputError, MemoryNotFoundError, Mnemos,
                       MnemosError, NotAStoreError, ReadOnlyError, HashingEmbedder)
from mnemos_kv import _records as R


def _fingerprint(db: Mnemos) -> tuple:
    st = db.stats()
    return st["seq"], st["total"], st["slots"], st["log"]["bytes"], st["namespaces"]


BAD_REMEMBER = [
    (dict(text=""), "empty"),
    (dict(text="   \n"), "empty"),
    (dict(text=42), "must be a str"),
    (dict(text=None), "must be a str"),
    (dict(text="ok", metadata="nope"), "metadata must be a dict"),
    (dict(text="ok", metadata={1: "x"}), "keys must be str"),
    (dict(text="ok", metadata={"f": float("nan")}), "finite"),
    (dict(text="ok", metadata={"o": object()}), "has type object"),
    (dict(text="ok", metadata={"s": {1, 2}}), "has type set"),
    (dict(text="ok", type="dream"), "type must be one of"),
    (dict(text="ok", timestamp="yesterday"), "timestamp"),
    (dict(text="ok", timestamp=math.inf), "finite"),
    (dict(text="ok", timestamp=True), "bool"),
    (dict(text="ok", key=""), "key"),
    (dict(text="ok", vector=[1.0, 2.0]), "shape"),
    (dict(text="ok", vector=[math.nan] * 512), "NaN"),
    (dict(text="ok", vector=[math.inf] + [0.0] * 511), "NaN or infinity"),
    (dict(text="ok", vector="abc"), "not numeric"),
    (dict(text="\ud800 lone surrogate"), "unicode"),
    (dict(text="x" * ((1 << 20) + 1)), "limit"),
]


@pytest.mark.parametrize("kwargs,needle", BAD_REMEMBER)
def test_bad_remember_is_rejected_and_writes_nothing(db: Mnemos, kwargs, needle) -> None:
    db.remember("existing memory")
    before = _fingerprint(db)
    text = kwargs.pop("text")
    with pytest.raises(InvalidInputError, match=needle):
        db.remember(text, **kwargs)
    assert _fingerprint(db) == before


def test_bad_item_in_batch_rejects_whole_batch(db: Mnemos) -> None:
    before = _fingerprint(db)
    with pytest.raises(InvalidInputError, match="item 2"):
        db.remember_many(["fine", "also fine", {"text": ""}])
    with pytest.raises(InvalidInputError, match="unknown fields"):
        db.remember_many([{"text": "x", "colour": "red"}])
    with pytest.raises(InvalidInputError, match="twice"):
        db.remember_many([{"text": "x", "key": "k"}, {"text": "y", "key": "k"}])
    with pytest.raises(InvalidInputError, match="list of texts"):
        db.remember_many("a single string")
    assert _fingerprint(db) == before
    assert db.count() == 0


def test_duplicate_key_rejected_in_txn_writes_nothing(db: Mnemos) -> None:
    db.remember("a", key="k1")
    before = _fingerprint(db)
    with pytest.raises(DuplicateKeyError, match="k1"):
        db.remember_many(["b", {"text": "c", "key": "k1"}])
    assert _fingerprint(db) == before
    assert db.namespace("other").remember("same key elsewhere", key="k1") > 0


def test_unknown_ids(db: Mnemos) -> None:
    a = db.remember("a")
    for call in (lambda: db.get(999), lambda: db.forget(999), lambda: db.connect(a, 999),
                 lambda: db.neighbors(999), lambda: db.get_by_key("nope"),
                 lambda: db.get_vector(999)):
        with pytest.raises(MemoryNotFoundError, match="999|nope"):
            call()
    for bad in (0, -1, "1", 1.0, True, None):
        with pytest.raises(InvalidInputError, match="memory id"):
            db.get(bad)


def test_bad_connect_and_ask_arguments(db: Mnemos) -> None:
    a, b = db.remember_many(["a", "b"])
    before = _fingerprint(db)
    for kw, needle in ((dict(weight=math.nan), "finite"), (dict(weight="1"), "finite"),
                       (dict(relation=""), "relation"), (dict(relation=" x"), "relation")):
        with pytest.raises(InvalidInputError, match=needle):
            db.connect(a, b, **kw)
    with pytest.raises(InvalidInputError, match="itself"):
        db.connect(a, a)
    assert _fingerprint(db) == before
    for kw, needle in ((dict(top_k=0), "top_k"), (dict(top_k=10**9), "top_k"),
                       (dict(top_k=2.5), "top_k"), (dict(filter=[1]), "filter"),
                       (dict(namespaces=[]), "at least one"), (dict(namespaces=["bad name!"]), "namespace name")):
        with pytest.raises(InvalidInputError, match=needle):
            db.ask("a", **kw)
    with pytest.raises(InvalidInputError, match="query"):
        db.ask("")
    with pytest.raises(InvalidInputError, match="direction"):
        db.neighbors(a, direction="sideways")


@pytest.mark.parametrize("name", ["", "has space", "-lead", "a/b", "x" * 129, None, 3, "agent\x00"])
def test_bad_namespace_names(db: Mnemos, name) -> None:
    with pytest.raises(InvalidInputError, match="namespace name"):
        db.namespace(name)


def test_not_a_store(tmp_path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("hello")
    with pytest.raises(NotAStoreError, match="is a file"):
        Mnemos.open(str(f))
    d = tmp_path / "foreign"
    d.mkdir()
    (d / "notes.md").write_text("x")
    with pytest.raises(NotAStoreError, match="non-empty directory"):
        Mnemos.open(str(d))
    assert os.listdir(d) == ["notes.md"]
    with pytest.raises(NotAStoreError, match="does not exist"):
        Mnemos.open(str(tmp_path / "missing.mem"), readonly=True)
    assert not (tmp_path / "missing.mem").exists()


def test_newer_format_is_refused(store_path: str) -> None:
    Mnemos.open(store_path).close()
    env = lmdb.open(store_path, max_dbs=32)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        fmt = R.decode(txn.get(b"format", db=meta))
        fmt["version"] = R.FORMAT_VERSION + 1
        txn.put(b"format", R.encode(fmt), db=meta)
    env.close()
    with pytest.raises(FormatVersionError, match=f"format version {R.FORMAT_VERSION + 1}"):
        Mnemos.open(store_path)


def test_embedder_mismatch(store_path: str) -> None:
    Mnemos.open(store_path).close()
    with pytest.raises(EmbedderMismatchError, match="mnemos-hash-v1"):
        Mnemos.open(store_path, embedder=HashingEmbedder(dim=128))

    class Other:
        name, dim = "other", 512

        def embed(self, texts):
            return np.ones((len(texts), 512), np.float32)

    with pytest.raises(EmbedderMismatchError, match="'other'"):
        Mnemos.open(store_path, embedder=Other())


def test_custom_embedder_store_opened_without_it(tmp_path) -> None:
    class Emb:
        name, dim = "custom-2", 2

        def embed(self, texts):
            return np.ones((len(texts), 2), np.float32)

    p = str(tmp_path / "c.mem")
    with Mnemos.open(p, embedder=Emb()) as s:
        mid = s.remember("kept")
    with Mnemos.open(p) as s:  # reads work without the embedder
        assert s.get(mid).text == "kept"
        with pytest.raises(EmbedderMismatchError, match="custom-2"):
            s.ask("kept")
        with pytest.raises(EmbedderMismatchError):
            s.remember("new")
        assert s.remember("with vector", vector=[1.0, 0.0]) == mid + 1


def test_bad_embedder_output_is_rejected(tmp_path) -> None:
    class Broken:
        name, dim = "broken", 4

        def embed(self, texts):
            return np.full((len(texts), 4), np.nan, np.float32)

    with Mnemos.open(str(tmp_path / "b.mem"), embedder=Broken()) as s:
        with pytest.raises(InvalidInputError, match="NaN"):
            s.remember("x")
        assert s.count() == 0
    with pytest.raises(InvalidInputError, match="embedder must"):
        Mnemos.open(str(tmp_path / "c.mem"), embedder=42)


def test_readonly_and_closed(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        mid = s.remember("x")
    with Mnemos.open(store_path, readonly=True) as r:
        assert r.get(mid).text == "x"
        with pytest.raises(ReadOnlyError):
            r.remember("y")
        with pytest.raises(ReadOnlyError):
            r.forget(mid)
    with pytest.raises(ClosedError):
        r.get(mid)
    with pytest.raises(ClosedError):
        r.ask("x")


def test_all_errors_share_one_root() -> None:
    import mnemos_kv
    for name in mnemos_kv.__all__:
        obj = getattr(mnemos_kv, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, MnemosError), name


def test_decoder_rejects_tags_we_never_write() -> None:
    import cbor2
    import datetime
    bad = cbor2.dumps({"i": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)})
    with pytest.raises(CorruptionError, match="tag"):
        R.decode(bad)
    with pytest.raises(CorruptionError):
        R.decode(b"\xff\x00garbage")


def test_bad_open_arguments(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="map_size"):
        Mnemos.open(str(tmp_path / "m.mem"), map_size=10)
    with pytest.raises(InvalidInputError, match="clock"):
        Mnemos.open(str(tmp_path / "m.mem"), clock=5)


def test_lone_surrogates_in_keys_and_relations_are_bad_input(db: Mnemos) -> None:
    """Regression: these reached the LMDB write as a UnicodeEncodeError, not a MnemosError."""
    a, b = db.remember_many(["a", "b"])
    before = _fingerprint(db)
    with pytest.raises(InvalidInputError, match="key is not valid unicode"):
        db.remember("x", key="k\ud800")
    with pytest.raises(InvalidInputError, match="key is not valid unicode"):
        db.get_by_key("k\ud800")
    with pytest.raises(InvalidInputError, match="relation is not valid unicode"):
        db.connect(a, b, relation="r\ud800")
    with pytest.raises(InvalidInputError, match="relation is not valid unicode"):
        db.disconnect(a, b, relation="r\ud800")
    with pytest.raises(InvalidInputError, match="doc_id is not valid unicode"):
        db.ingest_document("some text", doc_id="d\ud800")
    assert _fingerprint(db) == before


def test_refused_open_writes_nothing(store_path: str) -> None:
    Mnemos.open(store_path).close()
    before = {f: os.path.getsize(os.path.join(store_path, f)) for f in os.listdir(store_path)}
    with pytest.raises(EmbedderMismatchError):
        Mnemos.open(store_path, embedder=HashingEmbedder(dim=64))
    assert {f: os.path.getsize(os.path.join(store_path, f)) for f in os.listdir(store_path)} == before


def test_batch_disconnect_rejects_lone_surrogate_relation(db: Mnemos) -> None:
    a, b = db.remember_many(["a", "b"])
    with pytest.raises(InvalidInputError, match="relation is not valid unicode"):
        with db.batch() as bt:
            bt.disconnect(a, b, relation="r\ud800")
