"""An MCP memory server over a mnemos-kv store (``mnemos-kv mcp PATH``).

A drop-in superset of the reference ``@modelcontextprotocol/server-memory``: its nine
knowledge-graph tools, with the same names and argument shapes, stored as memories
(see ``_kgraph``), plus mnemos's own ``remember``/``ask``/``update``/``forget``/
``connect``/``get``/``stats``. Every MCP client starts its own server process; they can all point
at one store, which serialises their writes and keeps each one durable and whole.

Needs the optional extra (``pip install mnemos-kv[mcp]``); ``import mnemos_kv`` never
imports this module, and this module imports the ``mcp`` SDK only when a server is
built. Run it with ``python -m mnemos_kv.mcp PATH`` or ``mnemos-kv mcp PATH``;
see docs/mcp.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ._kgraph import KnowledgeGraph
from .errors import (InvalidInputError, MemoryNotFoundError, MissingDependencyError, MnemosError,
                     ReadOnlyError)
from .store import Mnemos

if TYPE_CHECKING:
    from ._model import Memory

__all__ = ["MemoryServer", "TOOLS", "build_server", "serve", "main"]

log = logging.getLogger("mnemos_kv.mcp")

#: ``read_graph`` returns at most this many entities per call by default (and at most
#: ``READ_GRAPH_MAX`` when asked): a larger graph is paged with ``offset``.
READ_GRAPH_LIMIT = 500
READ_GRAPH_MAX = 5000
MAX_TOP_K = 100
#: The resource holding the graph (the reference server's URI).
GRAPH_URI = "memory://knowledge-graph"

# -- schemas ---------------------------------------------------------------------

_ENTITY = {"type": "object", "properties": {
    "name": {"type": "string", "description": "The name of the entity"},
    "entityType": {"type": "string", "description": "The type of the entity"},
    "observations": {"type": "array", "items": {"type": "string"},
                     "description": "An array of observation contents associated with the entity"}},
    "required": ["name", "entityType", "observations"]}
_RELATION = {"type": "object", "properties": {
    "from": {"type": "string", "description": "The name of the entity where the relation starts"},
    "to": {"type": "string", "description": "The name of the entity where the relation ends"},
    "relationType": {"type": "string", "description": "The type of the relation"}},
    "required": ["from", "to", "relationType"]}
_GRAPH_OUT: dict[str, Any] = {"type": "object", "properties": {
    "entities": {"type": "array", "items": _ENTITY},
    "relations": {"type": "array", "items": _RELATION}},
    "required": ["entities", "relations"]}
_STATUS_OUT = {"type": "object", "properties": {"success": {"type": "boolean"},
                                                "message": {"type": "string"}},
               "required": ["success", "message"]}
_TIME = {"type": ["string", "number"],
         "description": "ISO-8601 date/time (e.g. 2026-03-01 or 2026-03-01T12:00:00Z) or seconds since the epoch"}
_ID = {"type": "integer", "minimum": 1}


def _obj(props: dict[str, Any], required: Sequence[str] = (), strict: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        s["required"] = list(required)
    if strict:
        s["additionalProperties"] = False
    return s


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its MCP description and the method of :class:`MemoryServer` it runs."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    method: str
    writes: bool
    output_schema: dict[str, Any] | None = None
    destructive: bool = False
    idempotent: bool = False


TOOLS: tuple[ToolSpec, ...] = (
    # -- the reference server's nine (names and argument shapes kept) --------------
    ToolSpec("create_entities", "Create Entities",
             "Create multiple new entities in the knowledge graph, each with its observations. "
             "Entities whose name already exists are skipped; returns the ones created.",
             _obj({"entities": {"type": "array", "items": _ENTITY}}, ["entities"]),
             "create_entities", True,
             _obj({"entities": {"type": "array", "items": _ENTITY}}, ["entities"])),
    ToolSpec("create_relations", "Create Relations",
             "Create multiple new relations between entities in the knowledge graph. Relations "
             "should be in active voice. Both ends must exist; existing relations are skipped.",
             _obj({"relations": {"type": "array", "items": _RELATION}}, ["relations"]),
             "create_relations", True,
             _obj({"relations": {"type": "array", "items": _RELATION}}, ["relations"])),
    ToolSpec("add_observations", "Add Observations",
             "Add new observations to existing entities in the knowledge graph. Observations the "
             "entity already has are skipped; an unknown entity fails the whole call.",
             _obj({"observations": {"type": "array", "items": _obj({
                 "entityName": {"type": "string",
                                "description": "The name of the entity to add the observations to"},
                 "contents": {"type": "array", "items": {"type": "string"},
                              "description": "An array of observation contents to add"}},
                 ["entityName", "contents"])}}, ["observations"]),
             "add_observations", True,
             _obj({"results": {"type": "array", "items": _obj({
                 "entityName": {"type": "string"},
                 "addedObservations": {"type": "array", "items": {"type": "string"}}})}},
                 ["results"])),
    ToolSpec("delete_entities", "Delete Entities",
             "Delete multiple entities and their associated observations and relations from the "
             "knowledge graph.",
             _obj({"entityNames": {"type": "array", "items": {"type": "string"},
                                   "description": "An array of entity names to delete"}},
                  ["entityNames"]),
             "delete_entities", True, _STATUS_OUT, destructive=True, idempotent=True),
    ToolSpec("delete_observations", "Delete Observations",
             "Delete specific observations from entities in the knowledge graph.",
             _obj({"deletions": {"type": "array", "items": _obj({
                 "entityName": {"type": "string",
                                "description": "The name of the entity containing the observations"},
                 "observations": {"type": "array", "items": {"type": "string"},
                                  "description": "An array of observations to delete"}},
                 ["entityName", "observations"])}}, ["deletions"]),
             "delete_observations", True, _STATUS_OUT, destructive=True, idempotent=True),
    ToolSpec("delete_relations", "Delete Relations",
             "Delete multiple relations from the knowledge graph.",
             _obj({"relations": {"type": "array", "items": _RELATION,
                                 "description": "An array of relations to delete"}}, ["relations"]),
             "delete_relations", True, _STATUS_OUT, destructive=True, idempotent=True),
    ToolSpec("read_graph", "Read Graph",
             f"Read the knowledge graph: entities in creation order with their observations, and "
             f"the relations starting at them. Returns at most {READ_GRAPH_LIMIT} entities per call "
             f"unless limit says otherwise; when more exist, the result has nextOffset: call again "
             f"with offset=nextOffset.",
             _obj({"offset": {"type": "integer", "minimum": 0, "default": 0,
                              "description": "Skip this many entities (for paging)"},
                   "limit": {"type": "integer", "minimum": 1, "maximum": READ_GRAPH_MAX,
                             "default": READ_GRAPH_LIMIT, "description": "At most this many entities"}}),
             "read_graph", False,
             {**_GRAPH_OUT, "properties": {**_GRAPH_OUT["properties"],
                                           "total": {"type": "integer"},
                                           "nextOffset": {"type": "integer"},
                                           "note": {"type": "string"}}},
             idempotent=True),
    ToolSpec("search_nodes", "Search Nodes",
             "Search for nodes in the knowledge graph based on a query: ranked by meaning and words "
             "over entity names, types and observations (best first), with the relations touching "
             "them.",
             _obj({"query": {"type": "string", "maxLength": 2048,
                             "description": "The search query to match against entity names, types, "
                                            "and observation content"},
                   "limit": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 10,
                             "description": "At most this many entities"}}, ["query"]),
             "search_nodes", False, _GRAPH_OUT, idempotent=True),
    ToolSpec("open_nodes", "Open Nodes",
             "Open specific nodes in the knowledge graph by their names, with every relation that "
             "starts or ends at them.",
             _obj({"names": {"type": "array", "items": {"type": "string"},
                             "description": "An array of entity names to retrieve"}}, ["names"]),
             "open_nodes", False, _GRAPH_OUT, idempotent=True),
    # -- mnemos's own ------------------------------------------------------------------
    ToolSpec("remember", "Remember",
             "Store a piece of free text as a memory (durable when this returns); returns its id. "
             "Use key to give it a unique name you can get it by later.",
             _obj({"text": {"type": "string", "description": "What to remember"},
                   "metadata": {"type": "object", "description": "Optional JSON fields, e.g. "
                                "{\"topic\": \"billing\"}; ask can filter on them"},
                   "type": {"type": "string", "enum": ["episodic", "semantic", "procedural"],
                            "default": "episodic",
                            "description": "episodic: an event; semantic: a fact; procedural: how-to"},
                   "key": {"type": "string", "description": "Optional unique name"},
                   "timestamp": {**_TIME, "description": "When it happened (default: now). "
                                 + str(_TIME["description"])}},
                  ["text"], strict=True),
             "remember", True, _obj({"id": {"type": "integer"}}, ["id"])),
    ToolSpec("ask", "Ask",
             "Find the memories most relevant to a question, best first (hybrid: meaning + words, "
             "optionally graph links and recency). Returns id, text, score, metadata, time.",
             _obj({"query": {"type": "string", "description": "The question or search text"},
                   "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
                   "filter": {"type": "object",
                              "description": "Keep memories whose metadata matches, e.g. "
                                             "{\"topic\": \"billing\"}, {\"n\": {\"$gte\": 2}}, "
                                             "{\"$or\": [{\"a\": 1}, {\"b\": {\"$in\": [2, 3]}}]}; "
                                             "operators $eq $ne $gt $gte $lt $lte $in $nin $exists "
                                             "$and $or $not, dotted paths into nested fields"},
                   "mode": {"type": "string", "enum": ["hybrid", "vector", "lexical"],
                            "default": "hybrid",
                            "description": "hybrid (default): meaning + words; vector: meaning only; "
                                           "lexical: shared words only"},
                   "since": {**_TIME, "description": "Only memories from this time on. "
                             + str(_TIME["description"])},
                   "until": {**_TIME, "description": "Only memories up to this time. "
                             + str(_TIME["description"])},
                   "recency": {"type": ["boolean", "string", "number"],
                               "description": "Favour recent memories: true, or a half-life such as "
                                              "\"7 days\", \"12h\" or seconds"},
                   "use_graph": {"type": "boolean", "default": False,
                                 "description": "Also surface memories linked to the best hits"},
                   "types": {"type": "array", "items": {"type": "string",
                                                        "enum": ["episodic", "semantic", "procedural"]},
                             "description": "Only these memory types"},
                   "namespaces": {"type": "array", "items": {"type": "string"},
                                  "description": "Namespaces to search (default: this server's own "
                                                 "and those it may read)"}},
                  ["query"], strict=True),
             "ask", False, _obj({"memories": {"type": "array", "items": {"type": "object"}}},
                                ["memories"]), idempotent=True),
    ToolSpec("update", "Update Memory",
             "Change a memory's text, metadata (replaced whole) or type, keeping its id, key and "
             "links. For knowledge-graph entities and observations use the graph tools instead.",
             _obj({"id": {**_ID, "description": "The memory id"},
                   "key": {"type": "string", "description": "The memory's key (instead of id)"},
                   "text": {"type": "string", "description": "The new text"},
                   "metadata": {"type": "object", "description": "The new metadata (replaces all of it)"},
                   "type": {"type": "string", "enum": ["episodic", "semantic", "procedural"]}},
                  strict=True),
             "update", True, None, idempotent=True),
    ToolSpec("forget", "Forget",
             "Delete a memory (by id) and every link touching it.",
             _obj({"id": {**_ID, "description": "The memory id"}}, ["id"], strict=True),
             "forget", True, _obj({"forgotten": {"type": "integer"}}, ["forgotten"]),
             destructive=True),
    ToolSpec("connect", "Connect",
             "Link two memories with a directed, named relation (re-weights an existing link).",
             _obj({"from_id": {**_ID, "description": "The memory the link starts at"},
                   "to_id": {**_ID, "description": "The memory the link ends at"},
                   "relation": {"type": "string", "default": "related",
                                "description": "e.g. \"causes\", \"part_of\""},
                   "weight": {"type": "number", "default": 1.0}},
                  ["from_id", "to_id"], strict=True),
             "connect", True, None, idempotent=True),
    ToolSpec("get", "Get Memory",
             "Get one memory by id or by key, with its links.",
             _obj({"id": {**_ID, "description": "The memory id"},
                   "key": {"type": "string", "description": "The memory's key (instead of id)"}},
                  strict=True),
             "get", False, None, idempotent=True),
    ToolSpec("stats", "Memory Stats",
             "Counts of memories in this server's namespaces, and the store's embedder and format.",
             _obj({}, strict=True), "stats", False, None, idempotent=True),
)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


# -- the tools, as plain Python ------------------------------------------------------

def _jsonable(value: Any) -> Any:
    from ._dump import to_json
    return json.loads(json.dumps(to_json(value), default=str))


def memory_dict(m: "Memory") -> dict[str, Any]:
    """A memory as the tools return it (JSON-ready)."""
    d: dict[str, Any] = {"id": m.id, "text": m.text, "type": m.type, "namespace": m.namespace,
                         "created_at": m.created.isoformat().replace("+00:00", "Z"),
                         "metadata": _jsonable(m.metadata)}
    if m.key is not None:
        d["key"] = m.key
    if m.updated_at != m.created_at:
        d["updated_at"] = _dt.datetime.fromtimestamp(m.updated_at, _dt.timezone.utc).isoformat().replace(
            "+00:00", "Z")
    if m.score is not None:
        d["score"] = round(float(m.score), 6)
    return d


class ToolError(InvalidInputError):
    """A tool call names no tool, or its arguments do not fit the tool's JSON schema."""


class MemoryServer:
    """The tools over one namespace of an open store; no MCP dependency.

    ``namespace`` is where writes go; ``read`` names more namespaces that ``ask``,
    ``search_nodes``, ``open_nodes`` and ``get`` may read. ``call(name, arguments)``
    validates the arguments against the tool's schema and runs it, returning the
    structured result (or raising a :class:`MnemosError`).
    """

    def __init__(self, db: Mnemos, namespace: str = "default", read: Sequence[str] = ()) -> None:
        self.db = db
        self.read = [n for n in dict.fromkeys(read) if n != namespace]
        self.h = db.namespace(namespace, read=self.read)
        self.readable = [db.namespace(n) for n in self.read]
        self.kg = KnowledgeGraph(self.h, self.readable)
        self._validators: dict[str, Any] = {}

    @property
    def readonly(self) -> bool:
        return self.db.readonly

    def tools(self) -> list[ToolSpec]:
        """The tools this server offers (no writing ones when the store is read-only)."""
        return [t for t in TOOLS if not (t.writes and self.readonly)]

    def _validate(self, spec: ToolSpec, args: Mapping[str, Any]) -> None:
        v = self._validators.get(spec.name)
        if v is None:
            from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
            v = self._validators[spec.name] = Draft202012Validator(spec.input_schema)
        errors = sorted(v.iter_errors(dict(args)), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            raise ToolError(f"invalid arguments for {spec.name}: {('arguments' + where)}: {e.message}")

    def call(self, name: str, arguments: Mapping[str, Any] | None) -> tuple[Any, str | None]:
        """Run tool ``name``: (structured result, optional text for the model)."""
        spec = TOOLS_BY_NAME.get(name)
        if spec is None:
            raise ToolError(f"unknown tool {name!r}; tools: {', '.join(t.name for t in self.tools())}")
        if spec.writes and self.readonly:
            raise ReadOnlyError(f"tool {name!r} writes, and this server is read-only (--readonly)")
        args = dict(arguments or {})
        self._validate(spec, args)
        known = spec.input_schema["properties"]
        args = {k: v for k, v in args.items() if k in known}  # as zod does: unknown keys dropped
        fn: Callable[..., tuple[Any, str | None]] = getattr(self, "t_" + spec.method)
        return fn(**args)

    # reference tools

    def t_create_entities(self, entities: list[Any]) -> tuple[Any, str | None]:
        return {"entities": self.kg.create_entities(entities)}, None

    def t_create_relations(self, relations: list[Any]) -> tuple[Any, str | None]:
        return {"relations": self.kg.create_relations(relations)}, None

    def t_add_observations(self, observations: list[Any]) -> tuple[Any, str | None]:
        return {"results": self.kg.add_observations(observations)}, None

    def t_delete_entities(self, entityNames: list[str]) -> tuple[Any, str | None]:
        r = self.kg.delete_entities(entityNames)
        msg = ("Entities deleted successfully" if not r["notFound"] else
               f"Deleted {len(r['deleted'])} of {len(entityNames)} entities. "
               f"Not found: {', '.join(r['notFound'])}")
        return {"success": True, "message": msg}, msg

    def t_delete_observations(self, deletions: list[Any]) -> tuple[Any, str | None]:
        r = self.kg.delete_observations(deletions)
        requested = sum(len(d.get("observations", [])) for d in deletions)
        msg = ("Observations deleted successfully" if r["deletedCount"] == requested else
               f"Deleted {r['deletedCount']} of {requested} observations."
               + (f" Entities not found: {', '.join(r['missingEntities'])}" if r["missingEntities"] else ""))
        return {"success": True, "message": msg}, msg

    def t_delete_relations(self, relations: list[Any]) -> tuple[Any, str | None]:
        n = self.kg.delete_relations(relations)
        msg = ("Relations deleted successfully" if n == len(relations) else
               f"Deleted {n} of {len(relations)} relations. The rest matched nothing.")
        return {"success": True, "message": msg}, msg

    def t_read_graph(self, offset: int = 0, limit: int = READ_GRAPH_LIMIT) -> tuple[Any, str | None]:
        g = self.kg.read_graph(offset, limit)
        end = offset + len(g["entities"])
        if end < g["total"]:
            g["nextOffset"] = end
            g["note"] = (f"showing entities {offset}-{end - 1} of {g['total']}; call read_graph with "
                         f"offset={end} for more")
        return g, None

    def t_search_nodes(self, query: str, limit: int = 10) -> tuple[Any, str | None]:
        return self.kg.search_nodes(query, limit), None

    def t_open_nodes(self, names: list[str]) -> tuple[Any, str | None]:
        return self.kg.open_nodes(names), None

    # mnemos tools

    def t_remember(self, text: str, metadata: dict[str, Any] | None = None, type: str = "episodic",
                   key: str | None = None, timestamp: Any = None) -> tuple[Any, str | None]:
        mid = self.h.remember(text, metadata, type=type, key=key,
                              timestamp=timestamp)
        return {"id": mid}, f"remembered as memory {mid}"

    def t_ask(self, query: str, top_k: int = 5, filter: dict[str, Any] | None = None,
              since: Any = None, until: Any = None, recency: Any = False, use_graph: bool = False,
              types: list[str] | None = None, namespaces: list[str] | None = None,
              mode: str = "hybrid") -> tuple[Any, str | None]:
        hits = self.h.ask(query, top_k, mode=mode, filter=filter, since=since, until=until,
                          recency_bias=recency,
                          use_graph=use_graph, types=types,
                          namespaces=namespaces or [self.h.name, *self.read])
        return {"memories": [memory_dict(m) for m in hits]}, None

    def t_update(self, id: int | None = None, key: str | None = None, text: str | None = None,
                 metadata: dict[str, Any] | None = None, type: str | None = None) -> tuple[Any, str | None]:
        if (id is None) == (key is None):
            raise InvalidInputError("update takes exactly one of id or key")
        m = self.h.get(id) if id is not None else self.h.get_by_key(key)  # type: ignore[arg-type]
        if m.metadata.get("kind") in ("entity", "observation"):
            raise InvalidInputError(
                f"memory {m.id} is a knowledge-graph {m.metadata['kind']}; change it with "
                "add_observations / delete_observations / delete_entities instead")
        new = self.h.update(m.id, text=text, metadata=metadata, type=type)
        return memory_dict(new), None

    def t_forget(self, id: int) -> tuple[Any, str | None]:
        self.h.forget(id)
        return {"forgotten": id}, f"forgot memory {id}"

    def t_connect(self, from_id: int, to_id: int, relation: str = "related",
                  weight: float = 1.0) -> tuple[Any, str | None]:
        self.h.connect(from_id, to_id, relation, weight)
        return ({"from_id": from_id, "to_id": to_id, "relation": relation, "weight": weight},
                f"connected {from_id} -{relation}-> {to_id}")

    def t_get(self, id: int | None = None, key: str | None = None) -> tuple[Any, str | None]:
        if (id is None) == (key is None):
            raise InvalidInputError("get takes exactly one of id or key")
        last: MemoryNotFoundError | None = None
        for h in [self.h, *self.readable]:
            try:
                m = h.get(id) if id is not None else h.get_by_key(key)  # type: ignore[arg-type]
            except MemoryNotFoundError as exc:
                last = last or exc
                continue
            d = memory_dict(m)
            d["edges"] = [{"from_id": e.src, "to_id": e.dst, "relation": e.relation, "weight": e.weight}
                          for e in h.neighbors(m.id)]
            return d, None
        assert last is not None
        raise last

    def t_stats(self) -> tuple[Any, str | None]:
        st = self.db.stats()
        mine = [self.h.name, *self.read]
        return {"namespace": self.h.name, "readable": self.read, "readonly": self.readonly,
                "counts": {n: st["namespaces"].get(n, {"count": 0})["count"] for n in mine},
                "embedder": st["embedder"], "format_version": st["format_version"],
                "path": st["path"]}, None


# -- MCP wiring --------------------------------------------------------------------

INSTRUCTIONS = (
    "Long-term memory shared by every client of this store. Knowledge-graph tools "
    "(create_entities, add_observations, create_relations, search_nodes, open_nodes, read_graph, "
    "delete_*) keep entities with observations and relations; remember/ask keep and find free "
    "text. Search before creating to avoid duplicates; every write is durable when it returns.")


def _require_mcp() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "the MCP server needs the 'mcp' package: pip install 'mnemos-kv[mcp]'") from exc


def build_server(memory: MemoryServer, *, name: str = "mnemos-kv") -> Any:
    """An ``mcp.server.Server`` (low-level SDK server) exposing ``memory``'s tools.

    Tool calls run in worker threads (the store is thread-safe), so a slow write never
    blocks the connection. A failing call returns an MCP tool error carrying the
    library's message; nothing is written and the server keeps serving.
    """
    _require_mcp()
    import anyio
    import mcp_types as types
    from mcp.server import Server

    from . import __version__

    def tool(t: ToolSpec) -> Any:
        ann = types.ToolAnnotations(title=t.title, read_only_hint=not t.writes,
                                    destructive_hint=t.destructive if t.writes else None,
                                    idempotent_hint=t.idempotent, open_world_hint=False)
        return types.Tool(name=t.name, title=t.title, description=t.description,
                          input_schema=t.input_schema, output_schema=t.output_schema,
                          annotations=ann)

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=[tool(t) for t in memory.tools()])

    async def call_tool(ctx: Any, params: Any) -> Any:
        def run() -> tuple[Any, str | None]:
            return memory.call(params.name, params.arguments)
        try:
            result, text = await anyio.to_thread.run_sync(run)
        except MnemosError as exc:
            return types.CallToolResult(
                content=[types.TextContent(text=f"{type(exc).__name__}: {exc}")], is_error=True)
        except Exception as exc:  # a bug must not take the server (and the client) down
            log.exception("tool %s failed", params.name)
            return types.CallToolResult(
                content=[types.TextContent(text=f"internal error in {params.name}: "
                                                f"{type(exc).__name__}: {exc}")], is_error=True)
        if text is None:
            text = json.dumps(result, indent=2, ensure_ascii=False)
        return types.CallToolResult(content=[types.TextContent(text=text)],
                                    structured_content=result)

    async def list_resources(ctx: Any, params: Any) -> Any:
        return types.ListResourcesResult(resources=[types.Resource(
            uri=GRAPH_URI, name="knowledge-graph", title="Knowledge Graph",
            description=f"The knowledge graph of namespace {memory.h.name!r} (entities with their "
                        f"observations, and relations), as JSON; at most {READ_GRAPH_MAX} entities",
            mime_type="application/json")])

    async def read_resource(ctx: Any, params: Any) -> Any:
        from mcp.shared.exceptions import MCPError
        if params.uri != GRAPH_URI:
            raise MCPError(code=types.INVALID_PARAMS,
                           message=f"unknown resource {params.uri!r}; this server has {GRAPH_URI!r}")
        result, _ = await anyio.to_thread.run_sync(
            lambda: memory.call("read_graph", {"limit": READ_GRAPH_MAX}))
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=GRAPH_URI, mime_type="application/json",
            text=json.dumps(result, indent=2, ensure_ascii=False))])

    return Server(name, version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool,
                  on_list_resources=list_resources, on_read_resource=read_resource)


def _parse_http(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidInputError(f"--http takes HOST:PORT, e.g. 127.0.0.1:8765; got {value!r}")
    return host.strip("[]"), int(port)


def embedder_for(name: str | None) -> Any:
    """``--embedder``: None/"hashing" is the built-in default; anything else names a
    sentence-transformers model (needs the ``st`` extra)."""
    if name is None or name == "hashing":
        return None
    from .embedders import SentenceTransformerEmbedder
    return SentenceTransformerEmbedder(name)


def serve(path: str, *, namespace: str = "default", read: Sequence[str] = (),
          readonly: bool = False, http: str | None = None, embedder: str | None = None) -> None:
    """Open the store at ``path`` and serve it over stdio (default) or streamable HTTP
    (``http="HOST:PORT"``, endpoint ``/mcp``) until the client goes away."""
    _require_mcp()
    import anyio
    hostport = _parse_http(http) if http else None
    with Mnemos.open(path, readonly=readonly, embedder=embedder_for(embedder)) as db:
        server = build_server(MemoryServer(db, namespace, read))
        if hostport is None:
            from mcp.server.stdio import stdio_server

            async def run_stdio() -> None:
                async with stdio_server() as (rd, wr):
                    await server.run(rd, wr, server.create_initialization_options())
            anyio.run(run_stdio)
        else:
            import uvicorn
            app = server.streamable_http_app(host=hostport[0])
            uvicorn.run(app, host=hostport[0], port=hostport[1], log_level="warning")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mnemos-kv mcp`` / ``python -m mnemos_kv.mcp``."""
    p.add_argument("path", help="store directory (created if missing)")
    p.add_argument("--namespace", default="default", help="namespace the tools write to (default: default)")
    p.add_argument("--read", action="append", default=[], metavar="NS",
                   help="another namespace ask/search_nodes/open_nodes/get may read (repeatable)")
    p.add_argument("--readonly", action="store_true", help="offer only the reading tools")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--embedder", metavar="MODEL", default=None,
                   help="the store's embedder: 'hashing' (default, no model) or a "
                        "sentence-transformers model name, e.g. all-MiniLM-L6-v2 (needs mnemos-kv[st])")


def run_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # stdout is the protocol's
    try:
        serve(args.path, namespace=args.namespace, read=args.read, readonly=args.readonly,
              http=args.http, embedder=args.embedder)
    except KeyboardInterrupt:  # Ctrl-C in a terminal: the store is closed, every write kept
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mnemos_kv.mcp PATH [--namespace NS] [--read NS] [--readonly] [--http H:P]``."""
    p = argparse.ArgumentParser(prog="python -m mnemos_kv.mcp", description="MCP memory server")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_args(args)
    except MnemosError as exc:
        print(f"mnemos-kv mcp: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
