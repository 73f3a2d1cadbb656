"""The reference memory server's knowledge graph stored as memories (no MCP SDK needed):
import/export of ``memory.jsonl``, races between writers, and the optional extra staying
optional."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from mnemos_kv import Mnemos
from mnemos_kv._kgraph import KnowledgeGraph, read_jsonl

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "memory.jsonl")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fixture_is_in_the_reference_line_format() -> None:
    entities, relations, skipped = read_jsonl(FIXTURE)
    assert (len(entities), len(relations), skipped) == (5, 5, [])
    first = open(FIXTURE, encoding="utf-8").readline()
    assert first.startswith('{"type":"entity","name":"John_Smith","entityType":"person","observations":[')


def test_import_then_export_is_byte_identical(db: Mnemos, tmp_path) -> None:
    kg = KnowledgeGraph(db.namespace("default"))
    rep = kg.import_jsonl(FIXTURE)
    assert (rep.entities, rep.observations, rep.relations) == (5, 9, 5)
    out = tmp_path / "out.jsonl"
    assert kg.export_jsonl(out) == 10
    assert out.read_bytes() == open(FIXTURE, "rb").read()


def test_import_merges_and_reports_bad_lines(db: Mnemos, tmp_path) -> None:
    kg = KnowledgeGraph(db.namespace("default"))
    kg.create_entities([{"name": "A", "entityType": "t", "observations": ["old"]}])
    f = tmp_path / "memory.jsonl"
    f.write_text("\n".join([
        '{"type":"entity","name":"A","entityType":"t","observations":["old","new"]}',
        'not json',
        '{"type":"entity","name":"B","entityType":"t"}',
        '{"type":"entity","name":"C","entityType":"t","observations":["c"]}',
        '{"type":"entity","name":"C","entityType":"t","observations":["c2"]}',
        '{"type":"relation","from":"A","to":"C","relationType":"knows"}',
        '{"type":"relation","from":"A","to":"Nowhere","relationType":"knows"}',
        '{"type":"thing"}', ""]), encoding="utf-8")
    rep = kg.import_jsonl(f)
    assert (rep.entities, rep.observations, rep.relations) == (1, 3, 1)
    assert len(rep.skipped_lines) == 3 and rep.skipped_lines[0].startswith("line 2: not JSON")
    assert rep.dangling_relations == [{"from": "A", "to": "Nowhere", "relationType": "knows"}]
    g = kg.read_graph()
    assert g["entities"] == [{"name": "A", "entityType": "t", "observations": ["old", "new"]},
                             {"name": "C", "entityType": "t", "observations": ["c", "c2"]}]
    assert g["relations"] == [{"from": "A", "to": "C", "relationType": "knows"}]


def test_racing_writers_make_one_entity_and_no_duplicate_observation(store_path: str) -> None:
    n = 6
    dbs = [Mnemos.open(store_path) for _ in range(n)]
    barrier = threading.Barrier(n)
    created: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        kg = KnowledgeGraph(dbs[i].namespace("default"))
        try:
            barrier.wait()
            for r in range(5):
                out = kg.create_entities([{"name": "hub", "entityType": "t", "observations": ["same"]},
                                          {"name": f"e{i}-{r}", "entityType": "t", "observations": []}])
                created.append(sum(e["name"] == "hub" for e in out))
                kg.add_observations([{"entityName": "hub", "contents": ["same", f"from {i}", "shared"]}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert sum(created) == 1  # exactly one writer created the hub
        g = KnowledgeGraph(dbs[0].namespace("default")).read_graph()
        hub = [e for e in g["entities"] if e["name"] == "hub"][0]
        assert sorted(hub["observations"]) == sorted(["same", "shared", *(f"from {i}" for i in range(n))])
        assert g["total"] == 1 + 5 * n
        assert dbs[0].verify().ok
    finally:
        for d in dbs:
            d.close()


def test_core_import_and_cli_parser_do_not_import_the_mcp_sdk() -> None:
    code = ("import sys, mnemos_kv, mnemos_kv.cli; mnemos_kv.cli.build_parser(); "
            "import mnemos_kv.mcp; "
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'mcp_types', "
            "'jsonschema', 'anyio', 'uvicorn', 'starlette'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    assert out.stdout.strip() == "[]"


def test_a_write_between_reads_and_commit_is_retried_not_duplicated(db: Mnemos, monkeypatch) -> None:
    """Another writer creates the same entity (and observation) after this call's reads:
    the commit is refused by the key, the call re-reads and skips what now exists."""
    kg = KnowledgeGraph(db.namespace("default"))
    other = KnowledgeGraph(db.namespace("default"))
    real = KnowledgeGraph._entity
    state = {"interfered": 0}

    def racing_entity(self, name, handle=None):  # type: ignore[no-untyped-def]
        found = real(self, name, handle)
        if self is kg and found is None and name == "hub" and not state["interfered"]:
            state["interfered"] += 1
            other.create_entities([{"name": "hub", "entityType": "t", "observations": ["x"]}])
        return found

    monkeypatch.setattr(KnowledgeGraph, "_entity", racing_entity)
    out = kg.create_entities([{"name": "hub", "entityType": "t", "observations": ["x"]},
                              {"name": "mine", "entityType": "t", "observations": []}])
    assert state["interfered"] == 1
    assert out == [{"name": "mine", "entityType": "t", "observations": []}]
    assert [e["name"] for e in kg.read_graph()["entities"]] == ["hub", "mine"]
    assert db.count() == 3  # hub, its observation, mine: nothing written twice


def test_unknown_entity_is_an_error_without_retries(db: Mnemos, monkeypatch) -> None:
    import pytest

    from mnemos_kv import MemoryNotFoundError
    kg = KnowledgeGraph(db.namespace("default"))
    calls = {"n": 0}
    real = KnowledgeGraph._require

    def counting(self, name):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(self, name)

    monkeypatch.setattr(KnowledgeGraph, "_require", counting)
    with pytest.raises(MemoryNotFoundError, match="Entity with name Ghost not found"):
        kg.add_observations([{"entityName": "Ghost", "contents": ["boo"]}])
    assert calls["n"] == 1


def test_mcp_command_reports_a_missing_extra_or_model_cleanly(tmp_path) -> None:
    """A refused start is one error line on stderr and exit status 1 (no traceback)."""
    code = ("import sys; from mnemos_kv.cli import main; "
            f"sys.exit(main(['mcp', {str(tmp_path / 's.mem')!r}, '--http', 'nonsense']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "error:" in out.stderr and ("--http takes HOST:PORT" in out.stderr or "mnemos-kv[mcp]" in out.stderr)
    assert not (tmp_path / "s.mem").exists()  # refused before the store was touched


def test_mcp_cli_arguments_and_import_into_a_namespace(tmp_path, capsys) -> None:
    from mnemos_kv.cli import build_parser, main
    a = build_parser().parse_args(["mcp", "team.mem", "--namespace", "planner", "--read", "shared",
                                   "--read", "docs", "--readonly", "--http", "127.0.0.1:8765"])
    assert (a.path, a.namespace, a.read, a.readonly, a.http, a.embedder) == (
        "team.mem", "planner", ["shared", "docs"], True, "127.0.0.1:8765", None)
    d = build_parser().parse_args(["mcp", "team.mem"])
    assert (d.namespace, d.read, d.readonly, d.http) == ("default", [], False, None)
    path = str(tmp_path / "team.mem")
    assert main(["mcp-import", path, FIXTURE, "--namespace", "imported"]) == 0
    assert "namespace imported): 5 entities, 9 observations, 5 relations" in capsys.readouterr().out
    with Mnemos.open(path, readonly=True) as db:
        assert db.count() == 0 and db.namespace("imported").count() == 14  # 5 entities + 9 observations
        assert db.namespace("imported").get_by_key("Anthropic").metadata["entityType"] == "organization"
    out = tmp_path / "back.jsonl"
    assert main(["mcp-export", path, str(out), "--namespace", "imported"]) == 0
    assert "10 lines" in capsys.readouterr().out
    assert out.read_bytes() == open(FIXTURE, "rb").read()
