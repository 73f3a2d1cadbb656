"""The memory graph: local traversal for ``ask(use_graph=True)`` and export to networkx.

Graph expansion spreads the relevance of the best hits (the *seeds*) through their
edges for two steps — a personalised PageRank walk truncated after two hops::

    graph(r) = sum over t in (1, 2) of  d**t * [(P^T)**t s](r),     d = DAMPING = 0.5

``s`` holds the seeds' scores (0 elsewhere) and ``P`` is the row-normalised weight
matrix of the local subgraph (the seeds, their neighbours and their neighbours'
neighbours, edges taken in both directions, parallel edges summed, weights <= 0
ignored). A memory one edge away from a seed receives half of the seed's score
split by edge weight, two edges away a quarter, so a memory that shares no words with
the query can surface through its links. Pure numpy, deterministic (nodes in
ascending id order); ``networkx`` is imported only by :func:`to_networkx`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import lmdb
import numpy as np

from . import _storage as S

__all__ = ["DAMPING", "HOPS", "MAX_NODES", "spread", "spread_with", "to_networkx"]

DAMPING = 0.5
HOPS = 2
#: At most this many memories are visited around the seeds (hubs are cut, in id order).
MAX_NODES = 2000


def _edges_of(txn: lmdb.Transaction, env: Any, mid: int) -> list[tuple[int, float]]:
    """(other end, weight) of every edge touching ``mid``, both directions."""
    out: list[tuple[int, float]] = []
    key = S.u64(mid)
    for dname in ("edges_out", "edges_in"):
        with txn.cursor(db=env.db(dname)) as cur:
            if cur.set_range(key):
                for k, v in cur:
                    if not k.startswith(key):
                        break
                    out.append((S.from_u64(k[8:16]), S.from_f64(v)))
    return out


def spread(txn: lmdb.Transaction, env: Any, seeds: Sequence[int], scores: Sequence[float],
           damping: float = DAMPING, hops: int = HOPS,
           max_nodes: int = MAX_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Activation each memory receives from ``seeds`` through edges: (ids, amounts).

    ``ids`` ascending; seeds appear only when activation flows back to them.
    """
    return spread_with(lambda mid: _edges_of(txn, env, mid), seeds, scores, damping, hops,
                       max_nodes)


def spread_with(edges_of: Callable[[int], list[tuple[int, float]]], seeds: Sequence[int],
                scores: Sequence[float], damping: float = DAMPING, hops: int = HOPS,
                max_nodes: int = MAX_NODES,
                prefetch: Callable[[list[int]], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`spread` over any edge source: ``edges_of(id)`` lists (other end, weight)
    of every edge touching ``id``, both directions (shared by every engine).
    ``prefetch(ids)``, when given, is called with each hop's new nodes before their
    ``edges_of`` calls (a server engine reads them in one query)."""
    node_ids: list[int] = sorted(set(int(s) for s in seeds))
    known = set(node_ids)
    adj: dict[int, dict[int, float]] = {}
    frontier = list(node_ids)
    for _hop in range(hops):
        nxt: list[int] = []
        if prefetch is not None:
            prefetch([m for m in frontier if m not in adj])
        for mid in frontier:
            if mid in adj:
                continue
            nb: dict[int, float] = {}
            for other, w in edges_of(mid):
                if w > 0 and other != mid:
                    nb[other] = nb.get(other, 0.0) + w
            adj[mid] = nb
            for other in sorted(nb):
                if other not in known and len(known) < max_nodes:
                    known.add(other)
                    nxt.append(other)
        frontier = sorted(nxt)
    if not any(adj.values()):
        return np.empty(0, np.uint64), np.empty(0, np.float64)
    ids = np.array(sorted(known), dtype=np.int64)
    pos = {int(m): i for i, m in enumerate(ids.tolist())}
    src: list[int] = []
    dst: list[int] = []
    share: list[float] = []
    for a in sorted(adj):
        total = sum(adj[a].values())
        for b in sorted(adj[a]):
            if b in pos:
                src.append(pos[a])
                dst.append(pos[b])
                share.append(adj[a][b] / total)
    src_a, dst_a = np.array(src, np.int64), np.array(dst, np.int64)
    w_a = np.array(share, np.float64)
    x: np.ndarray = np.zeros(ids.size, np.float64)
    for sid, sc in zip(seeds, scores):
        x[pos[int(sid)]] += float(sc)
    got: np.ndarray = np.zeros(ids.size, np.float64)
    for _t in range(hops):
        x = np.bincount(dst_a, weights=x[src_a] * w_a, minlength=ids.size) * damping
        got += x
    keep = got > 0
    return ids[keep].astype(np.uint64), got[keep]


def to_networkx(engine: Any, txn: lmdb.Transaction, ns_ids: Iterable[int]) -> Any:
    """A ``networkx.MultiDiGraph`` of the live memories of ``ns_ids`` and their edges.

    Nodes are memory ids with attributes ``text``, ``namespace``, ``type``,
    ``created_at``, ``metadata`` (and ``key`` when set); edges ``src -> dst`` have
    ``key=relation``, ``relation`` and ``weight``.
    """
    import networkx as nx  # lazily: only users of the graph API pay for the import

    from ._timeutil import from_us
    g = nx.MultiDiGraph()
    env = engine.env
    members: list[int] = []
    for ns in sorted(set(ns_ids)):
        prefix = S.u32(ns)
        with txn.cursor(db=env.db("time")) as cur:
            ids = []
            if cur.set_range(prefix):
                for k in cur.iternext(values=False):
                    if not k.startswith(prefix):
                        break
                    ids.append(S.from_u64(k[12:20]))
        name = engine.ns_name(ns, txn)
        for mid in sorted(ids):
            rec = engine.record(txn, mid)
            if rec is None:
                continue
            attrs = {"text": rec.text, "namespace": name, "type": rec.type,
                     "created_at": from_us(rec.ts), "metadata": rec.metadata}
            if rec.key is not None:
                attrs["key"] = rec.key
            g.add_node(mid, **attrs)
            members.append(mid)
    for mid in members:
        for src, dst, rel, w in engine.edges(txn, mid, "out"):
            if dst in g:
                g.add_edge(src, dst, key=rel, relation=rel, weight=w)
    return g


def graph_of(snap: Any, ns_ids: Iterable[int]) -> Any:
    """:func:`to_networkx` over any engine's read view (``_backend.Reader``)."""
    import networkx as nx

    from ._timeutil import from_us
    g = nx.MultiDiGraph()
    members: list[int] = []
    for ns in sorted(set(ns_ids)):
        name = snap.ns_name(ns)
        for rec in sorted(snap.memories(ns, None, None, None), key=lambda r: r.id):
            attrs = {"text": rec.text, "namespace": name, "type": rec.type,
                     "created_at": from_us(rec.ts), "metadata": rec.metadata}
            if rec.key is not None:
                attrs["key"] = rec.key
            g.add_node(rec.id, **attrs)
            members.append(rec.id)
    for mid in members:
        for src, dst, rel, w in snap.edges(mid, "out"):
            if dst in g:
                g.add_edge(src, dst, key=rel, relation=rel, weight=w)
    return g
