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
                  * speaker(r) * question(r)
    time(r)     1 inside the window a date in the query names (_temporal), else
                1 - TEMPORAL_WEIGHT
    speaker(r)  1 when r's speaker label names someone the query names, else
                1 - SPEAKER_WEIGHT (no effect when the query names no speaker, or when
                the best of their memories scores below SPEAKER_GATE * the best)
    question(r) 1 - QUESTION_DISCOUNT when r asks a question, else 1

Everything is vectorised over the candidate rows (dense over all slots when most of
them are candidates, gathered otherwise); ties are broken by slot (= id) order, so
the same store and query always give the same answers, scores and order.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import _ann, _filter_index, _fusion, _graph, _idslots, _lexical_index, _querywords
from . import _specifics, _temporal, _timeorder
from . import _storage as S
from ._engine import Snapshot
from ._percache import PerOwner

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


#: Sorted rows spanning at most this many times their count are scored over the
#: slice they span (a view of the matrix) instead of gathered (a copy of every row).
SPAN_FACTOR = 2


#: From this many rows on, :func:`gather_dot` reads each row's first float before
#: copying the rows.
TOUCH_MIN = 64


def gather_dot(matrix: Any, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``matrix[rows] @ query`` for rows scattered over a large matrix, the same values.

    The copy of ``matrix[rows]`` goes row by row, and each row's copy first waits for
    its first cache line from memory: one memory latency per row, in turn. Reading each
    row's first float beforehand (a gather of independent loads, which the CPU keeps
    many of in flight) brings those lines in together; the copy then starts every row
    from the cache. For ~1,000 random rows of a 1M x 384 matrix it took ~35-40% less
    time on a 2-core VM; below TOUCH_MIN rows it is not worth a call.
    """
    if rows.size >= TOUCH_MIN:
        matrix[rows, 0]  # (the loads are the point; the values are not used)
    return matrix[rows] @ query  # type: ignore[no-any-return]


def dot_rows(matrix: Any, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``matrix[rows] @ query`` for sorted ``rows``.

    A namespace's memories sit mostly in runs of consecutive slots, so when the rows
    span at most SPAN_FACTOR times their count the product runs over that slice, a
    view (gathering copies every row: 1.3 MB for 650 rows of 512 floats, ~4x the
    product). The cosines are the same up to the last bit (BLAS sums a row the same
    way wherever it sits, except at a block's tail), as between the gathered and the
    whole-matrix product already.
    """
    if rows.size == 0:
        return np.empty(0, np.float32)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= SPAN_FACTOR * rows.size:
        out: np.ndarray = matrix[lo:hi] @ query
        return out if hi - lo == rows.size else out[rows - lo]
    return gather_dot(matrix, rows, query)


def cosine(snap: Snapshot, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``query`` (normalised) with the given (sorted) rows, float32."""
    n = snap.state.n_slots
    if rows.size == 0:
        return np.empty(0, np.float32)
    if rows.size >= n * GATHER_FRACTION:
        return (snap.matrix @ query)[rows]
    return dot_rows(snap.matrix, rows, query)


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
    return dot_rows(snap.matrix, rows, query), rows




# --------------------------------------------------------------------------- the planner

#: How much of the best adjacent candidate's ``rel`` a candidate borrows (0 = off).
NEIGHBOUR_WEIGHT: float = _fusion.NEIGHBOUR_WEIGHT
#: Conversation structure: the turn right after a question borrows this share of the
#: question's ``rel`` (when larger than its neighbour term); 0 = off. See _fusion.
REPLY_WEIGHT: float = _fusion.REPLY_WEIGHT
#: Lossless lexical matching: weight of the exact-word (surface) field next to the
#: stem field in BM25; 0 = stems only.
SURFACE_WEIGHT: float = _lexical_index.SURFACE_WEIGHT
#: Query understanding: the weight, as a query term, of the noun of a function phrase
#: ("kind" in "what kind of art"; _querywords.FUNCTION_NOUNS); 0 = not a term, 1 = off.
FUNCTION_WEIGHT: float = 0.0
#: Typo tolerance: the indexed words one slip away from a query word that matches
#: nothing ("funraiser" -> "fundraiser") are asked with this weight; 0 = off.
TYPO_WEIGHT: float = 0.5
#: Temporal query understanding: a memory outside the window the query names keeps
#: 1 - TEMPORAL_WEIGHT of its score (0 = off). The window is widened after its end by
#: its own length (TEMPORAL_LAG = 1): what happens is often told a little later.
TEMPORAL_WEIGHT: float = 0.5
TEMPORAL_LAG: float = 1.0
#: Who the question is about: a query that names a speaker (a word of the memories'
#: "Name: ..." labels, see _lexical.speaker_words) keeps the score of that speaker's
#: memories; the others keep 1 - SPEAKER_WEIGHT (0 = off). A flat prior (every
#: candidate or none spoken by a named speaker) changes nothing.
SPEAKER_WEIGHT: float = 0.3
#: ... only when the named speakers' best memory scores at least SPEAKER_GATE times the
#: best memory (before this prior): the question is about what they said themselves.
SPEAKER_GATE: float = 0.9
#: A memory that asks a question carries the topic, its reply the answer: it keeps
#: 1 - QUESTION_DISCOUNT of its score (0 = off); its reply borrows REPLY_WEIGHT of its rel.
QUESTION_DISCOUNT: float = 0.2
#: Explicit replies: the memories linked ``connect(reply, question, "reply_to")`` to one
#: of the best max(top_k, GRAPH_SEEDS) candidates borrow REPLY_WEIGHT of its rel.
REPLY_RELATION: str = "reply_to"
#: Multi-hop: a second round seeded by the best PRF_SEEDS candidates (pseudo-relevance
#: feedback, RM3-style): their PRF_TERMS most weighted new stems form a second query
#: whose max-normalised BM25, times PRF_WEIGHT, is added. Off by default (0): it did
#: not raise LoCoMo recall (bench/locomo_bench.py, docs/retrieval.md).
PRF_WEIGHT: float = 0.0
PRF_SEEDS: int = 5
PRF_TERMS: int = 10
#: Episode context: each of the best EPISODE_DEPTH candidates gains EPISODE_WEIGHT times
#: the best score, times the summed score of the other best candidates of its episode
#: (its namespace, timestamps within EPISODE_GAP_S of its own), over the largest such
#: sum (the episode's own memory included). 0 = off.
EPISODE_WEIGHT: float = 0.1
EPISODE_DEPTH: int = 30
EPISODE_GAP_S: float = 3600.0
#: Multi-hop, the named person's specifics: when the speaker prior is in force, the
#: named speakers' memories among the best SPECIFIC_DEPTH candidates gain up to
#: SPECIFIC_WEIGHT of the best score, by the idf of the rare words they hold (0 = off;
#: see _specifics).
SPECIFIC_WEIGHT: float = _specifics.SPECIFIC_WEIGHT
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
EXPLAIN_PARTS = ("vector", "lexical", "neighbour", "feedback", "graph", "type", "recency", "time",
                 "question", "episode", "speaker", "specifics")


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


def _posting_slots(snap: Any, ids: np.ndarray, contrib: np.ndarray, id_col: np.ndarray | None,
                   mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The slots of postings ``ids`` (memories of this snapshot, inside ``mask`` if given)
    with their BM25 contributions."""
    ok, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    contrib = contrib[ok]
    if mask is not None:
        keep = mask[slots]
        slots, contrib = slots[keep], contrib[keep]
    return slots, contrib


def _index_in(rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Positions in the sorted ``rows`` of ``slots`` (all among them): a subtraction when
    the rows are consecutive slots (one namespace written in one run), else a search."""
    if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:
        return slots - rows[0]
    return np.searchsorted(rows, slots)


def _slots_of(snap: Snapshot, ids: np.ndarray, col: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``ids`` have a slot in the snapshot, their (latest) slots): see _idslots."""
    return _idslots.slots_of(snap, ids, col)


def _normalise(x: np.ndarray, valid: np.ndarray | None, scale: float = 1.0,
               floor: float | None = None) -> np.ndarray:
    """``scale`` * min-max onto [0, 1] over the valid entries (a constant positive vector -> 1).

    ``floor``: a lower bound known from outside ``x`` (the ANN path's estimate of the
    minimum over every candidate), used when below the minimum of ``x``.
    """
    if valid is None:
        lo, hi = float(x.min()), float(x.max())
    else:
        lo = float(np.min(x, where=valid, initial=np.inf))
        hi = float(np.max(x, where=valid, initial=-np.inf))
    if floor is not None:
        lo = min(lo, floor)
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


LexHits = tuple[np.ndarray, np.ndarray, int]


def _bm25(snap: Snapshot, q: Query, sw: float
          ) -> tuple[np.ndarray, np.ndarray, int, list[bytes]] | None:
    """The BM25 contributions of the query's terms over the asked namespaces: (ids,
    contribution per posting, number of terms, typo corrections among them); None
    without a term. The query words are :func:`_querywords.weighted_terms` (function
    phrases: FUNCTION_WEIGHT); a word none of whose terms has postings is looked up one
    typing slip away (TYPO_WEIGHT), and the corrections are read after the query's own
    terms (so a query without an unknown word costs nothing more)."""
    terms, weights = _querywords.weighted_terms(q.text, sw > 0, FUNCTION_WEIGHT)
    if not terms:
        return None
    found: set[bytes] | None = set() if TYPO_WEIGHT > 0 else None
    ids, contrib = snap.bm25_postings(q.ns_ids, terms, surface_weight=sw, weights=weights,
                                      found=found)
    typos: list[bytes] = []
    if found is not None and len(found) < len(terms):
        typos = _querywords.corrections(
            q.text, sw > 0, found,
            lambda prefix: snap.surface_prefixed(q.ns_ids, prefix, _querywords.TYPO_SCAN_MAX))
        if typos:
            tids, tcon = snap.bm25_postings(q.ns_ids, typos, surface_weight=sw,
                                            weights=[TYPO_WEIGHT] * len(typos))
            if tids.size:
                ids, contrib = np.concatenate([ids, tids]), np.concatenate([contrib, tcon])
    return ids, contrib, len(terms) + len(typos), typos


def _lexical_hits(engine: Any, snap: Snapshot, q: Query, id_col: np.ndarray | None = None
                  ) -> LexHits | None:
    """(slots, BM25 contribution per posting, number of query terms) of the asked
    namespaces' postings in the snapshot; None when there is nothing to score."""
    if q.vector_weight >= 1.0:
        return None
    sw = SURFACE_WEIGHT if q.surface_weight is None else q.surface_weight
    got = _bm25(snap, q, sw)
    if got is None:
        return None
    ids, contrib, n_terms, _typos = got
    if not ids.size:
        return None
    ok, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    return slots, contrib[ok], n_terms


def _lexical_part(engine: Any, snap: Snapshot, q: Query, mask: np.ndarray | None,
                  rows: np.ndarray | None, selected: int, id_col: np.ndarray | None = None,
                  hits: LexHits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """BM25 of the candidates that match a query term: (indices, bm25, weighted L part).

    Indices are positions in the score arrays (ascending, unique); every other
    candidate has BM25 0. None when no candidate matches. ``hits``: the postings
    already read (and kept to candidates), else they are read here.
    """
    if hits is None:
        hits = _lexical_hits(engine, snap, q, id_col)
        if hits is None:
            return None
    slots, contrib, n_terms = hits
    if mask is not None:
        keep = mask[slots]
        slots, contrib = slots[keep], contrib[keep]
    if not slots.size:
        return None
    idx = slots if rows is None else _index_in(rows, slots)
    uniq, sums = _sum_by_index(idx, contrib, n_terms == 1, rows.size if rows is not None
                               else snap.state.n_slots)
    bm = sums.astype(np.float32)
    hi = float(bm.max())
    lo = 0.0 if uniq.size < selected else float(bm.min())  # candidates without a hit score 0
    return uniq, bm, _minmax(bm, lo, hi, 1.0 - q.vector_weight)


class _Universe:
    """The candidates of an unfiltered ask of some namespaces in one committed state
    (made on first use: an ask over every slot needs no mask), and what the planner
    derives from them alone (read-only arrays)."""

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None
        self.count = 0
        self._rows: np.ndarray | None = None
        #: query-independent positions the planner derived (e.g. the memories that ask)
        self.derived: dict[Any, np.ndarray] = {}

    def mask(self, snap: Snapshot, ns_ids: Sequence[int]) -> np.ndarray:
        """The candidate mask (``snap`` is of the state this universe was made for)."""
        if self._mask is None:
            mask = candidate_mask(snap, ns_ids)
            mask.flags.writeable = False
            self.count = int(np.count_nonzero(mask))
            self._mask = mask
        return self._mask

    def rows(self, snap: Snapshot, ns_ids: Sequence[int]) -> np.ndarray:
        """The candidate slots, sorted."""
        if self._rows is None:
            rows = np.flatnonzero(self.mask(snap, ns_ids))
            rows.flags.writeable = False
            self._rows = rows
        return self._rows


_universes: PerOwner[dict[Any, Any]] = PerOwner(lambda _engine: {})
_universes_lock = threading.Lock()
#: Namespace sets whose candidates each engine keeps (per committed state).
UNIVERSE_CACHE = 8


def _kept(engine: Any, snap: Any) -> bool:
    """Whether ``snap`` is a committed state of ``engine`` (its derived data may be kept)."""
    return isinstance(snap, Snapshot) and snap.engine is engine and engine is not None


def _universe_of(engine: Any, snap: Snapshot, ns_ids: Sequence[int]) -> _Universe:
    """The :class:`_Universe` of ``ns_ids`` in ``snap``: kept for the next ask of the
    same committed state, since the live slots of a snapshot are a function of
    (generation, slot count, sequence number) — a later dead mark carries a greater
    sequence number, and a memory's text (what the derived positions come from) changes
    only by an update, a new slot. Only snapshots made by ``engine.snapshot()``
    (committed states) are kept, for the last UNIVERSE_CACHE namespace sets."""
    if not _kept(engine, snap):
        return _Universe()
    st = snap.state
    nss = tuple(sorted(set(ns_ids)))
    key = (st.gen, st.n_slots, st.seq)
    cache = _universes.get(engine)
    hit = cache.get(nss)
    if hit is not None and hit[0] == key:
        found: _Universe = hit[1]
        return found
    uni = _Universe()
    with _universes_lock:  # asks of several threads
        if len(cache) >= UNIVERSE_CACHE and nss not in cache:
            cache.pop(next(iter(cache)))  # the oldest namespace set
        cache[nss] = (key, uni)
    return uni


def _universe(engine: Any, snap: Snapshot, ns_ids: Sequence[int]) -> np.ndarray:
    """:func:`candidate_mask` (read-only), kept per committed state (see :func:`_universe_of`)."""
    return _universe_of(engine, snap, ns_ids).mask(snap, ns_ids)


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
        universe = _universe(engine, snap, ns_ids)
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


def _filtered(q: Query) -> bool:
    """Whether a type, time or metadata filter narrows the candidates of ``q``."""
    return q.type_codes is not None or q.since_us is not None or q.until_us is not None \
        or q.allowed is not None


def _candidates(engine: Any, snap: Snapshot, q: Query, view: Any
                ) -> tuple[np.ndarray | None, int, int]:
    """(candidate mask or None for every slot, how many, slots of the asked namespaces)."""
    n = snap.state.n_slots
    # slots of the asked namespaces (when the cache is exactly this snapshot's)
    ns_total = sum(view.blocks[ns].size for ns in q.ns_ids if ns in view.blocks) \
        if view.n == n else -1
    filtered = _filtered(q)
    if not (filtered or ns_total != n or snap.state.live != n):
        return None, n, ns_total
    if not filtered:  # the live slots of the asked namespaces (cached per state)
        uni = _universe_of(engine, snap, q.ns_ids)
        mask = uni.mask(snap, q.ns_ids)  # sets uni.count
        return mask, uni.count, ns_total
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
        cos = dot_rows(snap.matrix, rows, q.vector)
    return _vector_hits(snap, q, rows, cos)


def _top(snap: Snapshot, rows: np.ndarray | None, scores: np.ndarray,
         k: int) -> list[tuple[int, int, int]]:
    """``(i, slot, id)`` of the best ``k`` of ``scores`` (over ``rows``, None = every slot),
    in rank order with the deterministic ties of :func:`order_top`."""
    ids_col = snap.slots["id"]
    out = []
    for i in order_top(scores, _tie_rows(snap, rows), k).tolist():
        slot = int(i) if rows is None else int(rows[i])
        out.append((int(i), slot, int(ids_col[slot])))
    return out


def _vector_hits(snap: Snapshot, q: Query, rows: np.ndarray | None, cos: np.ndarray) -> list[Hit]:
    """The best ``q.top_k`` of ``cos`` (over ``rows``, None = every slot), score = cosine."""
    out = []
    for i, slot, mid in _top(snap, rows, cos, q.top_k):
        c = float(cos[i])
        out.append(Hit(slot, mid, c, {"cosine": c} if q.explain else None))
    return out


def run_lexical(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """``mode="lexical"``: candidates with a query term, by BM25; the score is the BM25."""
    n = snap.state.n_slots
    if n == 0 or not q.ns_ids:
        return []
    sw = SURFACE_WEIGHT if q.surface_weight is None else q.surface_weight
    if not _querywords.weighted_terms(q.text, sw > 0, FUNCTION_WEIGHT)[0]:
        return []
    view = _timeorder.for_engine(engine).view(snap)
    mask, selected, _ = _candidates(engine, snap, q, view)
    if selected == 0:
        return []
    got = _bm25(snap, q, sw)
    if got is None or not got[0].size:
        return []
    ids, contrib, n_terms, _typos = got
    id_col = view.ids[:n] if view.n >= n else None
    slots, contrib = _posting_slots(snap, ids, contrib, id_col, mask)
    if not slots.size:
        return []
    uniq, sums = _sum_by_index(slots, contrib, n_terms == 1, n)
    out = []
    for i, slot, mid in _top(snap, uniq, sums, q.top_k):
        b = float(sums[i])
        out.append(Hit(slot, mid, b, {"bm25": b} if q.explain else None))
    return out


def run(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """Rank the candidates of ``q`` in ``snap``; returns up to ``q.top_k`` hits, best first.

    Large stores answer ``mode="vector"`` from the ANN index (see :mod:`_ann`) when its
    bound proves the top k exact, else (and for hybrid asks) by the exact scan; with
    ``ann="approximate"`` every ask ranks the index's candidates, exact or not. A query
    whose filters leave too few candidates is answered by the exact path either way.
    """
    if q.mode == "lexical":
        return run_lexical(engine, snap, q)
    n = snap.state.n_slots
    if n == 0 or not q.ns_ids:
        return []
    mode = getattr(engine, "ann_mode", None)
    strict = _ann.strict(mode)
    if _ann.wanted(mode, n) and (q.mode == "vector" or not strict):
        hits = _run_ann(engine, snap, q, strict)
        if hits is not None:
            return hits
    if q.mode == "vector":
        return run_vector(engine, snap, q)
    return _run_exact(engine, snap, q)


#: The ANN path needs at least max(ANN_MIN_CANDIDATES, 8 * top_k) candidates that pass
#: the filters; fewer (a filter keeping ~1% of the store) -> exact search over the filter.
ANN_MIN_CANDIDATES: int = 256
#: An exact-or-nothing ask stops probing (and scans) when more than this many times the
#: probe cap of unprobed lists can still beat the k-th best cosine (only saves time: the
#: answer is the exact scan's either way).
ANN_GIVE_UP: int = 4
#: Rows sampled (evenly spaced) to estimate the minimum cosine for the normalisation.
ANN_FLOOR_SAMPLE: int = 1024
#: ... and from the rows of this many lists whose centroids are least similar to the query.
ANN_FLOOR_LISTS: int = 2


def _rows_ok(snap: Snapshot, q: Query, rows: np.ndarray) -> np.ndarray:
    """Which ``rows`` are candidates of ``q`` in ``snap``: live, namespace, type, time, filter.
    (Column by column: a gather of whole 32-byte slot rows is several times slower.)"""
    sl = snap.slots
    dead = sl["dead"][rows]
    ok = (dead == 0) | (dead > snap.state.seq)
    if q.allowed is not None:
        ok &= q.allowed[rows]
    ns_ids = sorted(set(q.ns_ids))
    ns = sl["ns"][rows]
    ok &= ns == ns_ids[0] if len(ns_ids) == 1 else np.isin(ns, ns_ids)
    if q.type_codes is not None:
        ok &= np.isin(sl["type"][rows], np.asarray(q.type_codes, dtype=np.uint8))
    if q.since_us is not None or q.until_us is not None:
        ts = sl["ts"][rows]
        if q.since_us is not None:
            ok &= ts >= q.since_us
        if q.until_us is not None:
            ok &= ts <= q.until_us
    return ok


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique`` of a small int array by one sort (np.unique's hash path is slower here)."""
    x = np.sort(x)
    return x[np.concatenate(([True], x[1:] != x[:-1]))] if x.size > 1 else x


def _missing_from(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``x`` that are not in the sorted array ``rows``."""
    x = _sorted_unique(x)
    if not rows.size or not x.size:
        return x
    at = np.minimum(np.searchsorted(rows, x), rows.size - 1)
    return x[rows[at] != x]


def _list_order(ub: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` lists in probing order: bound descending (a list whose bound is 1
    -- the query may lie inside it -- by centroid score), then list ascending."""
    key = np.where(ub >= 1.0, 3.0 + scores.astype(np.float64), ub)
    if k < key.size:
        part = np.argpartition(-key, k - 1)[:k]
    else:
        part = np.arange(key.size)
    return part[np.lexsort((part, -key[part]))]


def _kth_best(cos: list[np.ndarray], k: int) -> float:
    """The ``k``-th largest of the arrays' values together (-inf when fewer)."""
    allc = np.concatenate(cos) if len(cos) > 1 else cos[0]
    if allc.size < k:
        return -math.inf
    return float(np.partition(allc, allc.size - k)[allc.size - k])


def _ann_candidates(snap: Snapshot, q: Query, index: Any, n: int, scores: np.ndarray,
                    strict: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """The candidate slots of the ANN stage (sorted) and their cosines, or None when the
    exact path over the filtered rows is cheaper. ``scores``: the query against the centroids.

    Lists are probed in the order of their bound (the most the query's cosine with one of
    their slots can be, :meth:`_ann.IndexState.bounds`), ``NPROBE_MIN`` first, plus the
    uncovered tail. Then, while a list not probed yet has a bound above the ``top_k``-th
    best cosine found so far, the next lists are probed (twice as many each round, at most
    ``NPROBE`` in all): when that stops before ``NPROBE``, no unprobed slot can enter the
    vector top k (exact, up to float rounding). When the filters (type, time, metadata,
    and forgotten memories) leave fewer than the needed candidates, more lists are probed
    (as many as the pass rate so far says are needed, at least twice as many), while the
    probed rows stay fewer than the rows the exact path would score. A metadata filter's
    mask is applied first (one boolean gather per probed row). ``strict``: None too when
    probing stopped at the cap with an unprobed list still above the ``top_k``-th cosine.
    """
    c = _ann.covered(n)
    need = max(ANN_MIN_CANDIDATES, 8 * q.top_k)
    ub = index.bounds(scores, c, float(np.sqrt(np.dot(q.vector, q.vector))))
    nlists = int(ub.size)
    order = _list_order(ub, scores, min(nlists, 4 * _ann.NPROBE))
    rows_parts: list[np.ndarray] = []
    cos_parts: list[np.ndarray] = []
    taken, nprobe, cap, budget, probed, total = 0, min(_ann.NPROBE_MIN, nlists), _ann.NPROBE, -1, 0, 0
    if c < n:  # the tail the index does not cover yet: always scored, as one slice of
        # the matrix (contiguous rows: no gather, a third of the cost of gathering them)
        tail = np.arange(c, n, dtype=np.int64)
        ok = _rows_ok(snap, q, tail)
        rows_parts.append(tail[ok])
        cos_parts.append((snap.matrix[c:n] @ q.vector)[ok])
        probed, total = n - c, int(rows_parts[0].size)
    while True:
        if nprobe > order.size:  # filters ask for more lists than ordered so far
            order = _list_order(ub, scores, nlists)
        new = index.members(order[taken:nprobe], c)
        taken = nprobe
        probed += new.size
        if q.allowed is not None:
            new = new[q.allowed[new]]
        new = new[_rows_ok(snap, q, new)]
        rows_parts.append(new)
        cos_parts.append(gather_dot(snap.matrix, new, q.vector))
        total += new.size
        if total < need:
            if nprobe >= nlists:
                return None
            if budget < 0:  # what the exact path scores: the filter's rows, or a quarter
                budget = int(np.count_nonzero(q.allowed)) if q.allowed is not None \
                    else int(n * GATHER_FRACTION)
            grow = max(2.0, 1.25 * need / max(total, 1))
            if probed * grow > budget:
                return None
            nprobe = min(nlists, int(math.ceil(nprobe * grow)))
            cap = max(cap, nprobe)
            continue
        if taken >= min(cap, nlists):
            break
        kth = _kth_best(cos_parts, q.top_k)
        if strict and int(np.count_nonzero(ub > kth)) - taken > ANN_GIVE_UP * cap:
            return None  # (unclustered vectors: the bound will not close within the cap)
        above = np.flatnonzero(ub[order[taken:min(cap, nlists)]] > kth)
        if not above.size:
            break
        more = int(above[-1]) + 1
        nprobe = taken + min(more, taken)
    if strict:  # exact or nothing: no unprobed list may hold a cosine above the k-th best
        rest = ub.copy()
        rest[order[:taken]] = -np.inf
        if float(rest.max(initial=-np.inf)) > _kth_best(cos_parts, q.top_k):
            return None
    rows = np.concatenate(rows_parts) if len(rows_parts) > 1 else rows_parts[0]
    cos = np.concatenate(cos_parts) if len(cos_parts) > 1 else cos_parts[0]
    srt = np.argsort(rows, kind="stable")
    return rows[srt], cos[srt]


def _run_ann(engine: Any, snap: Snapshot, q: Query, strict: bool = False) -> list[Hit] | None:
    """The planner over the ANN candidates (probed lists, the uncovered tail, BM25 hits);
    None when the exact path must answer.

    The neighbour term needs each memory's true time neighbours, which the candidate
    set alone does not give: the contenders by ``rel`` (see ``ANN_SHORTLIST_MAX``) and
    their neighbours (from the time index of the snapshot) get exact neighbour scores
    and are the only ones ranked.
    """
    n = snap.state.n_slots
    # A read-only process in the automatic mode does not train or assign a whole epoch in
    # memory (a minute at 1M, in every such process): it answers by the exact scan, the
    # same answers, until a writer's vector ask has written the index file.
    build = not (engine.readonly and getattr(engine, "ann_mode", None) is None)
    try:
        index = _ann.for_engine(engine).state(snap.state.gen, snap.matrix, n, build)
    except _ann.NotBuilt:
        return None
    except (OSError, ValueError, MemoryError) as exc:
        _ann.log.warning("mnemos_kv: ANN index unavailable (%s); exact search", exc)
        return None
    cscores = index.scores(q.vector)  # the query against each list's centroid
    got = _ann_candidates(snap, q, index, n, cscores, strict)
    if got is None:
        return None
    rows, cos = got
    if q.mode == "vector":
        return _vector_hits(snap, q, rows, cos)
    assert not strict  # (strict hybrid asks take the exact path: see run)
    hits = _lexical_hits(engine, snap, q)
    if hits is not None:
        keep = _rows_ok(snap, q, hits[0])
        hits = (hits[0][keep], hits[1][keep], hits[2])
        extra = _missing_from(hits[0], rows)
        if extra.size:
            all_rows = np.concatenate([rows, extra])
            all_cos = np.concatenate([cos, gather_dot(snap.matrix, extra, q.vector)])
            srt = np.argsort(all_rows, kind="stable")
            rows, cos = all_rows[srt], all_cos[srt]
    # min-max of the cosine: the exact path's minimum is over every candidate, estimated
    # here from the lists least similar to the query and an evenly spaced sample
    # (the evenly spaced rows of the covered slots are kept by the index, contiguous)
    spaced, spaced_mat = index.spaced_sample(snap.matrix, _ann.covered(n), ANN_FLOOR_SAMPLE)
    far = index.probe(q.vector, n, ANN_FLOOR_LISTS, farthest=True, scores=cscores)
    far = far[_rows_ok(snap, q, far)]
    ok = _rows_ok(snap, q, spaced)
    lows = [float((spaced_mat[ok] @ q.vector).min())] if ok.any() else []
    if far.size:
        lows.append(float(gather_dot(snap.matrix, far, q.vector).min()))
    floor = min(lows) if lows else None
    valid = None
    nbr_fn = None
    reply_w = REPLY_WEIGHT if q.reply_weight is None else q.reply_weight
    if q.neighbour_weight > 0 or reply_w > 0:
        rows, cos, valid, nbr_fn = _ann_neighbours(engine, snap, q, rows, cos, hits, floor,
                                                   reply_w)
    newest = None
    if q.half_life_s is not None:
        newest = _timeorder.newest_in_index(
            snap.txn, engine.env.db("time"), q.ns_ids,
            S.ts_key(q.until_us) if q.until_us is not None else None)
    return _score(engine, snap, q, None, rows, int(rows.size), None, False, valid, hits,
                  floor, cos, nbr_fn, newest)


def _ann_neighbours(engine: Any, snap: Snapshot, q: Query, rows: np.ndarray, cos: np.ndarray,
                    hits: LexHits | None, floor: float | None, reply_w: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                               Callable[[np.ndarray], np.ndarray]]:
    """Shortlist, its true time neighbours (two rings) and the neighbour function.

    Returns the candidate rows extended by the neighbours, their cosines, the mask of
    rows that may be ranked (the shortlist and its neighbours) and ``rel -> nbr``
    (``max(w * max(rel(prev), rel(next)), reply_w * rel(prev) if prev asks)``).
    """
    lo = float(cos.min()) if floor is None else min(float(cos.min()), floor)
    hi = float(cos.max())
    vec = _minmax(cos, lo, hi, q.vector_weight)  # = _normalise(cos, None, w, floor)
    lexical = _lexical_part(engine, snap, q, None, rows, int(rows.size), None, hits)
    if lexical is not None:
        vec[lexical[0]] += lexical[2]
    w = max(q.neighbour_weight, reply_w)  # the most a memory gains from a neighbour
    top = order_top(vec, _tie_rows(snap, rows), ANN_SHORTLIST_MAX)
    # tau: a lower bound of the k-th best rel + nbr, from the best few and their neighbours
    s1 = top[:max(4 * q.top_k, 32)]
    nb = _true_neighbours(engine, snap, q, rows[s1])
    flat = nb.ravel()
    at = np.minimum(np.searchsorted(rows, flat), rows.size - 1)
    inside = (flat >= 0) & (rows[at] == flat)
    nrel = np.zeros(flat.size, np.float32)
    nrel[inside] = vec[at[inside]]
    outside = (flat >= 0) & ~inside  # a neighbour the ANN stage did not propose: cosine only
    if outside.any():
        nrel[outside] = _minmax(gather_dot(snap.matrix, flat[outside], q.vector), lo, hi,
                                q.vector_weight)
    lower = vec[s1] + q.neighbour_weight * nrel.reshape(-1, 2).max(axis=1)  # replies only add
    tau = float(np.sort(lower)[::-1][min(q.top_k, lower.size) - 1])
    # A memory outside the shortlist whose neighbours are outside too scores at most
    # (1 + w) * (the shortlist's lowest rel): keep every rel >= tau / (1 + w).
    keep = max(s1.size, int(np.count_nonzero(vec[top] >= tau / (1.0 + w))))
    short = rows[top[:keep]]
    ring1 = _true_neighbours(engine, snap, q, short)
    first = _sorted_unique(np.concatenate([short, ring1[ring1 >= 0].ravel()]))
    prev_next = _true_neighbours(engine, snap, q, first)
    ring2 = prev_next
    extra = _missing_from(np.concatenate([first, ring2[ring2 >= 0]]), rows)
    if extra.size:
        all_rows = np.concatenate([rows, extra])
        all_cos = np.concatenate([cos, gather_dot(snap.matrix, extra, q.vector)])
        order = np.argsort(all_rows, kind="stable")
        rows, cos = all_rows[order], all_cos[order]
    pos_first = np.searchsorted(rows, first)
    pos_pn = np.where(prev_next >= 0, np.searchsorted(rows, np.maximum(prev_next, 0)), -1)
    valid = np.zeros(rows.size, bool)
    valid[pos_first] = True

    asks = np.zeros(first.size, bool)  # does the previous memory ask a question?
    if reply_w > 0:
        qids = np.sort(snap.question_ids(q.ns_ids).astype(np.int64))
        has_prev = prev_next[:, 0] >= 0
        if qids.size and has_prev.any():
            pid = np.asarray(snap.slots["id"][prev_next[has_prev, 0]], np.int64)
            at = np.minimum(np.searchsorted(qids, pid), qids.size - 1)
            asks[has_prev] = qids[at] == pid

    def nbr_fn(rel: np.ndarray) -> np.ndarray:
        out = np.zeros(rel.shape[0], np.float32)
        padded = np.concatenate([rel.astype(np.float32), np.zeros(1, np.float32)])
        pn = np.where(pos_pn >= 0, pos_pn, rel.shape[0])
        best = np.maximum(padded[pn[:, 0]], padded[pn[:, 1]]) * np.float32(q.neighbour_weight)
        if asks.any():
            reply = np.where(asks, padded[pn[:, 0]] * np.float32(reply_w), np.float32(0))
            best = np.maximum(best, reply)
        out[pos_first] = best
        return out

    return rows, cos, valid, nbr_fn


#: The ANN path ranks, with exact neighbour scores, the candidates that can still reach
#: the top k through a neighbour (at most ANN_SHORTLIST_MAX) and their time neighbours.
ANN_SHORTLIST_MAX: int = 512
#: Time-index entries looked at on each side when filters skip some neighbours.
ANN_NEIGHBOUR_WIDTH: int = 4


_TIME_KEY = np.dtype([("ns", ">u4"), ("ts", ">u8"), ("id", ">u8")])  # the time index key


#: Steps along the time order before a still-unresolved neighbour (a run of forgotten
#: memories, or of slots newer than the snapshot) is looked up in the time index instead.
ANN_WALK_STEPS: int = 8
#: Neighbour look-ups (three per hybrid ask) answered from the time index before the
#: ANN path builds the generation's time order (~150 ms at 1M): a process that asks
#: twice does not sort every slot.
ANN_LAZY_ORDER: int = 6


def _true_neighbours(engine: Any, snap: Snapshot, q: Query, slots: np.ndarray) -> np.ndarray:
    """``len(slots) x 2`` array: the slot of each one's previous / next candidate in its
    namespace's (timestamp, id) order, -1 when there is none (within a few steps).

    The same answer as walking the snapshot's time index (:func:`_lookup_neighbours`):
    the nearest ``width`` memories of the snapshot on each side (1, or
    ``ANN_NEIGHBOUR_WIDTH`` when filters may reject one), the first that passes the
    filters. Walked on the engine's per-generation time order (:mod:`_timeorder`: every
    slot of the generation, forgotten or newer ones are stepped over), a few vectorised
    steps; only a neighbour still unresolved after ``ANN_WALK_STEPS`` steps is looked up
    in the time index (and every one, until ``ANN_LAZY_ORDER`` calls needed the order)."""
    m = slots.size
    out = np.full((m, 2), -1, np.int64)
    if m == 0:
        return out
    view = _timeorder.for_engine(engine).view_if_warm(snap, ANN_LAZY_ORDER)
    if view is None:
        return _lookup_neighbours(engine, snap, q, slots)
    n, seq = snap.state.n_slots, snap.state.seq
    dead_col = snap.slots["dead"]
    filtered = q.type_codes is not None or q.since_us is not None or q.until_us is not None \
        or q.allowed is not None
    width = ANN_NEIGHBOUR_WIDTH if filtered else 1
    slots = slots.astype(np.int64)
    left = np.zeros(m, bool)  # still unresolved after ANN_WALK_STEPS: ask the time index
    for col, link in enumerate((view.prev, view.next)):
        idx = np.arange(m)
        cur = slots
        seen = np.zeros(m, np.int64)
        for _ in range(ANN_WALK_STEPS):
            cur = link[cur]
            go = cur >= 0  # the end of the namespace: no neighbour (-1)
            idx, cur, seen = idx[go], cur[go], seen[go]
            if not idx.size:
                break
            dead = dead_col[np.minimum(cur, n - 1)]
            live = (cur < n) & ((dead == 0) | (dead > seq))
            ok = live.copy()
            if live.any():
                ok[live] = _rows_ok(snap, q, cur[live])
            out[idx[ok], col] = cur[ok]
            seen = seen + live
            go = ~ok & (seen < width)
            idx, cur, seen = idx[go], cur[go], seen[go]
            if not idx.size:
                break
        left[idx] = True
    if left.any():
        out[left] = _lookup_neighbours(engine, snap, q, slots[left])
    return out


def _lookup_neighbours(engine: Any, snap: Snapshot, q: Query, slots: np.ndarray) -> np.ndarray:
    """:func:`_true_neighbours` from the time index."""
    sl = snap.slots[slots]
    packed = np.empty(slots.size, _TIME_KEY)
    packed["ns"] = sl["ns"]
    packed["ts"] = sl["ts"].astype(np.int64).view(np.uint64) ^ np.uint64(1 << 63)  # offset binary
    packed["id"] = sl["id"]
    raw = packed.tobytes()
    keys = [raw[i:i + 20] for i in range(0, len(raw), 20)]
    # only filters (type, time, metadata) can make the adjacent entry a non-candidate
    filtered = q.type_codes is not None or q.since_us is not None or q.until_us is not None \
        or q.allowed is not None
    before, after = _timeorder.index_neighbours(snap.txn, engine.env.db("time"), keys,
                                                ANN_NEIGHBOUR_WIDTH if filtered else 1)
    out = np.full((slots.size, 2), -1, np.int64)
    for col, side in enumerate((before, after)):
        flat = side.ravel()
        have = flat >= 0
        found, pos = _slots_of(snap, flat[have])
        cand = np.full(flat.size, -1, np.int64)
        idx = np.flatnonzero(have)[found]
        cand[idx] = pos
        ok = cand >= 0
        ok[ok] = _rows_ok(snap, q, cand[ok])
        cand[~ok] = -1
        grid = cand.reshape(side.shape)
        first_ok = np.argmax(grid >= 0, axis=1)
        pick = grid[np.arange(slots.size), first_ok]
        out[:, col] = pick
    return out


def _run_exact(engine: Any, snap: Snapshot, q: Query) -> list[Hit]:
    """The planner over every candidate of the snapshot."""
    n = snap.state.n_slots
    view = _timeorder.for_engine(engine).view(snap)
    mask, selected, ns_total = _candidates(engine, snap, q, view)
    if selected == 0:
        return []
    closed = selected == ns_total  # every slot of the asked namespaces is a candidate
    # unfiltered: the candidates are the namespaces' live slots, whose derived positions
    # are kept per committed state
    uni = _universe_of(engine, snap, q.ns_ids) if not _filtered(q) and _kept(engine, snap) \
        else None
    rows = None
    if selected < n * GATHER_FRACTION:
        assert mask is not None  # fewer than n selected: there is a mask
        rows = uni.rows(snap, q.ns_ids) if uni is not None else np.flatnonzero(mask)
    return _score(engine, snap, q, mask, rows, selected, view, closed,
                  mask if rows is None and selected < n else None, None,
                  derived=uni.derived if uni is not None else None)


def _score(engine: Any, snap: Snapshot, q: Query, mask: np.ndarray | None,
           rows: np.ndarray | None, selected: int, view: _timeorder.OrderView | None,
           closed: bool, valid: np.ndarray | None, lex_hits: LexHits | None,
           cos_floor: float | None = None, cos: np.ndarray | None = None,
           nbr_fn: Callable[[np.ndarray], np.ndarray] | None = None,
           newest_us: int | None = None, derived: dict[Any, np.ndarray] | None = None
           ) -> list[Hit]:
    """Fusion, neighbours, graph, types, recency and top-k over the given candidates.

    ``rows``: sorted candidate slots (None: every slot, scores indexed by slot, with
    ``valid`` marking the candidates when not all are). ``mask``: candidate slots
    over the snapshot, or None when every slot is one, or when ``rows`` (with
    ``view`` None: the ANN path) are exactly the candidates. ``derived``: where to keep
    query-independent positions when the candidates are a committed state's unfiltered
    namespaces (see :class:`_Universe`), else None.
    """
    n = snap.state.n_slots
    if cos is not None:
        pass
    elif rows is None:
        cos = snap.matrix @ q.vector
    else:
        cos = dot_rows(snap.matrix, rows, q.vector)
    vec = _normalise(cos, valid, q.vector_weight, cos_floor)
    # lexical: BM25 from the postings of the asked namespaces, added where it is not 0
    id_col = view.ids[:n] if view is not None and view.n >= n else None
    lexical = _lexical_part(engine, snap, q, mask, rows, selected, id_col, lex_hits) \
        if view is not None or lex_hits is not None else None
    rel = vec
    if lexical is not None:
        if q.explain:
            rel = vec.copy()
        rel[lexical[0]] += lexical[2]

    nbr = None
    reply_w = REPLY_WEIGHT if q.reply_weight is None else q.reply_weight
    asked = None
    if (reply_w > 0 and view is not None and selected > 1) or QUESTION_DISCOUNT > 0:
        asked = derived.get("asked") if derived is not None else None
        if asked is None:
            asked = _question_positions(engine, snap, q, rows, id_col)
            if derived is not None:
                asked.flags.writeable = False
                derived["asked"] = asked
    if nbr_fn is not None:  # the ANN path: true neighbours of its shortlist, replies included
        nbr = nbr_fn(rel) if selected > 1 else None
    elif view is not None:
        links = _timeorder.chain(view, q.ns_ids, n, mask, rows, closed) \
            if selected > 1 and (q.neighbour_weight > 0 or reply_w > 0) else None
        if q.neighbour_weight > 0 and links is not None:
            nbr = _timeorder.best_of(links, rel)
            nbr *= np.float32(q.neighbour_weight)  # a fresh array: scale in place
        if reply_w > 0 and links is not None:
            reply = _reply_part(engine, snap, q, links, rows, rel, id_col, reply_w, asked)
            if reply is not None:
                nbr = reply if nbr is None else np.maximum(nbr, reply, out=nbr)
    if reply_w > 0 and selected > 1:
        linked = _linked_replies(engine, snap, q, rows, valid, mask, rel, reply_w)
        if linked is not None:
            nbr = linked if nbr is None else np.maximum(nbr, linked, out=nbr)
    if nbr is None:
        pre = rel
    elif q.explain or q.use_graph:
        pre = rel + nbr  # rel stays intact for the explanation / graph seeds
    else:
        rel += nbr  # nothing reads rel again: save a pass and an allocation
        pre = rel

    prf = None
    if PRF_WEIGHT > 0 and selected > PRF_SEEDS and view is not None:  # (not on the ANN path)
        prf = _lexical_feedback(engine, snap, q, pre, rows, valid, mask, id_col)
    if prf is not None:
        pre = pre + prf if (q.explain or q.use_graph or pre is rel) else np.add(pre, prf, out=pre)
    graph = None
    if q.use_graph:
        graph = _graph_part(engine, snap, q, pre, rows, valid, mask)
    base = pre if graph is None else pre + graph

    tw: np.ndarray | float | None = None
    rec = None
    single = view.single_type if view is not None and view.n == n else -1
    if single >= 0:  # one type in the whole generation: a constant factor
        w = float(q.type_weights[single])
        tw = None if w == 1.0 else w
    elif len(set(q.type_weights)) > 1:
        table = np.asarray(q.type_weights, dtype=np.float32)
        if view is None:
            assert rows is not None
            tw = table[snap.slots["type"][rows]]
        else:
            tw = table[view.types[:n]] if rows is None else table[view.types[rows]]
    window = tprior = None
    if TEMPORAL_WEIGHT > 0 and q.now_us is not None:
        window = _temporal.parse(q.text, q.now_us / 1e6)
        if window is not None:
            tprior = _time_prior(snap, rows, valid, window)
    qdisc = None
    if QUESTION_DISCOUNT > 0 and asked is not None and asked.size:
        qdisc = np.ones(base.shape[0], np.float32)
        qdisc[asked] = np.float32(1.0 - QUESTION_DISCOUNT)
    if q.half_life_s is not None:
        ts = snap.slots["ts"] if rows is None else snap.slots["ts"][rows]
        if newest_us is not None:
            newest = newest_us
        elif valid is not None:
            newest = int(np.max(ts, where=valid, initial=np.iinfo(np.int64).min))
        else:
            newest = int(ts.max())
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
    if qdisc is not None:
        final = final * qdisc
    episode = _episode_part(snap, q, rows, valid, final) if EPISODE_WEIGHT > 0 else None
    if episode is not None:
        if final is rel or final is vec or final is base:
            final = final.copy()  # the explanation / graph seeds read those
        final[episode[0]] += episode[1]
    sprior = _speaker_prior(engine, snap, q, rows, valid, id_col, final) \
        if SPEAKER_WEIGHT > 0 else None
    if sprior is not None:
        final = final * sprior
    specific = None
    if sprior is not None and SPECIFIC_WEIGHT > 0:
        specific = _specifics.lift(
            engine, snap, q.ns_ids, q.text, final, sprior == np.float32(1.0), rows, valid,
            SPECIFIC_WEIGHT * (1.0 - q.vector_weight), _kept(engine, snap), view is not None)
        if specific is not None:  # (final is a fresh array: the speaker prior made it)
            final[specific[0]] += specific[1]
    if q.explain and (final is rel or final is vec):
        final = final.copy()  # the explanation reads vec/rel after final is masked
    if valid is not None:
        final[~valid] = -np.inf

    typo_bm25 = _typo_bm25(engine, snap, q) if q.explain and lexical is not None else None
    out = []
    for i, slot, mid in _top(snap, rows, final, q.top_k):
        parts = None
        if q.explain:
            b = float(base[i])
            t = 1.0 if tw is None else tw if isinstance(tw, float) else float(tw[i])
            r = float(rec[i]) if rec is not None else 1.0
            tp = float(tprior[i]) if tprior is not None else 1.0
            sp = float(sprior[i]) if sprior is not None else 1.0
            qd = float(qdisc[i]) if qdisc is not None else 1.0
            ep = 0.0
            if episode is not None:
                hit = np.flatnonzero(episode[0] == i)
                ep = float(episode[1][hit[0]]) if hit.size else 0.0
            li = -1
            if lexical is not None:
                li = int(np.searchsorted(lexical[0], i))
                li = li if li < lexical[0].size and lexical[0][li] == i else -1
            sf = 0.0
            if specific is not None:
                hit = np.flatnonzero(specific[0] == i)
                sf = float(specific[1][hit[0]]) if hit.size else 0.0
            parts = {
                "vector": float(vec[i]),
                "lexical": float(lexical[2][li]) if lexical is not None and li >= 0 else 0.0,
                "neighbour": float(nbr[i]) if nbr is not None else 0.0,
                "feedback": float(prf[i]) if prf is not None else 0.0,
                "graph": float(graph[i]) if graph is not None else 0.0,
                "type": b * (t - 1.0),
                "recency": b * t * (r - 1.0),
                "time": b * t * r * (tp - 1.0),
                "question": b * t * r * tp * (qd - 1.0),
                "episode": ep,
                "speaker": (b * t * r * tp * qd + ep) * (sp - 1.0),
                "specifics": sf,
                "cosine": float(cos[i]),
                "bm25": float(lexical[1][li]) if lexical is not None and li >= 0 else 0.0,
            }
            if window is not None:
                parts["window_start"], parts["window_end"] = window.start, window.end
            if typo_bm25:
                parts["typo"] = typo_bm25.get(mid, 0.0)
        out.append(Hit(slot, mid, float(final[i]), parts))
    return out


def _typo_bm25(engine: Any, snap: Snapshot, q: Query) -> dict[int, float]:
    """For ``explain``: the BM25 (part of ``bm25``) each memory gets from the words that
    correct a typo of the query (see TYPO_WEIGHT), by memory id; empty without typos."""
    sw = SURFACE_WEIGHT if q.surface_weight is None else q.surface_weight
    got = _bm25(snap, q, sw)
    if got is None or not got[3]:
        return {}
    typos = got[3]
    ids, contrib = snap.bm25_postings(q.ns_ids, typos, surface_weight=sw,
                                      weights=[TYPO_WEIGHT] * len(typos))
    out: dict[int, float] = {}
    for mid, c in zip(ids.tolist(), contrib.tolist()):
        out[int(mid)] = out.get(int(mid), 0.0) + float(c)
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
        rec = snap.record(int(ids_col[slot]))
        if rec is None:
            continue
        toks = _lexical.index_fields(rec.text)[0]  # the stem field's terms
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
    ids, contrib = snap.bm25_postings(q.ns_ids, best, weights=[weight[t] for t in best])
    if not ids.size:
        return None
    slots, contrib = _posting_slots(snap, ids, contrib, id_col, mask)
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


def _episode_part(snap: Snapshot, q: Query, rows: np.ndarray | None, valid: np.ndarray | None,
                  scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Episode context: (positions, lifts) for the best candidates whose episode holds
    other good ones (see EPISODE_WEIGHT); None when none of them has an episode mate,
    or when they are all in one episode (then the lift, which grows by less than the
    score falls, cannot reorder them).

    A conversation talks about one thing for a while: a memory among the best whose
    time neighbourhood (same namespace, within EPISODE_GAP_S) holds other good
    matches is more likely on topic than an isolated one that shares the same words.
    Only the best EPISODE_DEPTH candidates take part, so it costs one top-k and a
    small matrix.
    """
    ranked = scores if valid is None else np.where(valid, scores, np.float32(-np.inf))
    k = EPISODE_DEPTH
    if ranked.size > k:  # the best k and every tie at the boundary: a deterministic set
        part = np.argpartition(ranked, ranked.size - k)[ranked.size - k:]
        top = np.flatnonzero(ranked >= max(float(ranked[part].min()), np.finfo(np.float32).tiny))
    else:
        top = np.flatnonzero(ranked > 0)
    if top.size < 2:
        return None
    sc = scores[top].astype(np.float64)
    slots = top if rows is None else rows[top]
    ts = snap.slots["ts"][slots].astype(np.int64)
    same = np.abs(ts[:, None] - ts[None, :]) <= int(EPISODE_GAP_S * 1e6)
    if len(q.ns_ids) > 1:
        ns = snap.slots["ns"][slots]
        same &= ns[:, None] == ns[None, :]
    if same.all():  # one episode: the lift would keep their order (slope < 1), so skip it
        return None
    total = same @ sc  # the memory itself included
    mates = total - sc
    if not (mates > 0).any():
        return None
    lift = (EPISODE_WEIGHT * float(sc.max()) / float(total.max())) * mates
    return top, lift.astype(np.float32)


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


def _positions(snap: Snapshot, ids: np.ndarray, rows: np.ndarray | None,
               id_col: np.ndarray | None) -> np.ndarray:
    """Positions in the score arrays (slots, or indices into ``rows``) of the memories
    ``ids`` that have a slot (and are among ``rows``)."""
    _, slots = _slots_of(snap, ids.astype(np.int64), id_col)
    if rows is None or not slots.size:
        return slots
    first, last = int(rows[0]), int(rows[-1])
    if last - first + 1 == rows.size:  # consecutive slots: a subtraction
        return slots[(slots >= first) & (slots <= last)] - first
    pos = np.searchsorted(rows, slots)
    pos_c = np.minimum(pos, rows.size - 1)
    return pos[(pos < rows.size) & (rows[pos_c] == slots)]


def _question_positions(engine: Any, snap: Snapshot, q: Query, rows: np.ndarray | None,
                        id_col: np.ndarray | None) -> np.ndarray:
    """Positions of the memories that ask a question (the lexical index's ``QUESTION_TERM``)."""
    qids = snap.question_ids(q.ns_ids)
    if not qids.size:
        return np.empty(0, np.int64)
    return _positions(snap, qids, rows, id_col)


def _reply_part(engine: Any, snap: Snapshot, q: Query, links: tuple[np.ndarray, np.ndarray],
                rows: np.ndarray | None, rel: np.ndarray, id_col: np.ndarray | None,
                weight: float, asked_pos: np.ndarray | None = None) -> np.ndarray | None:
    """``weight * rel(prev r)`` where the candidate before ``r`` asks a question, else 0.

    The memories that ask are listed by the lexical index (``QUESTION_TERM``), so this
    is one postings read (or ``asked_pos``, already read) plus two gathers over the
    candidates' chain (``links``).
    """
    if asked_pos is None:
        asked_pos = _question_positions(engine, snap, q, rows, id_col)
    if not asked_pos.size:
        return None
    asked = np.zeros(rel.shape[0], np.float32)
    asked[asked_pos] = rel[asked_pos]
    out = _timeorder.prev_of(links, asked)
    out *= np.float32(weight)
    return out


def _linked_replies(engine: Any, snap: Snapshot, q: Query, rows: np.ndarray | None,
                    valid: np.ndarray | None, mask: np.ndarray | None, rel: np.ndarray,
                    weight: float) -> np.ndarray | None:
    """``weight * rel(q)`` for each candidate linked ``connect(r, q, REPLY_RELATION)`` to
    one of the best candidates ``q`` (by rel); None when there is no such link.

    The caller's own reply structure (a reply that is not the next memory, or a thread
    across namespaces' time order): the same share as the implicit reply. Only the
    incoming edges of the best max(top_k, GRAPH_SEEDS) candidates are read, and nothing
    when the store holds no edge.
    """
    if not snap.has_edges():
        return None
    ranked = rel if valid is None else np.where(valid, rel, np.float32(-np.inf))
    seeds = order_top(ranked, _tie_rows(snap, rows), min(max(q.top_k, GRAPH_SEEDS), GRAPH_MAX_SEEDS))
    seeds = seeds[ranked[seeds] > 0]
    if not seeds.size:
        return None
    ids_col = snap.slots["id"]
    seed_list = seeds.tolist()
    dst = [int(ids_col[i if rows is None else rows[i]]) for i in seed_list]
    src: list[int] = []
    amount: list[float] = []
    for j, s_id in snap.reply_sources(dst, REPLY_RELATION):
        src.append(s_id)
        amount.append(float(rel[seed_list[j]]))
    if not src:
        return None
    ids = np.asarray(src, np.int64)
    ok, slots = _slots_of(snap, ids)
    vals = np.asarray(amount, np.float32)[ok]
    if mask is not None:
        keep = mask[slots]
        slots, vals = slots[keep], vals[keep]
    elif rows is not None:
        at = np.minimum(np.searchsorted(rows, slots), rows.size - 1)
        keep = rows[at] == slots
        slots, vals = slots[keep], vals[keep]
    if not slots.size:
        return None
    out = np.zeros(rel.shape[0], np.float32)
    idx = slots if rows is None else np.searchsorted(rows, slots)
    np.maximum.at(out, idx, vals * np.float32(weight))
    return out


def _speaker_prior(engine: Any, snap: Snapshot, q: Query, rows: np.ndarray | None,
                   valid: np.ndarray | None, id_col: np.ndarray | None,
                   scores: np.ndarray) -> np.ndarray | None:
    """Per candidate: 1 when spoken by someone the query names, else 1 - SPEAKER_WEIGHT.

    None when the query names no speaker, when the named speakers said every
    candidate or none (a flat prior reorders nothing), or when their best memory
    scores (``scores``: everything but this prior) below SPEAKER_GATE times the best
    memory's: then the best matches are what someone else said, and the name in the
    question is not about the speaker's own words (an addressee, or the wrong person).
    """
    ids, _named = snap.speaker_ids(q.ns_ids, q.text)
    if not ids.size:
        return None
    size = snap.state.n_slots if rows is None else rows.size
    pos = _positions(snap, ids, rows, id_col)  # distinct: one slot per id
    if valid is None:
        n_in, n_all = pos.size, size
    else:
        n_in, n_all = int(np.count_nonzero(valid[pos])), int(np.count_nonzero(valid))
    if n_in == 0 or n_in == n_all:
        return None
    best = float(np.max(scores, where=valid, initial=0.0)) if valid is not None \
        else float(scores.max())
    named = scores[pos] if valid is None else scores[pos[valid[pos]]]
    if float(named.max()) < SPEAKER_GATE * best:
        return None
    out = np.full(size, np.float32(1.0 - SPEAKER_WEIGHT), np.float32)
    out[pos] = 1.0
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
    got_ids, amounts = snap.graph_spread(ids_col[seed_slots].tolist(),
                                     pre[seeds].tolist())
    if got_ids.size == 0:
        return None
    ok, slots = _slots_of(snap, got_ids.astype(np.int64))
    amounts = amounts[ok]
    if mask is not None:
        keep = mask[slots]
        slots, amounts = slots[keep], amounts[keep]
    elif rows is not None:  # ANN path: the candidates are exactly ``rows``
        at = np.minimum(np.searchsorted(rows, slots), rows.size - 1)
        keep = rows[at] == slots
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
