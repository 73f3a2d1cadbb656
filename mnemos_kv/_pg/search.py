"""``ask`` on a PostgreSQL store: candidates from SQL, ranking by the embedded planner.

One query fetches the candidates (live memories of the asked namespaces that pass
the type and time filters) with their pgvector similarity to the query vector
(``-(vec <#> q)``: the stored vectors are L2-normalised, so the inner product is the
cosine). A metadata filter is then applied with ``filters.evaluate`` (the reference
semantics). The candidates become a small in-memory snapshot (a slot table in id
order) and the SAME planner as the embedded store ranks them (``_retrieval.run``:
fusion, neighbours, replies, graph, types, recency, dates, ties by id); the BM25
statistics and postings it asks for are read from the ``lexstats``/``postings``
tables and scored by the shared ``_lexical_index.bm25_of``, so lexical scores are
bit-identical to the embedded store's. Cosines come from pgvector (float32 sums in
another order than numpy's): they may differ in the last bits, so exact score ties
between different memories may order differently (see docs/postgres.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, cast

import numpy as np

from .. import _graph, _lexical_index, _retrieval
from .. import _records as R
from .._engine import State
from .._vectors import SLOT_DTYPE

__all__ = ["search"]

_EMPTY_POSTINGS = np.zeros(0, np.dtype([("id", "<u8"), ("tf", "<u4"), ("dl", "<u4")]))


class _Cosines:
    """The cosine column of the candidates, standing in for the snapshot's matrix:
    ``matrix @ q`` and ``matrix[rows] @ q`` give the precomputed cosines."""

    def __init__(self, cos: np.ndarray, query: np.ndarray) -> None:
        self.cos, self.query = cos, query

    def __matmul__(self, q: np.ndarray) -> np.ndarray:
        assert q is self.query, "the candidate cosines answer only their own query"
        return self.cos.copy()

    def __getitem__(self, rows: Any) -> "_Cosines":
        return _Cosines(self.cos[rows], self.query)


class _QueryEngine:
    """The planner's ``engine`` for one query: its per-engine caches (time order) live
    and die with this query's candidates."""

    ann_mode = False


class _Candidates:
    """The read view the planner runs on: the candidates as slots, plus the SQL reads
    it needs (BM25 postings, questions, graph edges) from the store's snapshot."""

    def __init__(self, pg: Any, slots: np.ndarray, cos: _Cosines, questions: np.ndarray,
                 seq: int) -> None:
        n = slots.shape[0]
        self.pg, self.slots, self.matrix = pg, slots, cos
        self.state = State(seq=seq, n_slots=n, live=n, gen=1)
        self.engine = _QueryEngine()
        self.txn = None
        self._questions = questions

    def record(self, mid: int) -> R.Record | None:
        return self.pg.record(mid)

    def bm25_postings(self, ns_ids: Sequence[int], terms: Sequence[bytes],
                      **kw: Any) -> tuple[np.ndarray, np.ndarray]:
        ns_list = [int(n) for n in ns_ids]
        if not terms or not ns_list:
            return np.empty(0, np.uint64), np.empty(0, np.float32)
        row = self.pg._one("SELECT coalesce(sum(docs), 0), coalesce(sum(total), 0), "
                           "coalesce(sum(stotal), 0) FROM lexstats WHERE ns = ANY(%s)", (ns_list,))
        n_docs, total, stotal = (int(x) for x in row)
        got: dict[tuple[int, bytes], list[tuple[int, int, int]]] = {}
        with self.pg.conn.cursor(binary=True) as cur:
            cur.execute("SELECT ns, term, id, tf, dl FROM postings WHERE ns = ANY(%s) "
                        "AND term = ANY(%s) ORDER BY ns, term, id", (ns_list, list(terms)))
            for ns, term, mid, tf, dl in cur:
                got.setdefault((int(ns), bytes(term)), []).append((mid, tf, dl))

        def fetch(ns: int, term: bytes) -> np.ndarray:
            rows = got.get((int(ns), bytes(term)))
            return _EMPTY_POSTINGS if not rows else np.array(rows, dtype=_EMPTY_POSTINGS.dtype)

        return _lexical_index.bm25_of(n_docs, total, stotal, ns_list, terms, fetch, **kw)

    def question_ids(self, ns_ids: Sequence[int]) -> np.ndarray:
        return self._questions

    def speaker_ids(self, ns_ids: Sequence[int], text: str) -> tuple[np.ndarray, int]:
        """As ``_lexical_index.speaker_ids``: the memories spoken by someone ``text`` names."""
        words = sorted(_lexical_index.speaker_words(text))
        ns_list = [int(n) for n in ns_ids]
        if not words or not ns_list:
            return np.empty(0, np.int64), 0
        terms = [_lexical_index.SPEAKER_PREFIX + w for w in words]
        rows = self.pg._all("SELECT term, id FROM postings WHERE ns = ANY(%s) AND term = ANY(%s)",
                            (ns_list, terms))
        if not rows:
            return np.empty(0, np.int64), 0
        ids = np.unique(np.array([int(mid) for _t, mid in rows], np.int64))
        return ids, len({bytes(t) for t, _m in rows})

    def has_edges(self) -> bool:
        return bool(self.pg._one("SELECT EXISTS (SELECT 1 FROM edges)", ())[0])

    def reply_sources(self, dst_ids: Sequence[int], relation: str) -> list[tuple[int, int]]:
        """``(i, src)`` for each edge ``src -relation-> dst_ids[i]`` of positive weight."""
        at = {int(d): i for i, d in enumerate(dst_ids)}
        rows = self.pg._all("SELECT dst, src FROM edges WHERE dst = ANY(%s) AND rel = %s AND w > 0 "
                            "ORDER BY dst, src", (list(at), relation))
        return [(at[int(d)], int(s)) for d, s in rows]

    def graph_spread(self, seeds: Sequence[int], scores: Sequence[float]
                     ) -> tuple[np.ndarray, np.ndarray]:
        def edges_of(mid: int) -> list[tuple[int, float]]:
            out = [(int(d), float(w)) for d, w in self.pg._all(
                "SELECT dst, w FROM edges WHERE src = %s ORDER BY dst, rel", (mid,))]
            out += [(int(s), float(w)) for s, w in self.pg._all(
                "SELECT src, w FROM edges WHERE dst = %s ORDER BY src, rel", (mid,))]
            return out
        return _graph.spread_with(edges_of, seeds, scores)


def search(pg: Any, plan: Any, node: Any) -> list[tuple[Any, R.Record]]:
    """The planner's hits for ``plan`` over the candidates of a PostgreSQL snapshot."""
    from .. import filters as F
    if not plan.ns_ids:
        return []
    where = ["ns = ANY(%s)"]
    params: list[Any] = [[int(n) for n in plan.ns_ids]]
    if plan.type_codes is not None:
        where.append("type = ANY(%s)")
        params.append([int(t) for t in plan.type_codes])
    if plan.since_us is not None:
        where.append("ts >= %s")
        params.append(int(plan.since_us))
    if plan.until_us is not None:
        where.append("ts <= %s")
        params.append(int(plan.until_us))
    sim = "0::real" if plan.mode == "lexical" else "-(vec <#> %s)"
    cols = f"id, ts, ns, type, question, {sim}" + (", meta" if node is not None else "")
    sql = f"SELECT {cols} FROM memories WHERE {' AND '.join(where)} ORDER BY id"
    args = ([] if plan.mode == "lexical" else [plan.vector.astype(np.float32)]) + params
    with pg.conn.cursor(binary=True) as cur:
        cur.execute(sql, args)  # type: ignore[arg-type]  # built from our own fragments
        rows = cur.fetchall()
    if node is not None:
        rows = [r for r in rows if F.evaluate(node, R.decode(bytes(r[6]), "metadata"))]
    if not rows:
        return []
    n = len(rows)
    cols_t = list(zip(*rows))
    slots = np.zeros(n, SLOT_DTYPE)
    slots["id"] = np.asarray(cols_t[0], np.int64)
    slots["ts"] = np.asarray(cols_t[1], np.int64)
    slots["ns"] = np.asarray(cols_t[2], np.int32)
    slots["type"] = np.asarray(cols_t[3], np.uint8)
    questions = slots["id"][np.asarray(cols_t[4], bool)].astype(np.uint64)
    cos = np.asarray(cols_t[5], np.float32)
    q = dataclasses.replace(plan, type_codes=None, since_us=None, until_us=None, allowed=None)
    cand = _Candidates(pg, slots, _Cosines(cos, q.vector), questions, pg.state.seq)
    hits = _retrieval.run(cand.engine, cast(Any, cand), q)  # the planner reads it like a Snapshot
    recs = pg.records([h.id for h in hits])
    return [(h, recs[h.id]) for h in hits if h.id in recs]
