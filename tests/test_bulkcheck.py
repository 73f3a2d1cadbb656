"""Column-by-column validation of ``remember_many`` (``_bulkcheck``): the calls it takes
leave exactly the store the item-by-item path leaves; the calls it refuses (uncommon
shapes, bad values) go item by item, whose errors name the first bad item as always."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnemos_kv import HashingEmbedder, Mnemos, _bulkcheck, _ingest
from mnemos_kv.errors import InvalidInputError

from conftest import Clock
from test_bulk_forget import _same

N = 96  # (above MIN_BLOCK)


def _E() -> HashingEmbedder:
    return HashingEmbedder(16)


def _vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(16).astype(np.float32)


#: texts with the tokeniser's edge cases: non-ASCII, long terms, stopwords, numbers,
#: hyphenated compounds, questions, speaker labels
TEXTS = ["Melanie: I painted a sunset last week?", "the and of to", "note 42 about 2024",
         "café naïve 日本語 Ｍ ﬁne", "de-stress e-mail mother-in-law co-op", "x" * 300,
         "Dr. Lee: take two pills", "why? ¿qué？", "Ｍelanie： hi", "un\u0301ited " * 3,
         "won't you'd it's", "1" * 250 + " word", "\U0001f600 emoji", "  padded  ", "tab\tsep"]


def _calls() -> dict[str, list]:
    """remember_many calls of every shape the block path takes."""
    meta_vals = [1, 1.0, True, 0.0, -0.0, "1", None, 2 ** 63, -5, 1.5, "", "é"]
    return {
        "texts": [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(N)],
        "vectors": [{"text": TEXTS[i % len(TEXTS)], "vector": _vec(i),
                     "metadata": {"cat": i % 3}} for i in range(N)],
        "embedded": [{"text": f"{TEXTS[i % len(TEXTS)]} {i}", "metadata": {"cat": i % 2}}
                     for i in range(N)],
        "all fields": [{"text": f"t {i}", "vector": _vec(i) * (i + 1),
                        "metadata": [None, {}, {"a": 1, "b": "x"}, {"b": "x", "a": 1},
                                     {"v": meta_vals[i % len(meta_vals)]}][i % 5],
                        "type": ["episodic", "semantic", "procedural", None, ""][i % 5],
                        "timestamp": [None, 0, 1_700_000_000, 1.25, -10 ** 6][i % 5],
                        "key": None if i % 3 else f"k{i}é", "pinned": i % 7 == 0}
                       for i in range(N)],
        "classes": [{"text": f"c {i}", "metadata": {"v": meta_vals[i % len(meta_vals)]}}
                    for i in range(N)],
        "distinct": [{"text": f"d {i}", "metadata": {"id": i, "s": str(i)}} for i in range(N)],
        "nested": [{"text": f"n {i}", "metadata": {"u": {"tier": i % 2}, "l": [i % 3]}}
                   for i in range(N)],
        "float64": [{"text": f"f {i}", "vector": _vec(i).astype(np.float64)} for i in range(N)],
        "explicit None": [{"text": f"e {i}", "metadata": None, "type": None,
                           "timestamp": None, "key": None, "vector": None} for i in range(N)],
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_block_path_leaves_the_item_by_item_store(tmp_path, monkeypatch, name) -> None:
    items = _calls()[name]
    assert _bulkcheck.prepare_block(_open(tmp_path / "probe"), "default", items) is not None
    a = Mnemos.open(str(tmp_path / "a"), embedder=_E(), clock=Clock())
    b = Mnemos.open(str(tmp_path / "b"), embedder=_E(), clock=Clock())
    blocks = []
    real = _ingest.apply_block
    monkeypatch.setattr(_ingest, "apply_block", lambda *x: blocks.append(1) or real(*x))
    ids = [a.remember_many(items), a.namespace("other").remember_many(items[:70])]
    assert len(blocks) == 2
    monkeypatch.setattr(_bulkcheck, "MIN_BLOCK", 10 ** 9)  # item by item (still in runs)
    assert [b.remember_many(items), b.namespace("other").remember_many(items[:70])] == ids
    assert len(blocks) == 2
    _same(a, b)
    for mid, it in zip(ids[0], items):  # and what reads back is what was given
        got = a.get(mid)
        if isinstance(it, dict):
            meta = it.get("metadata") or {}
            assert got.metadata == meta
            for k, v in meta.items():
                assert type(got.metadata[k]) is type(v)
                if isinstance(v, float):
                    assert math.copysign(1, got.metadata[k]) == math.copysign(1, v)
    a.close()
    b.close()


def _open(path) -> object:
    return Mnemos.open(str(path), embedder=_E(), clock=Clock())._engine


def _bad_calls() -> list[tuple[list, str]]:
    """Calls the block path refuses, and the error the item-by-item path raises (or "")."""
    def base() -> list[dict]:
        return [{"text": f"t {i}", "vector": _vec(i), "metadata": {"c": i % 2}}
                for i in range(N)]

    out = []
    for field, value, err in [
            ("text", "", "item 50 text"), ("text", "   \n", "item 50 text"),
            ("text", "bad \ud800", "item 50 text"), ("text", 5, "item 50 text"),
            ("text", "x" * ((1 << 20) + 1), "item 50 text"),
            ("pinned", None, "item 50 pinned"), ("pinned", 1, "item 50 pinned"),
            ("type", "weird", "type must be"), ("type", ["episodic"], "type must be"),
            ("timestamp", True, "item 50 timestamp"), ("timestamp", float("nan"), "item 50"),
            ("timestamp", "2026-01-02", ""), ("key", "", "key must"), ("key", 5, "key must"),
            ("key", "k" * 300, "key is longer"), ("metadata", {"v": float("nan")}, "finite"),
            ("metadata", {"v": {1, 2}}, "metadata"), ("metadata", [1], "metadata must"),
            ("vector", np.ones(15, np.float32), "item 50 vector"),
            ("vector", np.full(16, np.nan, np.float32), "item 50 vector"),
            ("vector", None, ""), ("vector", [0.5] * 16, ""),
            ("vector", np.ones(16, np.float64), ""), ("extra", 1, "unknown fields")]:
        items = base()
        items[50][field] = value
        out.append((items, err))
    dup = base()
    dup[10]["key"] = dup[60]["key"] = "same"
    out.append((dup, "appears twice"))
    out.append((base()[:50] + ["a text"] + base()[51:], ""))
    out.append((base()[:50] + [None] + base()[51:], "item 50 must be a str or a dict"))
    return out


def _outcome(db: Mnemos, items: list) -> object:
    try:
        return db.remember_many(items)
    except Exception as exc:  # (compared: the same class and message)
        return type(exc), str(exc)


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_refused_calls_go_item_by_item(tmp_path, monkeypatch, case) -> None:
    items, err = _bad_calls()[case]
    assert _bulkcheck.prepare_block(_open(tmp_path / "probe"), "default", items) is None
    got, clocks = [], []
    for name in ("a", "b"):
        if name == "b":
            monkeypatch.setattr(_bulkcheck, "MIN_BLOCK", 10 ** 9)
        clock = Clock()
        db = Mnemos.open(str(tmp_path / name), embedder=_E(), clock=clock)
        got.append(_outcome(db, items))
        clocks.append(clock())  # (a refusal reads no clock: the times of item by item)
        db.close()
    assert got[0] == got[1] and clocks[0] == clocks[1]
    if err:
        assert got[0][0] is InvalidInputError and err in got[0][1], got[0]
    else:
        assert len(got[0]) == N


def test_small_and_postgres_calls_are_not_blocks(tmp_path) -> None:
    eng = _open(tmp_path / "s")
    items = [f"t {i}" for i in range(_bulkcheck.MIN_BLOCK)]
    assert _bulkcheck.prepare_block(eng, "default", items) is not None
    assert _bulkcheck.prepare_block(eng, "default", items[:-1]) is None

    class Other:
        kind = "postgres"
        dim = 16
    assert _bulkcheck.prepare_block(Other(), "default", items) is None


def test_equal_metadata_shares_one_check(tmp_path) -> None:
    """Items of equal flat metadata (with their value classes) share one checked dict
    and one encoding; 1, 1.0 and True, and 0.0 and -0.0, stay apart."""
    eng = _open(tmp_path / "s")
    vals = [1, 1.0, True, 0.0, -0.0] * 20
    blk = _bulkcheck.prepare_block(eng, "default", [{"text": "t", "metadata": {"v": v}}
                                                    for v in vals])
    assert blk is not None
    for j in range(5):
        same = blk.metas[j::5]
        assert all(m is same[0] for m in same) or j >= 3  # (zeros are checked one by one)
        assert len({e for e in blk.e_meta[j::5]}) == 1
    assert len(set(blk.e_meta[:5])) == 5


def test_filter_entries_of_shared_metadata_objects(tmp_path) -> None:
    """The filter index groups items by metadata object (as blocks share them): the
    entries of add() one item at a time, across namespaces, ids in any order."""
    from mnemos_kv import _filter_index as FI
    from test_bulk_forget import _tables
    shared = [{"cat": 1}, {"cat": 2, "u": {"t": "x"}}, {}, {"p" * 300: 1}, {"s": "y" * 400}]
    items = [(1 + (i % 3 == 0), 1000 - i if i % 2 else i + 5, "", shared[i % len(shared)])
             for i in range(200)]
    dbs = []
    for name, bulk in (("a", True), ("b", False)):
        db = Mnemos.open(str(tmp_path / name), embedder=_E(), clock=Clock())
        db.remember("first", metadata={"z": 1})  # (the index exists)
        env = db._engine.env

        def body(txn, bulk=bulk) -> None:
            if bulk:
                FI.add_many(txn, env, items)
            else:
                for ns, mid, _t, meta in items:
                    FI.add(txn, env, ns, mid, meta)
        env.write(body)
        dbs.append(db)
    ta, tb = (_tables(db)["fields"] for db in dbs)
    assert ta == tb and len(ta) > 200
    for db in dbs:
        db.close()
