"""The core API: remember, get, ask, forget, connect, count, reopen, compact."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from mnemos_kv import Edge, Memory, MemoryNotFoundError, Mnemos


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


DISTRACTORS = [
    "Lunch today was pizza with the design team", "The CI pipeline takes twelve minutes",
    "Alice prefers tea over coffee", "Bob is on vacation until Monday",
    "The printer on floor two is broken again", "Our logo uses a dark blue color",
    "The quarterly all-hands is next Thursday", "Kubernetes upgrade scheduled for May",
    "The intern starts in September", "We use pytest for the test suite",
    "The wifi password was rotated yesterday", "Carol wrote the onboarding guide",
    "The staging database was restored from backup", "Dave likes hiking in the Alps",
    "The marketing site runs on a static generator", "Sales closed three deals this week",
    "Eve reviews all security patches", "The coffee machine needs descaling",
    "The mobile app crashed on Android 12", "Frank moved to the data team",
    "Retrospective notes are in the wiki", "The API rate limit is 100 requests per second",
    "Grace is the on-call engineer this weekend", "The budget review happens in October",
    "Heidi translated the docs into German", "The logging stack uses Loki and Grafana",
    "Ivan proposed switching to Rust for the parser", "The design system has 40 components",
    "The VPN client must be updated by Friday", "Judy organised the hackathon",
    "The product roadmap was shared with investors", "Customer support hours are 9 to 5",
]


def test_seed_example_ranks_stripe_first_among_distractors(db: Mnemos) -> None:
    db.remember_many(DISTRACTORS[:16])
    stripe = db.remember("We chose Stripe for payments")
    db.remember("The office moves to Berlin in March")
    db.remember_many(DISTRACTORS[16:])
    hits = db.ask("What payment provider did we choose?")
    assert hits[0].id == stripe
    assert hits[0].text == "We chose Stripe for payments"
    assert hits[0].score is not None and hits[0].score > hits[1].score


def test_remember_get_roundtrip(db: Mnemos) -> None:
    mid = db.remember("We chose Stripe", metadata={"topic": "billing", "n": 3, "x": [1.5, None]},
                      type="semantic", timestamp=1_700_000_000.25, key="decision-1")
    m = db.get(mid)
    assert isinstance(m, Memory)
    assert (m.id, m.text, m.type, m.namespace, m.key) == (mid, "We chose Stripe", "semantic", "default", "decision-1")
    assert m.metadata == {"topic": "billing", "n": 3, "x": [1.5, None]}
    assert m.created_at == pytest.approx(1_700_000_000.25)
    assert m.created == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.timezone.utc)
    assert db.get_by_key("decision-1").id == mid
    assert m.score is None


def test_default_timestamp_comes_from_injected_clock(db: Mnemos, clock) -> None:
    mid = db.remember("first")
    assert db.get(mid).created_at == clock.start  # the clock's first tick


def test_datetime_timestamp(db: Mnemos) -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    mid = db.remember("meeting", timestamp=when)
    assert db.get(mid).created == when


def test_ids_are_sequential_and_deterministic(tmp_path, clock) -> None:
    def run(name: str) -> tuple[list[int], list[tuple[int, float]]]:
        from conftest import Clock
        with Mnemos.open(str(tmp_path / name), clock=Clock()) as s:
            ids = s.remember_many(DISTRACTORS[:10])
            ids.append(s.remember("We chose Stripe for payments"))
            s.forget(ids[3])
            ids.append(s.namespace("a").remember("private note"))
            return ids, [(h.id, h.score) for h in s.ask("payments pizza", top_k=5)]
    a, b = run("a.mem"), run("b.mem")
    assert a == b
    assert a[0] == list(range(1, 12)) + [12]


def test_remember_many_returns_ids_in_order_and_is_one_batch(db: Mnemos) -> None:
    seq0 = db.stats()["seq"]
    ids = db.remember_many(["a one", {"text": "b two", "metadata": {"k": 1}}, "c three"])
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [db.get(i).text for i in ids] == ["a one", "b two", "c three"]
    assert db.stats()["seq"] == seq0 + 3  # one log frame per memory, one transaction
    assert db.remember_many([]) == []


def test_forget_removes_memory_edges_and_search_hits(db: Mnemos) -> None:
    a = db.remember("We chose Stripe for payments")
    b = db.remember("Stripe fees are 2.9 percent")
    c = db.remember("Unrelated lunch note")
    db.connect(a, b)
    db.connect(c, a, relation="mentions", weight=0.5)
    db.forget(a)
    with pytest.raises(MemoryNotFoundError):
        db.get(a)
    assert a not in db and b in db
    assert [h.id for h in db.ask("Stripe payments", top_k=3)] == [b, c]
    assert db.neighbors(b) == [] and db.neighbors(c) == []
    assert db.count() == 2
    with pytest.raises(MemoryNotFoundError):
        db.forget(a)


def test_connect_neighbors_directions_and_reweight(db: Mnemos) -> None:
    a, b, c = db.remember_many(["alpha", "beta", "gamma"])
    db.connect(a, b)
    db.connect(a, c, relation="cites", weight=2.0)
    db.connect(c, a)
    assert db.neighbors(a, direction="out") == [Edge(a, b, "related", 1.0), Edge(a, c, "cites", 2.0)]
    assert db.neighbors(a, direction="in") == [Edge(c, a, "related", 1.0)]
    assert len(db.neighbors(a)) == 3
    assert db.neighbors(a, relation="cites") == [Edge(a, c, "cites", 2.0)]
    db.connect(a, b, weight=0.25)  # same edge: new weight
    assert db.neighbors(a, direction="out")[0] == Edge(a, b, "related", 0.25)
    db.disconnect(a, c)
    assert db.neighbors(a, direction="out") == [Edge(a, b, "related", 0.25)]
    assert db.neighbors(c, direction="out") == [Edge(c, a, "related", 1.0)]


def test_ask_top_k_filter_and_order(db: Mnemos) -> None:
    ids = db.remember_many([{"text": f"invoice number {i} for payments", "metadata": {"team": "ab"[i % 2]}}
                            for i in range(20)])
    hits = db.ask("invoice payments", top_k=7)
    assert len(hits) == 7
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    only_b = db.ask("invoice payments", top_k=5, filter={"team": "b"})
    assert len(only_b) == 5 and all(h.metadata["team"] == "b" for h in only_b)
    assert db.ask("invoice", top_k=50, filter={"team": "zzz"}) == []
    assert len(db.ask("invoice", top_k=100)) == 20
    assert set(h.id for h in db.ask("invoice", top_k=100)) == set(ids)


def test_ask_ties_break_by_insertion_order(db: Mnemos) -> None:
    ids = db.remember_many(["same text"] * 6)
    assert [h.id for h in db.ask("same text", top_k=4)] == ids[:4]


def test_ask_on_empty_store(db: Mnemos) -> None:
    assert db.ask("anything") == []
    assert db.count() == 0


def test_reopen_keeps_everything(store_path: str, clock) -> None:
    with Mnemos.open(store_path, clock=clock) as s:
        a = s.remember("We chose Stripe for payments", metadata={"t": 1})
        b = s.namespace("agent_a").remember("private plan")
        s.connect(a, s.remember("Stripe needs a webhook"))
        vec = s.get_vector(a)
    with Mnemos.open(store_path) as s:
        assert s.get(a).metadata == {"t": 1}
        assert s.namespace("agent_a").get(b).text == "private plan"
        assert len(s.neighbors(a)) == 1
        assert np.array_equal(s.get_vector(a), vec)
        assert s.ask("payment provider")[0].id == a
        assert s.count() == 2 and s.stats()["total"] == 3
        assert s.remember("after reopen") == 4


def test_vectors_and_custom_embedder(tmp_path) -> None:
    class Emb:
        name, dim = "toy-3", 3

        def embed(self, texts):
            return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)

    with Mnemos.open(str(tmp_path / "c.mem"), embedder=Emb()) as s:
        a = s.remember("aaa")
        b = s.remember("zzzzzzzz", vector=[0.0, 0.0, 2.0])
        v = s.get_vector(b)
        assert np.allclose(v, [0, 0, 1]) and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(s.get_vector(a)), 1.0)
        assert s.ask("aaa", top_k=1)[0].id == a


def test_plain_callable_embedder(tmp_path) -> None:
    def embed(texts):
        return np.array([[1.0, float(len(t))] for t in texts])

    with Mnemos.open(str(tmp_path / "f.mem"), embedder=embed) as s:
        assert s.embedder.dim == 2 and s.embedder.name == "test_plain_callable_embedder.<locals>.embed"
        s.remember("x")


def test_memories_iterates_in_time_order(db: Mnemos) -> None:
    db.remember("later", timestamp=2000)
    db.remember("earliest", timestamp=1000)
    db.remember("middle", timestamp=1500)
    assert [m.text for m in db.memories()] == ["earliest", "middle", "later"]
    assert [m.text for m in db.memories(since=1200, until=1600)] == ["middle"]


@pytest.mark.embedded_only("compact: the server has no vector files or log segments to rewrite")
def test_compact_reclaims_slots_and_keeps_answers(db: Mnemos) -> None:
    ids = db.remember_many([f"note {i} about payments and invoices" for i in range(50)])
    db.connect(ids[1], ids[2])
    before = [(h.id, h.score) for h in db.ask("payments note 7", top_k=10)]
    db.forget_many(ids[20:40])
    expected = [(h.id, h.score) for h in db.ask("payments note 7", top_k=10)]
    vec = db.get_vector(ids[45])
    out = db.compact()
    assert out["slots_before"] == 50 and out["slots_after"] == 30
    assert [(h.id, h.score) for h in db.ask("payments note 7", top_k=10)] == expected
    assert np.array_equal(db.get_vector(ids[45]), vec)
    assert db.neighbors(ids[1])[0].dst == ids[2]
    assert db.stats()["generation"] == 2
    files = db.stats()["files"]
    assert "vectors.000002.f32" in files and "vectors.000001.f32" not in files
    new = db.remember("after compaction")
    assert new == 51 and db.get(new).text == "after compaction"
    assert before  # sanity: the first query found something


def test_close_is_idempotent_and_context_manager(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        s.remember("x")
    s.close()
    assert "closed" in repr(s)


def test_files_follow_the_umask(tmp_path) -> None:
    """Store files get the user's umask; nothing is made world-writable on purpose."""
    import os
    import stat
    old = os.umask(0o027)
    try:
        with Mnemos.open(str(tmp_path / "u.mem")) as s:
            ids = s.remember_many(["a", "b"])
            s.forget(ids[0])
            s.compact()
            s.export_replay(str(tmp_path / "r.replay"))
    finally:
        os.umask(old)
    paths = [tmp_path / "u.mem" / f for f in os.listdir(tmp_path / "u.mem")] + [tmp_path / "r.replay"]
    for p in paths:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode & 0o007 == 0, f"{p.name} has mode {oct(mode)}"
