"""`mnemos_kv.migrate` / `mnemos-kv migrate`: a full copy, incremental syncs of an earlier
copy, refusal of a copy that diverged, embedders, namespaces, the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mnemos_kv import (EmbedderMismatchError, HashingEmbedder, InvalidInputError, Mnemos,
                       ReplayError, migrate)
from mnemos_kv.cli import main

from conftest import Clock

QUESTIONS = ["What payment provider did we choose?", "Where is the office moving?",
             "who owns the backend", "deploy days"]


def session(db: Mnemos, capacity: bool = True) -> None:
    """Writes of every kind: namespaces, metadata, keys, edges, an update, an upsert, a
    forget, and (``capacity``) a capacity limit that evicts."""
    shared = db.namespace("shared")
    ids = shared.remember_many([
        "We chose Stripe for payments", "The office moves to Berlin in March",
        {"text": "Bob owns the backend APIs", "metadata": {"team": "core", "n": 3},
         "type": "semantic"},
        "We deploy on Tuesdays and Thursdays"])
    planner = db.namespace("planner")
    p1 = planner.remember("Plan: migrate invoices to Stripe", metadata={"step": 1})
    p2 = planner.remember("Plan: book movers for Berlin", timestamp=1_700_000_000, key="movers")
    planner.connect(p1, p2, relation="next", weight=0.5)
    shared.connect(ids[0], ids[3])
    shared.forget(ids[1])
    shared.update(ids[2], metadata={"team": "platform", "n": 4})
    planner.upsert("movers", "Plan: book movers for Berlin on the 14th")
    db.remember("default namespace note about payments")
    if capacity:
        planner.set_capacity(5)
    for i in range(4):
        planner.remember(f"Plan step {i}: check the invoices again", metadata={"step": 10 + i})


def more(db: Mnemos, tag: str) -> None:
    """More writes after a first copy."""
    shared = db.namespace("shared")
    a = shared.remember(f"{tag}: the churn rate was 3.2 percent", metadata={"q": tag})
    b = shared.remember(f"{tag}: the SOC 2 audit starts on June 2nd")
    shared.connect(a, b, relation="same-meeting")
    shared.update(a, text=f"{tag}: the churn rate was 3.4 percent")
    db.namespace("critic").remember(f"{tag}: the Berlin plan lacks a budget")


def answers(db: Mnemos) -> dict:
    out = {}
    for name in db.namespaces():
        h = db.namespace(name)
        for q in QUESTIONS:
            out[(name, q)] = [(m.id, m.text, m.metadata, round(m.score, 6))
                              for m in h.ask(q, top_k=4)]
    return out


@pytest.fixture
def src(tmp_path) -> str:
    path = str(tmp_path / "src.mem")
    with Mnemos.open(path, clock=Clock()) as db:
        session(db)
    return path


def digest(path: str) -> str:
    with Mnemos.open(path, readonly=True) as db:
        return db.state_digest()


def test_full_copy_has_the_same_state_and_answers(src: str, tmp_path) -> None:
    dst = str(tmp_path / "dst.mem")
    res = migrate(src, dst)
    assert res.mode == "full" and res.since_seq == 0 and res.applied > 0
    with Mnemos.open(src, readonly=True) as a, Mnemos.open(dst, readonly=True) as b:
        assert b.state_digest() == a.state_digest() == res.digest
        assert b.stats()["seq"] == a.stats()["seq"] == res.seq
        assert b.namespaces() == a.namespaces()
        assert answers(b) == answers(a)
        assert b.namespace("planner").capacity() == {"max_entries": 5, "max_bytes": None}


def test_sync_copies_only_what_is_new_and_then_nothing(src: str, tmp_path) -> None:
    dst = str(tmp_path / "dst.mem")
    first = migrate(src, dst)
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
        after = db.stats()["seq"]
    res = migrate(src, dst)
    assert (res.mode, res.since_seq, res.seq) == ("incremental", first.seq, after)
    assert res.applied == after - first.seq  # one frame per new op: nothing copied twice
    assert res.checked == first.seq  # the whole history (shorter than the window) compared
    assert res.digest == digest(src) == digest(dst)
    again = migrate(src, dst)
    assert (again.mode, again.applied, again.seq) == ("up-to-date", 0, after)
    assert digest(dst) == digest(src)
    with Mnemos.open(src, readonly=True) as a, Mnemos.open(dst, readonly=True) as b:
        assert answers(b) == answers(a)


def test_check_window_compares_only_the_last_operations(src: str, tmp_path, monkeypatch) -> None:
    from mnemos_kv import _migrate
    dst = str(tmp_path / "dst.mem")
    first = migrate(src, dst)
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "later")
    monkeypatch.setattr(_migrate, "CHECK_WINDOW", 3)
    res = migrate(src, dst)
    assert res.checked == 3 and res.since_seq == first.seq
    assert res.digest == digest(src)


def test_diverged_copy_is_refused_and_left_unchanged(src: str, tmp_path) -> None:
    dst = str(tmp_path / "dst.mem")
    migrate(src, dst)
    with Mnemos.open(dst, clock=Clock(start=1_767_400_000)) as db:
        db.remember("written to the copy only")
    before = digest(dst)
    # src ahead of the diverged copy
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
    with pytest.raises(ReplayError, match=r"diverged.*seq \d+.*new, empty store"):
        migrate(src, dst)
    assert digest(dst) == before
    # the copy ahead of src
    with Mnemos.open(dst, clock=Clock(start=1_767_500_000)) as db:
        for i in range(10):
            db.remember(f"copy only {i}")
    with pytest.raises(ReplayError, match="beyond src"):
        migrate(src, dst)


def test_same_seq_but_other_state_is_refused(tmp_path) -> None:
    a, b = str(tmp_path / "a.mem"), str(tmp_path / "b.mem")
    with Mnemos.open(a, clock=Clock()) as db:
        db.remember("one thing")
    with Mnemos.open(b, clock=Clock()) as db:
        db.remember("another thing")
    with pytest.raises(ReplayError, match="both at seq 1 but their states differ"):
        migrate(a, b)


def test_src_compacted_after_the_copy_needs_a_new_copy(src: str, tmp_path) -> None:
    dst = str(tmp_path / "dst.mem")
    migrate(src, dst)
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
        db.compact()
        more(db, "week 3")
    with pytest.raises(ReplayError, match="cannot export from there"):
        migrate(src, dst)
    fresh = migrate(src, str(tmp_path / "fresh.mem"))  # a compacted store copies whole
    assert fresh.mode == "full" and fresh.digest == digest(src)


def test_custom_embedder_needs_no_model_and_is_kept(tmp_path) -> None:
    class Toy:
        name, dim = "toy-embedder", 8

        def embed(self, texts):
            out = np.zeros((len(texts), 8), np.float32)
            for i, t in enumerate(texts):
                out[i, len(t) % 8] = 1.0
            return out

    src, dst = str(tmp_path / "src.mem"), str(tmp_path / "dst.mem")
    with Mnemos.open(src, embedder=Toy(), clock=Clock()) as db:
        db.remember_many(["alpha", "beta gamma", "delta"])
    res = migrate(src, dst)  # the CLI has no model either: only the name and dim travel
    assert res.digest == digest(src)
    with Mnemos.open(dst, embedder=Toy(), clock=Clock()) as db:
        db.remember("epsilon")  # the copy embeds with the real embedder
    with pytest.raises(EmbedderMismatchError):
        Mnemos.open(dst, embedder=HashingEmbedder())
    other = str(tmp_path / "other.mem")
    with Mnemos.open(other, clock=Clock()) as db:  # the default embedder
        db.remember("x")
    with pytest.raises(EmbedderMismatchError):
        migrate(src, other)


def test_namespaces_copy_only_those_into_an_empty_store(src: str, tmp_path) -> None:
    dst = str(tmp_path / "dst.mem")
    res = migrate(src, dst, namespaces=["shared"])
    assert res.mode == "full"
    with Mnemos.open(src, readonly=True) as a, Mnemos.open(dst, readonly=True) as b:
        assert b.state_digest(["shared"]) == a.state_digest(["shared"])
        assert b.namespace("shared").count() == a.namespace("shared").count() > 0
        assert b.namespace("planner").count() == 0
    with pytest.raises(InvalidInputError, match="into an empty store only"):
        migrate(src, dst, namespaces=["planner"])


def test_bad_arguments_write_nothing(src: str, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="the same store"):
        migrate(src, os.path.join(os.path.dirname(src), ".", "src.mem"))
    missing = str(tmp_path / "missing.mem")
    with pytest.raises(InvalidInputError, match="is not a store directory"):
        migrate(missing, str(tmp_path / "dst.mem"))
    assert not os.path.exists(tmp_path / "dst.mem")
    with pytest.raises(InvalidInputError, match="src must be"):
        migrate(b"bytes", str(tmp_path / "dst.mem"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="workdir"):
        migrate(src, str(tmp_path / "dst.mem"), workdir=str(tmp_path / "nowhere"))
    with pytest.raises(InvalidInputError, match="progress"):
        migrate(src, str(tmp_path / "dst.mem"), progress=3)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["src.mem"]  # no store made, no file left behind


def test_cli_migrate_copies_then_syncs(src: str, tmp_path, capsys) -> None:
    dst = str(tmp_path / "dst.mem")
    assert main(["migrate", src, dst, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"copied {src} -> {dst}" in out and digest(src) in out
    with Mnemos.open(src, clock=Clock(start=1_767_300_000)) as db:
        more(db, "week 2")
    assert main(["migrate", src, dst, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mode"] == "incremental" and rep["digest"] == digest(src)
    assert main(["migrate", src, dst]) == 0
    assert "up to date" in capsys.readouterr().out
    with Mnemos.open(dst) as db:
        db.remember("diverge")
    assert main(["migrate", src, dst]) == 1
    assert "error: " in capsys.readouterr().err
    assert not [n for n in os.listdir(tmp_path) if n.startswith("mnemos-migrate-")]
