"""The CLI's ask/get/forget/namespaces/load commands, dump -> load, and progress output."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from mnemos_kv import InvalidInputError, Mnemos, ReplayError
from mnemos_kv._progress import Reporter
from mnemos_kv.cli import main


@pytest.fixture
def store(tmp_path) -> str:
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p) as db:
        a = db.remember("we pay with Stripe", {"n": 1, "tag": "billing"}, key="pay")
        b = db.remember("the office moves to Berlin", {"n": 2})
        db.connect(a, b, "next")
        db.namespace("notes").remember("Berlin has good coffee", {"n": 3})
    return p


def test_ask_text_json_filter_namespace(store, capsys) -> None:
    assert main(["ask", store, "Berlin", "--top-k", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "#2" in out[0] and "[default]" in out[0]
    assert main(["ask", store, "Berlin", "--namespace", "notes", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["text"] for h in hits] == ["Berlin has good coffee"] and hits[0]["namespace"] == "notes"
    assert main(["ask", store, "Stripe Berlin", "--filter", '{"n": {"$gt": 1}}', "--json"]) == 0
    assert [h["id"] for h in json.loads(capsys.readouterr().out)] == [2]
    assert main(["ask", store, "x", "--filter", "{not json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnemos-kv: error: --filter is not valid JSON") and "Traceback" not in err
    assert main(["ask", store, "x", "--filter", '{"n": {"$bogus": 1}}']) == 1
    assert "$bogus" in capsys.readouterr().err


def test_get_and_namespaces(store, capsys) -> None:
    assert main(["get", store, "1", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["text"], m["key"], m["metadata"]) == ("we pay with Stripe", "pay", {"n": 1, "tag": "billing"})
    assert main(["get", store, "3"]) == 0  # found in whichever namespace holds it
    out = capsys.readouterr().out
    assert "[notes]" in out and "Berlin has good coffee" in out and "metadata" in out
    assert main(["get", store, "3", "--namespace", "default"]) == 1
    assert "no memory with id 3 in namespace 'default'" in capsys.readouterr().err
    assert main(["namespaces", store]) == 0
    assert capsys.readouterr().out.splitlines() == ["default\t2", "notes\t1"]
    assert main(["namespaces", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"default": 2, "notes": 1}


def test_forget_is_checked_before_anything_is_deleted(store, capsys) -> None:
    assert main(["forget", store, "1", "99"]) == 1
    assert "no memory with id 99" in capsys.readouterr().err
    with Mnemos.open(store) as db:
        assert db.count() == 2
    assert main(["forget", store, "1", "3"]) == 0
    assert capsys.readouterr().out.strip() == "forgot 2 memories"
    with Mnemos.open(store) as db:
        assert db.count() == 1 and db.namespace("notes").count() == 0 and db.neighbors(2) == []


def _rich_store(path: str) -> Mnemos:
    db = Mnemos.open(path, clock=iter(range(1_800_000_000, 1_900_000_000)).__next__)
    ids = db.remember_many([{"text": f"memory {i} about topic {i % 7}",
                             "metadata": {"i": i, "raw": b"\x00\xff", "nested": {"$bytes": "x"}},
                             "type": ("episodic", "semantic", "procedural")[i % 3],
                             "key": f"k{i}" if i % 4 == 0 else None} for i in range(60)])
    db.connect(ids[0], ids[1], "next", 0.5)
    db.connect(ids[1], ids[0], "back")
    db.pin(ids[2])
    db.update(ids[3], text="memory three, rewritten")
    db.upsert("k0", "keyed memory replaced", {"v": 2})
    db.forget(ids[5])
    ns = db.namespace("agent-b")
    x = ns.remember_many(["b one", "b two", "b three"])
    ns.connect(x[0], x[2])
    ns.set_capacity(10)
    db.namespace("gone").remember("dropped later")
    db.drop_namespace("gone")
    db.set_capacity(max_bytes=10_000_000)
    cap = db.namespace("capped")
    cap.set_capacity(2)
    cap.remember_many(["c1", "c2", "c3"])  # one eviction: an evicted counter
    return db


@pytest.mark.parametrize("vectors", [True, False])
def test_dump_then_load_gives_the_same_digest(tmp_path, capsys, vectors: bool) -> None:
    src = _rich_store(str(tmp_path / "src.mem"))
    digest = src.state_digest()
    src.close()
    args = ["dump", str(tmp_path / "src.mem")] + (["--vectors"] if vectors else [])
    assert main(args) == 0
    dump = tmp_path / "d.jsonl"
    dump.write_text(capsys.readouterr().out)
    assert main(["load", str(tmp_path / "dst.mem"), str(dump)]) == 0
    out = capsys.readouterr().out
    assert f"digest {digest}" in out and "loaded 64 memories" in out
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst, Mnemos.open(str(tmp_path / "src.mem")) as src:
        assert dst.state_digest() == digest
        assert dst.verify().ok
        assert dst.get(4).metadata == src.get(4).metadata  # bytes and a $bytes-like dict
        assert dst.is_pinned(3) and dst.get(4).updated_at == src.get(4).updated_at
        assert [(h.id, h.score) for h in dst.ask("topic 3", top_k=8)] == \
            [(h.id, h.score) for h in src.ask("topic 3", top_k=8)]
        assert dst.capacity() == src.capacity() and dst.stats()["evicted"] == 1
        assert dst.remember("next one") == src.remember("next one")  # the same counters
    # loading into a store that is not empty is refused
    assert main(["load", str(tmp_path / "dst.mem"), str(dump)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_load_from_stdin_and_dump_to_file_api(tmp_path, monkeypatch, capsys) -> None:
    src = _rich_store(str(tmp_path / "src.mem"))
    src.dump(str(tmp_path / "d.jsonl"), vectors=True)
    digest = src.state_digest()
    src.close()
    monkeypatch.setattr(sys, "stdin", io.StringIO((tmp_path / "d.jsonl").read_text()))
    assert main(["load", str(tmp_path / "dst.mem"), "-"]) == 0
    assert digest in capsys.readouterr().out


@pytest.mark.parametrize("lines, message", [
    ([], "no store line"),
    (['{"kind": "memory"}'], "starts with its store line"),
    (["not json"], "not JSON"),
    (['{"kind": "store", "version": 99}'], "dump version"),
    (['{"kind": "store", "version": 1, "seq": 1, "next_id": 2, "next_ns": 1}',
      '{"kind": "memory", "id": 1, "namespace": "default", "text": "", "ts": 0}'], "text"),
    (['{"kind": "store", "version": 1, "seq": 1, "next_id": 2, "next_ns": 1}',
      '{"kind": "memory", "id": 1, "namespace": "nowhere", "text": "x", "ts": 0}'], "no namespace line"),
    (['{"kind": "store", "version": 1, "seq": 1, "next_id": 2, "next_ns": 1}',
      '{"kind": "edge", "src": 1, "dst": 2, "relation": "r", "weight": 1}'], "not in the dump"),
    (['{"kind": "store", "version": 1, "seq": 1, "next_id": 2, "next_ns": 1}',
      '{"kind": "thing"}'], "unknown kind"),
])
def test_malformed_dumps_write_nothing(tmp_path, lines, message) -> None:
    with Mnemos.open(str(tmp_path / "t.mem")) as db:
        with pytest.raises(InvalidInputError) as exc:
            db.load(lines)
        assert message in str(exc.value)
        assert db.stats()["seq"] == 0 and db.count() == 0


def test_load_refuses_a_non_empty_store(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "t.mem")) as db:
        db.remember("x")
        with pytest.raises(ReplayError):
            db.load(['{"kind": "store", "version": 1, "seq": 1, "next_id": 2, "next_ns": 1}'])


def test_progress_lines_on_stderr_for_long_commands(tmp_path, capsys, monkeypatch) -> None:
    from mnemos_kv import _progress
    monkeypatch.setattr(_progress, "EVERY", 500)  # report every 500 items (default 10,000)
    monkeypatch.setattr(_progress, "EMBED_CHUNK", 500)
    p = str(tmp_path / "big.mem")
    with Mnemos.open(p) as db:
        db.remember_many([f"memory {i}" for i in range(1200)])
    assert main(["dump", p]) == 0
    cap = capsys.readouterr()
    assert "memories: 500/1200" in cap.err and "memories: 1200/1200" in cap.err
    (tmp_path / "d.jsonl").write_text(cap.out)
    assert main(["load", str(tmp_path / "b.mem"), str(tmp_path / "d.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "embed: 500/1200" in err and "restore: " in err
    assert main(["verify", p]) == 0
    assert "records: 500/1200" in capsys.readouterr().err
    assert main(["verify", p, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["export-replay", p, str(tmp_path / "r.rpl")]) == 0
    assert "log: 1000/1200" in capsys.readouterr().err  # one frame per memory
    assert main(["replay", str(tmp_path / "r.mem"), str(tmp_path / "r.rpl")]) == 0
    assert "replay: 1200/1200" in capsys.readouterr().err


def test_reporter_plain_lines_and_callbacks(store) -> None:
    buf = io.StringIO()
    rep = Reporter(stream=buf, min_total=0)
    for i in range(0, 101, 5):
        rep("work", i, 100)
    rep("next", 1, 1)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "  work: 0/100" and lines[-2] == "  work: 100/100" and lines[-1] == "  next: 1/1"
    assert len(lines) == 12  # one per tenth, not per call
    calls: list[tuple] = []
    with Mnemos.open(store) as db:
        db.remember_many(["a", "b", "c"], progress=lambda *a: calls.append(a))
        doc_calls: list[tuple] = []
        db.ingest_document("word " * 100, chunk_size=10, overlap=0,
                           progress=lambda *a: doc_calls.append(a))
        with pytest.raises(InvalidInputError):
            db.remember_many(["x"], progress="yes")
    assert calls == [("embed", 3, 3), ("write", 0, 1), ("write", 1, 1)]
    assert doc_calls == [("embed", 11, 11), ("write", 0, 1), ("write", 1, 1)]


def test_remember_many_progress_chunks_give_the_same_vectors(tmp_path) -> None:
    texts = [f"text number {i}" for i in range(2500)]
    with Mnemos.open(str(tmp_path / "a.mem")) as a, Mnemos.open(str(tmp_path / "b.mem")) as b:
        seen: list[tuple] = []
        ids = a.remember_many(texts, progress=lambda *x: seen.append(x))
        b.remember_many(texts)
        assert seen[:3] == [("embed", 1024, 2500), ("embed", 2048, 2500), ("embed", 2500, 2500)]
        assert np.array_equal(a.get_vector(ids[-1]), b.get_vector(ids[-1]))


def test_a_progress_callback_that_raises_before_the_commit_writes_nothing(tmp_path) -> None:
    def stop(phase, done, total):
        if phase == "embed":
            raise RuntimeError("cancelled by the user")
    with Mnemos.open(str(tmp_path / "a.mem")) as db:
        with pytest.raises(RuntimeError):
            db.remember_many(["one", "two"], progress=stop)
        assert db.count() == 0 and db.stats()["seq"] == 0
