"""The MCP memory server through the SDK's in-process client: every tool, bad input,
namespaces, read-only mode, and a reference ``memory.jsonl`` import round trip."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("mcp", reason="the MCP server tests need the optional 'mcp' package "
                                  "(pip install 'mnemos-kv[mcp]')")

from anyio.from_thread import start_blocking_portal  # noqa: E402
from mcp import Client  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv.cli import main as cli_main  # noqa: E402
from mnemos_kv.mcp import READ_GRAPH_LIMIT, TOOLS, MemoryServer, build_server  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "memory.jsonl")
READ_TOOLS = {"read_graph", "search_nodes", "open_nodes", "ask", "get", "stats"}
Call = Callable[..., Any]


class Session:
    """A synchronous view of one in-process MCP client session."""

    def __init__(self, portal: Any, client: Any) -> None:
        self.portal, self.client = portal, client

    def raw(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.portal.call(self.client.call_tool, name, args if args is not None else {})

    def ok(self, name: str, args: dict[str, Any] | None = None) -> Any:
        r = self.raw(name, args)
        assert not r.is_error, r.content[0].text
        return r.structured_content

    def err(self, name: str, args: dict[str, Any] | None = None) -> str:
        r = self.raw(name, args)
        assert r.is_error, f"{name}({args}) should have failed, returned {r.structured_content}"
        return str(r.content[0].text)

    def tools(self) -> list[Any]:
        return list(self.portal.call(self.client.list_tools).tools)


@pytest.fixture
def connect() -> Iterator[Callable[..., Session]]:
    """connect(db, namespace=..., read=..., mode=...) -> a Session (closed at the end)."""
    with start_blocking_portal() as portal, contextlib.ExitStack() as stack:
        def _connect(db: Mnemos, namespace: str = "default", read: tuple[str, ...] = (),
                     mode: str = "auto") -> Session:
            server = build_server(MemoryServer(db, namespace, read))
            client = stack.enter_context(portal.wrap_async_context_manager(Client(server, mode=mode)))
            return Session(portal, client)
        yield _connect


@pytest.fixture
def s(db: Mnemos, connect: Callable[..., Session]) -> Session:
    return connect(db)


def ent(name: str, etype: str = "person", obs: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "entityType": etype, "observations": obs or []}


def rel(a: str, b: str, t: str) -> dict[str, str]:
    return {"from": a, "to": b, "relationType": t}


def graph_of(s: Session) -> dict[str, Any]:
    g = s.ok("read_graph", {"limit": 5000})
    return {"entities": {e["name"]: (e["entityType"], e["observations"]) for e in g["entities"]},
            "relations": sorted((r["from"], r["to"], r["relationType"]) for r in g["relations"])}


# -- listing -----------------------------------------------------------------------

def test_tools_listed_with_schemas(s: Session) -> None:
    tools = {t.name: t for t in s.tools()}
    assert set(tools) == {t.name for t in TOOLS}
    assert len(tools) == 16
    for t in tools.values():
        assert t.input_schema["type"] == "object" and t.description
        assert t.annotations.read_only_hint == (t.name in READ_TOOLS)
    assert tools["create_entities"].input_schema["required"] == ["entities"]
    assert set(tools["open_nodes"].input_schema["properties"]) == {"names"}
    assert tools["delete_entities"].annotations.destructive_hint is True


def test_knowledge_graph_resource(s: Session) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["a1"]), ent("B")]})
    s.ok("create_relations", {"relations": [rel("A", "B", "knows")]})
    res = s.portal.call(s.client.list_resources).resources
    assert [(r.uri, r.mime_type) for r in res] == [("memory://knowledge-graph", "application/json")]
    body = s.portal.call(s.client.read_resource, "memory://knowledge-graph")
    graph = json.loads(body.contents[0].text)
    assert graph["entities"] == [ent("A", obs=["a1"]), ent("B")]
    assert graph["relations"] == [rel("A", "B", "knows")]
    with pytest.raises(Exception, match="unknown resource"):
        s.portal.call(s.client.read_resource, "memory://elsewhere")
    assert s.ok("stats")["counts"] == {"default": 3}  # still serving


def test_legacy_handshake_client(db: Mnemos, connect: Callable[..., Session]) -> None:
    s = connect(db, mode="legacy")
    assert s.client.protocol_version < "2026"
    assert s.ok("create_entities", {"entities": [ent("A")]})["entities"][0]["name"] == "A"
    assert graph_of(s)["entities"] == {"A": ("person", [])}
    # unknown extra arguments are dropped (as the reference server's zod schemas do)
    assert s.ok("open_nodes", {"names": ["A"], "self": 1, "verbose": True})["entities"] == [ent("A")]


# -- the reference nine ----------------------------------------------------------------

def test_create_entities_idempotent_and_keyed(s: Session, db: Mnemos) -> None:
    out = s.ok("create_entities", {"entities": [ent("Alice", "person", ["likes tea", "likes tea", "chess"]),
                                                ent("Acme", "company"), ent("Alice", "robot")]})
    assert out["entities"] == [ent("Alice", "person", ["likes tea", "chess"]), ent("Acme", "company")]
    again = s.ok("create_entities", {"entities": [ent("Alice", "cat", ["new"]), ent("Bob")]})
    assert again["entities"] == [ent("Bob")]
    m = db.get_by_key("Alice")
    assert m.metadata == {"kind": "entity", "entityType": "person"}
    obs = [db.get(e.dst) for e in db.neighbors(m.id, relation="has_observation", direction="out")]
    assert sorted(o.text for o in obs) == ["chess", "likes tea"]
    assert all(o.metadata == {"kind": "observation", "entity": "Alice"} for o in obs)
    assert graph_of(s)["entities"] == {"Alice": ("person", ["likes tea", "chess"]),
                                       "Acme": ("company", []), "Bob": ("person", [])}


def test_create_relations(s: Session, db: Mnemos) -> None:
    s.ok("create_entities", {"entities": [ent("A"), ent("B"), ent("C")]})
    out = s.ok("create_relations", {"relations": [rel("A", "B", "knows"), rel("A", "B", "knows"),
                                                  rel("B", "C", "manages")]})
    assert out["relations"] == [rel("A", "B", "knows"), rel("B", "C", "manages")]
    assert s.ok("create_relations", {"relations": [rel("A", "B", "knows"), rel("A", "B", "likes")]}
                )["relations"] == [rel("A", "B", "likes")]
    a, b = db.get_by_key("A").id, db.get_by_key("B").id
    assert {(e.dst, e.relation) for e in db.neighbors(a, direction="out")} == {(b, "knows"), (b, "likes")}
    digest = db.state_digest()
    text = s.err("create_relations", {"relations": [rel("A", "C", "x"), rel("A", "Nobody", "y")]})
    assert "Entity with name Nobody not found" in text
    assert db.state_digest() == digest  # the valid first relation was not written either


def test_add_observations(s: Session, db: Mnemos) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["one"]), ent("B")]})
    out = s.ok("add_observations", {"observations": [
        {"entityName": "A", "contents": ["one", "two", "two"]},
        {"entityName": "B", "contents": ["three"]}]})
    assert out["results"] == [{"entityName": "A", "addedObservations": ["two"]},
                              {"entityName": "B", "addedObservations": ["three"]}]
    assert graph_of(s)["entities"] == {"A": ("person", ["one", "two"]), "B": ("person", ["three"])}
    digest = db.state_digest()
    text = s.err("add_observations", {"observations": [{"entityName": "A", "contents": ["four"]},
                                                       {"entityName": "Zed", "contents": ["x"]}]})
    assert "Entity with name Zed not found" in text
    assert db.state_digest() == digest


def test_delete_entities_takes_observations_and_relations(s: Session, db: Mnemos) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["a1", "a2"]), ent("B", obs=["b1"]), ent("C")]})
    s.ok("create_relations", {"relations": [rel("A", "B", "x"), rel("B", "A", "y"), rel("B", "C", "z")]})
    assert db.count() == 6
    out = s.ok("delete_entities", {"entityNames": ["A"]})
    assert out == {"success": True, "message": "Entities deleted successfully"}
    assert db.count() == 3  # A and its two observations
    assert graph_of(s) == {"entities": {"B": ("person", ["b1"]), "C": ("person", [])},
                           "relations": [("B", "C", "z")]}
    out = s.ok("delete_entities", {"entityNames": ["B", "Nope"]})
    assert out["message"] == "Deleted 1 of 2 entities. Not found: Nope"
    assert graph_of(s)["entities"] == {"C": ("person", [])}
    assert db.count() == 1


def test_delete_observations(s: Session) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["a1", "a2", "a3"])]})
    out = s.ok("delete_observations", {"deletions": [{"entityName": "A", "observations": ["a1", "a3"]}]})
    assert out == {"success": True, "message": "Observations deleted successfully"}
    out = s.ok("delete_observations", {"deletions": [{"entityName": "A", "observations": ["a2", "zz"]},
                                                     {"entityName": "Q", "observations": ["x"]}]})
    assert out["message"] == "Deleted 1 of 3 observations. Entities not found: Q"
    assert graph_of(s)["entities"] == {"A": ("person", [])}
    # an observation can be added again after its deletion
    s.ok("add_observations", {"observations": [{"entityName": "A", "contents": ["a1"]}]})
    assert graph_of(s)["entities"] == {"A": ("person", ["a1"])}


def test_delete_relations(s: Session) -> None:
    s.ok("create_entities", {"entities": [ent("A"), ent("B")]})
    s.ok("create_relations", {"relations": [rel("A", "B", "x"), rel("A", "B", "y")]})
    out = s.ok("delete_relations", {"relations": [rel("A", "B", "x")]})
    assert out == {"success": True, "message": "Relations deleted successfully"}
    out = s.ok("delete_relations", {"relations": [rel("A", "B", "y"), rel("A", "B", "nope"),
                                                  rel("A", "Ghost", "y")]})
    assert out["message"] == "Deleted 1 of 3 relations. The rest matched nothing."
    assert graph_of(s)["relations"] == []


def test_read_graph_pages(s: Session) -> None:
    names = [f"E{i}" for i in range(7)]
    s.ok("create_entities", {"entities": [ent(n, obs=[f"obs of {n}"]) for n in names]})
    s.ok("create_relations", {"relations": [rel(names[i], names[(i + 1) % 7], "next") for i in range(7)]})
    full = s.ok("read_graph")
    assert [e["name"] for e in full["entities"]] == names and full["total"] == 7
    assert "nextOffset" not in full and len(full["relations"]) == 7
    seen_e, seen_r, offset = [], [], 0
    while True:
        page = s.ok("read_graph", {"offset": offset, "limit": 3})
        seen_e += [e["name"] for e in page["entities"]]
        seen_r += [(r["from"], r["to"]) for r in page["relations"]]
        if "nextOffset" not in page:
            break
        assert "call read_graph with offset=" in page["note"]
        offset = page["nextOffset"]
    assert seen_e == names
    assert sorted(seen_r) == sorted((names[i], names[(i + 1) % 7]) for i in range(7))
    assert READ_GRAPH_LIMIT >= 100


def test_search_nodes_ranks_by_observation_and_name(s: Session) -> None:
    s.ok("create_entities", {"entities": [
        ent("Alice", "person", ["plays the violin in an orchestra"]),
        ent("Bob", "person", ["repairs bicycles on weekends"]),
        ent("Carol", "person", ["writes compilers"])]})
    s.ok("create_relations", {"relations": [rel("Bob", "Alice", "knows")]})
    out = s.ok("search_nodes", {"query": "bicycles"})
    assert out["entities"][0] == ent("Bob", "person", ["repairs bicycles on weekends"])
    assert rel("Bob", "Alice", "knows") in out["relations"]
    assert s.ok("search_nodes", {"query": "Carol", "limit": 1})["entities"] == [
        ent("Carol", "person", ["writes compilers"])]


def test_search_nodes_is_not_crowded_out_by_plain_memories(s: Session, db: Mnemos) -> None:
    db.remember_many([f"bicycles bicycles note {i}" for i in range(40)])
    s.ok("create_entities", {"entities": [ent("Bob", "person", ["fixes bicycles"])]})
    assert [e["name"] for e in s.ok("search_nodes", {"query": "bicycles", "limit": 3})["entities"]] == ["Bob"]


def test_open_nodes_with_incoming_and_outgoing_relations(s: Session) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["a"]), ent("B"), ent("C")]})
    s.ok("create_relations", {"relations": [rel("A", "B", "x"), rel("C", "A", "y"), rel("B", "C", "z")]})
    out = s.ok("open_nodes", {"names": ["A", "Missing"]})
    assert out["entities"] == [ent("A", obs=["a"])]
    assert sorted((r["from"], r["to"]) for r in out["relations"]) == [("A", "B"), ("C", "A")]
    assert s.ok("open_nodes", {"names": []}) == {"entities": [], "relations": []}
    # a relation may be called like the observation edge: it is still a relation
    s.ok("create_relations", {"relations": [rel("B", "C", "has_observation")]})
    assert rel("B", "C", "has_observation") in s.ok("open_nodes", {"names": ["B"]})["relations"]
    assert ("B", "C", "has_observation") in graph_of(s)["relations"]
    assert graph_of(s)["entities"]["B"] == ("person", [])


def test_parallel_calls_in_one_session_are_each_whole(s: Session, db: Mnemos) -> None:
    """A model may send several tool calls at once (the reference server's issue 1819):
    they run concurrently here and none is lost, duplicated or half-applied."""
    def all_at_once(calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        futures = [s.portal.start_task_soon(s.client.call_tool, n, a) for n, a in calls]
        results = [f.result() for f in futures]
        assert not any(r.is_error for r in results), [r.content[0].text for r in results if r.is_error]
        return [r.structured_content for r in results]

    made = all_at_once([("create_entities", {"entities": [ent("hub", "t", ["shared"]),
                                                          ent(f"e{i}", "t", [f"o{i}", "shared"])]})
                        for i in range(8)])
    assert sum(e["name"] == "hub" for r in made for e in r["entities"]) == 1
    all_at_once([("add_observations", {"observations": [
        {"entityName": "hub", "contents": [f"from {i}", "shared", "common"]}]}) for i in range(8)])
    all_at_once([("create_relations", {"relations": [rel(f"e{i}", "hub", "in"), rel("hub", "e0", "has")]})
                 for i in range(8)])
    g = graph_of(s)
    assert sorted(g["entities"]["hub"][1]) == sorted(["shared", "common", *(f"from {i}" for i in range(8))])
    assert all(g["entities"][f"e{i}"] == ("t", [f"o{i}", "shared"]) for i in range(8))
    assert g["relations"] == sorted([(f"e{i}", "hub", "in") for i in range(8)] + [("hub", "e0", "has")])
    assert db.count() == 1 + 10 + 8 * 3 and db.verify().ok


# -- mnemos's own tools ----------------------------------------------------------------

def test_remember_ask_get_connect_forget(s: Session, db: Mnemos) -> None:
    a = s.ok("remember", {"text": "We chose Stripe for payments", "metadata": {"topic": "billing"},
                          "type": "semantic", "key": "payments"})["id"]
    b = s.ok("remember", {"text": "The office moves to Berlin in March",
                          "timestamp": "2026-02-01T10:00:00Z"})["id"]
    assert db.get(a).text == "We chose Stripe for payments"
    assert db.get(b).created_at == 1769940000.0
    hits = s.ok("ask", {"query": "which payment provider?", "top_k": 1})["memories"]
    assert hits[0]["id"] == a and hits[0]["metadata"] == {"topic": "billing"} and hits[0]["score"] > 0
    assert hits[0]["key"] == "payments" and hits[0]["type"] == "semantic"
    assert [m["id"] for m in s.ok("ask", {"query": "office", "filter": {"topic": "billing"}})["memories"]] == [a]
    assert [m["id"] for m in s.ok("ask", {"query": "office", "since": "2026-01-15"})["memories"]] == [b]
    assert [m["id"] for m in s.ok("ask", {"query": "office", "until": 1767300000})["memories"]] == [a]
    assert [m["id"] for m in s.ok("ask", {"query": "Stripe", "types": ["episodic"]})["memories"]] == [b]
    assert s.ok("ask", {"query": "Berlin", "recency": "7d", "use_graph": True})["memories"][0]["id"] == b
    for n in range(4):
        s.ok("remember", {"text": f"sprint {n} planning notes", "metadata": {"sprint": n, "team": {"name": "core"}}})
    got = s.ok("ask", {"query": "planning", "top_k": 10, "mode": "lexical",
                       "filter": {"$or": [{"sprint": {"$gte": 2}}, {"team.name": "none"}]}})["memories"]
    assert sorted(m["metadata"]["sprint"] for m in got) == [2, 3]
    got = s.ok("ask", {"query": "planning", "top_k": 10, "mode": "vector", "filter": {"sprint": {"$in": [0, 9]}}})
    assert [m["metadata"]["sprint"] for m in got["memories"]] == [0]
    s.ok("connect", {"from_id": a, "to_id": b, "relation": "before", "weight": 2})
    got = s.ok("get", {"key": "payments"})
    assert got["id"] == a and got["edges"] == [{"from_id": a, "to_id": b, "relation": "before",
                                                "weight": 2.0}]
    assert s.ok("get", {"id": b})["created_at"] == "2026-02-01T10:00:00Z"
    upd = s.ok("update", {"key": "payments", "text": "We chose Adyen for payments",
                          "metadata": {"topic": "billing", "v": 2}})
    assert upd["id"] == a and upd["text"] == "We chose Adyen for payments" and "updated_at" in upd
    assert db.get(a).metadata == {"topic": "billing", "v": 2}
    assert s.ok("ask", {"query": "Adyen", "top_k": 1})["memories"][0]["id"] == a
    assert s.ok("forget", {"id": a}) == {"forgotten": a}
    assert a not in db and db.neighbors(b) == []
    st = s.ok("stats")
    assert st["counts"] == {"default": 5} and st["namespace"] == "default"


# -- bad input: a tool error with the library's message, nothing written, server alive --

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("create_entities", {}, "'entities' is a required property"),
    ("create_entities", {"entities": [{"name": "X", "entityType": "t", "observations": [3]}]},
     "is not of type 'string'"),
    ("create_entities", {"entities": [ent("X", obs=[""])]}, "text"),
    ("create_entities", {"entities": [ent("")]}, "key must be a non-empty str"),
    ("create_entities", {"entities": [ent("k" * 300)]}, "key is longer than 256 bytes"),
    ("create_entities", {"entities": [ent("Used")]}, "not an entity"),
    ("create_relations", {"relations": [{"from": "A", "to": "B"}]}, "'relationType' is a required"),
    ("create_relations", {"relations": [rel("A", "B", " padded ")]}, "relation must be a str of 1-64"),
    ("create_relations", {"relations": [rel("A", "Ghost", "x")]}, "Entity with name Ghost not found"),
    ("add_observations", {"observations": [{"entityName": "A"}]}, "'contents' is a required"),
    ("add_observations", {"observations": [{"entityName": "Ghost", "contents": ["x"]}]},
     "Entity with name Ghost not found"),
    ("delete_entities", {"entityNames": "A"}, "is not of type 'array'"),
    ("delete_observations", {"deletions": [{"entityName": "A", "observations": [1]}]},
     "is not of type 'string'"),
    ("delete_relations", {"relations": [{"from": "A"}]}, "'to' is a required property"),
    ("read_graph", {"limit": 0}, "less than the minimum of 1"),
    ("read_graph", {"offset": -1}, "less than the minimum of 0"),
    ("search_nodes", {}, "'query' is a required property"),
    ("search_nodes", {"query": ""}, "query"),
    ("search_nodes", {"query": "x" * 3000}, "is too long"),
    ("open_nodes", {"names": [None]}, "is not of type 'string'"),
    ("remember", {"text": ""}, "text"),
    ("remember", {"text": "x", "type": "dream"}, "is not one of"),
    ("remember", {"text": "x", "key": "Used"}, "already has a memory with key 'Used'"),
    ("remember", {"text": "x", "timestamp": "yesterday-ish"}, "ISO-8601"),
    ("remember", {"text": "x", "colour": "red"}, "Additional properties are not allowed"),
    ("ask", {"query": "x", "top_k": 0}, "less than the minimum of 1"),
    ("ask", {"query": "x", "recency": "soon"}, "recency"),
    ("ask", {"query": "x", "since": "2026-03-01", "until": "2026-01-01"}, "is after until"),
    ("ask", {"query": "x", "namespaces": ["elsewhere"]}, "may not read ['elsewhere']"),
    ("ask", {"query": "x", "filter": {"n": {"$near": 1}}}, "$near"),
    ("ask", {"query": "x", "mode": "fuzzy"}, "is not one of"),
    ("ask", {"query": "x", "mode": "vector", "use_graph": True}, "need mode='hybrid'"),
    ("forget", {"id": 999999}, "no memory with id 999999"),
    ("forget", {"id": "one"}, "is not of type 'integer'"),
    ("connect", {"from_id": 1, "to_id": 1}, "cannot connect memory 1 to itself"),
    ("connect", {"from_id": 1, "to_id": 424242}, "no memory with id 424242"),
    ("connect", {"from_id": 1, "to_id": 2, "weight": "heavy"}, "is not of type 'number'"),
    ("get", {}, "exactly one of id or key"),
    ("get", {"id": 1, "key": "A"}, "exactly one of id or key"),
    ("get", {"id": 777}, "no memory with id 777"),
    ("get", {"key": "nope"}, "no memory with key 'nope'"),
    ("stats", {"verbose": True}, "Additional properties are not allowed"),
    ("update", {"text": "x"}, "exactly one of id or key"),
    ("update", {"id": 1, "text": "x"}, "is a knowledge-graph entity"),
    ("update", {"key": "Used"}, "update needs at least one of text, metadata, type"),
    ("update", {"key": "Used", "type": "dream"}, "is not one of"),
    ("update", {"id": 31337, "text": "x"}, "no memory with id 31337"),
    ("no_such_tool", {}, "unknown tool 'no_such_tool'"),
]


def test_every_tool_has_bad_input_cases() -> None:
    assert {t.name for t in TOOLS} <= {name for name, _, _ in BAD_CALLS}


@pytest.mark.parametrize("name,args,message", BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_CALLS)])
def test_bad_input_is_a_tool_error_and_writes_nothing(s: Session, db: Mnemos, name: str,
                                                      args: dict[str, Any], message: str) -> None:
    s.ok("create_entities", {"entities": [ent("A", obs=["a"]), ent("B")]})
    db.remember("a plain memory", key="Used")
    digest, seq = db.state_digest(), db.stats()["seq"]
    text = s.err(name, args)
    assert message in text
    assert db.state_digest() == digest and db.stats()["seq"] == seq
    assert s.ok("open_nodes", {"names": ["A"]})["entities"] == [ent("A", obs=["a"])]  # still serving


# -- namespaces and read-only ---------------------------------------------------------------

def test_namespace_confinement_and_read_grants(db: Mnemos, connect: Callable[..., Session]) -> None:
    shared = connect(db, namespace="shared")
    shared.ok("create_entities", {"entities": [ent("Policy", "doc", ["deploy on Tuesdays"])]})
    secret = db.namespace("other").remember("the vault code is 1234")
    agent = connect(db, namespace="agent", read=("shared",))
    agent.ok("create_entities", {"entities": [ent("Me", "agent", ["I deploy things"])]})
    assert db.namespace("agent").count() == 2 and db.namespace("shared").count() == 2
    found = agent.ok("search_nodes", {"query": "deploy Tuesdays"})["entities"]
    assert {e["name"] for e in found} == {"Me", "Policy"}
    assert [e.get("namespace") for e in found if e["name"] == "Policy"] == ["shared"]
    assert agent.ok("open_nodes", {"names": ["Policy"]})["entities"][0]["namespace"] == "shared"
    assert [e["name"] for e in agent.ok("read_graph")["entities"]] == ["Me"]  # its own graph only
    hits = agent.ok("ask", {"query": "deploy", "top_k": 10})["memories"]
    assert {m["namespace"] for m in hits} == {"agent", "shared"}
    assert "no memory with id" in agent.err("get", {"id": secret})
    assert "no memory with id" in agent.err("forget", {"id": secret})
    policy = db.namespace("shared").get_by_key("Policy").id
    assert "no memory with id" in agent.err("forget", {"id": policy})  # readable, not writable
    assert agent.ok("stats")["counts"] == {"agent": 2, "shared": 2}


def test_readonly_server_offers_only_reading_tools(tmp_path, connect: Callable[..., Session]) -> None:
    path = str(tmp_path / "ro.mem")
    with Mnemos.open(path) as w:
        w.remember("seed")
    with Mnemos.open(path, readonly=True) as ro:
        s = connect(ro)
        assert {t.name for t in s.tools()} == READ_TOOLS
        assert "read-only" in s.err("create_entities", {"entities": [ent("A")]})
        assert "read-only" in s.err("remember", {"text": "x"})
        assert s.ok("ask", {"query": "seed"})["memories"][0]["text"] == "seed"


# -- importing the reference server's memory.jsonl ------------------------------------------

def test_import_reference_jsonl_round_trips_through_read_graph(tmp_path, connect: Callable[..., Session],
                                                               capsys: Any) -> None:
    path = str(tmp_path / "imp.mem")
    assert cli_main(["mcp-import", path, FIXTURE]) == 0
    assert "5 entities, 9 observations, 5 relations" in capsys.readouterr().out
    lines = [json.loads(x) for x in open(FIXTURE, encoding="utf-8") if x.strip()]
    with Mnemos.open(path) as db:
        g = connect(db).ok("read_graph")
        got = [{"type": "entity", **e} for e in g["entities"]] + \
              [{"type": "relation", **r} for r in g["relations"]]
        assert got == lines
        # importing again adds nothing
        assert cli_main(["mcp-import", path, FIXTURE]) == 0
        assert "0 entities, 0 observations, 0 relations" in capsys.readouterr().out
        assert connect(db).ok("read_graph") == g
        assert db.verify().ok
