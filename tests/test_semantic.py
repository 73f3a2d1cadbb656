"""Semantic compaction: merging near-duplicates and summarizing old memories, as logged ops."""

from __future__ import annotations

import datetime as dt

import pytest

from mnemos_kv import InvalidInputError, Memory, Mnemos, extractive_summary

from _engines import opener, store_path  # noqa: E402,F401  (summaries: both engines)
from conftest import Clock, verified

DAY = 86_400
T0 = 1_767_225_600


def _dupes(db: Mnemos) -> dict[str, int]:
    ids = {}
    ids["a"] = db.remember("We chose Stripe for payments", metadata={"topic": "billing"}, timestamp=T0)
    ids["b"] = db.remember("The office moves to Berlin in March", timestamp=T0 + 1)
    ids["a2"] = db.remember("We chose Stripe for payments", metadata={"topic": "x", "src": "chat"},
                            timestamp=T0 + 2)
    ids["a3"] = db.remember("We chose Stripe for payments!", metadata={"who": "bob"}, timestamp=T0 + 3)
    ids["c"] = db.remember("Alice leads the mobile app", timestamp=T0 + 4)
    ids["a_sem"] = db.remember("We chose Stripe for payments", type="semantic", timestamp=T0 + 5)
    ids["a_key"] = db.remember("We chose Stripe for payments", key="decision", timestamp=T0 + 6)
    ids["a_pin"] = db.remember("We chose Stripe for payments", pinned=True, timestamp=T0 + 7)
    ids["other_ns"] = db.namespace("other").remember("We chose Stripe for payments", timestamp=T0 + 8)
    db.connect(ids["a2"], ids["b"], relation="context")
    db.connect(ids["c"], ids["a3"], relation="mentions", weight=0.5)
    db.connect(ids["a"], ids["a2"])  # inside the group: dropped
    return ids


def test_merge_similar_keeps_the_oldest_and_unions_metadata(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "s.mem"), clock=Clock()) as db:
        ids = _dupes(db)
        out = db.compact(merge_similar=0.95)
        assert out["merged"] == 2
        assert ids["a2"] not in db and ids["a3"] not in db
        kept = db.get(ids["a"])
        assert kept.metadata == {"topic": "billing", "src": "chat", "who": "bob",
                                 "merged_from": [ids["a2"], ids["a3"]]}
        assert {(e.src, e.dst, e.relation, e.weight) for e in db.neighbors(ids["a"])} == {
            (ids["a"], ids["b"], "context", 1.0), (ids["c"], ids["a"], "mentions", 0.5)}
        # other type, keyed, pinned and other-namespace memories were not merged away
        for k in ("a_sem", "a_key", "a_pin", "b", "c"):
            assert ids[k] in db
        assert ids["other_ns"] in db.namespace("other")
        assert db.verify().ok
        assert db.compact(merge_similar=0.95)["merged"] == 0  # idempotent


def test_merging_is_deterministic_and_replays(tmp_path) -> None:
    digests = []
    for name in ("one.mem", "two.mem"):
        with Mnemos.open(str(tmp_path / name), clock=Clock()) as db:
            _dupes(db)
            db.remember_many([f"invoice {i % 5} was sent to ACME" for i in range(30)])
            db.compact(merge_similar=0.9)
            db.remember("after")
            digests.append(db.state_digest())
            if name == "one.mem":
                db.export_replay(str(tmp_path / "run.log"))
    assert digests[0] == digests[1]
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        res = dst.replay(str(tmp_path / "run.log"))
        assert res.digest_matches and dst.state_digest() == digests[0]


def test_bad_threshold_is_rejected_before_anything_is_written(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "s.mem")) as db:
        db.remember("x")
        seq = db.stats()["seq"]
        for bad in (0, 1.01, -0.5, float("nan"), "0.9", True):
            with pytest.raises(InvalidInputError, match="merge_similar"):
                db.compact(merge_similar=bad)
        assert db.stats()["seq"] == seq and db.stats()["generation"] == 1


def _diary(db) -> dict[str, list[int]]:
    days: dict[str, list[int]] = {"d0": [], "d1": [], "d2": [], "recent": []}
    for i in range(3):
        days["d0"].append(db.remember(f"Day zero: worked on the billing migration. Step {i}.",
                                      timestamp=T0 + i * 60))
    for i in range(4):
        days["d1"].append(db.remember(f"Day one: billing migration tests failed. Fixed test {i}.",
                                      timestamp=T0 + DAY + i * 60))
    days["d2"].append(db.remember("Day two: a lone note.", timestamp=T0 + 2 * DAY))
    days["recent"].append(db.remember("Recent: billing migration shipped.", timestamp=T0 + 30 * DAY))
    return days


def test_summarize_older_replaces_groups_by_summaries(opener) -> None:
    with opener("s.mem", clock=lambda: float(T0 + 31 * DAY)) as db:
        days = _diary(db)
        keyed = db.remember("Day one: keyed note", key="k", timestamp=T0 + DAY + 5)
        pinned = db.remember("Day one: pinned note", pinned=True, timestamp=T0 + DAY + 6)
        sem = db.remember("Billing runs on Stripe", type="semantic", timestamp=T0 + DAY + 7)
        other = db.remember("Day zero: remember the standup", timestamp=T0 + 100)
        db.connect(days["d1"][0], days["recent"][0], relation="led-to")
        db.connect(days["d1"][1], days["d1"][2])  # inside the group: dropped
        out = db.summarize_older(dt.timedelta(days=7))
        # groups per day (d2 has one memory: left alone), members in time order
        assert [s["replaced"] for s in out] == [days["d0"][:2] + [other, days["d0"][2]], days["d1"]]
        s0, s1 = (db.get(s["id"]) for s in out)
        assert s1.type == "semantic" and s1.metadata["summary_of"] == days["d1"]
        assert s1.metadata["summary_window"] == [float(T0 + DAY), float(T0 + 2 * DAY)]
        assert s1.created_at == T0 + DAY + 180  # the newest replaced memory's time
        assert s1.text.startswith("Summary of 4 memories (2026-01-02): ")
        assert [(e.src, e.dst, e.relation) for e in db.neighbors(s1.id)] == [
            (s1.id, days["recent"][0], "led-to")]
        for mid in days["d0"] + days["d1"] + [other]:
            assert mid not in db
        for mid in days["d2"] + days["recent"] + [keyed, pinned, sem]:
            assert mid in db
        assert verified(db)
        assert db.summarize_older(dt.timedelta(days=7)) == []  # nothing left to group


def test_custom_summarizer_and_replay_without_it(opener, tmp_path) -> None:
    calls: list[list[Memory]] = []

    def llm(mems: list[Memory]) -> str:
        calls.append(mems)
        return f"{len(mems)} notes about " + mems[0].text.split(":")[0]

    with opener("s.mem", clock=lambda: float(T0 + 31 * DAY)) as db:
        a = db.namespace("agent")
        _diary(a)
        out = a.summarize_older(dt.datetime.fromtimestamp(T0 + 10 * DAY, dt.timezone.utc),
                                summarizer=llm, min_group=4)
        assert [len(c) for c in calls] == [4] and all(isinstance(m, Memory) for m in calls[0])
        assert a.get(out[0]["id"]).text == "4 notes about Day one"
        digest = db.state_digest()
        db.export_replay(str(tmp_path / "run.log"))
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        assert dst.replay(str(tmp_path / "run.log")).digest_matches
        assert dst.state_digest() == digest and len(calls) == 1


def test_summarize_validation(opener) -> None:
    with opener("s.mem", clock=lambda: float(T0 + 31 * DAY)) as db:
        _diary(db)
        seq = db.stats()["seq"]
        with pytest.raises(InvalidInputError, match="than"):
            db.summarize_older("last week")
        with pytest.raises(InvalidInputError, match="than"):
            db.summarize_older(-5)
        with pytest.raises(InvalidInputError, match="window"):
            db.summarize_older(DAY, window=0)
        with pytest.raises(InvalidInputError, match="min_group"):
            db.summarize_older(DAY, min_group=1)
        with pytest.raises(InvalidInputError, match="type"):
            db.summarize_older(DAY, types=["diary"])
        with pytest.raises(InvalidInputError, match="summary"):
            db.summarize_older(DAY, summarizer=lambda mems: "   ")
        with pytest.raises(InvalidInputError, match="summarizer"):
            db.summarize_older(DAY, summarizer="not callable")
        assert db.stats()["seq"] == seq  # nothing written


def test_summaries_are_the_same_ops_on_both_engines(pg_store_url: str, tmp_path) -> None:
    """The same diary, edges and summarize_older on the embedded store and on PostgreSQL:
    the same summaries, moved edges, logged ops and state digest."""
    from mnemos_kv._replay import iter_ops
    outs, logs, digests = [], [], []
    for target in (str(tmp_path / "local.mem"), pg_store_url):
        with Mnemos.open(target, clock=lambda: float(T0 + 31 * DAY)) as db:
            days = _diary(db)
            db.connect(days["d1"][0], days["recent"][0], relation="led-to")
            db.connect(days["recent"][0], days["d0"][1], relation="cites", weight=0.5)
            db.connect(days["d1"][1], days["d1"][2])
            db.set_capacity(40)
            outs.append(db.summarize_older(dt.timedelta(days=7)))
            digests.append(db.state_digest())
            db.export_replay(str(tmp_path / f"{len(logs)}.log"))
            logs.append([op for _s, _q, op in iter_ops(str(tmp_path / f"{len(logs)}.log"))])
    assert outs[0] == outs[1] and len(outs[0]) == 2
    assert logs[0] == logs[1] and digests[0] == digests[1]
    assert sum(op["op"] == "link" for op in logs[0]) == 3 + 2  # three made, two moved


def test_extractive_summary_is_deterministic() -> None:
    mems = [Memory(id=i, text=t, metadata={}, namespace="default", type="episodic",
                   created_at=float(T0 + i)) for i, t in enumerate([
                       "The billing migration started. Coffee was cold.",
                       "Billing migration tests failed twice.",
                       "We fixed the billing migration tests. Lunch was good."])]
    s = extractive_summary(mems, max_sentences=2)
    assert s == extractive_summary(list(mems), max_sentences=2)
    assert s.startswith("Summary of 3 memories (2026-01-01): ")
    assert "Coffee" not in s and "Lunch" not in s and "billing migration" in s.lower()
