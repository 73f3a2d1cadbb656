"""The knowledge graph of the reference MCP memory server, stored as memories.

``@modelcontextprotocol/server-memory`` keeps entities (name, entityType,
observations) and relations (from, to, relationType) in one JSONL file. Here, over
the public API of one namespace handle:

* an entity is a memory with ``key = name``, text ``"name (entityType)"`` and
  metadata ``{"kind": "entity", "entityType": ...}``;
* an observation is a memory whose text is the observation, with metadata
  ``{"kind": "observation", "entity": name}``, a key derived from (entity, text) so a
  duplicate is refused by the store itself (also across processes), and an edge
  ``entity -has_observation-> observation``;
* a relation is an edge ``from -relationType-> to`` between two entity memories.

Each call is one transaction (``handle.batch()``): all of it or nothing. The reads
that decide what to write (does this entity exist?) happen before the transaction, so
when another process changes the same names in between, the commit fails on the key
or the id and the call is re-run from the reads (a few times at most).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from .errors import DuplicateKeyError, InvalidInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from ._model import Memory
    from .store import Namespace

__all__ = ["KnowledgeGraph", "ImportReport", "OBSERVATION_RELATION", "read_jsonl"]

#: The edge from an entity to each of its observations.
OBSERVATION_RELATION = "has_observation"
ENTITY, OBSERVATION = "entity", "observation"
#: The memories of the graph (``search_nodes`` skips plain memories of the namespace).
GRAPH_FILTER = {"kind": {"$in": [ENTITY, OBSERVATION]}}
#: How often a call is re-run when another process changed the same names meanwhile.
RETRIES = 8

T = TypeVar("T")


class _Conflict(Exception):
    """A commit refused because of a concurrent writer (carries the store's error)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def observation_key(entity: str, text: str) -> str:
    """The key of an observation: unique per (entity, text), short enough for any name."""
    digest = hashlib.sha256(entity.encode("utf-8", "surrogatepass") + b"\0"
                            + text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"obs:{digest[:40]}"


def entity_text(name: str, entity_type: str) -> str:
    return f"{name} ({entity_type})" if entity_type else name


def is_entity(m: "Memory") -> bool:
    return m.metadata.get("kind") == ENTITY and m.key is not None


def is_observation(m: "Memory") -> bool:
    return m.metadata.get("kind") == OBSERVATION and isinstance(m.metadata.get("entity"), str)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{what} must be an array, got {value!r}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    return [_str(v, f"{what}[{i}]") for i, v in enumerate(_list(value, what))]


def _unique(items: Iterable[T]) -> list[T]:
    seen: set[Any] = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _relation(r: Any, what: str) -> tuple[str, str, str]:
    if not isinstance(r, Mapping):
        raise InvalidInputError(f"{what} must be an object with from, to and relationType, got {r!r}")
    return (_str(r.get("from"), f"{what}.from"), _str(r.get("to"), f"{what}.to"),
            _str(r.get("relationType"), f"{what}.relationType"))


def _rel_dict(rel: tuple[str, str, str]) -> dict[str, str]:
    return {"from": rel[0], "to": rel[1], "relationType": rel[2]}


@dataclass
class ImportReport:
    """What :meth:`KnowledgeGraph.import_jsonl` did."""

    entities: int = 0          # entities created
    observations: int = 0      # observations added (to new or existing entities)
    relations: int = 0         # relations created
    skipped_lines: list[str] = field(default_factory=list)   # unreadable lines, with the reason
    dangling_relations: list[dict[str, str]] = field(default_factory=list)  # an end is no entity

    def as_dict(self) -> dict[str, Any]:
        return {"entities": self.entities, "observations": self.observations,
                "relations": self.relations, "skipped_lines": list(self.skipped_lines),
                "dangling_relations": list(self.dangling_relations)}


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Parse a reference ``memory.jsonl``: (entities, relations, skipped-line reasons).

    Lines are ``{"type":"entity","name":...,"entityType":...,"observations":[...]}`` or
    ``{"type":"relation","from":...,"to":...,"relationType":...}``; like the reference
    server, malformed lines are skipped (and reported), blank lines ignored.
    """
    entities: list[dict[str, Any]] = []
    relations: list[dict[str, str]] = []
    skipped: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                skipped.append(f"line {n}: not JSON ({exc})")
                continue
            kind = item.get("type") if isinstance(item, dict) else None
            try:
                if kind == "entity":
                    obs = _strings(item.get("observations"), "observations")
                    entities.append({"name": _str(item.get("name"), "name"),
                                     "entityType": _str(item.get("entityType"), "entityType"),
                                     "observations": obs})
                elif kind == "relation":
                    relations.append(_rel_dict(_relation(item, "relation")))
                else:
                    skipped.append(f"line {n}: type must be 'entity' or 'relation', got {kind!r}")
            except InvalidInputError as exc:
                skipped.append(f"line {n}: {exc}")
    return entities, relations, skipped


class KnowledgeGraph:
    """The reference server's nine operations on one namespace handle.

    ``readable`` handles (other namespaces this one may read) are consulted, after the
    own namespace, by :meth:`open_nodes` and :meth:`search_nodes`; writes touch only
    ``handle``'s namespace.
    """

    def __init__(self, handle: "Namespace", readable: Sequence["Namespace"] = ()) -> None:
        self.h = handle
        self.readable = list(readable)

    # -- lookups -------------------------------------------------------------------

    def _entity(self, name: str, handle: "Namespace | None" = None) -> "Memory | None":
        """The entity memory named ``name`` (None when absent).

        :raises InvalidInputError: the key names a memory that is not an entity.
        """
        h = self.h if handle is None else handle
        try:
            m = h.get_by_key(name)
        except MemoryNotFoundError:
            return None
        if not is_entity(m):
            raise InvalidInputError(
                f"the name {name!r} is the key of memory {m.id}, which is not an entity")
        return m

    def _require(self, name: str) -> "Memory":
        m = self._entity(name)
        if m is None:
            raise MemoryNotFoundError(f"Entity with name {name} not found")
        return m

    def _observation_memories(self, entity: "Memory", handle: "Namespace | None" = None) -> list["Memory"]:
        """The observations of an entity (its ``has_observation`` edges), oldest first."""
        h = self.h if handle is None else handle
        out = []
        for e in h.neighbors(entity.id, relation=OBSERVATION_RELATION, direction="out"):
            try:
                m = h.get(e.dst)
            except MemoryNotFoundError:  # forgotten meanwhile
                continue
            if is_observation(m) and m.metadata["entity"] == entity.key:
                out.append(m)
        out.sort(key=lambda m: m.id)
        return out

    @contextlib.contextmanager
    def _txn(self) -> Iterator[Any]:
        """A batch committed at the end of the block; a commit refused because another
        writer changed the same names since our reads becomes :class:`_Conflict`."""
        b = self.h.batch()
        try:
            yield b
        except BaseException:
            b.discard()
            raise
        try:
            b.commit()
        except (DuplicateKeyError, MemoryNotFoundError) as exc:
            raise _Conflict(exc) from exc

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run a read-then-write call again when a concurrent writer invalidated its reads
        (at most ``RETRIES`` times; then the store's error is raised)."""
        for attempt in range(RETRIES):
            try:
                return fn()
            except _Conflict as conflict:
                if attempt == RETRIES - 1:
                    raise conflict.error from None
        raise AssertionError("unreachable")

    # -- writes --------------------------------------------------------------------

    def create_entities(self, entities: Any) -> list[dict[str, Any]]:
        """Create the entities whose names are new (others are skipped), with their
        observations, in one transaction; returns the created ones."""
        items = []
        for i, e in enumerate(_list(entities, "entities")):
            if not isinstance(e, Mapping):
                raise InvalidInputError(f"entities[{i}] must be an object, got {e!r}")
            items.append((_str(e.get("name"), f"entities[{i}].name"),
                          _str(e.get("entityType"), f"entities[{i}].entityType"),
                          _unique(_strings(e.get("observations", []), f"entities[{i}].observations"))))

        def run() -> list[dict[str, Any]]:
            created, seen = [], set()
            for name, etype, obs in items:
                if name in seen or self._entity(name) is not None:
                    continue
                seen.add(name)
                created.append((name, etype, obs))
            if created:
                with self._txn() as b:
                    for name, etype, obs in created:
                        eid = b.remember(entity_text(name, etype), {"kind": ENTITY, "entityType": etype},
                                         type="semantic", key=name)
                        self._queue_observations(b, eid, name, obs)
            return [{"name": n, "entityType": t, "observations": o} for n, t, o in created]
        return self._retry(run)

    @staticmethod
    def _queue_observations(b: Any, eid: Any, name: str, texts: Sequence[str]) -> None:
        for text in texts:
            oid = b.remember(text, {"kind": OBSERVATION, "entity": name}, type="semantic",
                             key=observation_key(name, text))
            b.connect(eid, oid, OBSERVATION_RELATION)

    def add_observations(self, observations: Any) -> list[dict[str, Any]]:
        """Add the new observations to existing entities (duplicates are skipped);
        an unknown entity fails the whole call."""
        items = []
        for i, o in enumerate(_list(observations, "observations")):
            if not isinstance(o, Mapping):
                raise InvalidInputError(f"observations[{i}] must be an object, got {o!r}")
            items.append((_str(o.get("entityName"), f"observations[{i}].entityName"),
                          _strings(o.get("contents"), f"observations[{i}].contents")))

        def run() -> list[dict[str, Any]]:
            plan, queued = [], set()
            for name, contents in items:
                ent = self._require(name)
                added = []
                for text in contents:
                    key = observation_key(name, text)
                    if key in queued or self._has_key(key):
                        continue
                    queued.add(key)
                    added.append(text)
                plan.append((name, ent.id, added))
            if queued:
                with self._txn() as b:
                    for name, eid, added in plan:
                        self._queue_observations(b, eid, name, added)
            return [{"entityName": n, "addedObservations": a} for n, _, a in plan]
        return self._retry(run)

    def _has_key(self, key: str) -> bool:
        try:
            self.h.get_by_key(key)
            return True
        except MemoryNotFoundError:
            return False

    def create_relations(self, relations: Any) -> list[dict[str, str]]:
        """Create the relations that do not exist yet; both ends must be entities."""
        rels = _unique(_relation(r, f"relations[{i}]") for i, r in enumerate(_list(relations, "relations")))

        def run() -> list[dict[str, str]]:
            new = []
            for src, dst, rtype in rels:
                a, b = self._require(src), self._require(dst)
                if not self._has_edge(a.id, b.id, rtype):
                    new.append((a.id, b.id, (src, dst, rtype)))
            if new:
                with self._txn() as bt:
                    for a_id, b_id, (_, _, rtype) in new:
                        bt.connect(a_id, b_id, rtype)
            return [_rel_dict(r) for _, _, r in new]
        return self._retry(run)

    def _has_edge(self, a: int, b: int, relation: str) -> bool:
        return any(e.dst == b for e in self.h.neighbors(a, relation=relation, direction="out"))

    def delete_entities(self, entity_names: Any) -> dict[str, list[str]]:
        """Delete entities with their observations and relations; unknown names are
        reported in ``notFound``."""
        names = _unique(_strings(entity_names, "entityNames"))

        def run() -> dict[str, list[str]]:
            deleted, missing, ids = [], [], []
            for name in names:
                ent = self._entity(name)
                if ent is None:
                    missing.append(name)
                    continue
                deleted.append(name)
                ids.append(ent.id)
                ids.extend(m.id for m in self._observation_memories(ent))
            if ids:
                with self._txn() as b:
                    for mid in ids:
                        b.forget(mid)
            return {"deleted": deleted, "notFound": missing}
        return self._retry(run)

    def delete_observations(self, deletions: Any) -> dict[str, Any]:
        """Delete the given observations; returns ``deletedCount`` and ``missingEntities``."""
        items = []
        for i, d in enumerate(_list(deletions, "deletions")):
            if not isinstance(d, Mapping):
                raise InvalidInputError(f"deletions[{i}] must be an object, got {d!r}")
            items.append((_str(d.get("entityName"), f"deletions[{i}].entityName"),
                          _strings(d.get("observations"), f"deletions[{i}].observations")))

        def run() -> dict[str, Any]:
            missing, ids = [], []
            for name, texts in items:
                if self._entity(name) is None:
                    missing.append(name)
                    continue
                for text in texts:
                    try:
                        m = self.h.get_by_key(observation_key(name, text))
                    except MemoryNotFoundError:
                        continue
                    if is_observation(m) and m.metadata["entity"] == name and m.id not in ids:
                        ids.append(m.id)
            if ids:
                with self._txn() as b:
                    for mid in ids:
                        b.forget(mid)
            return {"deletedCount": len(ids), "missingEntities": _unique(missing)}
        return self._retry(run)

    def delete_relations(self, relations: Any) -> int:
        """Delete the given relations; returns how many existed."""
        rels = _unique(_relation(r, f"relations[{i}]") for i, r in enumerate(_list(relations, "relations")))

        def run() -> int:
            found = []
            for src, dst, rtype in rels:
                a, b = self._entity(src), self._entity(dst)
                if a is not None and b is not None and self._has_edge(a.id, b.id, rtype):
                    found.append((a.id, b.id, rtype))
            if found:
                with self._txn() as bt:
                    for a_id, b_id, rtype in found:
                        bt.disconnect(a_id, b_id, rtype)
            return len(found)
        return self._retry(run)

    # -- reads ---------------------------------------------------------------------

    def read_graph(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """Entities (in creation order) ``offset .. offset+limit`` with their observations,
        and the relations that start at them, from one snapshot; plus ``total``."""
        g = self.h.graph()
        nodes = g.nodes
        ents: list[int] = []
        obs_of: dict[Any, list[int]] = {}  # entity name -> its observations' ids, ascending
        for n, a in sorted(nodes(data=True)):
            kind = a["metadata"].get("kind")
            if kind == ENTITY and a.get("key") is not None:
                ents.append(n)
            elif kind == OBSERVATION:
                obs_of.setdefault(a["metadata"].get("entity"), []).append(n)
        page = ents[offset:] if limit is None else ents[offset:offset + limit]
        out_e: list[dict[str, Any]] = []
        out_r: list[dict[str, str]] = []
        for n in page:
            attrs = nodes[n]
            rels = [(dst, rel) for _, dst, rel in g.out_edges(n, keys=True)
                    if nodes[dst]["metadata"].get("kind") == ENTITY and nodes[dst].get("key") is not None]
            out_e.append({"name": attrs["key"], "entityType": attrs["metadata"].get("entityType", ""),
                          "observations": [nodes[o]["text"] for o in obs_of.get(attrs["key"], [])]})
            out_r.extend({"from": attrs["key"], "to": nodes[d]["key"], "relationType": r}
                         for d, r in sorted(rels))
        return {"entities": out_e, "relations": out_r, "total": len(ents)}

    def _entity_dict(self, m: "Memory", handle: "Namespace", obs: Sequence["Memory"]) -> dict[str, Any]:
        d: dict[str, Any] = {"name": m.key, "entityType": m.metadata.get("entityType", ""),
                             "observations": [o.text for o in obs]}
        if handle is not self.h:
            d["namespace"] = handle.name
        return d

    def _subgraph(self, found: Sequence[tuple["Memory", "Namespace"]]) -> dict[str, Any]:
        """The entities found and every relation with at least one end among them."""
        entities: list[dict[str, Any]] = []
        observation_ids: set[int] = set()
        for m, h in found:
            obs = self._observation_memories(m, h)
            observation_ids.update(o.id for o in obs)
            entities.append(self._entity_dict(m, h, obs))
        rels: list[tuple[str, str, str]] = []
        for m, h in found:
            for e in h.neighbors(m.id, direction="both"):
                other = e.dst if e.src == m.id else e.src
                if other in observation_ids:
                    continue
                try:
                    o = h.get(other)
                except MemoryNotFoundError:
                    continue
                if not is_entity(o):
                    continue
                pair = (m.key, o.key) if e.src == m.id else (o.key, m.key)
                rels.append((str(pair[0]), str(pair[1]), e.relation))
        return {"entities": entities, "relations": [_rel_dict(r) for r in _unique(rels)]}

    def open_nodes(self, names: Any) -> dict[str, Any]:
        """The named entities (own namespace first, then readable ones) and their relations."""
        found: list[tuple["Memory", "Namespace"]] = []
        for name in _unique(_strings(names, "names")):
            for h in [self.h, *self.readable]:
                try:
                    m = self._entity(name, h)
                except InvalidInputError:
                    m = None
                if m is not None:
                    found.append((m, h))
                    break
        return self._subgraph(found)

    def search_nodes(self, query: str, limit: int = 10) -> dict[str, Any]:
        """Entities ranked by hybrid search over names, types and observations."""
        query = _str(query, "query")
        handles = {h.name: h for h in [self.h, *self.readable]}
        hits = self.h.ask(query, top_k=max(2 * limit, 10), namespaces=list(handles),
                          filter=GRAPH_FILTER)
        found: list[tuple["Memory", "Namespace"]] = []
        seen: set[tuple[str, str]] = set()
        for m in hits:
            name = m.key if is_entity(m) else (m.metadata["entity"] if is_observation(m) else None)
            if name is None or (m.namespace, name) in seen:
                continue
            seen.add((m.namespace, name))
            h = handles[m.namespace]
            ent = m if is_entity(m) else self._entity(name, h)
            if ent is not None:
                found.append((ent, h))
            if len(found) >= limit:
                break
        return self._subgraph(found)

    # -- import --------------------------------------------------------------------

    def import_jsonl(self, path: str | os.PathLike[str], chunk: int = 500) -> ImportReport:
        """Merge a reference ``memory.jsonl`` into this namespace: every entity, its
        observations and every relation arrive (existing ones are kept, not duplicated).
        Written in transactions of ``chunk`` entities / relations."""
        entities, relations, skipped = read_jsonl(path)
        rep = ImportReport(skipped_lines=skipped)
        merged: dict[str, dict[str, Any]] = {}
        for e in entities:  # a name written twice: one entity, observations joined
            m = merged.setdefault(e["name"], {"name": e["name"], "entityType": e["entityType"],
                                              "observations": []})
            m["observations"].extend(e["observations"])
        todo = list(merged.values())
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            created = self.create_entities(part)
            rep.entities += len(created)
            rep.observations += sum(len(c["observations"]) for c in created)
            new = {c["name"] for c in created}
            more = [{"entityName": e["name"], "contents": e["observations"]}
                    for e in part if e["name"] not in new and e["observations"]]
            if more:
                rep.observations += sum(len(r["addedObservations"]) for r in self.add_observations(more))
        names = set(merged)
        good = []
        for r in relations:
            if r["from"] in names and r["to"] in names or (
                    self._entity(r["from"]) is not None and self._entity(r["to"]) is not None):
                good.append(r)
            else:
                rep.dangling_relations.append(r)
        for i in range(0, len(good), chunk):
            rep.relations += len(self.create_relations(good[i:i + chunk]))
        return rep

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write the graph as a reference ``memory.jsonl`` (entities, then relations);
        returns the number of lines."""
        g = self.read_graph()
        lines = [json.dumps({"type": "entity", **e}, ensure_ascii=False, separators=(",", ":"))
                 for e in g["entities"]]
        lines += [json.dumps({"type": "relation", **r}, ensure_ascii=False, separators=(",", ":"))
                  for r in g["relations"]]
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        return len(lines)
