"""The filter language: reference semantics, validation, and the index against the reference."""

from __future__ import annotations

import os
import tempfile

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import InvalidInputError, Mnemos
from mnemos_kv import _filter_index
from mnemos_kv.filters import matches, validate

from conftest import Clock, on_postgres, verified


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


META = {"n": 5, "f": 2.5, "s": "beta", "b": True, "z": None, "big": 2 ** 60 + 1,
        "tags": ["x", "y"], "user": {"name": "ann", "age": 31, "deep": {"k": "v"}},
        "a.b": "dotted key", "raw": b"\x00\x01"}


# ------------------------------------------------------------------ the reference semantics

@pytest.mark.parametrize("flt, expected", [
    ({}, True),
    ({"n": 5}, True), ({"n": 5.0}, True), ({"n": 6}, False), ({"n": "5"}, False),
    ({"b": True}, True), ({"b": 1}, False), ({"n": True}, False),  # bool is not a number
    ({"n": {"$eq": 5}}, True), ({"n": {"$ne": 5}}, False), ({"n": {"$ne": 4}}, True),
    ({"n": {"$gt": 4}}, True), ({"n": {"$gt": 5}}, False), ({"n": {"$gte": 5}}, True),
    ({"n": {"$lt": 5.5}}, True), ({"n": {"$lte": 4.9}}, False),
    ({"n": {"$gt": 1, "$lt": 9}}, True), ({"n": {"$gt": 1, "$lt": 3}}, False),
    ({"s": {"$gt": "alpha"}}, True), ({"s": {"$lt": "alpha"}}, False),
    ({"s": {"$gt": 1}}, False), ({"n": {"$gt": "a"}}, False),  # mismatched types: false
    ({"b": {"$gt": 0}}, False), ({"b": {"$lt": 2}}, False),
    ({"n": {"$in": [1, 5]}}, True), ({"n": {"$in": []}}, False), ({"n": {"$nin": [1, 5]}}, False),
    ({"n": {"$nin": []}}, True),
    ({"missing": {"$ne": 1}}, True), ({"missing": {"$nin": [1]}}, True),
    ({"missing": {"$gt": 0}}, False), ({"missing": {"$lt": 0}}, False),
    ({"missing": None}, True), ({"z": None}, True), ({"n": None}, False),
    ({"z": {"$exists": True}}, True), ({"missing": {"$exists": False}}, True),
    ({"missing": {"$in": [None]}}, True), ({"z": {"$ne": None}}, False),
    ({"user.name": "ann"}, True), ({"user": {"name": "ann"}}, True),
    ({"user": {"age": {"$gte": 30}, "name": "ann"}}, True),
    ({"user.deep.k": "v"}, True), ({"user.name.x": "ann"}, False),
    ({"user": {"$eq": {"name": "ann"}}}, False),  # $eq compares the whole dict
    ({"user.deep": {"$eq": {"k": "v"}}}, True),
    ({"tags": ["x", "y"]}, True), ({"tags": ["y", "x"]}, False), ({"tags": "x"}, False),
    ({"a.b": "dotted key"}, False),  # a dotted path never names a key with a dot
    ({"big": 2 ** 60 + 1}, True), ({"big": float(2 ** 60)}, False), ({"big": {"$gt": 2 ** 60}}, True),
    ({"raw": b"\x00\x01"}, True),
    ({"$and": [{"n": 5}, {"s": "beta"}]}, True), ({"$and": [{"n": 5}, {"s": "x"}]}, False),
    ({"$or": [{"n": 4}, {"s": "beta"}]}, True), ({"$or": [{"n": 4}, {"s": "x"}]}, False),
    ({"$not": {"n": 5}}, False), ({"$not": {"n": 4}}, True),
    ({"n": {"$not": {"$gt": 9}}}, True), ({"missing": {"$not": {"$gt": 0}}}, True),
    ({"n": 5, "s": "x"}, False),  # implicit $and
])
def test_reference_semantics(flt, expected) -> None:
    assert matches(flt, META) is expected


@pytest.mark.parametrize("flt, needle", [
    ({"n": {"$regex": "x"}}, "$regex"),
    ({"$nor": [{"n": 1}]}, "$nor"),
    ({"n": {"$in": 5}}, "$in"),
    ({"n": {"$nin": "ab"}}, "$nin"),
    ({"n": {"$gt": {"a": 1}}}, "$gt"),
    ({"n": {"$gt": None}}, "$gt"),
    ({"n": {"$lte": True}}, "$lte"),
    ({"n": {"$lt": [1]}}, "$lt"),
    ({"n": {"$exists": 1}}, "$exists"),
    ({"n": {"$not": 5}}, "$not"),
    ({"n": {"$not": {}}}, "$not"),
    ({"$and": {"n": 1}}, "$and"),
    ({"$and": []}, "$and"),
    ({"$or": [1]}, "dict"),
    ({"$not": []}, "$not"),
    ({"n": {}}, "empty dict"),
    ({"n": {"$gt": 1, "x": 2}}, "mixes"),
    ({"": 1}, "empty"),
    ({"a..b": 1}, "empty path"),
    ({1: 2}, "str"),
    ({"n": float("nan")}, "finite"),
    ({"n": {"$in": [float("inf")]}}, "finite"),
    ({"n": object()}, "type"),
    ({"n": {1: 2}}, "must be str"),
    ([("n", 1)], "dict"),
    ("n", "dict"),
])
def test_malformed_filters_raise_naming_the_problem(flt, needle, db: Mnemos) -> None:
    db.remember_many([{"text": "a note", "metadata": {"n": 1}}])
    digest = db.state_digest()
    with pytest.raises(InvalidInputError, match=None) as exc:
        validate(flt)
    assert needle.lower() in str(exc.value).lower()
    for call in (lambda: db.ask("note", filter=flt), lambda: db.count(flt),
                 lambda: list(db.memories(filter=flt)), lambda: db.forget_where(flt),
                 lambda: matches(flt, {})):
        with pytest.raises(InvalidInputError):
            call()
    assert db.state_digest() == digest and db.count() == 1


def test_forget_where_refuses_an_empty_filter(db: Mnemos) -> None:
    db.remember("kept")
    for flt in ({}, None):
        with pytest.raises(InvalidInputError):
            db.forget_where(flt)  # type: ignore[arg-type]
    assert db.count() == 1


# ------------------------------------------------------------------ random metadata vs index

_KEYS = ["a", "b", "c", "a.b"]
_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 3), st.sampled_from([2 ** 53 + 1, -(2 ** 63), 2 ** 64 - 1, 2 ** 60]),
    st.sampled_from([0.5, -0.0, 2.5, -1.5, 3.0, 1e300]),
    st.sampled_from(["", "a", "ab", "b", "a\x00", "é", "zz"]),
    st.sampled_from(["L" * 300, "L" * 300 + "a", "L" * 299]),  # longer than an index key
    st.sampled_from([b"", b"x"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=2),
                           st.dictionaries(st.sampled_from(_KEYS), kids, max_size=3)),
    max_leaves=6)
_META = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4)

_PATHS = st.sampled_from(["a", "b", "c", "a.b", "a.c", "b.a.c", "a.b.c"])
_ORDER_OPS = st.sampled_from(["$gt", "$gte", "$lt", "$lte"])
_OPERANDS = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2),
                      st.dictionaries(st.sampled_from(_KEYS), _SCALARS, max_size=2))
_ORDERABLE = st.one_of(st.integers(-4, 4), st.sampled_from([2 ** 53 + 1, 2 ** 60, 10 ** 400, 2.5, -0.0]),
                       st.sampled_from(["", "a", "ab", "b", "a\x00", "L" * 300, "L" * 299 + "M"]))


def _field_ops() -> st.SearchStrategy:
    single = st.one_of(
        st.builds(lambda v: {"$eq": v}, _OPERANDS), st.builds(lambda v: {"$ne": v}, _OPERANDS),
        st.builds(lambda o, v: {o: v}, _ORDER_OPS, _ORDERABLE),
        st.builds(lambda v: {"$in": v}, st.lists(_OPERANDS, max_size=3)),
        st.builds(lambda v: {"$nin": v}, st.lists(_OPERANDS, max_size=3)),
        st.builds(lambda v: {"$exists": v}, st.booleans()))
    both = st.builds(lambda a, b: {**a, **b}, single, single)
    return st.one_of(single, both, st.builds(lambda x: {"$not": x}, single))


_LEAF = st.one_of(
    st.builds(lambda p, v: {p: v}, _PATHS, _SCALARS.filter(lambda v: not isinstance(v, dict))),
    st.builds(lambda p, ops: {p: ops}, _PATHS, _field_ops()),
    st.builds(lambda p, q, v: {p: {q: v}}, st.sampled_from(["a", "b"]), st.sampled_from(["b", "c"]),
              _SCALARS),  # nested shorthand
)
_FILTERS = st.recursive(
    _LEAF,
    lambda kids: st.one_of(st.builds(lambda xs: {"$and": xs}, st.lists(kids, min_size=1, max_size=3)),
                           st.builds(lambda xs: {"$or": xs}, st.lists(kids, min_size=1, max_size=3)),
                           st.builds(lambda x: {"$not": x}, kids),
                           st.builds(lambda a, b: {**a, **b}, kids, kids)),
    max_leaves=5)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _agree_with_reference(h, dim: int, metas, filters, *, id_order: bool) -> None:
    """On the store or namespace handle ``h``: count, memories and a vector ask under each
    filter give what ``matches`` gives, before and after ``forget_where`` of the first
    filter and updates that move half the survivors to fresh slots (and re-index them).
    ``id_order``: ``memories`` lists in id order (else compared as a sorted list)."""
    ids = h.remember_many([{"text": f"memory number {i}", "metadata": m}
                           for i, m in enumerate(metas)])
    by_id = dict(zip(ids, metas))
    vec = [1.0] * dim

    def check(live: list[int]) -> None:
        for flt in filters:
            want = [i for i in live if matches(flt, by_id[i])]
            assert h.count(flt) == len(want), flt
            listed = [m.id for m in h.memories(filter=flt)]
            assert (listed if id_order else sorted(listed)) == want, flt
            assert sorted(m.id for m in h.ask(vector=vec, mode="vector", top_k=len(ids),
                                              filter=flt)) == want, flt
    check(ids)
    victim = filters[0]
    gone = {i for i in ids if matches(victim, by_id[i])}
    assert h.forget_where(victim) == len(gone)
    left = [i for i in ids if i not in gone]
    listed = [m.id for m in h.memories()]
    assert (listed if id_order else sorted(listed)) == left
    for i, mid in enumerate(left[::2]):
        by_id[mid] = metas[(i + 1) % len(metas)]
        h.update(mid, metadata=by_id[mid])
    check(left)


@SETTINGS
@given(metas=st.lists(_META, min_size=1, max_size=14), filters=st.lists(_FILTERS, min_size=1, max_size=6))
def test_index_agrees_with_reference_on_random_metadata(metas, filters) -> None:
    with tempfile.TemporaryDirectory() as d:
        with Mnemos.open(os.path.join(d, "s.mem"), clock=Clock()) as db:
            _agree_with_reference(db, db._engine.dim, metas, filters, id_order=True)
            assert verified(db)


_PG_EXAMPLES = iter(range(10 ** 6))
PG_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                              HealthCheck.function_scoped_fixture])

# numbers around the float/int boundaries where a shortest-repr JSON would be wrong
_EDGE_NUMBERS = st.sampled_from([2 ** 53, 2 ** 53 + 1, float(2 ** 53), 2 ** 60, float(2 ** 60),
                                 0.1, 1.152921504606847e18, 1e16, 10 ** 16, 5e-324, -0.0, 0])


@PG_SETTINGS
@given(metas=st.lists(st.one_of(_META, st.dictionaries(st.sampled_from(_KEYS), _EDGE_NUMBERS,
                                                        max_size=2)), min_size=1, max_size=14),
       filters=st.lists(st.one_of(_FILTERS, st.builds(lambda p, o, v: {p: {o: v}}, _PATHS,
                                                      st.sampled_from(["$gt", "$gte", "$lt",
                                                                       "$lte", "$eq", "$ne"]),
                                                      _EDGE_NUMBERS)), min_size=1, max_size=6))
def test_postgres_sql_filters_agree_with_reference_on_random_metadata(pg_db, metas,
                                                                     filters) -> None:
    """The filters as SQL over jsonb (``_pg.jsonfilter``) give what ``matches`` gives: count,
    memories, ask, forget_where, and again after updates (one namespace per example)."""
    ns = pg_db.namespace(f"ex{next(_PG_EXAMPLES)}")
    _agree_with_reference(ns, pg_db._engine.dim, metas, filters, id_order=False)


_EDGE_VALUES = [2 ** 53, 2 ** 53 + 1, float(2 ** 53), 2 ** 60, 2 ** 60 + 1, float(2 ** 60), 0.1, 0.3,
                0.1 + 0.2, 1e16, 10 ** 16, 10 ** 16 + 1, 5e-324, 0, -0.0, 1, 1.0, True, False, None,
                -(2 ** 63), 2 ** 64 - 1, 1e300, "a", "B", "é", "z", "", [1], [1.0], [True],
                {"k": 1}, {"k": 1.0}]


def test_postgres_filters_at_number_and_type_edges(pg_db) -> None:
    """Every pair of edge values (ints and floats around 2**53 and 2**60, 0.1 + 0.2,
    -0.0, bools, None, strings, lists, dicts) under every comparison operator: the SQL
    answer is ``matches``' (exact int/float comparison, strict types)."""
    from mnemos_kv import filters as F
    from mnemos_kv._pg.jsonfilter import where
    metas = [{"x": v} for v in _EDGE_VALUES] + [{}, {"x": {"y": 1}}]
    ids = pg_db.remember_many([{"text": f"m {i}", "metadata": m} for i, m in enumerate(metas)])
    for w in _EDGE_VALUES:
        ops = ["$eq", "$ne"] + (["$gt", "$gte", "$lt", "$lte"]
                                if isinstance(w, (int, float, str)) and not isinstance(w, bool)
                                else [])
        for op in ops:
            flt = {"x": {op: w}}
            assert where(F.parse(flt)) is not None, flt  # in SQL, no Python fallback
            want = [i for i, m in zip(ids, metas) if matches(flt, m)]
            assert [m.id for m in pg_db.memories(filter=flt)] == want, flt
        flt = {"x": {"$in": [w, "zz"]}}
        want = [i for i, m in zip(ids, metas) if matches(flt, m)]
        assert [m.id for m in pg_db.memories(filter=flt)] == want, flt


@pytest.fixture
def pg_db(pg_store_url: str):
    with Mnemos.open(pg_store_url, clock=Clock()) as db:
        yield db


def test_postgres_filters_run_in_sql(pg_db, monkeypatch) -> None:
    """Metadata JSON holds exactly is filtered by the server: Python evaluates only the
    rows it cannot hold (bytes, NUL), and every filter on every path answers right."""
    from mnemos_kv import filters as F
    from mnemos_kv._pg.jsonfilter import to_json, where
    plain = [{"n": i, "f": i / 4, "s": f"s{i % 3}", "t": [i % 2], "u": {"k": i % 2 == 0}}
             for i in range(12)]
    odd = [{"n": 100, "raw": b"x"}, {"n": 101, "s": "a\x00b"}]
    ids = pg_db.remember_many([{"text": f"m {i}", "metadata": m} for i, m in enumerate(plain + odd)])
    assert [to_json(m) is None for m in plain + odd] == [False] * 12 + [True, True]
    flt = {"$or": [{"n": {"$gte": 10}}, {"u.k": True, "s": {"$ne": "s1"}}, {"t": [1]}]}
    assert where(F.parse(flt)) is not None
    want = [i for i, m in zip(ids, plain + odd) if matches(flt, m)]
    assert 0 < len(want) < len(ids)
    seen: list[dict] = []
    real = F.evaluate
    monkeypatch.setattr(F, "evaluate", lambda node, meta: seen.append(meta) or real(node, meta))
    assert pg_db.count(flt) == len(want)
    assert [m.id for m in pg_db.memories(filter=flt)] == want
    assert {m.id for m in pg_db.ask(vector=[1.0] * pg_db._engine.dim, mode="vector",
                                    top_k=20, filter=flt)} == set(want)
    assert seen and all(m in odd for m in seen)  # only the rows JSON cannot hold
    seen.clear()
    assert pg_db.count({"raw": b"x"}) == 1  # a bytes operand: the filter runs in Python
    assert len(seen) == len(ids)


@SETTINGS
@given(flt=_FILTERS, meta=_META)
def test_validate_accepts_generated_filters_and_matches_returns_bools(flt, meta) -> None:
    validate(flt)
    assert matches(flt, meta) in (True, False)
    # $not is exactly the negation; $and of a filter with itself is the filter
    assert matches({"$not": flt}, meta) is (not matches(flt, meta))
    assert matches({"$and": [flt, flt]}, meta) is matches(flt, meta)


# ------------------------------------------------------------------ through the store's life

def _fill(db: Mnemos, n: int = 60) -> list[int]:
    return db.remember_many([{"text": f"invoice {i} for client {i % 7}",
                              "metadata": {"i": i, "team": ["red", "blue", "green"][i % 3],
                                           "price": i * 1.5, "user": {"tier": i % 4}}}
                             for i in range(n)])


QUERIES = [{"team": "red"}, {"i": {"$gte": 10, "$lt": 20}}, {"user.tier": {"$in": [1, 3]}},
           {"$or": [{"team": "blue"}, {"price": {"$gt": 80}}]}, {"team": {"$ne": "green"}},
           {"$not": {"user.tier": 0}}]


def _answers(db: Mnemos) -> list:
    return [(db.count(q), [m.id for m in db.memories(filter=q)],
             [m.id for m in db.ask("invoice client", top_k=7, filter=q)]) for q in QUERIES]


def test_filtered_reads_survive_replay_and_compaction(opener, tmp_path) -> None:
    db = opener()
    ids = _fill(db)
    assert db.forget_where({"i": {"$lt": 5}}) == 5
    db.forget(ids[30])
    db.namespace("other").remember("not here", {"team": "red"})
    db.update(ids[40], metadata={"i": 40, "team": "red", "price": 1.0, "user": {"tier": 9}})
    assert db.forget_where({"user.tier": 9, "price": {"$lt": 2}}) == 1  # the updated one
    db.update(ids[41], metadata={"i": 41, "team": "red", "price": 0.5, "user": {"tier": 1}})
    before = _answers(db)
    assert before[0][0] == 18  # red: 20 with i % 3 == 0, minus 0 and 3 (i < 5), minus 30, plus 41
    db.export_replay(tmp_path / "r.mlog")
    twin = opener("twin.mem")
    twin.replay(tmp_path / "r.mlog")
    assert twin.state_digest() == db.state_digest()
    assert _answers(twin) == before
    if on_postgres(db):
        return  # (compact is embedded-only: docs/postgres.md)
    assert db.compact()["lmdb_compacted"]  # the fields sub-database is copied too
    assert _answers(db) == before
    assert verified(db)
    db.close()
    again = opener()
    assert _answers(again) == before


def test_namespace_handle_is_confined(db: Mnemos) -> None:
    a, b = db.namespace("a"), db.namespace("b")
    a.remember("x", {"k": 1})
    b.remember("y", {"k": 1})
    b.remember("z", {"k": 2})
    assert a.count({"k": 1}) == 1 and b.count({"k": {"$gte": 1}}) == 2
    assert a.forget_where({"k": 1}) == 1
    assert b.count({"k": 1}) == 1 and a.count() == 0
    assert [m.text for m in db.ask("y", namespaces=["a", "b"], filter={"k": 1})] == ["y"]


@pytest.mark.embedded_only("compact(merge_similar=)")
def test_merge_similar_updates_the_index(db: Mnemos) -> None:
    """compact(merge_similar=...) changes the kept memory's metadata with a ``meta`` op."""
    db.remember("the quarterly report is due friday", {"team": "red"})
    db.remember("the quarterly report is due friday!", {"owner": "bo"})
    assert db.count({"owner": "bo"}) == 1 and db.count({"team": "red"}) == 1
    assert db.compact(merge_similar=0.9)["merged"] == 1
    kept = next(iter(db.memories()))
    assert kept.metadata["owner"] == "bo" and db.count({"owner": "bo"}) == 1
    assert db.count({"merged_from": {"$exists": True}}) == 1
    assert db.count({"team": "red", "owner": "bo"}) == 1


def _drop_index(path: str) -> None:
    """Make a store look like one written before the filter index (v0.1)."""
    env = lmdb.open(path, max_dbs=32)
    try:
        fields = env.open_db(b"fields", dupsort=True, dupfixed=True)
        with env.begin(write=True) as txn:
            txn.drop(fields, delete=True)
    finally:
        env.close()


@pytest.mark.embedded_only("the LMDB filter index")
def test_store_without_index_answers_and_is_indexed_on_writable_open(opener, store_path) -> None:
    db = opener()
    _fill(db)
    before = _answers(db)
    db.close()
    _drop_index(store_path)
    ro = opener(readonly=True)
    with ro._engine.snapshot() as snap:
        assert not _filter_index.ready(snap.txn, ro._engine.env)
    assert _answers(ro) == before  # the fallback decodes the records
    ro.close()
    rw = opener()
    with rw._engine.snapshot() as snap:
        assert _filter_index.ready(snap.txn, rw._engine.env)
    assert _answers(rw) == before
    assert rw.forget_where({"team": "red"}) == 20
    assert rw.count({"team": "red"}) == 0 and verified(rw)


@pytest.mark.embedded_only("the LMDB filter index")
def test_index_has_one_entry_per_indexed_path(db: Mnemos) -> None:
    mid = db.remember("x", {"a": {"b": 1, "c": [1]}, "s": "L" * 400, "k.x": 1, "big": 2 ** 62 + 1})
    with db._engine.snapshot() as snap:
        got = sorted(k for k, i in _filter_index.scan_all(snap.txn, db._engine.env) if i == mid)
    keys, overflow = _filter_index.entries(0, db.get(mid).metadata)
    assert got == keys and not overflow
    assert len(keys) == 5  # a (dict), a.b, a.c (list), s (long), big; never "k.x"
    db.forget(mid)
    with db._engine.snapshot() as snap:
        assert list(_filter_index.scan_all(snap.txn, db._engine.env)) == []


def test_overlong_paths_fall_back_to_the_records(db: Mnemos) -> None:
    deep = {"p" * 60: {"q" * 60: {"r" * 60: {"s" * 60: 7}}}}
    path = ".".join(["p" * 60, "q" * 60, "r" * 60, "s" * 60])
    mid = db.remember("deep", deep)
    db.remember("shallow", {"x": 1})
    assert db.count({path: 7}) == 1 and db.count({path: {"$ne": 7}}) == 1
    assert [m.id for m in db.memories(filter={path: {"$gt": 6}})] == [mid]
    assert db.forget_where({path: 7}) == 1 and db.count() == 1


UNKEYED = [[1, 2], {"x": 1}, b"\x00b", 2 ** 53 + 1, 2 ** 64 - 1, "L" * 300, "L" * 300 + "a", "L" * 299]


def test_values_the_keys_cannot_hold_are_checked_against_the_records(db: Mnemos) -> None:
    """Lists, dicts, bytes, ints beyond float64 and long strings: listed by type, decided
    by decoding those records (equality, $in, $ne and ranges)."""
    ids = db.remember_many([{"text": f"m{i}", "metadata": {"v": v}} for i, v in enumerate(UNKEYED)]
                           + [{"text": "plain", "metadata": {"v": 3}}])
    metas = {i: db.get(i).metadata for i in ids}
    cases = [{"v": v} for v in UNKEYED] + [{"v": {"$ne": v}} for v in UNKEYED] + [
        {"v": {"$in": [[1, 2], 2 ** 64 - 1]}}, {"v": {"$gt": 2 ** 53}}, {"v": {"$gte": 2 ** 53 + 1}},
        {"v": {"$lt": 2 ** 64 - 1}}, {"v": {"$gt": "L" * 300}}, {"v": {"$lte": "L" * 300}},
        {"v": {"$gt": "L" * 299 + "K"}}, {"v": float(2 ** 53)}, {"v": {"$lt": 10 ** 400}},
        {"v.x": 1}, {"v": {"$exists": True}}]
    for flt in cases:
        want = [i for i in ids if matches(flt, metas[i])]
        assert [m.id for m in db.memories(filter=flt)] == want, flt
    assert db.count({"v": [1, 2]}) == 1 and db.count({"v": 2 ** 64 - 1}) == 1


@pytest.mark.embedded_only("verify")
def test_verify_checks_the_index_against_the_records(db: Mnemos) -> None:
    mid = db.remember("x", {"team": "red", "n": 3})
    db.remember("y", {"team": "blue"})
    assert verified(db) and db.verify().checked["filter_entries"] == 3
    env = db._engine.env
    key = _filter_index.entries(0, {"team": "red"})[0][0]

    def edit(txn, put: bool, who: int) -> None:
        if put:
            txn.put(key, who.to_bytes(8, "big"), db=env.db("fields"), dupdata=True)
        else:
            txn.delete(key, who.to_bytes(8, "big"), db=env.db("fields"))
    for who, first in ((mid, False), (999, True)):  # a missing entry; one no record makes
        env.write(lambda txn: edit(txn, first, who))
        rep = db.verify()
        assert not rep.ok and any("filter index" in p for p in rep.problems), rep.problems
        env.write(lambda txn: edit(txn, not first, who))
    assert verified(db)


def test_forget_where_in_a_batch(db: Mnemos) -> None:
    old = db.remember("old", {"k": 1})
    keep = db.remember("keep", {"k": 2})
    with db.batch() as b:
        b.remember("new", {"k": 1})
        b.forget(old)  # already gone when forget_where runs: not counted twice
        b.forget_where({"k": 1})
        with pytest.raises(InvalidInputError):
            b.forget_where({"k": {"$bad": 1}})
    assert [m.id for m in db.memories()] == [keep]
    with pytest.raises(Exception):
        with db.batch() as b:  # forget_where, then forget of a memory it forgot: all or nothing
            b.forget_where({"k": 2})
            b.forget(keep)
    assert [m.id for m in db.memories()] == [keep] and verified(db)


# ------------------------------------------------------------------ against LangGraph's store

_LG_SCALAR = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.5, -1.5]),
                       st.sampled_from(["a", "b", "ab"]))
_LG_META = st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(
    _LG_SCALAR, st.none(), st.lists(_LG_SCALAR, max_size=2),
    st.dictionaries(st.sampled_from(["x", "y"]), _LG_SCALAR, max_size=2)), max_size=2)
_LG_NUM = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.5]))
_LG_FILTER = st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(
    _LG_SCALAR, st.lists(_LG_SCALAR, max_size=2),
    st.builds(lambda v: {"$ne": v}, _LG_SCALAR),
    st.builds(lambda o, v: {o: v}, _ORDER_OPS, _LG_NUM),
    st.dictionaries(st.sampled_from(["x", "y"]), _LG_SCALAR, min_size=1, max_size=2)),
    min_size=1, max_size=2)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(flt=_LG_FILTER, meta=_LG_META)
def test_matches_langgraph_in_memory_store_where_it_is_defined(flt, meta) -> None:
    """Equality, $ne, nested dicts, lists and numeric ranges as LangGraph's InMemoryStore
    filters (bools aside: there True == 1). Where LangGraph raises (float() of a string
    or None in a range) our comparison is simply false."""
    lg = pytest.importorskip("langgraph.store.memory")
    try:
        want = all(lg._compare_values(meta.get(k), v) for k, v in flt.items())
    except (TypeError, ValueError):
        assert any(isinstance(v, dict) and any(o in v for o in ("$gt", "$gte", "$lt", "$lte"))
                   for v in flt.values())
        return
    assert matches(flt, meta) is want


@pytest.mark.embedded_only("the LMDB filter index")
def test_building_the_index_on_open_is_logged(opener, store_path, caplog) -> None:
    import logging
    db = opener()
    _fill(db, 5)
    db.close()
    _drop_index(store_path)
    with caplog.at_level(logging.INFO, logger="mnemos_kv"):
        opener()
    assert any("filter index" in r.getMessage() and "5 memories" in r.getMessage()
               for r in caplog.records)


def test_a_reader_keeps_its_snapshot_of_the_index(db: Mnemos) -> None:
    """memories(filter=) reads one snapshot: a forget_where committed meanwhile does not
    change what it yields (the index lives in LMDB, versioned with the records)."""
    db.remember_many([{"text": f"m{i}", "metadata": {"k": i % 2}} for i in range(6)])
    it = db.memories(filter={"k": 0})
    first = next(it)
    assert db.forget_where({"k": 0}) == 3
    assert [first.id] + [m.id for m in it] == [1, 3, 5]
    assert list(db.memories(filter={"k": 0})) == [] and db.count({"k": 1}) == 3


@pytest.mark.parametrize("field", ["few", "many", "word"])
def test_ranges_over_shared_and_distinct_values(db: Mnemos, field: str) -> None:
    """Ranges read shared values in bulk and distinct ones pair by pair: both agree
    with the reference, at every bound (present or absent, first or last)."""
    metas = [{"few": i % 5, "many": i / 7, "word": ["ant", "bee", "cat", "dog"][i % 4] + str(i % 3)}
             for i in range(120)]
    ids = db.remember_many([{"text": f"m{i}", "metadata": m} for i, m in enumerate(metas)])
    bounds = {"few": [-1, 0, 2, 2.5, 4, 9], "many": [-1, 0, 1 / 7, 5.0, 16.9, 17, 100],
              "word": ["", "ant0", "b", "bee2", "cat", "dog2", "z"]}[field]
    for b in bounds:
        for op in ("$gt", "$gte", "$lt", "$lte"):
            flt = {field: {op: b}}
            want = [i for i, m in zip(ids, metas) if matches(flt, m)]
            assert [m.id for m in db.memories(filter=flt)] == want, flt
