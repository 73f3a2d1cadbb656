"""Deterministic replay: export, replay elsewhere, same ids, state, vectors and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnemos_kv import (EmbedderMismatchError, FormatVersionError, HashingEmbedder,
                       InvalidInputError, LogCorruptionError, Mnemos, ReplayError)
from mnemos_kv import _records as R
from mnemos_kv._replay import _PREFIX, _parse, iter_ops
from mnemos_kv.cli import main

from conftest import Clock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUESTIONS = ["What payment provider did we choose?", "Where is the office moving?",
             "who owns the backend", "deploy days"]


def agent_session(db: Mnemos) -> dict:
    """A scripted multi-agent run: two namespaces, edges, forgets, a compaction, asks."""
    planner = db.namespace("planner", read=["shared"])
    shared = db.namespace("shared")
    ids = shared.remember_many([
        "We chose Stripe for payments", "The office moves to Berlin in March",
        {"text": "Bob owns the backend APIs", "metadata": {"team": "core"}, "type": "semantic"},
        "We deploy on Tuesdays and Thursdays"])
    p1 = planner.remember("Plan: migrate invoices to Stripe", metadata={"step": 1})
    p2 = planner.remember("Plan: book movers for Berlin", timestamp=1_700_000_000)
    planner.connect(p1, p2, relation="next", weight=0.5)
    shared.connect(ids[0], ids[3])
    shared.forget(ids[1])
    db.remember("default namespace note about payments")
    planner.remember("Plan: ask Bob about API limits", key="plan-3")
    answers = {q: [(h.id, h.namespace, h.score) for h in
                   planner.ask(q, top_k=3, namespaces=["planner", "shared"])] for q in QUESTIONS}
    return {"ids": ids + [p1, p2], "answers": answers}


def _answers(db: Mnemos) -> dict:
    planner = db.namespace("planner", read=["shared"])
    return {q: [(h.id, h.namespace, h.score) for h in
                planner.ask(q, top_k=3, namespaces=["planner", "shared"])] for q in QUESTIONS}


def test_replay_in_new_process_reproduces_everything(tmp_path) -> None:
    src = str(tmp_path / "src.mem")
    with Mnemos.open(src, clock=Clock()) as db:
        run = agent_session(db)
        digest = db.state_digest()
        db.export_replay(str(tmp_path / "run1.log"))
        db.export_replay(str(tmp_path / "run2.log"))
        vectors = {i: db.namespace("planner").get_vector(i).tolist() for i in run["ids"][4:]}
    assert open(tmp_path / "run1.log", "rb").read() == open(tmp_path / "run2.log", "rb").read()
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {ROOT!r})
        from mnemos_kv import Mnemos
        with Mnemos.open({str(tmp_path / 'dst.mem')!r}, clock=lambda: 0.0) as db:
            res = db.replay({str(tmp_path / 'run1.log')!r})
            planner = db.namespace("planner", read=["shared"])
            out = {{"digest": db.state_digest(), "complete": res.complete, "match": res.digest_matches,
                   "answers": {{q: [(h.id, h.namespace, h.score) for h in
                                planner.ask(q, top_k=3, namespaces=["planner", "shared"])]
                               for q in {QUESTIONS!r}}},
                   "vectors": {{str(i): db.namespace("planner").get_vector(i).tolist() for i in {run['ids'][4:]!r}}},
                   "times": [m.created_at for m in planner.memories()]}}
            db.export_replay({str(tmp_path / 'again.log')!r})
        print(json.dumps(out))
    """)
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["digest"] == digest and out["complete"] and out["match"]
    assert {q: [tuple(x) for x in v] for q, v in out["answers"].items()} == run["answers"]
    assert {int(k): v for k, v in out["vectors"].items()} == vectors
    assert out["times"][0] == 1_700_000_000  # logged times, not the replaying clock
    # replaying and exporting again gives the same bytes
    assert open(tmp_path / "again.log", "rb").read() == open(tmp_path / "run1.log", "rb").read()


def test_replay_after_compaction_uses_base_snapshot(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "src.mem"), clock=Clock()) as db:
        agent_session(db)
        db.compact()
        shared = db.namespace("shared")
        later = shared.remember("After compaction we also accept PayPal")
        shared.connect(later, shared.ask("Stripe", top_k=1)[0].id)
        db.compact()
        db.namespace("planner").forget(db.namespace("planner").get_by_key("plan-3").id)
        info = db.export_replay(str(tmp_path / "run.log"))
        digest, answers = db.state_digest(), _answers(db)
        assert info.base_frames > 0
        assert sorted(os.listdir(db.path)).count("log.000003.mlog") == 1
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        res = dst.replay(str(tmp_path / "run.log"))
        assert res.complete and res.digest_matches and dst.state_digest() == digest
        assert _answers(dst) == answers
        assert dst.verify().ok, str(dst.verify())
        dst.export_replay(str(tmp_path / "again.log"))
    assert open(tmp_path / "again.log", "rb").read() == open(tmp_path / "run.log", "rb").read()


def test_next_ids_continue_identically_after_replay(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "a.mem"), clock=Clock()) as a:
        agent_session(a)
        a.export_replay(str(tmp_path / "r.log"))
        with Mnemos.open(str(tmp_path / "b.mem"), clock=Clock()) as b:
            b.replay(str(tmp_path / "r.log"))
            assert a.remember("one more", timestamp=5) == b.remember("one more", timestamp=5)
            assert a.namespace("x").remember("new ns", timestamp=6) == \
                b.namespace("x").remember("new ns", timestamp=6)
            assert a.state_digest() != "" and a.state_digest() == b.state_digest()


def test_incremental_export_and_resume(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "src.mem"), clock=Clock()) as db:
        db.remember_many(["a", "b", "c"])
        full = db.export_replay(str(tmp_path / "part1.log"))
        mark = db.stats()["seq"]
        d = db.remember("d")
        db.connect(1, d)
        db.forget(2)
        db.export_replay(str(tmp_path / "part2.log"), since_seq=mark)
        digest = db.state_digest()
        with pytest.raises(InvalidInputError, match="beyond"):
            db.export_replay(str(tmp_path / "x.log"), since_seq=10_000)
    assert full.last_seq == mark
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        with pytest.raises(ReplayError, match="continues from seq"):
            dst.replay(str(tmp_path / "part2.log"), resume=True)
        dst.replay(str(tmp_path / "part1.log"))
        with pytest.raises(ReplayError, match="not empty"):
            dst.replay(str(tmp_path / "part2.log"))
        res = dst.replay(str(tmp_path / "part2.log"), resume=True)
        assert res.digest_matches and dst.state_digest() == digest


def test_since_seq_before_compaction_is_refused(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "src.mem")) as db:
        db.remember_many(["a", "b"])
        db.compact()
        with pytest.raises(InvalidInputError, match="compacted"):
            db.export_replay(str(tmp_path / "x.log"), since_seq=1)


def test_namespace_filtered_export(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "src.mem"), clock=Clock()) as db:
        agent_session(db)
        db.compact()
        db.namespace("shared").remember("late shared memory")
        db.namespace("planner").remember("late planner memory")
        db.export_replay(str(tmp_path / "shared.log"), namespaces=["shared"])
        want = db.state_digest(["shared"])
        shared_ids = [m.id for m in db.namespace("shared").memories()]
    ops = list(iter_ops(str(tmp_path / "shared.log")))
    assert all(op.get("name", "shared") == "shared" for _s, _q, op in ops if op["op"] == "ns")
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        res = dst.replay(str(tmp_path / "shared.log"))
        assert res.digest_matches and dst.state_digest(["shared"]) == want
        assert dst.namespaces() == ["default", "shared"]
        assert [m.id for m in dst.namespace("shared").memories()] == shared_ids
        assert dst.namespace("planner").count() == 0


def _session_file(tmp_path) -> tuple[str, str]:
    with Mnemos.open(str(tmp_path / "src.mem"), clock=Clock()) as db:
        agent_session(db)
        db.export_replay(str(tmp_path / "run.log"))
        return str(tmp_path / "run.log"), db.state_digest()


def _frame_offsets(path: str) -> list[int]:
    parsed = _parse(path)
    return [o for o, _p in parsed.base] + [o for o, _s, _p in parsed.log]


def test_truncation_at_every_frame_boundary_and_mid_frame(tmp_path) -> None:
    path, digest = _session_file(tmp_path)
    data = open(path, "rb").read()
    offsets = _frame_offsets(path)
    cuts = set(offsets) | {o + 9 for o in offsets} | {len(data) - 1, len(data) - 20, 10}
    with Mnemos.open(str(tmp_path / "src.mem")) as src:
        source_mems = {(m.namespace, m.id, m.text, m.created_at) for ns in ["default", "planner", "shared"]
                       for m in (src if ns == "default" else src.namespace(ns)).memories()}
        source_mems |= {("shared", 2, "The office moves to Berlin in March", 1767225600.0)}  # forgotten later
    for i, cut in enumerate(sorted(cuts)):
        bad = str(tmp_path / f"cut{i}.log")
        open(bad, "wb").write(data[:cut])
        store = str(tmp_path / f"t{i}.mem")
        with Mnemos.open(store) as dst:
            with pytest.raises(LogCorruptionError) as ei:
                dst.replay(bad)
            assert ei.value.offset >= 0 and "byte" in str(ei.value)
            assert dst.stats()["seq"] == 0 and dst.count() == 0  # strict: nothing applied
            if cut < offsets[0]:  # the header itself is cut: nothing can be applied
                with pytest.raises(LogCorruptionError):
                    dst.replay(bad, strict=False)
                continue
            res = dst.replay(bad, strict=False)
            assert not res.complete and res.stopped_at is not None
            assert res.applied <= len(offsets)
            assert dst.verify().ok
            # the applied part is a prefix of the source's operations: never a wrong state
            got = {(m.namespace, m.id, m.text, m.created_at) for ns in dst.namespaces()
                   for m in (dst if ns == "default" else dst.namespace(ns)).memories()}
            assert got <= source_mems
            assert dst.stats()["seq"] <= len(offsets)
    assert digest


def test_flipped_bytes_are_detected(tmp_path) -> None:
    path, _ = _session_file(tmp_path)
    data = bytearray(open(path, "rb").read())
    parsed = _parse(path)
    hdr_end = _PREFIX.size + _PREFIX.unpack_from(data)[3]
    rng = np.random.default_rng(5)
    positions = sorted(set(rng.integers(hdr_end, len(data), 40).tolist()))
    for i, pos in enumerate(positions):
        bad = bytearray(data)
        bad[pos] ^= 0x20
        p = str(tmp_path / f"flip{i}.log")
        open(p, "wb").write(bytes(bad))
        with Mnemos.open(str(tmp_path / f"f{i}.mem")) as dst:
            with pytest.raises((LogCorruptionError, ReplayError)):
                dst.replay(p)
            assert dst.stats()["seq"] == 0
    assert parsed.error is None


def test_newer_format_and_other_embedder_are_refused(tmp_path) -> None:
    path, _ = _session_file(tmp_path)
    data = open(path, "rb").read()
    magic, blen, llen, hlen = _PREFIX.unpack_from(data)
    hdr = R.decode(data[_PREFIX.size:_PREFIX.size + hlen])
    for field, value, exc in (("version", 99, FormatVersionError),
                              ("format_version", 99, FormatVersionError),
                              ("embedder", "other-model", EmbedderMismatchError)):
        h2 = dict(hdr, **{field: value})
        enc = R.encode(h2)
        newer = _PREFIX.pack(magic, blen, llen, len(enc)) + enc + data[_PREFIX.size + hlen:]
        p = str(tmp_path / f"{field}.log")
        open(p, "wb").write(newer)
        with Mnemos.open(str(tmp_path / f"{field}.mem")) as dst:
            with pytest.raises(exc):
                dst.replay(p)
            assert dst.stats()["seq"] == 0
    with Mnemos.open(str(tmp_path / "small.mem"), embedder=HashingEmbedder(dim=64)) as dst:
        with pytest.raises(EmbedderMismatchError, match="mnemos-hash-v1"):
            dst.replay(path)
    open(tmp_path / "junk.log", "wb").write(b"not a replay file at all, definitely")
    with Mnemos.open(str(tmp_path / "j.mem")) as dst:
        with pytest.raises(LogCorruptionError, match="not a mnemos-kv replay file"):
            dst.replay(str(tmp_path / "junk.log"))
        with pytest.raises(InvalidInputError, match="does not exist"):
            dst.replay(str(tmp_path / "missing.log"))


def test_every_mutation_is_logged(tmp_path) -> None:
    with Mnemos.open(str(tmp_path / "s.mem")) as db:
        a, b = db.namespace("n").remember_many(["a", "b"])
        db.namespace("n").connect(a, b)
        db.namespace("n").disconnect(a, b)
        db.namespace("n").forget(a)
        db.compact()
        db.export_replay(str(tmp_path / "r.log"))
    kinds = [op["op"] for _sec, _s, op in iter_ops(str(tmp_path / "r.log"))]
    assert kinds == ["ns", "mem", "base"]  # after compaction: the base snapshot
    with Mnemos.open(str(tmp_path / "t.mem")) as db:
        a, b = db.namespace("n").remember_many(["a", "b"])
        db.namespace("n").connect(a, b)
        db.namespace("n").disconnect(a, b)
        db.namespace("n").forget(a)
        db.export_replay(str(tmp_path / "r2.log"))
    kinds = [op["op"] for _sec, _s, op in iter_ops(str(tmp_path / "r2.log"))]
    assert kinds == ["ns", "mem", "mem", "link", "unlink", "forget"]


def test_open_does_not_read_the_log(tmp_path) -> None:
    """Startup cost must not grow with history: damage deep in the log does not stop open."""
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p) as db:
        db.remember_many([f"m{i}" for i in range(300)])
        db.remember("last")
    from mnemos_kv._log import log_file
    with open(log_file(p, 1), "r+b") as f:
        f.seek(400)
        f.write(b"\xff\xff\xff\xff")
    with Mnemos.open(p) as db:  # opens: the log is only read by export, replay and verify
        assert db.count() == 301
        assert not db.verify().ok
        with pytest.raises(LogCorruptionError):
            db.export_replay(str(tmp_path / "x.log"))


def test_cli_export_replay(tmp_path, capsys) -> None:
    src = str(tmp_path / "src.mem")
    with Mnemos.open(src, clock=Clock()) as db:
        agent_session(db)
        digest = db.state_digest()
    assert main(["export-replay", src, str(tmp_path / "r.log")]) == 0
    assert "digest " + digest in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "dst.mem"), str(tmp_path / "r.log")]) == 0
    assert "matches the source" in capsys.readouterr().out
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        assert dst.state_digest() == digest
    data = open(tmp_path / "r.log", "rb").read()
    open(tmp_path / "cut.log", "wb").write(data[: len(data) - 30])
    assert main(["replay", str(tmp_path / "d2.mem"), str(tmp_path / "cut.log")]) == 1
    assert "byte" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "d3.mem"), str(tmp_path / "cut.log"), "--lenient"]) == 1
    assert "stopped at byte" in capsys.readouterr().out


def test_replay_grows_vector_files(tmp_path) -> None:
    """More memories than the initial file capacity (1,024 rows), with a compaction between."""
    with Mnemos.open(str(tmp_path / "src.mem")) as db:
        ids = db.remember_many([f"memory {i}" for i in range(1500)])
        db.forget_many(ids[:100])
        db.compact()
        db.remember_many([f"later {i}" for i in range(1200)])
        db.export_replay(str(tmp_path / "r.log"))
        digest = db.state_digest()
    with Mnemos.open(str(tmp_path / "dst.mem")) as dst:
        assert dst.replay(str(tmp_path / "r.log")).digest_matches
        assert dst.state_digest() == digest and dst.count() == 2600
        assert dst.verify().ok


def test_chunked_log_reading_matches_whole_reads(tmp_path, monkeypatch) -> None:
    """Logs are read in bounded chunks: frames cut by chunk ends, frames larger than a
    chunk, and a file shorter than its committed end are all handled."""
    from mnemos_kv import _log
    with Mnemos.open(str(tmp_path / "s.mem")) as db:
        db.remember_many([f"memory {i} " + "x" * (i * 37 % 900) for i in range(300)])
        db.remember("big " * 20000)  # one frame far larger than the chunk below
        whole = [(o, s) for o, s, _p in db._engine.log.frames(32, db._engine.read_state().log_end)]
        monkeypatch.setattr(_log, "CHUNK", 1000)
        chunked = [(o, s) for o, s, _p in db._engine.log.frames(32, db._engine.read_state().log_end)]
        assert chunked == whole and len(whole) == 301
        assert db.verify().ok
        db.export_replay(str(tmp_path / "a.replay"))
        monkeypatch.setattr(_log, "CHUNK", 8 << 20)
        db.export_replay(str(tmp_path / "b.replay"))
        end = db._engine.read_state().log_end
        path = db._engine.log.path
    assert open(tmp_path / "a.replay", "rb").read() == open(tmp_path / "b.replay", "rb").read()
    os.truncate(path, end - 100)
    monkeypatch.setattr(_log, "CHUNK", 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(LogCorruptionError, match="truncated"):
            list(_log.iter_file_frames(fd, 32, end, path=path))
    finally:
        os.close(fd)
