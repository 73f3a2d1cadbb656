"""The mnemos-kv command, tested through the library it wraps."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from mnemos_kv import Mnemos
from mnemos_kv._records import FORMAT_VERSION
from mnemos_kv.cli import main


def test_demo_answers_questions(tmp_path, capsys) -> None:
    assert main(["demo", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Q: What payment provider did we choose?" in out
    first_answer = out.split("Q: What payment provider did we choose?")[1].splitlines()[1]
    assert "Stripe" in first_answer
    assert "same state" in out and "[critic]" in out
    with Mnemos.open(str(tmp_path / "agent.mem")) as db:
        assert db.count() == 10 and db.namespace("critic").count() == 1
        digest = db.state_digest()
    with Mnemos.open(str(tmp_path / "copy.mem")) as copy:
        assert copy.state_digest() == digest


def test_dump_jsonl(tmp_path, capsys) -> None:
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p) as db:
        a = db.remember("alpha", metadata={"b": b"\x00\x01"}, timestamp=10)
        b = db.remember("beta", timestamp=20)
        db.connect(a, b, relation="next")
        db.namespace("other").remember("gamma")
    assert main(["dump", p]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mems = [r for r in rows if r["kind"] == "memory"]
    assert [m["text"] for m in mems] == ["alpha", "beta", "gamma"]
    assert mems[0]["metadata"] == {"b": {"$bytes": "AAE="}}
    assert [r for r in rows if r["kind"] == "edge"] == [
        {"kind": "edge", "namespace": "default", "src": a, "dst": b, "relation": "next", "weight": 1.0}]
    assert main(["dump", p, "--namespace", "other", "--vectors"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mems = [r for r in rows if r["kind"] == "memory"]
    assert len(mems) == 1 and len(base64.b64decode(mems[0]["vector_b64"])) == 4 * 512
    assert [r["kind"] for r in rows] == ["store", "namespace", "memory"]


def test_stats_json_and_text(tmp_path, capsys) -> None:
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p) as db:
        db.remember_many(["a", "b"])
        db.namespace("x").remember("c")
    assert main(["stats", p, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["namespaces"] == {"default": {"count": 2}, "x": {"count": 1}}
    assert st["format_version"] == FORMAT_VERSION and "data.mdb" in st["files"]
    assert main(["stats", p]) == 0
    assert "default" in capsys.readouterr().out


def test_errors_exit_nonzero_with_message(tmp_path, capsys) -> None:
    assert main(["stats", str(tmp_path / "nope.mem")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_console_entry_runs_as_module(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "mnemos_kv", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mnemos-kv ")
