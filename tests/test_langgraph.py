"""MnemosStore against LangGraph's own InMemoryStore (property-based parity), plus what
parity cannot show: escaping, persistence, several processes, errors, async."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.memory", reason="the langgraph extra is not installed "
                    '(pip install "mnemos-kv[langgraph]")')
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langgraph.store.base import (GetOp, InvalidNamespaceError, ListNamespacesOp,  # noqa: E402
                                  MatchCondition, PutOp, SearchOp)
from langgraph.store.memory import InMemoryStore  # noqa: E402

from mnemos_kv import InvalidInputError, Mnemos  # noqa: E402
from mnemos_kv.langgraph import (MnemosStore, NamespaceTooLongError,  # noqa: E402
                                 decode_namespace, encode_namespace)

from _engines import opener, store_path  # noqa: E402,F401  (both engines)
from conftest import Clock  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIMS = 8


def _index(fields: list[str] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"dims": DIMS, "embed": DeterministicFakeEmbedding(size=DIMS)}
    if fields is not None:
        cfg["fields"] = fields
    return cfg


# ------------------------------------------------------------------------ the parity harness

NAMESPACES = [("a",), ("a", "b"), ("b",), ("b", "x y"), ("a", "b", "c"),
              ("ü:1", "b")]
KEYS = ["k0", "k1", "k2"]
TEXTS = ["red apples", "green grapes", "yellow bananas", "red cherries", "blue berries"]
FILTERS = [None, {"tag": "red"}, {"n": {"$gt": 2}}, {"n": {"$lte": 1}}, {"n": {"$ne": 3}},
           {"tag": "blue", "n": {"$gte": 2}}, {"n": {"$eq": 4}}, {"n": {"$lt": 3}, "tag": "red"}]
PATHS = [(), ("a",), ("b",), ("*",), ("a", "*"), ("b", "x y"), ("ü:1",), ("*", "b")]

values = st.builds(lambda t, n, tag: {"text": t, "n": n, "tag": tag},
                   st.sampled_from(TEXTS), st.integers(0, 5), st.sampled_from(["red", "blue"]))
ns_st = st.sampled_from(NAMESPACES)
key_st = st.sampled_from(KEYS)
ops = st.one_of(
    st.builds(lambda ns, k, v: PutOp(ns, k, v), ns_st, key_st, values),
    st.builds(lambda ns, k: PutOp(ns, k, None), ns_st, key_st),
    st.builds(lambda ns, k: GetOp(ns, k), ns_st, key_st),
    st.builds(lambda p, f, q, lim, off: SearchOp(p, f, lim, off, q),
              st.sampled_from([(), ("a",), ("a", "b"), ("b",), ("ü:1",)]),
              st.sampled_from(FILTERS), st.one_of(st.none(), st.sampled_from(TEXTS + ["red"])),
              st.integers(1, 6), st.integers(0, 3)),
    st.builds(lambda pre, suf, depth, lim, off: ListNamespacesOp(
        tuple(c for c in (MatchCondition("prefix", pre) if pre else None,
                          MatchCondition("suffix", suf) if suf else None) if c),
        depth, lim, off),
        st.sampled_from(PATHS), st.sampled_from(PATHS), st.one_of(st.none(), st.integers(1, 3)),
        st.integers(1, 10), st.integers(0, 2)),
)


def _distinct_texts(batch: list[Any]) -> bool:
    """InMemoryStore fails ("Number of embeddings (1) does not match number of indices
    (2)") when two puts of one batch embed the same text: such batches are not drawn."""
    texts = [op.value["text"] for op in batch if isinstance(op, PutOp) and op.value]
    return len(texts) == len(set(texts))


# a step is one batch of 1-3 ops (reads in a batch see the state before its puts)
steps = st.lists(st.lists(ops, min_size=1, max_size=3).filter(_distinct_texts),
                 min_size=1, max_size=14)


def _normalize_reference(ref: InMemoryStore, order: list[tuple[str, ...]]) -> None:
    """Put InMemoryStore's namespaces in the order they first received an item.

    Its dicts are defaultdicts, so a namespace exists from its first *touch*: a get or a
    delete (even in the batch that then puts into it) creates an empty entry, which
    comes first in its iteration order (the order of unranked searches) and which
    list_namespaces lists even if nothing is ever put there. MnemosStore orders
    namespaces by their first item; here the reference gets the same order, and
    entries of namespaces that never held an item are dropped.
    """
    data = dict(ref._data)
    ref._data.clear()
    for ns in order:
        if ns in data:
            ref._data[ns] = data[ns]


def _reference_list(ref: InMemoryStore, op: ListNamespacesOp) -> list[tuple[str, ...]]:
    """InMemoryStore's own listing over the namespaces that hold items (it also lists
    namespaces whose items were all deleted; LangGraph's database stores do not)."""
    view = InMemoryStore()
    view._data.update({ns: items for ns, items in ref._data.items() if items})
    return view._handle_list_namespaces(op)


def _plain(item: Any) -> Any:
    return None if item is None else (item.namespace, item.key, item.value)


def _check_ranked(ref: InMemoryStore, op: SearchOp, got: list[Any], want: list[Any]) -> None:
    """A query search: the same number of items, the same scores at every position, and
    every item we return has, in the reference, the score of its position (so items
    tied in score may come in another order, or be swapped at a page boundary)."""
    assert len(got) == len(want)
    full = ref.batch([op._replace(limit=1000, offset=0)])[0]
    true = {(it.namespace, it.key): it.score for it in full}
    assert len({(g.namespace, g.key) for g in got}) == len(got)
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-5)
        assert true[(g.namespace, g.key)] == pytest.approx(w.score, abs=1e-5)
        assert g.value == ref._data[g.namespace][g.key].value


def _run_parity(sequence: list[list[Any]], fields: list[str] | None,
                target: str | None = None) -> None:
    ref = InMemoryStore(index=_index(fields))
    order: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = MnemosStore(target or os.path.join(tmp, "p.mem"), index=_index(fields),
                           clock=Clock(), durability="fast")
        try:
            for batch in sequence:
                before = InMemoryStore()  # the state the batch's reads see (for ranked checks)
                before._data.update({ns: dict(v) for ns, v in ref._data.items()})
                before._vectors.update({ns: dict(v) for ns, v in ref._vectors.items()})
                before.index_config, before.embeddings = ref.index_config, ref.embeddings
                want = ref.batch(batch)
                got = ours.batch(batch)
                for op, g, w in zip(batch, got, want):
                    if isinstance(op, GetOp):
                        assert _plain(g) == _plain(w), op
                        if g is not None:
                            assert g.created_at <= g.updated_at
                    elif isinstance(op, SearchOp) and op.query:
                        _check_ranked(before, op, g, w)
                    elif isinstance(op, SearchOp):
                        assert [_plain(x) for x in g] == [_plain(x) for x in w], op
                        assert all(x.score is None for x in g)
                    elif isinstance(op, ListNamespacesOp):
                        assert g == _reference_list(before, op), op
                    else:
                        assert g is None and w is None
                puts = {(op.namespace, op.key): op for op in batch if isinstance(op, PutOp)}
                order.extend(dict.fromkeys(ns for (ns, _), op in puts.items()
                                           if op.value is not None and ns not in order))
                _normalize_reference(ref, order)
            # the end state, whole
            everything = SearchOp((), None, 1000, 0)
            assert [_plain(x) for x in ours.batch([everything])[0]] == \
                [_plain(x) for x in ref.batch([everything])[0]]
        finally:
            ours.close()


@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps)
def test_parity_with_inmemorystore_text_field(sequence: list[list[Any]]) -> None:
    """Index on the "text" field (one vector per item: rankings are comparable)."""
    _run_parity(sequence, ["text"])


@settings(max_examples=75, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps)
def test_parity_with_inmemorystore_whole_value(sequence: list[list[Any]]) -> None:
    """Index on the whole value (the default "$": its JSON is embedded)."""
    _run_parity(sequence, None)


@settings(max_examples=50, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(steps)
def test_parity_with_inmemorystore_on_postgres(pg_schemas, sequence: list[list[Any]]) -> None:
    """The adapter on a PostgreSQL store (a fresh schema per example), index on "text"."""
    _run_parity(sequence, ["text"], target=pg_schemas())


# --------------------------------------------------------------------------- the rest

def test_namespace_escaping_is_reversible() -> None:
    for ns in [("a",), ("users", "a b"), ("ü:é", "x-y_z", "100%"), ("::",), ("😀", "lg:x")]:
        name = encode_namespace(ns)
        assert Mnemos_name_ok(name)
        assert decode_namespace(name) == ns
    assert encode_namespace(("users", "a b")) == "lg:users.a:20b"
    assert decode_namespace("default") is None and decode_namespace("lg:") is None
    with pytest.raises(NamespaceTooLongError) as ei:
        encode_namespace(("x" * 200,))
    assert isinstance(ei.value, InvalidInputError) and isinstance(ei.value, InvalidNamespaceError)


def Mnemos_name_ok(name: str) -> bool:  # noqa: N802
    from mnemos_kv._validate import check_namespace
    return check_namespace(name) == name


def test_prefixes_match_whole_labels(store_path) -> None:
    nss = [("a",), ("ab",), ("a b",), ("a", "b"), ("a-",), ("a", "b", "c"), ("b", "a")]
    with MnemosStore(store_path) as store:
        ref = InMemoryStore()
        for s in (store, ref):
            for i, ns in enumerate(nss):
                s.put(ns, "k", {"i": i})
        for prefix in [("a",), ("a", "b"), ("ab",), ("a b",), ("b",), ("c",), ()]:
            got = [(i.namespace, i.value["i"]) for i in store.search(prefix, limit=100)]
            assert sorted(got) == sorted((i.namespace, i.value["i"]) for i in ref.search(prefix, limit=100))
            assert store.list_namespaces(prefix=prefix) == ref.list_namespaces(prefix=prefix)
        assert store.list_namespaces(prefix=("a",)) == [("a",), ("a", "b"), ("a", "b", "c")]
        assert store.list_namespaces(prefix=("*", "b")) == [("a", "b"), ("a", "b", "c")]
        assert store.list_namespaces(suffix=("a",), max_depth=1) == [("a",), ("b",)]


def test_items_persist_with_timestamps_and_other_namespaces_untouched(store_path) -> None:
    path = store_path
    clock = Clock()
    with Mnemos.open(path, embedder=None, clock=clock) as db:
        db.remember("a plain memory of the default namespace")
    with MnemosStore(path, clock=clock) as store:  # no index: the store's own embedder stays
        store.put(("users", "alice"), "prefs", {"theme": "dark", "langs": ["en", "de"]})
        first = store.get(("users", "alice"), "prefs")
        store.put(("users", "alice"), "prefs", {"theme": "light"})
        second = store.get(("users", "alice"), "prefs")
        assert second.value == {"theme": "light"}
        assert second.created_at == first.created_at  # an update keeps the creation time
        assert second.updated_at >= first.updated_at
        # without an index a query is ignored, as in LangGraph's stores
        assert [i.key for i in store.search(("users",), query="anything")] == ["prefs"]
        assert store.list_namespaces() == [("users", "alice")]
    with MnemosStore(path) as again:
        assert again.get(("users", "alice"), "prefs").value == {"theme": "light"}
        assert again.store.count() == 1  # the default namespace was not touched
        assert again.store.namespace("lg:users.alice").get_by_key("prefs").metadata == {"theme": "light"}


def test_bad_input_is_rejected(store_path, tmp_path) -> None:
    with MnemosStore(store_path, index=_index(["text"])) as store:
        with pytest.raises(InvalidNamespaceError):
            store.put(("a.b",), "k", {"text": "x"})
        with pytest.raises(InvalidNamespaceError):
            store.batch([PutOp((), "k", {"text": "x"})])
        with pytest.raises(InvalidNamespaceError):
            store.batch([GetOp(("", "x"), "k")])
        with pytest.raises(InvalidInputError):
            store.batch([PutOp(("a",), "k", {"text": "x"}, ttl=-5.0)])
        with pytest.raises(InvalidInputError):
            store.search(("a",), filter={"n": {"$regex": "x"}})
        with pytest.raises(InvalidInputError):
            store.search(("a",), limit=-1)
        for bad in (PutOp(("a",), "bad", {"x": {1, 2}}), PutOp(("a",), "bad", {"text": "t", "x": {1}}),
                    PutOp(("a",), "", {"text": "t"}), PutOp(("a",), "k" * 300, {"text": "t"})):
            with pytest.raises(InvalidInputError):  # a whole batch is validated before any put
                store.batch([PutOp(("a",), "ok", {"text": "fine"}), bad])
        assert store.get(("a",), "ok") is None
        assert store.get(("x" * 200,), "k") is None
        with pytest.raises(NamespaceTooLongError):
            store.put(("x" * 200,), "k", {"text": "x"})
    with pytest.raises(InvalidInputError):
        MnemosStore(str(tmp_path / "f.mem"), index={"dims": 0, "embed": DeterministicFakeEmbedding(size=4)})


class ManualClock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ttl_expiry_refresh_and_sweep(store_path, tmp_path) -> None:
    clock = ManualClock()
    with MnemosStore(store_path, clock=clock,
                     ttl={"default_ttl": 2, "refresh_on_read": True}) as store:
        assert store.supports_ttl
        store.put(("s",), "default", {"v": 1})                 # the config's 2 minutes
        store.put(("s",), "short", {"v": 2}, ttl=1)
        store.put(("s",), "forever", {"v": 3}, ttl=None)
        store.put(("s",), "cleared", {"v": 4}, ttl=1)
        store.put(("s",), "cleared", {"v": 5}, ttl=None)      # a put without TTL clears it
        clock.now += 50
        assert store.sweep_ttl() == 0
        assert store.get(("s",), "short").value == {"v": 2}   # a read refreshes: 1 min from now
        assert store.get(("s",), "default", refresh_ttl=False).value == {"v": 1}
        clock.now += 50                                        # 100 s after the puts
        assert store.sweep_ttl() == 0
        clock.now += 15                                        # 115 s: "short" (read at 50 s) is due
        assert store.sweep_ttl() == 1
        assert store.get(("s",), "short") is None
        assert store.get(("s",), "default", refresh_ttl=False).value == {"v": 1}
        clock.now += 10                                        # 125 s: "default" (120 s) is due
        assert store.sweep_ttl() == 1
        assert store.get(("s",), "default") is None
        assert [i.key for i in store.search(("s",))] == ["forever", "cleared"]
        # searches refresh what they return; a deleted item takes its TTL record along
        store.put(("s",), "seen", {"v": 6}, ttl=1)
        store.put(("s",), "gone", {"v": 7}, ttl=1)
        store.delete(("s",), "gone")
        clock.now += 45
        assert {i.key for i in store.search(("s",), filter={"v": 6})} == {"seen"}
        clock.now += 45
        assert store.sweep_ttl() == 0
        assert store.store.namespace("lg.ttl:s").count() == 1  # only "seen" has a record
        clock.now += 61
        assert store.sweep_ttl() == 1
        assert [i.key for i in store.search(("s",))] == ["forever", "cleared"]
        assert store.list_namespaces() == [("s",)]  # TTL records are not a LangGraph namespace
    with pytest.raises(InvalidInputError):
        MnemosStore(str(tmp_path / "u.mem"), ttl={"omit_expired": True})
    with pytest.raises(InvalidInputError):
        MnemosStore(str(tmp_path / "u.mem"), ttl={"default_ttl": 0})


def test_ttl_sweeper_thread(store_path) -> None:
    import time
    clock = ManualClock()
    with MnemosStore(store_path, clock=clock) as store:
        store.put(("s",), "k", {"v": 1}, ttl=1)
        clock.now += 61
        fut = store.start_ttl_sweeper(sweep_interval_minutes=0.001)
        assert store.start_ttl_sweeper(0.001) is fut  # one sweeper at a time
        deadline = time.monotonic() + 60  # waits for the thread; asserts nothing about speed
        while store.get(("s",), "k", refresh_ttl=False) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(("s",), "k") is None
        assert store.stop_ttl_sweeper(timeout=60) and fut.done() and fut.exception() is None
    with MnemosStore(store_path, clock=clock) as store:
        store.start_ttl_sweeper(5)
    assert store._sweeper is None  # close() stopped it


def test_hybrid_mode_ranks_by_words(tmp_path) -> None:
    def constant(texts: Any) -> list[list[float]]:  # equal vectors: only words tell items apart
        return [[1.0, 0.0, 0.0, 0.0] for _ in texts]
    index = {"dims": 4, "embed": constant, "fields": ["text"]}
    items = {"k1": "red apples", "k2": "yellow bananas", "k3": "green grapes", "k4": "yellow lemons"}
    with MnemosStore(str(tmp_path / "h.mem"), index=index, mode="hybrid") as store:
        for k, t in items.items():
            store.put(("f",), k, {"text": t})
        assert sorted(h.key for h in store.search(("f",), query="yellow", limit=2)) == ["k2", "k4"]
        # a plain function is recorded by its module and name
        assert store.store.stats()["embedder"]["name"] == \
            "langchain:test_langgraph.test_hybrid_mode_ranks_by_words.<locals>.constant"
    with MnemosStore(str(tmp_path / "h.mem"), index=index, mode="vector") as store:
        hits = store.search(("f",), query="yellow", limit=2)  # cosine 1.0 everywhere: ties by age
        assert [(h.key, round(h.score, 6)) for h in hits] == [("k1", 1.0), ("k2", 1.0)]
    with pytest.raises(InvalidInputError):
        MnemosStore(str(tmp_path / "h.mem"), index=index, mode="lexical")


def test_index_fields_per_put_and_multi_text(store_path) -> None:
    emb = DeterministicFakeEmbedding(size=DIMS)
    with MnemosStore(store_path, index=_index(["text"])) as store:
        store.put(("d",), "one", {"text": "alpha", "other": "beta"})
        store.put(("d",), "two", {"text": "gamma", "other": "alpha"}, index=["other"])
        store.put(("d",), "off", {"text": "alpha"}, index=False)
        hits = store.search(("d",), query="alpha", limit=3)
        assert [h.key for h in hits][:2] in (["one", "two"], ["two", "one"])
        assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[1].score == pytest.approx(1.0, abs=1e-5)
        off = [h for h in hits if h.key == "off"]
        assert off and off[0].score == pytest.approx(0.0, abs=1e-6)  # not indexed: a zero vector
        # several texts in one item: the mean of their directions
        store.put(("m",), "both", {"a": "x1", "b": "x2"}, index=["a", "b"])
        import numpy as np
        v = np.asarray(emb.embed_documents(["x1", "x2"]), dtype=np.float64)
        mean = (v / np.linalg.norm(v, axis=1, keepdims=True)).mean(axis=0)
        got = store.store.namespace("lg:m").get_vector(store.store.namespace("lg:m").get_by_key("both").id)
        assert np.allclose(got, mean / np.linalg.norm(mean), atol=1e-5)


def test_async_batch_matches_sync(store_path) -> None:
    async def scenario(store: MnemosStore) -> list[Any]:
        await store.aput(("u",), "a", {"text": "red apples", "n": 1})
        await store.aput(("u", "v"), "b", {"text": "green grapes", "n": 2})
        res = await store.abatch([GetOp(("u",), "a"), SearchOp(("u",), {"n": {"$gt": 1}}),
                                  SearchOp((), None, 5, 0, "red apples"),
                                  ListNamespacesOp(None, 1, 10, 0)])
        await store.adelete(("u",), "a")
        return [_plain(res[0]), [_plain(x) for x in res[1]], [_plain(x) for x in res[2]],
                res[3], await store.aget(("u",), "a")]
    with MnemosStore(store_path, index=_index(["text"])) as store:
        got = asyncio.run(scenario(store))
    ref = asyncio.run(scenario(InMemoryStore(index=_index(["text"]))))  # type: ignore[arg-type]
    assert got == ref
    assert got[0] == (("u",), "a", {"text": "red apples", "n": 1}) and got[4] is None


_WORKER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from langchain_core.embeddings import DeterministicFakeEmbedding
from mnemos_kv.langgraph import MnemosStore
store = MnemosStore(sys.argv[2], index={"dims": 8, "embed": DeterministicFakeEmbedding(size=8),
                                        "fields": ["text"]})
who = sys.argv[3]
for i in range(int(sys.argv[4])):
    store.put(("team", who), f"note-{i}", {"text": f"{who} note {i}", "i": i})
store.put(("shared",), "last-writer", {"text": who})
store.close()
"""


@pytest.mark.slow
def test_two_processes_see_each_others_puts(tmp_path) -> None:
    path = str(tmp_path / "shared.mem")
    with MnemosStore(path, index=_index(["text"])) as store:
        store.put(("team", "parent"), "hello", {"text": "from the parent", "i": -1})
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(ROOT), path, who, "20"])
                 for who in ("w1", "w2")]
        for p in procs:
            assert p.wait(timeout=120) == 0
        # this process, open all along, sees both workers' items
        assert store.list_namespaces(prefix=("team",)) == [("team", "parent"), ("team", "w1"),
                                                            ("team", "w2")]
        for who in ("w1", "w2"):
            assert store.get(("team", who), "note-19").value == {"text": f"{who} note 19", "i": 19}
            assert len(store.search(("team", who), limit=100)) == 20
        assert len(store.search(("team",), filter={"i": {"$gte": 10}}, limit=100)) == 20
        assert store.get(("shared",), "last-writer").value["text"] in ("w1", "w2")
        hits = store.search(("team",), query="w2 note 7", limit=1)
        assert [(h.namespace, h.key) for h in hits] == [(("team", "w2"), "note-7")]
        # and a worker sees what this process wrote
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from mnemos_kv.langgraph import "
                "MnemosStore; s = MnemosStore(sys.argv[2], index={'dims': 8, 'embed': "
                "__import__('langchain_core.embeddings', fromlist=['x']).DeterministicFakeEmbedding(size=8)}); "
                "print(s.get(('team', 'parent'), 'hello').value['text']); s.close()")
        out = subprocess.run([sys.executable, "-c", code, str(ROOT), path], check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == "from the parent"


def test_docs_example_runs(tmp_path) -> None:
    text = (ROOT / "docs" / "langgraph.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "['My favourite colour is green.', 'I live in Lisbon and work as a nurse.']"
