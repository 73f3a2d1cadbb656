"""The query planner: candidates, vector + lexical fusion, neighbours and replies, feedback,
graph, types, recency, dates in the question.

For one ``ask`` over one snapshot (see docs/retrieval.md for the full story)::

    candidates  live slots of the asked namespaces, minus the type / time filters
    V(r)        min-max normalised cosine over the candidates
    L(r)        min-max normalised BM25 of the stem field + SURFACE_WEIGHT * the word
                field (postings in LMDB, see _lexical_index)
    rel(r)      = w_vec * V(r) + (1 - w_vec) * L(r)
    nbr(r)      = max(NEIGHBOUR_WEIGHT * max(rel(prev r), rel(next r)),
                      REPLY_WEIGHT * rel(prev r) if prev r asks a question)
                  prev/next: adjacent candidates of the same namespace, (timestamp, id) order
    fb(r)       feedback round from the best hits' words (PRF_WEIGHT, off by default)
    graph(r)    activation spread from the best hits through edges (use_graph=True)
    score(r)    = (rel + nbr + fb + graph)(r) * type_weight(r) * recency(r) * time(r)
    time(r)     1 inside the window a date in the query names (_temporal), else
                1 - TEMPORAL_WEIGHT

Everything is vectorised over the candidate rows (dense over all slots when most of
them are candidates, gathered otherwise); ties are broken by slot (= id) order, so
the same store and query always give the same answers, scores and order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from . import _filter_index, _fusion, _graph, _idslots, _lexical_index, _temporal, _timeorder
from . import _storage as S
from ._engine import Snapshot

#: Below this fraction of rows selected, gather the rows before the matrix product
#: (cheaper than scoring every row of the matrix).
GATHER_FRACTION = 0.25


def candidate_mask(snap: Snapshot, ns_ids: Iterable[int]) -> np.ndarray:
    """Boolean mask over the snapshot's slots: live and in one of ``ns_ids``."""
    ids = sorted(set(ns_ids))
    if snap.state.n_slots == 0 or not ids:
        return np.zeros(snap.state.n_slots, bool)
    ns_col = snap.slots["ns"]
    if len(ids) == 1:
        mask = ns_col == ids[0]
    else:
        mask = np.isin(ns_col, np.asarray(ids, dtype=ns_col.dtype))
    mask &= snap.live_mask()
    return mask


def candidate_rows(snap: Snapshot, ns_ids: Iterable[int]) -> np.ndarray:
    """Slots that are live in the snapshot and belong to one of ``ns_ids`` (sorted)."""
    return np.flatnonzero(candidate_mask(snap, ns_ids))


def cosine(snap: Snapshot, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``query`` (normalised) with the given rows, float32."""
    n = snap.state.n_slots
    if rows.size == 0:
        return np.empty(0, np.float32)
    if rows.size >= n * GATHER_FRACTION:
        return (snap.matrix @ query)[rows]
    return snap.matrix[rows] @ query


def order_top(scores: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    """Indices into ``scores`` of the best ``k``: score descending, then row ascending.

    ``rows`` (the slot of each score) breaks ties; None means the index is the slot.
    Entries of ``-inf`` are never returned.
    """
    if k <= 0 or scores.size == 0:
        return np.empty(0, np.int64)
    if scores.size > k:
        part = np.argpartition(scores, scores.size - k)[scores.size - k:]
        threshold = scores[part].min()
        cand = np.flatnonzero(scores >= threshold)  # every tie at the boundary
    else:
        cand = np.arange(scores.size)
    tie = cand if rows is None else rows[cand]
    order = np.lexsort((tie, -scores[cand].astype(np.float64)))
    out = cand[order][:k]
    if out.size and scores[out[-1]] == -np.inf:
        out = out[scores[out] > -np.inf]
    return out


def _tie_rows(snap: Snapshot, rows: np.ndarray | None) -> np.ndarray | None:
    """What breaks score ties: the slots (= id order), or the ids themselves once an
    update appended a slot out of id order (so a compaction changes no answer)."""
    if not snap.state.unsorted:
        return rows
    col = snap.slots["id"][: snap.state.n_slots]
    return np.asarray(col if rows is None else col[rows], dtype=np.int64)


def vector_scores(snap: Snapshot, query: np.ndarray, ns_ids: Iterable[int]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Cosine scores of the candidate slots: ``(scores, rows)``.

    When most slots are candidates, scores cover every slot (``rows`` is None, the
    index is the slot) and excluded slots score ``-inf``; otherwise only the
    candidate rows are gathered and scored.
    """
    mask = candidate_mask(snap, ns_ids)
    n = mask.size
    if n == 0:
        return np.empty(0, np.float32), None
    selected = int(np.count_nonzero(mask))
    if selected >= n * GATHER_FRACTION:
        scores = snap.matrix @ query
        if selected < n:
            scores[~mask] = -np.inf
        return scores, None
    rows = np.flatnonzero(mask)
    return snap.matrix[rows] @ query, rows




# --------------------------------------------------------------------------- the planner

#: How much of the best adjacent candidate's ``rel`` a candidate borrows (0 = off).
NEIGHBOUR_WEIGHT: float = _fusion.NEIGHBOUR_WEIGHT
#: Conversation structure: the turn right after a question borrows this share of the
#: question's ``rel`` (when larger than its neighbour term); 0 = off. See _fusion.
REPLY_WEIGHT: float = _fusion.REPLY_WEIGHT
#: Lossless lexical matching: weight of the exact-word (surface) field next to the
#: stem field in BM25; 0 = stems only.
SURFACE_WEIGHT: float = _lexical_index.SURFACE_WEIGHT
#: Temporal query understanding: a memory outside the window the query names keeps
#: 1 - TEMPORAL_WEIGHT of its score (0 = off). The window is widened after its end by
#: its own length (TEMPORAL_LAG = 1): what happens is often told a little later.
TEMPORAL_WEIGHT: float = 0.5
TEMPORAL_LAG: float = 1.0
#: Multi-hop: a second round seeded by the best PRF_SEEDS candidates (pseudo-relevance
#: feedback, RM3-style): their PRF_TERMS most weighted new stems form a second query
#: whose max-normalised BM25, times PRF_WEIGHT, is added. Off by default (0): it did
#: not raise LoCoMo recall (bench/locomo_bench.py, docs/retrieval.md).
PRF_WEIGHT: float = 0.0
PRF_SEEDS: int = 5
PRF_TERMS: int = 10
#: Vector weight in ``rel`` for the built-in hashing embedder and for real models.
HASH_VECTOR_WEIGHT: float = _fusion.DEFAULT_HASH_VECTOR_WEIGHT
MODEL_VECTOR_WEIGHT: float = _fusion.DEFAULT_VECTOR_WEIGHT
#: Graph expansion: seeds are the best max(top_k, GRAPH_SEEDS) candidates by rel + nbr,
#: at most GRAPH_MAX_SEEDS.
GRAPH_SEEDS: int = 10
GRAPH_MAX_SEEDS: int = 100
GRAPH_WEIGHT: float = 1.0
#: Default ranking weight per memory type (episodic, semantic, procedural).
TYPE_WEIGHTS: dict[str, float] = {"episodic": 1.0, "semantic": 1.1, "procedural": 1.05}
#: recency(r) = 1 - RECENCY_WEIGHT + RECENCY_WEIGHT * 2 ** (-age(r) / half_life)
RECENCY_WEIGHT: float = 0.5
DEFAULT_HALF_LIFE_S: float = 30 * 86_400.0
#: since/until: up to this many time-index entries per namespace are read; a wider
#: window uses the slot time column (the same timestamps, vectorised).
TIME_INDEX_BUDGET: int = 1024

#: The parts of ``Memory.explain`` that add up to the score (the others are raw inputs).
EXPLAIN_PARTS = ("vector", "lexical", "neighbour", "feedback", "graph", "type", "recency", "time")


def vector_weight_for(embedder: Any, embedder_name: str) -> float:
    """w_vec for an embedder: its ``vector_weight`` attribute, else by kind."""
    w = getattr(embedder, "vector_weight", None)
    if isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 <= w <= 1.0:
        return float(w)
    return HASH_VECTOR_WEIGHT if embedder_name.startswith("mnemos-hash-v1") else MODEL_VECTOR_WEIGHT


@dataclass(frozen=True)
class Query:
    """One validated ``ask``: what to search and how to rank it."""

    text: str
    vector: np.ndarray
    ns_ids: tuple[int, ...]
    top_k: int
    vector_weight: float
    use_graph: bool = False
    half_life_s: float | None = None
    type_codes: tuple[int, ...] | None = None
    type_weights: tuple[float, ...] = tuple(TYPE_WEIGHTS.values())
    since_us: int | None = None
    until_us: int | None = None
    explain: bool = False
    neighbour_weight: float = NEIGHBOUR_WEIGHT
    #: slots a metadata filter allows, within the live slots of ``ns_ids`` (see
    #: :func:`filter_mask`); None: no filter
    allowed: np.ndarray | None = None
    #: "hybrid" (the full planner), "vector" (cosine only) or "lexical" (BM25 only)
    mode: str = "hybrid"
    #: None: the module default at run time (REPLY_WEIGHT, SURFACE_WEIGHT, ...)
    reply_weight: float | None = None
    surface_weight: float | None = None
    #: anchor of relative dates in the query ("last week"), epoch microseconds
    now_us: int | None = None


@dataclass(frozen=True)
class Hit:
    """One ranked answer: slot, memory id, score and (with explain) its parts."""

    slot: int
    id: int
    score: float
    parts: dict[str, float] | None = None


def _time_mask(env: Any, snap: Snapshot, ns_ids: Sequence[int], since: int | None,
               until: int | None) -> np.ndarray:
    """Slots whose timestamp is in [since, until], from the time index when the window is small."""
    n = snap.state.n_slots
    lo = S.ts_key(since) if since is not None else b""
    hi = S.ts_key(until) if until is not None else None
    ids: list[bytes] = []
    with snap.txn.cursor(db=env.db("time")) as cur:
        for ns in sorted(set(ns_ids)):
            prefix = S.u32(ns)
            if not cur.set_range(prefix + lo):
                continue
            count = 0
            for k in cur.iternext(values=False):
                if not k.startswith(prefix) or (hi is not None and k[4:12] > hi):
                    break
                count += 1
                if count > TIME_INDEX_BUDGET:  # a wide window: the column is faster
                    ts = snap.slots["ts"]
                    mask = np.ones(n, bool)
                    if since is not None:
                        mask &= ts >= since
                    if until is not None:
                        mask &= ts <= until
                    return mask
                ids.append(k[12:20])
    mask = np.zeros(n, bool)
    if ids:
        want = np.frombuffer(b"".join(ids), dtype=">u8").astype(np.int64)
        mask[_slots_of(snap, want)[1]] = True
    return mask


def _slots_of(snap: Snapshot, ids: np.ndarray, col: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``ids`` have a slot in the snapshot, their (latest) slots): see _idslots."""
    return _idslots.slots_of(snap, ids, col)


def _normalise(x: np.ndarray, valid: np.ndarray | None, scale: float = 1.0) -> np.ndarray:
    """``scale`` * min-max onto [0, 1] over the valid entries (a constant positive vector -> 1)."""
    if valid is None:
        lo, hi = float(x.min()), float(x.max())
    else:
        lo = float(np.min(x, where=valid, initial=np.inf))
        hi = float(np.max(x, where=valid, initial=-np.inf))
    return _minmax(x, lo, hi, scale)


def _minmax(x: np.ndarray, lo: float, hi: float, scale: float) -> np.ndarray:
    """``scale * (x - lo) / (hi - lo)`` as float32; when hi == lo: ``scale`` where x > 0, else 0."""
    if hi > lo:
        out = np.subtract(x, np.float32(lo), dtype=np.float32)
        out *= np.float32(scale / (hi - lo))
        return out
    if hi > 0:
        return (x > 0).astype(np.float32) * np.float32(scale)
    return np.zeros(x.shape[0], np.float32)


def _sum_by_index(idx: np.ndarray, vals: np.ndarray, unique: bool, m: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct indices, float64 sum of ``vals`` per index), sums in input order."""
    if unique or idx.size < 2:  # one posting per memory: only the order may need fixing
        if idx.size > 1 and bool(np.any(idx[1:] < idx[:-1])):
            order = np.argsort(idx, kind="stable")
            return idx[order], vals[order].astype(np.float64)
        return idx, vals.astype(np.float64)
    if idx.size * 8 >= m:  # many postings: one dense pass
        dense = np.bincount(idx, weights=vals, minlength=m)
        uniq = np.flatnonzero(dense)  # BM25 contributions are > 0
        return uniq, dense[uniq]
    order = np.argsort(idx, kind="stable")
    s_idx = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], s_idx[1:] != s_idx[:-1])))
    return s_idx[starts], np.add.reduceat(vals[order].astype(np.float64), starts)


def _lexical_part(engine: Any, snap: Snapshot, q: Query, mask: np.ndarray | None,
                  rows: np.ndarray | None, selected: int, id_col: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """BM25 of the candidates that match a query term: (indices, bm25, weighted L part).

    Indices are positions in the score arrays (ascending, unique); every other
    candidate has BM25 0. None when no candidate matches.
    """
    sw = SURFACE_WEIGHT if q.surface_weight is None else q.surface_weight
    terms = _lexical_index.query_terms(q.text, surface=sw > 0)
    if not terms or q.vector_weight >= 1.0:
        return None
    ids, contrib = _lexical_index.bm25_postings(snap.txn, engine.env, q.ns_ids, terms,
                                                surface_weight=sw)
    if not ids.size:
        return None
    ok, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    contrib = contrib[ok]
    if mask is not None:
        keep = mask[slots]
        slots, contrib = slots[keep], contrib[keep]
    if not slots.size:
        return None
    idx = slots if rows is None else np.searchsorted(rows, slots)
    uniq, sums = _sum_by_index(idx, contrib, len(terms) == 1, rows.size if rows is not None
                               else snap.state.n_slots)
    bm = sums.astype(np.float32)
    hi = float(bm.max())
    lo = 0.0 if uniq.size < selected else float(bm.min())  # candidates without a hit score 0
    return uniq, bm, _minmax(bm, lo, hi, 1.0 - q.vector_weight)


def filter_mask(engine: Any, snap: Snapshot, ns_ids: Sequence[int], node: Any,
                universe: np.ndarray | None = None, ids: np.ndarray | None = None) -> np.ndarray:
    """Slots live in ``ns_ids`` (or in ``universe``) whose metadata matches the parsed
    filter ``node``.

    Answered by the filter index (``_filter_index``); a snapshot without one (a store
    made before it, open read-only) decodes the records of the namespaces instead.
    ``ids``: the slots' contiguous id column; None takes it from the time-order cache,
    which only committed snapshots may use (a write transaction passes its own).
    """
    from . import filters as F
    if universe is None:
        universe = candidate_mask(snap, ns_ids)
    n = snap.state.n_slots
    if ids is None:
        view = _timeorder.for_engine(engine).view(snap)  # its id column is contiguous already
        ids = view.ids[:n] if view.n >= n else np.ascontiguousarray(snap.slots["id"][:n])
    id_col = ids

    def meta_of(mid: int) -> Any:
        rec = engine.record(snap.txn, mid)
        return rec.metadata if rec is not None else None

    out = _filter_index.select(snap.txn, engine.env, ns_ids, id_col, universe, node,
                               lambda x: _slots_of(snap, x, id_col)[1], meta_of)
    if out is None:
        out = np.zeros(n, bool)
        for slot in np.flatnonzero(universe).tolist():
            meta = meta_of(int(id_col[slot]))
            out[slot] = meta is not None and F.evaluate(node, meta)
    return out


def _candidates(engine: Any, snap: Snapshot, q: Query, view: Any
                ) -> tuple[np.ndarray | None, int, int]:
    """(candidate mask or None for every slot, how many, slots of the asked namespaces)."""
    n = snap.state.n_slots
    # slots of the asked namespaces (when the cache is exactly this snapshot's)
    ns_total = sum(view.blocks[ns].size for ns in q.ns_ids if ns in view.blocks) \
        if view.n == n else -1
    filtered = q.type_codes is not None or q.since_us is not None or q.until_us is not None \
        or q.allowed is not None
    if not (filtered or ns_total != n or snap.state.live != n):
        return None, n, ns_total
    if q.allowed is not None:  # a filter's slots: live and of the asked namespaces already
        mask = q.allowed.copy()
    else:
        mask = candidate_mask(snap, q.ns_ids)
    if q.type_codes is not None:
        mask &= np.isin(view.types[:n], np.asarray(q.type_codes, dtype=np.uint8))
    if q.since_us is not None or q.until_us is not None:
        mask &= _time_mask(engine.env, snap, q.ns_ids, q.since_us, q.until_us)
    return mask, int(np.count_nonzero(mask)), ns_total


def run_vector(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """``mode="vector"``: the candidates in pure cosine order; the score is the cosine."""
    n = snap.state.n_slots
    if n == 0 or not q.ns_ids:
        return []
    view = _timeorder.for_engine(engine).view(snap)
    mask, selected, _ = _candidates(engine, snap, q, view)
    if selected == 0:
        return []
    if mask is None or selected >= n * GATHER_FRACTION:
        rows, cos = None, snap.matrix @ q.vector
        if mask is not None and selected < n:
            cos[~mask] = -np.inf
    else:
        rows = np.flatnonzero(mask)
        cos = snap.matrix[rows] @ q.vector
    slot_of = (lambda i: i) if rows is None else (lambda i: int(rows[i]))
    picked = order_top(cos, _tie_rows(snap, rows), q.top_k).tolist()
    ids_col = snap.slots["id"]
    out = []
    for i in picked:
        slot = slot_of(int(i))
        c = float(cos[i])
        out.append(Hit(slot, int(ids_col[slot]), c, {"cosine": c} if q.explain else None))
    return out


def run_lexical(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """``mode="lexical"``: candidates with a query term, by BM25; the score is the BM25."""
    n = snap.state.n_slots
    sw = SURFACE_WEIGHT if q.surface_weight is None else q.surface_weight
    terms = _lexical_index.query_terms(q.text, surface=sw > 0)
    if n == 0 or not q.ns_ids or not terms:
        return []
    view = _timeorder.for_engine(engine).view(snap)
    mask, selected, _ = _candidates(engine, snap, q, view)
    if selected == 0:
        return []
    ids, contrib = _lexical_index.bm25_postings(snap.txn, engine.env, q.ns_ids, terms,
                                                surface_weight=sw)
    if not ids.size:
        return []
    id_col = view.ids[:n] if view.n >= n else None
    ok, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    contrib = contrib[ok]
    if mask is not None:
        keep = mask[slots]
        slots, contrib = slots[keep], contrib[keep]
    if not slots.size:
        return []
    uniq, sums = _sum_by_index(slots, contrib, len(terms) == 1, n)
    picked = order_top(sums, _tie_rows(snap, uniq), q.top_k).tolist()
    ids_col = snap.slots["id"]
    out = []
    for i in picked:
        slot, b = int(uniq[i]), float(sums[i])
        out.append(Hit(slot, int(ids_col[slot]), b, {"bm25": b} if q.explain else None))
    return out


def run(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """Rank the candidates of ``q`` in ``snap``; returns up to ``q.top_k`` hits, best first."""
    if q.mode == "vector":
        return run_vector(engine, snap, q)
    if q.mode == "lexical":
        return run_lexical(engine, snap, q)
    n = snap.state.n_slots
    if n == 0 or not q.ns_ids:
        return []
    view = _timeorder.for_engine(engine).view(snap)
    mask, selected, ns_total = _candidates(engine, snap, q, view)
    if selected == 0:
        return []
    closed = selected == ns_total  # every slot of the asked namespaces is a candidate
    if selected >= n * GATHER_FRACTION:
        rows, cos = None, snap.matrix @ q.vector
        valid = mask if selected < n else None
    else:
        assert mask is not None
        rows = np.flatnonzero(mask)
        cos, valid = snap.matrix[rows] @ q.vector, None
    vec = _normalise(cos, valid, q.vector_weight)
    # lexical: BM25 from the postings of the asked namespaces, added where it is not 0
    id_col = view.ids[:n] if view.n >= n else None
    lexical = _lexical_part(engine, snap, q, mask, rows, selected, id_col)
    rel = vec
    if lexical is not None:
        if q.explain:
            rel = vec.copy()
        rel[lexical[0]] += lexical[2]

    nbr = None
    if q.neighbour_weight > 0 and selected > 1:
        nbr = _timeorder.neighbour_best(view, q.ns_ids, n, mask, rows, rel, closed)
        nbr *= np.float32(q.neighbour_weight)  # a fresh array: scale in place
    reply_w = REPLY_WEIGHT if q.reply_weight is None else q.reply_weight
    if reply_w > 0 and selected > 1:
        reply = _reply_part(engine, snap, q, view, n, mask, rows, rel, closed, id_col, reply_w)
        if reply is not None:
            nbr = reply if nbr is None else np.maximum(nbr, reply, out=nbr)
    if nbr is None:
        pre = rel
    elif q.explain or q.use_graph:
        pre = rel + nbr  # rel stays intact for the explanation / graph seeds
    else:
        rel += nbr  # nothing reads rel again: save a pass and an allocation
        pre = rel

    prf = None
    if PRF_WEIGHT > 0 and selected > PRF_SEEDS:
        prf = _lexical_feedback(engine, snap, q, pre, rows, valid, mask, id_col)
    if prf is not None:
        pre = pre + prf if (q.explain or q.use_graph or pre is rel) else np.add(pre, prf, out=pre)
    graph = None
    if q.use_graph:
        graph = _graph_part(engine, snap, q, pre, rows, valid, mask)
    base = pre if graph is None else pre + graph

    tw: np.ndarray | float | None = None
    rec = None
    single = view.single_type if view.n == n else -1
    if single >= 0:  # one type in the whole generation: a constant factor
        w = float(q.type_weights[single])
        tw = None if w == 1.0 else w
    elif len(set(q.type_weights)) > 1:
        table = np.asarray(q.type_weights, dtype=np.float32)
        tw = table[view.types[:n]] if rows is None else table[view.types[rows]]
    window = tprior = None
    if TEMPORAL_WEIGHT > 0 and q.now_us is not None:
        window = _temporal.parse(q.text, q.now_us / 1e6)
        if window is not None:
            tprior = _time_prior(snap, rows, valid, window)
    if q.half_life_s is not None:
        ts = snap.slots["ts"] if rows is None else snap.slots["ts"][rows]
        newest = int(np.max(ts, where=valid, initial=np.iinfo(np.int64).min)) if valid is not None \
            else int(ts.max())
        age_s = (newest - ts).astype(np.float64) / 1e6
        rw = RECENCY_WEIGHT
        rec = ((1.0 - rw) + rw * np.exp2(-age_s / q.half_life_s)).astype(np.float32)
    final = base
    if tw is not None:
        final = final * (np.float32(tw) if isinstance(tw, float) else tw)
    if rec is not None:
        final = final * rec
    if tprior is not None:
        final = final * tprior
    if q.explain and (final is rel or final is vec):
        final = final.copy()  # the explanation reads vec/rel after final is masked
    if valid is not None:
        final[~valid] = -np.inf

    slot_of = (lambda i: i) if rows is None else (lambda i: int(rows[i]))
    picked = order_top(final, _tie_rows(snap, rows), q.top_k).tolist()
    ids_col = snap.slots["id"]
    out = []
    for i in picked:
        slot = slot_of(int(i))
        parts = None
        if q.explain:
            b = float(base[i])
            t = 1.0 if tw is None else tw if isinstance(tw, float) else float(tw[i])
            r = float(rec[i]) if rec is not None else 1.0
            tp = float(tprior[i]) if tprior is not None else 1.0
            li = -1
            if lexical is not None:
                li = int(np.searchsorted(lexical[0], i))
                li = li if li < lexical[0].size and lexical[0][li] == i else -1
            parts = {
                "vector": float(vec[i]),
                "lexical": float(lexical[2][li]) if li >= 0 else 0.0,
                "neighbour": float(nbr[i]) if nbr is not None else 0.0,
                "feedback": float(prf[i]) if prf is not None else 0.0,
                "graph": float(graph[i]) if graph is not None else 0.0,
                "type": b * (t - 1.0),
                "recency": b * t * (r - 1.0),
                "time": b * t * r * (tp - 1.0),
                "cosine": float(cos[i]),
                "bm25": float(lexical[1][li]) if li >= 0 else 0.0,
            }
            if window is not None:
                parts["window_start"], parts["window_end"] = window.start, window.end
        out.append(Hit(slot, int(ids_col[slot]), float(final[i]), parts))
    return out


def _lexical_feedback(engine: Any, snap: Snapshot, q: Query, pre: np.ndarray,
                      rows: np.ndarray | None, valid: np.ndarray | None, mask: np.ndarray | None,
                      id_col: np.ndarray | None) -> np.ndarray | None:
    """RM3-style feedback: BM25 of the best PRF_TERMS new stems of the best PRF_SEEDS hits.

    A seed's terms count by its score above the candidates' lowest score (a share
    every candidate has, like a flat vector part, says nothing about the seed) and
    by their frequency in it; the query's own stems are left out.
    """
    from . import _lexical
    ranked = pre if valid is None else np.where(valid, pre, np.float32(-np.inf))
    floor = float(np.min(pre, where=valid, initial=np.inf)) if valid is not None else float(pre.min())
    seeds = order_top(ranked, rows, PRF_SEEDS)
    seeds = seeds[ranked[seeds] > floor]
    if seeds.size == 0:
        return None
    seed_slots = seeds if rows is None else rows[seeds]
    ids_col = snap.slots["id"]
    qterms = set(_lexical_index.query_terms(q.text, surface=False))
    weight: dict[bytes, float] = {}
    lift = pre[seeds].astype(np.float64) - floor
    total = float(lift.sum())
    for slot, sc in zip(seed_slots.tolist(), lift.tolist()):
        rec = engine.record(snap.txn, int(ids_col[slot]))
        if rec is None:
            continue
        toks = _lexical.tokenize(rec.text)
        if not toks:
            continue
        share = sc / total / len(toks)
        for t in toks:
            key = t.encode("utf-8")
            if key not in qterms:
                weight[key] = weight.get(key, 0.0) + share
    if not weight:
        return None
    best = sorted(weight, key=lambda t: (-weight[t], t))[:PRF_TERMS]
    ids, contrib = _lexical_index.bm25_postings(snap.txn, engine.env, q.ns_ids, best,
                                                weights=[weight[t] for t in best])
    if not ids.size:
        return None
    ok, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    contrib = contrib[ok]
    if mask is not None:
        keep = mask[slots]
        slots, contrib = slots[keep], contrib[keep]
    if not slots.size:
        return None
    size = pre.shape[0]
    idx = slots if rows is None else np.searchsorted(rows, slots)
    dense = np.bincount(idx, weights=contrib, minlength=size).astype(np.float32)
    hi = float(dense.max())
    if hi <= 0:
        return None
    dense *= np.float32(PRF_WEIGHT / hi)
    return dense


def _time_prior(snap: Snapshot, rows: np.ndarray | None, valid: np.ndarray | None,
                window: _temporal.TimeWindow) -> np.ndarray | None:
    """Per candidate: 1 inside the (lag-widened) window, 1 - TEMPORAL_WEIGHT outside.

    None when the window holds every candidate or none of them (then it cannot
    reorder anything: a flat prior, never a hidden recency bias).
    """
    ts = snap.slots["ts"] if rows is None else snap.slots["ts"][rows]
    lo = int(window.start * 1e6)
    hi = int((window.end + TEMPORAL_LAG * (window.end - window.start)) * 1e6)
    inside = (ts >= lo) & (ts < hi)
    n_in = int(np.count_nonzero(inside & valid)) if valid is not None else int(inside.sum())
    n_all = int(np.count_nonzero(valid)) if valid is not None else inside.size
    if n_in == 0 or n_in == n_all:
        return None
    return np.where(inside, np.float32(1.0), np.float32(1.0 - TEMPORAL_WEIGHT))


def _reply_part(engine: Any, snap: Snapshot, q: Query, view: _timeorder.OrderView, n: int,
                mask: np.ndarray | None, rows: np.ndarray | None, rel: np.ndarray, closed: bool,
                id_col: np.ndarray | None, weight: float) -> np.ndarray | None:
    """``weight * rel(prev r)`` where the candidate before ``r`` asks a question, else 0.

    The memories that ask are listed by the lexical index (``QUESTION_TERM``), so this
    is one postings read plus two gathers.
    """
    qids = _lexical_index.question_ids(snap.txn, engine.env, q.ns_ids)
    if not qids.size:
        return None
    _, slots = _slots_of(snap, qids.astype(np.int64), id_col)
    if rows is not None:
        pos = np.searchsorted(rows, slots)
        pos_c = np.minimum(pos, rows.size - 1)
        slots = pos[(pos < rows.size) & (rows[pos_c] == slots)]
    asked = np.zeros(rel.shape[0], np.float32)
    asked[slots] = rel[slots]
    out = _timeorder.prev_values(view, q.ns_ids, n, mask, rows, asked, closed)
    out *= np.float32(weight)
    return out


def _graph_part(engine: Any, snap: Snapshot, q: Query, pre: np.ndarray,
                rows: np.ndarray | None, valid: np.ndarray | None,
                mask: np.ndarray | None) -> np.ndarray | None:
    """Activation spread from the best candidates through their edges, onto the rows."""
    ranked = pre if valid is None else np.where(valid, pre, -np.inf).astype(np.float32)
    seeds = order_top(ranked, _tie_rows(snap, rows), min(max(q.top_k, GRAPH_SEEDS), GRAPH_MAX_SEEDS))
    seeds = seeds[ranked[seeds] > 0]
    if seeds.size == 0:
        return None
    seed_slots = seeds if rows is None else rows[seeds]
    ids_col = snap.slots["id"]
    got_ids, amounts = _graph.spread(snap.txn, engine.env, ids_col[seed_slots].tolist(),
                                     pre[seeds].tolist())
    if got_ids.size == 0:
        return None
    ok, slots = _slots_of(snap, got_ids.astype(np.int64))
    amounts = amounts[ok]
    if mask is not None:
        keep = mask[slots]
        slots, amounts = slots[keep], amounts[keep]
    if slots.size == 0:
        return None
    out = np.zeros(pre.shape[0], np.float32)
    idx = slots if rows is None else np.searchsorted(rows, slots)
    out[idx] = (amounts * GRAPH_WEIGHT).astype(np.float32)
    return out


def parse_half_life(value: Any) -> float | None:
    """Seconds of a ``recency_bias`` value: False/None -> None, True -> the default
    half-life, else a duration: seconds, a timedelta, or "7d", "7 days", "12h", "2w"..."""
    from ._timeutil import parse_duration
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_HALF_LIFE_S
    return parse_duration(value, "recency_bias half-life")
