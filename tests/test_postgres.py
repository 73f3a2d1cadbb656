"""The PostgreSQL engine behind the same facade: API, isolation, schema version, ids and
answers equal to the embedded store's, replay round trips local <-> PostgreSQL.

The server is the suite's ``pg_url`` (``MNEMOS_TEST_PG_URL`` or a private pgserver; see
tests/conftest.py); without one the server tests are skipped with the reason.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from mnemos_kv import (FormatVersionError, InvalidInputError, MemoryNotFoundError,
                       MissingDependencyError, Mnemos, UnsupportedError)
from mnemos_kv.errors import DuplicateKeyError, EmbedderMismatchError, ReadOnlyError, ReplayError

from conftest import Clock


@pytest.fixture
def pg(pg_url: str) -> Iterator[Callable[..., Mnemos]]:
    """Open stores in fresh schemas (``pg()`` a new one, ``pg(name)`` a given one) of the
    test server (``pg_url``, tests/conftest.py); every store is closed and every schema
    dropped at the end."""
    import _pg
    opened: list[Mnemos] = []
    made: list[str] = []

    def _open(name: str | None = None, **kw: Any) -> Mnemos:
        if name is None:
            name = _pg.schema_name()
        if name not in made:
            _pg.drop_schema(pg_url, name)  # a leftover of an earlier run with the same pid
            made.append(name)
        kw.setdefault("clock", Clock())
        s = Mnemos.open(_pg.with_schema(pg_url, name), **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()
    for name in made:
        _pg.drop_schema(pg_url, name)


# -- without a server ---------------------------------------------------------------------------

def test_import_does_not_import_psycopg() -> None:
    code = "import sys, mnemos_kv; sys.exit(1 if 'psycopg' in sys.modules or 'pgvector' in sys.modules else 0)"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


@pytest.mark.parametrize("url, words", [
    ("postgresql://u@h/db?schema=s&bogus=1", "bogus"),
    ("postgresql://u@h/db?schema=1bad", "schema"),
    ("postgresql://u@h/db?schema=a&schema=b", "2 times"),
    ("postgresql://u@h/db?schema=pg_catalog", "schema"),
    ("postgresql:relative/dir", "URL"),
    ("postgres:", "URL"),
])
def test_bad_urls_are_refused_and_make_no_directory(tmp_path: Any, monkeypatch: Any, url: str,
                                                      words: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=words):
        Mnemos.open(url)
    assert os.listdir(tmp_path) == []


def test_missing_extra_names_the_install_command(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # an import of it fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'mnemos-kv\[postgres\]'"):
        Mnemos.open("postgresql://nobody@localhost:1/db?schema=x")
    assert os.listdir(tmp_path) == []


def test_url_parsing_keeps_libpq_parameters() -> None:
    from mnemos_kv._pg.url import parse_url, redact
    conninfo, schema = parse_url("postgres://u:secret@h:5433/db?sslmode=require&schema=team_a")
    assert schema == "team_a"
    assert "sslmode=require" in conninfo and "schema" not in conninfo
    assert parse_url("postgresql://u@h/db")[1] == "mnemos"
    assert "secret" not in redact("postgres://u:secret@h:5433/db?password=secret2")
    assert "secret2" not in redact("postgres://u@h/db?password=secret2")


# -- the API on a server ------------------------------------------------------------------------

def test_api_roundtrip(pg: Callable[..., Mnemos]) -> None:
    db = pg()
    assert db.backend == "postgres" and "schema=" in db.path
    a = db.remember("We chose Stripe for payments", {"topic": "pay", "n": 1})
    b = db.remember("The cat is called Tom", key="cat", type="semantic")
    c = db.remember("What is the cat called?", pinned=True)
    assert (a, b, c) == (1, 2, 3)
    assert db.get(a).metadata == {"topic": "pay", "n": 1}
    assert db.get_by_key("cat").id == b and db.is_pinned(c) and not db.is_pinned(a)
    assert [m.id for m in db.ask("payment provider", 1)] == [a]
    assert [m.id for m in db.ask("cat", 5, types=["semantic"])] == [b]
    assert [m.id for m in db.ask("cat", 5, filter={"topic": "pay"})] == [a]
    db.connect(a, b, "about", 0.5)
    assert [(e.src, e.dst, e.relation, e.weight) for e in db.neighbors(b)] == [(a, b, "about", 0.5)]
    assert set(db.graph().nodes) == {a, b, c}
    db.disconnect(a, b)
    assert db.neighbors(a) == []
    upd = db.update(a, text="We chose Adyen for payments")
    assert upd.text.endswith("Adyen for payments") and upd.id == a
    assert db.upsert("cat", "The cat is called Felix") == b
    assert db.upsert("dog", "The dog is Rex") == 4
    assert db.get(b).text == "The cat is called Felix"
    np.testing.assert_allclose(np.linalg.norm(db.get_vector(a)), 1.0, rtol=1e-5)
    with pytest.raises(DuplicateKeyError):
        db.remember("again", key="dog")
    db.forget(c)
    with pytest.raises(MemoryNotFoundError):
        db.get(c)
    with pytest.raises(MemoryNotFoundError):
        db.forget(c)
    assert db.count() == 3 and len(db) == 3
    assert db.count({"topic": "pay"}) == 1
    assert [m.id for m in db.memories()] == [a, b, 4]  # time order, then id
    assert db.namespaces() == ["default"]
    db.unpin(a)  # not pinned: nothing to do
    assert db.drop_namespace("default") == 3 and db.count() == 0
    st = db.stats()
    assert st["backend"] == "postgres" and st["total"] == 0
    assert db.capacity() == {"store": None, "namespaces": {}}
    doc = db.ingest_document("one two three four five six seven", chunk_size=3, overlap=1,
                             doc_id="d")
    assert len(doc.chunk_ids) >= 2 and db.get_by_key("d#0").id == doc.chunk_ids[0]
    assert db.ingest_document("one two three four five six seven", chunk_size=3, overlap=1,
                              doc_id="d").chunk_ids == doc.chunk_ids  # unchanged: no write


def test_namespace_isolation(pg: Callable[..., Mnemos]) -> None:
    db = pg()
    alice, bob = db.namespace("alice"), db.namespace("bob", read=["alice"])
    a = alice.remember("alice likes green tea")
    b = bob.remember("bob likes black coffee")
    with pytest.raises(MemoryNotFoundError):
        bob.get(a)
    with pytest.raises(MemoryNotFoundError):
        alice.forget(b)
    with pytest.raises(MemoryNotFoundError):
        alice.connect(a, b)
    assert [m.id for m in alice.ask("likes", 5)] == [a]
    assert {m.id for m in bob.ask("likes", 5, namespaces=["alice", "bob"])} == {a, b}
    with pytest.raises(InvalidInputError):
        alice.ask("likes", namespaces=["bob"])
    assert db.namespaces() == ["alice", "bob", "default"]
    # another schema of the same database is another store
    other = pg()
    assert other.namespaces() == ["default"] and other.count() == 0
    assert bob.drop() == 1 and db.namespaces() == ["alice", "default"]


def test_schema_version_row_and_newer_version_refused(pg: Callable[..., Mnemos], pg_url: str) -> None:
    import psycopg

    from mnemos_kv._pg.schema import SCHEMA_VERSION
    name = f"mnemos_tv{os.getpid()}"
    db = pg(name)
    db.remember("x")
    db.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(f'SELECT value FROM "{name}".meta WHERE name = %s',
                           ("schema_version",)).fetchone()
        assert row is not None and int(row[0]) == SCHEMA_VERSION
        conn.execute(f'UPDATE "{name}".meta SET value = %s WHERE name = %s',
                     (str(SCHEMA_VERSION + 1), "schema_version"))
    with pytest.raises(FormatVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        pg(name)


def test_version_4_schema_gets_the_compound_postings(pg: Callable[..., Mnemos], pg_url: str,
                                                     monkeypatch) -> None:
    """Version 5 rebuilds the postings with the tokeniser of lexical index version 5
    (hyphenated compounds as one word too), statistics included."""
    import psycopg

    from mnemos_kv import _lexical
    name = f"mnemos_tc{os.getpid()}"
    monkeypatch.setattr(_lexical, "COMPOUNDS", False)  # a store written before version 5
    db = pg(name)
    hyphen = db.remember("I ran to de-stress")
    db.remember_many(["a quiet day", "the e-mail came"])
    gone = db.remember("to de-stress again")
    db.forget(gone)
    assert db.ask("destress", mode="lexical") == []
    db.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE \"{name}\".meta SET value = '4' WHERE name = 'schema_version'")
        before = conn.execute(f'SELECT docs, total, stotal FROM "{name}".lexstats').fetchall()
    monkeypatch.setattr(_lexical, "COMPOUNDS", True)
    ro = pg(name, readonly=True)  # read as it is
    assert ro.ask("destress", mode="lexical") == []
    ro.close()
    db = pg(name)
    assert [m.id for m in db.ask("destress", mode="lexical")] == [hyphen]
    assert len(db.ask("email", mode="lexical")) == 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        after = conn.execute(f'SELECT docs, total, stotal FROM "{name}".lexstats').fetchall()
        terms = conn.execute(f'SELECT DISTINCT id FROM "{name}".postings').fetchall()
    assert [a[0] for a in after] == [b[0] for b in before] == [3]
    assert after[0][1] == before[0][1] + 2 and after[0][2] == before[0][2] + 2  # the two compounds
    assert sorted(int(t[0]) for t in terms) == sorted(m.id for m in db.memories())


def test_version_1_schema_is_upgraded_on_a_read_write_open(pg: Callable[..., Mnemos],
                                                           pg_url: str) -> None:
    """Version 1 (before capacity was enforced and filters ran in SQL) has no
    ``evictions`` table and no ``metaj`` column: a read-only open reads it as it is (no
    eviction notes, filters in Python), a read-write open adds both (``metaj`` of every
    memory written)."""
    import psycopg

    from mnemos_kv._pg.schema import SCHEMA_VERSION
    name = f"mnemos_tu{os.getpid()}"
    db = pg(name)
    mid = db.remember("x", {"n": 1})
    gone = db.remember("z")
    db.forget(gone)
    db.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{name}".evictions')
        conn.execute(f'ALTER TABLE "{name}".memories DROP COLUMN metaj')  # and its indexes
        conn.execute(f'DROP INDEX "{name}".memories_ns_type, "{name}".memories_type')
        conn.execute(f"UPDATE \"{name}\".meta SET value = '1' WHERE name = 'schema_version'")
    ro = pg(name, readonly=True)
    assert ro.stats()["schema_version"] == 1 and ro.explain_eviction(mid)["status"] == "live"
    assert ro.explain_eviction(gone)["status"] == "gone"
    assert ro.count({"n": {"$gte": 1}}) == 1 and [m.id for m in ro.memories(filter={"n": 1})] == [mid]
    ro.close()
    db = pg(name)
    assert db.stats()["schema_version"] == SCHEMA_VERSION == 5
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute(f'SELECT metaj FROM "{name}".memories').fetchall() == [({"n": 1},)]
    assert db.count({"n": {"$gte": 1}}) == 1 and [m.id for m in db.memories(filter={"n": 1})] == [mid]
    db.set_capacity(1)
    db.remember("y")
    assert db.explain_eviction(mid)["status"] == "evicted"


def test_open_checks_embedder_and_readonly(pg: Callable[..., Mnemos]) -> None:
    from mnemos_kv import HashingEmbedder
    name = f"mnemos_te{os.getpid()}"
    pg(name).remember("hello")
    with pytest.raises(EmbedderMismatchError):
        pg(name, embedder=HashingEmbedder(dim=64))
    ro = pg(name, readonly=True)
    assert ro.get(1).text == "hello"
    with pytest.raises(ReadOnlyError):
        ro.remember("no")


@pytest.mark.parametrize("call", [
    lambda db: db.compact(), lambda db: db.verify(), lambda db: db.dump(os.devnull),
])
def test_embedded_only_calls_raise_unsupported(pg: Callable[..., Mnemos], call: Any) -> None:
    db = pg()
    db.remember("x", {"a": 1})
    with pytest.raises(UnsupportedError, match="PostgreSQL"):
        call(db)
    assert db.count() == 1


# -- equal to the embedded store ----------------------------------------------------------------

WORDS = ("alpha beta gamma delta cat dog stripe payment yoga paint october travel paris rome "
         "tea coffee").split()


def workload(db: Mnemos, seed: int = 1) -> list[int]:
    """The same ops on any store (every request kind the engines share)."""
    rng = random.Random(seed)
    ids = []
    for i in range(60):
        text = " ".join(rng.choice(WORDS) for _ in range(6)) + ("?" if i % 7 == 0 else "")
        ids.append(db.remember(text, {"i": i, "g": i % 3}, type=("episodic", "semantic")[i % 2],
                               timestamp=1_600_000_000 + i * 3600))
    other = db.namespace("other")
    other.remember_many(["other cat", "other dog tea"])
    db.connect(ids[0], ids[5], "rel", 0.5)
    db.connect(ids[5], ids[9])
    db.forget(ids[3])
    db.update(ids[4], text="changed alpha yoga", metadata={"g": 9})
    db.upsert("k1", "keyed tea coffee")
    db.upsert("k1", "keyed tea coffee and cake")
    db.pin(ids[7])
    with db.batch() as b:
        p = b.remember("batch paris rome", {"g": 5})
        b.connect(p, ids[10])
        b.forget(ids[11])
        b.forget_where({"g": 5})  # the memory remembered just before, in the same batch
    assert db.forget_where({"$and": [{"g": 2}, {"i": {"$lt": 20}}]}) == 5  # 11 is gone
    extra = db.remember_many([f"bulk {i} tea" for i in range(70)])
    db.forget_many(extra[::-1][:66])  # the embedded engine's bulk path (>= 64 ids)
    with pytest.raises(MemoryNotFoundError):
        db.forget_many(extra[:68])  # 66 of them are gone: nothing is written
    # speaker labels (the speaker prior) and a caller's reply chain (reply_to edges)
    said = db.remember("Alice: Bob, your garden looks lovely, all those tomatoes and roses.",
                       timestamp=1_600_000_000 + 70 * 3600)
    reply = db.remember("Bob: Tomatoes in my garden, since last spring.",
                        timestamp=1_600_000_000 + 90 * 3600)
    db.connect(reply, said, "reply_to")
    db.remember("Bob: Albertine roses from the Kew nursery, by the garden wall.",  # specifics
                timestamp=1_600_000_000 + 95 * 3600)
    return ids


ASKS = [{}, {"mode": "vector"}, {"mode": "lexical"}, {"use_graph": True}, {"recency_bias": True},
        {"types": ["semantic"]}, {"types": {"semantic": 2.0}}, {"filter": {"g": 1}},
        {"since": 1_600_000_000 + 10 * 3600, "until": 1_600_000_000 + 40 * 3600},
        {"namespaces": ["default", "other"]}]


def answers(db: Mnemos) -> list[list[tuple[int, float]]]:
    out = []
    for q in ("cat payment", "yoga in october?", "paris", "tea coffee alpha",
              "What does Bob grow in the garden, tomatoes or roses?"):
        for kw in ASKS:
            out.append([(m.id, round(float(m.score or 0), 4))
                        for m in db.ask(q, 10, now=1_600_100_000, **kw)])
    return out


def test_same_ops_give_same_ids_digest_and_answers(pg: Callable[..., Mnemos], opener: Any) -> None:
    local, remote = opener(clock=Clock()), pg(clock=Clock())
    assert workload(local) == workload(remote)
    assert remote.state_digest() == local.state_digest()
    assert remote.state_digest(["other"]) == local.state_digest(["other"])
    assert answers(remote) == answers(local)
    assert [m.id for m in remote.memories()] == [m.id for m in local.memories()]


def test_replay_round_trip_local_postgres_local(pg: Callable[..., Mnemos], opener: Any,
                                                tmp_path: Any) -> None:
    local = opener("src.mem", clock=Clock())
    workload(local)
    local.export_replay(str(tmp_path / "a.rpl"))
    remote = pg()
    res = remote.replay(str(tmp_path / "a.rpl"))
    assert res.digest_matches and remote.state_digest() == local.state_digest()
    assert answers(remote) == answers(local)
    remote.export_replay(str(tmp_path / "b.rpl"))
    assert (tmp_path / "b.rpl").read_bytes() == (tmp_path / "a.rpl").read_bytes()
    back = opener("back.mem")
    assert back.replay(str(tmp_path / "b.rpl")).digest_matches
    assert back.state_digest() == local.state_digest()
    assert answers(back) == answers(local)
    # incremental: more writes on the server, exported since the local copy's seq
    seq = back.stats()["seq"]
    remote.remember("written on the server later", timestamp=1_600_500_000)
    remote.forget(1)
    remote.export_replay(str(tmp_path / "inc.rpl"), since_seq=seq)
    assert back.replay(str(tmp_path / "inc.rpl"), resume=True).digest_matches
    assert back.state_digest() == remote.state_digest()
    with pytest.raises(ReplayError):
        remote.replay(str(tmp_path / "inc.rpl"), resume=True)  # already past that seq


def test_replay_of_compacted_store_and_namespace_export(pg: Callable[..., Mnemos], opener: Any,
                                                        tmp_path: Any) -> None:
    local = opener(clock=Clock())
    workload(local)
    local.compact()
    local.remember("after the compaction")
    local.export_replay(str(tmp_path / "c.rpl"))
    remote = pg()
    assert remote.replay(str(tmp_path / "c.rpl")).digest_matches
    assert remote.state_digest() == local.state_digest()
    # the base section is kept: exporting again gives the same file
    remote.export_replay(str(tmp_path / "d.rpl"))
    assert (tmp_path / "d.rpl").read_bytes() == (tmp_path / "c.rpl").read_bytes()
    local.export_replay(str(tmp_path / "l_other.rpl"), namespaces=["other"])
    remote.export_replay(str(tmp_path / "r_other.rpl"), namespaces=["other"])
    assert (tmp_path / "l_other.rpl").read_bytes() == (tmp_path / "r_other.rpl").read_bytes()


def test_two_handles_interleave_without_losing_writes(pg: Callable[..., Mnemos]) -> None:
    name = f"mnemos_ti{os.getpid()}"
    a, b = pg(name), pg(name)
    ids = []
    for i in range(20):
        ids.append((a if i % 2 else b).remember(f"write {i}"))
    assert ids == list(range(1, 21))
    assert a.count() == b.count() == 20
    with b.batch() as bt:
        bt.remember("in a batch")
        bt.remember("also in it")
    assert a.count() == 22 and a.state_digest() == b.state_digest()


def test_readonly_open_of_a_missing_store_and_fast_durability(pg: Callable[..., Mnemos]) -> None:
    from mnemos_kv import NotAStoreError
    with pytest.raises(NotAStoreError, match="read-only"):
        pg(readonly=True)
    fast = pg(durability="fast")
    assert fast.durability == "fast"
    fast.remember("quick")
    fast.sync()
    assert fast.count() == 1


def test_a_dropped_connection_fails_one_call_then_reconnects(pg: Callable[..., Mnemos],
                                                             pg_url: str) -> None:
    import psycopg

    from mnemos_kv import StorageError
    db = pg()
    db.remember("before")
    eng: Any = db._engine
    pids = [eng._w.info.backend_pid, eng._r.info.backend_pid]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for call in (lambda: db.remember("after"), lambda: db.count()):
        try:
            call()
        except StorageError as exc:  # the call that finds the connection gone fails ...
            assert "PostgreSQL error" in str(exc)
            call()  # ... and the next one reconnects
    assert [m.text for m in db.memories()] == ["before", "after"]
