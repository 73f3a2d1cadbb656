"""Capacity policies: deterministic, transparent and observable eviction (both engines:
the same evictions, ops and digests on PostgreSQL as on the embedded store)."""

from __future__ import annotations

import json
import random
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import CapacityError, InvalidInputError, MemoryNotFoundError, Mnemos
from mnemos_kv import _capacity
from mnemos_kv._replay import iter_ops
from mnemos_kv.cli import main

from _engines import opener, store_path  # noqa: E402,F401  (both engines)
from _eviction import check_evictions_follow_the_formula, expected_order, replay_ops  # noqa: E402
from conftest import Clock, on_postgres, verified

DAY = 86_400
T0 = 1_767_225_600


SCENARIO = [  # (text, days after T0, type)
    ("kickoff meeting notes", 0, "episodic"),
    ("the API uses OAuth2", 1, "semantic"),
    ("deploy with make release", 2, "procedural"),
    ("lunch with Alice", 10, "episodic"),
    ("Bob prefers email", 10, "semantic"),
    ("standup moved to 9:30", 20, "episodic"),
    ("standup moved again", 20, "episodic"),  # same time, same type as the previous: tie -> id
    ("how to rotate keys", 25, "procedural"),
    ("the customer is ACME", 30, "semantic"),
    ("retro: ship smaller PRs", 40, "episodic"),
    ("invoice sent", 41, "episodic"),
    ("pinned: never forget the pager rota", 0, "episodic"),
]


def _fill(handle, pin_last: bool = True) -> dict[int, tuple[float, str]]:
    mems = {}
    for i, (text, day, type_) in enumerate(SCENARIO):
        ts = T0 + day * DAY
        pinned = pin_last and i == len(SCENARIO) - 1
        mid = handle.remember(text, timestamp=ts, type=type_, pinned=pinned)
        mems[mid] = (ts, type_)
    return mems


def test_eviction_order_equals_the_documented_formula(opener, tmp_path) -> None:
    evicted: list[int] = []
    with opener("s.mem", clock=Clock(),
                     on_evict=lambda ms: evicted.extend(m.id for m in ms)) as db:
        a = db.namespace("a")
        mems = _fill(a)
        pinned = {max(mems)}
        order = expected_order(mems, pinned)
        a.set_capacity(max_entries=5)  # 12 live, 1 pinned: 7 go, in formula order
        assert evicted == order[:7]
        assert a.count() == 5
        assert sorted(m.id for m in a.memories()) == sorted(set(mems) - set(order[:7]))
        # the evict ops are in the log in the same order, with the score that chose them
        db.export_replay(str(tmp_path / "r.log"))
        ops = [op for _s, _q, op in iter_ops(str(tmp_path / "r.log")) if op["op"] == "evict"]
        assert [op["id"] for op in ops] == order[:7]
        xs = [op["x"] for op in ops]
        assert xs == sorted(xs, reverse=True)
        # the tie (same timestamp and type) went to the smaller id
        tie = [i for i, (ts, t) in mems.items() if ts == T0 + 20 * DAY]
        assert order.index(tie[0]) < order.index(tie[1])


def test_steady_state_one_in_one_out(opener) -> None:
    """With the limit set first, every remember beyond it evicts exactly one memory,
    the lowest-retention one at that moment (ages shift as newer memories arrive)."""
    evicted: list[int] = []
    with opener("s.mem", clock=Clock(),
                     on_evict=lambda ms: evicted.extend(m.id for m in ms)) as db:
        db.set_capacity(4)
        live: dict[int, tuple[float, str]] = {}
        for i, (text, day, type_) in enumerate(SCENARIO[:-1]):
            ts = T0 + day * DAY
            mid = db.remember(text, timestamp=ts, type=type_)
            live[mid] = (ts, type_)
            want = expected_order(live, set())[: max(0, len(live) - 4)]
            assert evicted[-len(want):] == want if want else True
            for w in want:
                del live[w]
            assert db.count() == len(live) <= 4
        assert db.stats()["evicted"] == len(SCENARIO) - 1 - 4


def test_namespace_limit_never_evicts_another_namespace(opener) -> None:
    with opener("s.mem", clock=Clock()) as db:
        a, b = db.namespace("a"), db.namespace("b")
        old_b = [b.remember(f"old b note {i}", timestamp=T0 - 400 * DAY) for i in range(5)]
        a.set_capacity(3)
        for i in range(10):
            a.remember(f"a note {i}", timestamp=T0 + i * DAY)
        assert a.count() == 3 and b.count() == 5
        assert [m.id for m in b.memories()] == old_b
        st = db.stats()
        assert st["evicted"] == 7
        assert st["capacity"]["namespaces"]["a"]["evicted"] == 7
        assert st["capacity"]["namespaces"]["b"]["evicted"] == 0
        assert st["capacity"]["namespaces"]["a"]["limit"] == {"max_entries": 3}
        # a store-wide limit evicts across namespaces: b's old notes go first
        db.set_capacity(6)
        assert a.count() == 3 and b.count() == 3
        assert [m.id for m in b.memories()] == old_b[2:]
        assert db.capacity() == {"store": {"max_entries": 6}, "namespaces": {"a": {"max_entries": 3}}}
        assert a.capacity() == {"max_entries": 3, "max_bytes": None}
        assert verified(db)


def test_max_bytes_evicts_exactly_down_to_the_limit(opener) -> None:
    with opener("s.mem", clock=Clock()) as db:
        ids = [db.remember("x" * (100 * (i + 1)), timestamp=T0 + i) for i in range(6)]
        sizes = {i: _capacity.entry_bytes("x" * (100 * (k + 1)), {}, None, 512)
                 for k, i in enumerate(ids)}
        assert db.stats()["capacity"]["bytes"] == sum(sizes.values())
        limit = sum(sizes.values()) - sizes[ids[0]] - 1  # dropping the oldest is not enough
        db.set_capacity(max_bytes=limit)
        assert [m.id for m in db.memories()] == ids[2:]  # exactly two go, oldest first
        assert db.stats()["capacity"]["bytes"] == sum(sizes[i] for i in ids[2:]) <= limit
        db.set_capacity(None)  # removes the limit
        assert db.capacity()["store"] is None
        db.remember("long text " * 500)
        assert db.count() == 5


def test_pinned_memories_are_never_evicted(opener) -> None:
    with opener("s.mem", clock=Clock()) as db:
        a = db.remember("old but pinned", timestamp=T0, pinned=True)
        b = db.remember("old", timestamp=T0 + 1)
        assert db.is_pinned(a) and not db.is_pinned(b)
        db.pin(b)
        seq = db.stats()["seq"]
        with pytest.raises(CapacityError, match="pinned"):
            db.set_capacity(1)
        assert db.stats()["seq"] == seq and db.capacity()["store"] is None  # nothing written
        db.unpin(b)
        db.set_capacity(2)  # a pinned + b: within the limit
        db.pin(b)
        with pytest.raises(CapacityError, match="pinned"):
            db.remember("one more", timestamp=T0 + 2, pinned=True)  # nothing could go
        assert db.count() == 2 and db.stats()["evicted"] == 0
        c = db.remember("one more", timestamp=T0 + 2)  # the only evictable one is itself
        assert c not in db and a in db and b in db and db.stats()["evicted"] == 1
        db.unpin(b)
        d = db.remember("newest", timestamp=T0 + 3)
        assert b not in db and d in db and a in db  # b is the oldest unpinned memory
        with pytest.raises(MemoryNotFoundError):
            db.pin(999)
        db.forget(a)  # pinned memories can still be forgotten explicitly
        assert verified(db)


def test_new_memory_with_old_timestamp_can_be_evicted_at_once(opener) -> None:
    got = []
    with opener("s.mem", clock=Clock(), on_evict=got.extend) as db:
        db.set_capacity(2)
        db.remember("recent 1", timestamp=T0 + 10)
        db.remember("recent 2", timestamp=T0 + 11)
        old = db.remember("imported from last year", timestamp=T0 - 365 * DAY)
        assert old not in db and [m.id for m in got] == [old]
        assert got[0].text == "imported from last year" and got[0].namespace == "default"
        assert db.explain_eviction(old)["status"] == "evicted"


def test_evicted_memories_leave_no_edges(opener) -> None:
    with opener("s.mem", clock=Clock()) as db:
        ids = [db.remember(f"note {i}", timestamp=T0 + i) for i in range(4)]
        db.connect(ids[0], ids[1])
        db.connect(ids[2], ids[0], relation="cites")
        db.connect(ids[2], ids[3])
        db.set_capacity(3)
        assert ids[0] not in db
        assert db.neighbors(ids[1]) == [] and [e.dst for e in db.neighbors(ids[2])] == [ids[3]]
        assert verified(db)


def test_explain_eviction(opener) -> None:
    with opener("s.mem", clock=Clock()) as db:
        a = db.namespace("a")
        ids = [a.remember(f"note {i}", timestamp=T0 + i * DAY) for i in range(4)]
        a.pin(ids[1])
        a.set_capacity(2)
        ex = a.explain_eviction(ids[0])
        assert ex["status"] == "evicted" and ex["scope"] == "namespace 'a'" and ex["max_entries"] == 2
        assert ex["age_seconds"] == pytest.approx(3 * DAY)
        assert ex["retention"] == pytest.approx(2 ** (-3 / 7))
        assert "lowest retention" in ex["reason"]
        live = a.explain_eviction(ids[3])
        assert live["status"] == "live" and live["limits"][0]["position"] == 1
        assert a.explain_eviction(ids[1])["pinned"] and "never evicted" in a.explain_eviction(ids[1])["reason"]
        a.forget(ids[3])
        assert a.explain_eviction(ids[3])["status"] == "gone"
        with pytest.raises(MemoryNotFoundError):
            a.explain_eviction(999)
        with pytest.raises(MemoryNotFoundError):
            db.namespace("b").explain_eviction(ids[2])  # confined to its namespace
        assert db.explain_eviction(ids[0])["status"] == "evicted"  # the root sees every namespace


def test_bad_limits_are_rejected_naming_the_value(opener) -> None:
    with opener("s.mem") as db:
        for bad in (0, -3, 1.5, "10", True):
            with pytest.raises(InvalidInputError, match="max_entries"):
                db.set_capacity(bad)
        with pytest.raises(InvalidInputError, match="max_bytes"):
            db.namespace("a").set_capacity(max_bytes=0)
        with pytest.raises(InvalidInputError, match="on_evict"):
            db.on_evict = 3
        with pytest.raises(InvalidInputError, match="pinned"):
            db.remember("x", pinned="yes")
        assert db.stats()["seq"] == 0


def test_callback_errors_become_warnings_and_the_write_stands(opener) -> None:
    def boom(mems):
        raise RuntimeError("callback failed")
    with opener("s.mem", clock=Clock(), on_evict=boom) as db:
        db.set_capacity(1)
        db.remember("a", timestamp=T0)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            b = db.remember("b", timestamp=T0 + 1)
        assert any("callback failed" in str(x.message) for x in w)
        assert b in db and db.count() == 1


def test_under_capacity_writes_do_not_rank(opener, monkeypatch) -> None:
    """Within the limits a write costs O(1): no scoring over the store."""
    with opener("s.mem", clock=Clock()) as db:
        db.set_capacity(100)
        db.namespace("a").set_capacity(50)

        def no(*a, **k):
            raise AssertionError("ranked although within the limits")
        monkeypatch.setattr(_capacity, "Ranking", no)
        db.remember_many([f"m {i}" for i in range(40)])
        db.namespace("a").remember_many([f"a {i}" for i in range(50)])


def test_limits_pins_and_counts_survive_reopen_and_compaction(opener) -> None:
    with opener("s.mem") as db:
        a = db.namespace("a")
        ids = [a.remember(f"n {i}", timestamp=T0 + i) for i in range(5)]
        a.pin(ids[0])
        a.set_capacity(3, max_bytes=10_000)
        digest = db.state_digest()
    with opener("s.mem") as db:
        assert db.state_digest() == digest
        a = db.namespace("a")
        assert a.capacity() == {"max_entries": 3, "max_bytes": 10_000} and a.is_pinned(ids[0])
        if not on_postgres(db):  # compact is embedded-only (docs/postgres.md)
            db.compact()
        assert a.is_pinned(ids[0]) and db.stats()["evicted"] == 2
        assert a.explain_eviction(ids[1])["status"] == "evicted"
        a.remember("n 5", timestamp=T0 + 5)
        assert a.count() == 3 and ids[0] in a
        assert verified(db)


def test_stats_cli_shows_evictions(opener, capsys) -> None:
    with opener("s.mem") as db:
        p = db.path if not on_postgres(db) else db._engine.url
        db.namespace("a").set_capacity(1)
        db.namespace("a").remember_many(["x", "y", "z"])
    assert main(["stats", p, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["evicted"] == 2 and st["capacity"]["namespaces"]["a"]["evicted"] == 2
    assert main(["stats", p]) == 0
    out = capsys.readouterr().out
    assert "evicted" in out and "max_entries=1" in out


def test_replay_reproduces_evictions(opener, tmp_path) -> None:
    """Replaying a log with evictions gives the same state (digest), evicted counts and
    notes, without running the policy again (the limits are in force on the target)."""
    with opener("src.mem") as db:
        a, b = db.namespace("a"), db.namespace("b")
        a.set_capacity(4)
        db.set_capacity(9)
        for i in range(12):
            a.remember(f"a note {i}", timestamp=T0 + (i * 7919 % 13) * DAY,
                       type=("episodic", "semantic", "procedural")[i % 3], pinned=(i == 5))
            b.remember(f"b note {i}", timestamp=T0 + i * DAY)
        b.connect(b.memories().__next__().id, list(b.memories())[-1].id)
        a.set_capacity(max_bytes=3 * 2100)
        db.set_capacity(None)
        db.remember_many([f"default {i}" for i in range(3)])
        digest, stats = db.state_digest(), db.stats()
        assert stats["evicted"] > 10
        explained = {m: db.explain_eviction(m)["status"] for m in range(1, 28)}
        db.export_replay(str(tmp_path / "run.log"))
        if not on_postgres(db):  # compact is embedded-only (docs/postgres.md)
            db.compact()
        a.remember("after compaction", timestamp=T0 + 30 * DAY)
        db.export_replay(str(tmp_path / "run2.log"))
        digest2 = db.state_digest()
    for log, want in (("run.log", digest), ("run2.log", digest2)):
        with opener(f"dst-{log}.mem", clock=lambda: 0.0) as dst:
            res = dst.replay(str(tmp_path / log))
            assert res.complete and res.digest_matches and dst.state_digest() == want
            assert verified(dst)
            if log == "run.log":
                assert dst.stats()["evicted"] == stats["evicted"]
                assert dst.stats()["capacity"] == stats["capacity"]
                assert {m: dst.explain_eviction(m)["status"]
                        for m in range(1, 28)} == explained
    # a namespace-filtered export replays that namespace's evictions too
    with opener("src.mem") as db:
        db.export_replay(str(tmp_path / "a.log"), namespaces=["a"])
        want_a = db.state_digest(["a"])
    with opener("dst-a.mem") as dst:
        dst.replay(str(tmp_path / "a.log"))
        assert dst.state_digest(["a"]) == want_a


def test_eviction_notes_are_bounded(opener, monkeypatch) -> None:
    monkeypatch.setattr(_capacity, "NOTES_MAX", 3)
    with opener("s.mem", clock=Clock()) as db:
        ids = [db.remember(f"n {i}", timestamp=T0 + i) for i in range(7)]
        db.set_capacity(2)  # evicts ids[0..4]; notes kept for the last 3 evictions
        assert [db.explain_eviction(i)["status"] for i in ids] == \
            ["gone", "gone", "evicted", "evicted", "evicted", "live", "live"]
        assert db.stats()["evicted"] == 5 and verified(db)


def _random_history(db: Mnemos, seed: int, steps: int = 60) -> None:
    """Random writes under random limits: after each step no limit is exceeded, and a
    refused write changed nothing. The same seed gives the same calls on any engine
    whose states stay equal (the calls depend on what is live)."""
    rng = random.Random(seed)
    names = ["default", "a", "b"]
    handles = {n: (db if n == "default" else db.namespace(n)) for n in names}
    for _step in range(steps):
        h = handles[rng.choice(names)]
        r = rng.random()
        seq = db.stats()["seq"]
        try:
            if r < 0.55:
                h.remember(f"note {rng.randrange(1000)}", timestamp=T0 + rng.randrange(100) * DAY,
                           type=rng.choice(["episodic", "semantic", "procedural"]),
                           pinned=rng.random() < 0.1)
            elif r < 0.65:
                live = [m.id for m in h.memories()]
                if live:
                    h.forget(rng.choice(live))
            elif r < 0.75:
                live = [m.id for m in h.memories()]
                if live:
                    (h.pin if rng.random() < 0.5 else h.unpin)(rng.choice(live))
            elif r < 0.9:
                h.set_capacity(rng.choice([None, 2, 3, 5, 8]))
            else:
                db.set_capacity(rng.choice([None, 6, 10, 15]))
        except CapacityError:
            assert db.stats()["seq"] == seq  # refused: nothing written
        caps = db.capacity()
        counts = {n: handles[n].count() for n in names}
        for n, lim in caps["namespaces"].items():
            assert counts[n] <= lim["max_entries"]
        if caps["store"]:
            assert sum(counts.values()) <= caps["store"]["max_entries"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_histories_keep_limits_and_replay_identically(opener, tmp_path_factory,
                                                             seed) -> None:
    """Random writes under random limits: no commit exceeds a limit, a refused write
    changes nothing, and replaying the log gives the same state."""
    root = tmp_path_factory.mktemp("hist")
    with opener(f"src-{seed}") as db:
        _random_history(db, seed, steps=60 if not on_postgres(db) else 30)
        assert verified(db)
        digest = db.state_digest()
        db.export_replay(str(root / "run.log"))
    with Mnemos.open(str(root / "dst.mem")) as dst:  # replayed on the embedded engine
        assert dst.replay(str(root / "run.log")).digest_matches
        assert dst.state_digest() == digest and dst.verify().ok


def test_same_ops_give_the_same_evictions_on_both_engines(pg_schemas, tmp_path) -> None:
    """The same calls with capacity limits on the embedded store and on PostgreSQL:
    equal survivors, evicted counts, explanations, digests and logged ops (the evict
    ops carry the same score), and each history's evictions follow the formula."""
    for seed in (1, 7, 2024):
        with Mnemos.open(str(tmp_path / f"local-{seed}.mem"), clock=Clock()) as loc, \
                Mnemos.open(pg_schemas(), clock=Clock()) as pg:
            for db in (loc, pg):
                _random_history(db, seed, steps=40)
                a = db.namespace("a")
                a.set_capacity(4)
                a.remember_many([{"text": f"bulk {i}", "timestamp": T0 + (i * 37 % 11) * DAY}
                                 for i in range(6)])
            survivors = [{n: [m.id for m in db.namespace(n).memories()] for n in db.namespaces()}
                         for db in (loc, pg)]
            assert survivors[0] == survivors[1]
            assert loc.stats()["capacity"] == pg.stats()["capacity"]
            assert loc.stats()["evicted"] == pg.stats()["evicted"] > 0
            assert loc.state_digest() == pg.state_digest()
            for i in range(1, 40):
                got = [_explained(db, i) for db in (loc, pg)]
                assert got[0] == got[1], i
            loc.export_replay(str(tmp_path / f"loc-{seed}.log"))
            pg.export_replay(str(tmp_path / f"pg-{seed}.log"))
        ops = replay_ops(str(tmp_path / f"loc-{seed}.log"))
        assert ops == replay_ops(str(tmp_path / f"pg-{seed}.log"))
        assert check_evictions_follow_the_formula(ops) > 0


def _explained(db: Mnemos, mid: int):
    try:
        return db.explain_eviction(mid)
    except MemoryNotFoundError:
        return "not found"
