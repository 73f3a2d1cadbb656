"""`mnemos-kv migrate` between the engines: local -> PostgreSQL -> local with the same
state digest and the same answers, and incremental syncs both ways (docs/postgres.md)."""

from __future__ import annotations

import pytest

from mnemos_kv import Mnemos, ReplayError, migrate
from mnemos_kv.cli import main

from conftest import Clock
from test_migrate import QUESTIONS, more, session

#: ask variants whose answers docs/postgres.md documents as equal on both engines
ASKS: list[dict] = [
    {},
    {"mode": "vector"},
    {"mode": "lexical"},
    {"filter": {"step": {"$gte": 10}}},
    {"filter": {"team": "platform"}},
    {"types": "semantic"},
    {"use_graph": True},
    {"recency_bias": "7 days", "now": "2026-01-02"},
    {"since": "2026-01-01T00:00:05", "until": "2026-01-01T00:00:30"},
]


def answers(db: Mnemos) -> dict:
    out = {}
    for name in db.namespaces():
        h = db.namespace(name)
        for q in QUESTIONS:
            for i, kw in enumerate(ASKS):
                out[(name, q, i)] = [(m.id, m.text, m.metadata, round(m.score, 5))
                                     for m in h.ask(q, top_k=4, **kw)]
    return out


def state(target: str) -> tuple[str, dict, int]:
    with Mnemos.open(target, readonly=True) as db:
        return db.state_digest(), answers(db), db.stats()["seq"]


def test_round_trip_local_postgres_local(tmp_path, pg_store_url: str, capsys) -> None:
    src, back = str(tmp_path / "src.mem"), str(tmp_path / "back.mem")
    with Mnemos.open(src, clock=Clock()) as db:
        session(db)
    assert main(["migrate", src, pg_store_url, "--no-progress"]) == 0
    assert main(["migrate", pg_store_url, back, "--no-progress"]) == 0
    capsys.readouterr()
    want = state(src)
    assert want[1] and any(want[1].values())  # the asks answer something
    assert state(pg_store_url) == want
    assert state(back) == want

    # the local store goes on; one sync each way brings both copies up to date
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
    assert migrate(src, pg_store_url).mode == "incremental"
    assert migrate(pg_store_url, back).mode == "incremental"
    want = state(src)
    assert state(pg_store_url) == want and state(back) == want
    with Mnemos.open(pg_store_url, readonly=True) as db:  # the limit travelled
        assert db.namespace("planner").capacity() == {"max_entries": 5, "max_bytes": None}


def test_local_copies_follow_the_server(tmp_path, pg_store_url: str) -> None:
    # (with a capacity limit: the server's writes evict as the embedded store's would)
    src, back = str(tmp_path / "src.mem"), str(tmp_path / "back.mem")
    with Mnemos.open(src, clock=Clock()) as db:
        session(db)
    migrate(src, pg_store_url)
    migrate(pg_store_url, back)
    with Mnemos.open(pg_store_url, clock=Clock(start=1_767_400_000)) as db:
        more(db, "week 3")
    res = migrate(pg_store_url, back)
    assert res.mode == "incremental" and res.applied > 0
    assert state(back) == state(pg_store_url)
    assert migrate(pg_store_url, back).mode == "up-to-date"
    # src did not follow the server: it is behind, not diverged, and syncs too
    assert migrate(pg_store_url, src).mode == "incremental"
    assert state(src) == state(pg_store_url)


def test_diverged_server_copy_is_refused(tmp_path, pg_store_url: str) -> None:
    src = str(tmp_path / "src.mem")
    with Mnemos.open(src, clock=Clock()) as db:
        session(db)
    migrate(src, pg_store_url)
    with Mnemos.open(pg_store_url, clock=Clock(start=1_767_400_000)) as db:
        db.remember("written on the server only")
        before = db.state_digest()
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
    with pytest.raises(ReplayError, match="diverged"):
        migrate(src, pg_store_url)
    with Mnemos.open(pg_store_url, readonly=True) as db:
        assert db.state_digest() == before
