"""``ask`` on a PostgreSQL store: candidates from SQL, ranking by the embedded planner.

One query fetches the candidates (live memories of the asked namespaces that pass
the type and time filters) with their pgvector similarity to the query vector
(``-(vec <#> q)``: the stored vectors are L2-normalised, so the inner product is the
cosine). A metadata filter is part of that query's WHERE (``jsonfilter``: the
reference semantics in SQL over a jsonb copy of the metadata); rows JSON cannot hold,
and filters without an exact SQL form, are checked by ``filters.evaluate``. The
candidates become a small in-memory snapshot (a slot table in id order) and the SAME planner as the embedded store ranks them (``_retrieval.run``:
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


_SEND = {">i8": "int8send", ">i4": "int4send", ">i2": "int2send", "?": "boolsend",
         ">f8": "float8send"}


def fetch_columns(conn: Any, source: str, params: Sequence[Any],
                  fields: Sequence[tuple[str, str]], order: Sequence[str],
                  extra: str = "", extra_params: Sequence[Any] = ()) -> tuple[np.ndarray, Any]:
    """The rows of the query ``source`` as a structured array, fetched as one row.

    Each column (``fields``: name and big-endian numpy type; NOT NULL, fixed size) is
    sent as one ``bytea``: ``string_agg`` of the value's binary send form, so the whole
    answer is a few buffers and ``np.frombuffer``, never a Python object per value.
    The rows come back sorted by the ``order`` columns (sorted here, so that the
    server is free to scan in any order, in parallel too).
    ``extra``: more SQL columns (e.g. scalar subqueries) fetched in the same round trip,
    returned as the second item (a tuple).
    """
    cols = ", ".join(f"coalesce(string_agg({_SEND[t]}(src.{name}), ''::bytea), ''::bytea)"
                     for name, t in fields)
    with conn.cursor(binary=True) as cur:
        row = cur.execute(f"SELECT {cols}{', ' + extra if extra else ''} FROM ({source}) AS src",
                          [*extra_params, *params]).fetchone()  # extra comes first in the text
    more = tuple(row[len(fields):])
    row = row[:len(fields)]
    out = np.empty(len(row[0]) // np.dtype(fields[0][1]).itemsize,
                   np.dtype([(name, t.replace(">", "<") if t != "?" else t) for name, t in fields]))
    for (name, t), buf in zip(fields, row):
        out[name] = np.frombuffer(bytes(buf), dtype=t)
    if out.size > 1:
        out = out[np.lexsort(tuple(out[c] for c in reversed(order)))]
    return out, more


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
        rows, stats = fetch_columns(
            self.pg.conn,
            "SELECT p.ns, q.k, p.id, p.tf, p.dl FROM postings p JOIN "
            "unnest(%s::bytea[]) WITH ORDINALITY AS q(term, k) ON p.term = q.term "
            "WHERE p.ns = ANY(%s)",
            (list(terms), ns_list),
            [("ns", ">i8"), ("k", ">i8"), ("id", ">i8"), ("tf", ">i4"), ("dl", ">i4")],
            ("ns", "k", "id"),
            extra="(SELECT ARRAY[coalesce(sum(docs), 0), coalesce(sum(total), 0), "
                  "coalesce(sum(stotal), 0)]::int8[] FROM lexstats WHERE ns = ANY(%s))",
            extra_params=(ns_list,))  # the collection statistics, in the same round trip
        n_docs, total, stotal = (int(x) for x in stats[0])
        # one run of rows per (namespace, term), in id order
        keys = rows["ns"] * (len(terms) + 1) + rows["k"]
        cuts = np.flatnonzero(np.diff(keys)) + 1 if keys.size else np.empty(0, np.int64)
        starts = np.concatenate(([0], cuts)) if keys.size else cuts
        ends = np.concatenate((cuts, [keys.size])) if keys.size else cuts
        runs = {(int(rows["ns"][a]), int(rows["k"][a])): (int(a), int(b))
                for a, b in zip(starts.tolist(), ends.tolist())}
        index = {bytes(t): i + 1 for i, t in enumerate(terms)}

        def fetch(ns: int, term: bytes) -> np.ndarray:
            run = runs.get((int(ns), index[bytes(term)]))
            if run is None:
                return _EMPTY_POSTINGS
            part = rows[run[0]:run[1]]
            out = np.empty(part.size, _EMPTY_POSTINGS.dtype)
            out["id"], out["tf"], out["dl"] = part["id"], part["tf"], part["dl"]
            return out

        return _lexical_index.bm25_of(n_docs, total, stotal, ns_list, terms, fetch, **kw)

    def question_ids(self, ns_ids: Sequence[int]) -> np.ndarray:
        return self._questions

    def lexical_documents(self, ns_ids: Sequence[int]) -> int:
        row = self.pg._one("SELECT coalesce(sum(docs), 0) FROM lexstats WHERE ns = ANY(%s)",
                           ([int(n) for n in ns_ids],))
        return int(row[0])

    def term_counts(self, ns_ids: Sequence[int], terms: Sequence[bytes]) -> np.ndarray:
        """As ``_lexical_index.term_counts``: how many memories of ``ns_ids`` hold each term."""
        out = np.zeros(len(terms), np.float64)
        if not terms or not ns_ids:
            return out
        rows = self.pg._all("SELECT term, count(*) FROM postings WHERE ns = ANY(%s) "
                            "AND term = ANY(%s) GROUP BY term",
                            ([int(n) for n in ns_ids], [bytes(t) for t in terms]))
        at = {bytes(t): i for i, t in enumerate(terms)}
        for term, count in rows:
            out[at[bytes(term)]] = int(count)
        return out

    def surface_prefixed(self, ns_ids: Sequence[int], prefix: str, limit: int) -> list[str] | None:
        """As ``_lexical_index.surface_prefixed``: the indexed words starting with ``prefix``."""
        ns_list = [int(n) for n in ns_ids]
        if not ns_list:
            return []
        head = _lexical_index.SURFACE_PREFIX + prefix.encode("utf-8")
        rows = self.pg._all("SELECT ns, term FROM (SELECT DISTINCT ns, term FROM postings WHERE "
                            "ns = ANY(%s) AND substring(term from 1 for %s) = %s) AS t",
                            (ns_list, len(head), head))
        per_ns: dict[int, int] = {}
        for ns, _t in rows:
            per_ns[int(ns)] = per_ns.get(int(ns), 0) + 1
        if any(c > limit for c in per_ns.values()):
            return None
        return sorted({bytes(t)[1:].decode("utf-8", "replace") for _ns, t in rows})

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
        cache: dict[int, list[tuple[int, float]]] = {}

        def prefetch(ids: list[int]) -> None:
            """Every edge of ``ids``, both directions, in two queries: out-edges by
            (dst, relation), then in-edges by (src, relation), as the embedded store
            lists them."""
            ids = [int(m) for m in ids if int(m) not in cache]  # each node read once
            if not ids:
                return
            for mid in ids:
                cache[mid] = []
            for me, other, w in self.pg._all(
                    "SELECT src, dst, w FROM edges WHERE src = ANY(%s) ORDER BY src, dst, rel",
                    (list(ids),)):
                cache[int(me)].append((int(other), float(w)))
            for me, other, w in self.pg._all(
                    "SELECT dst, src, w FROM edges WHERE dst = ANY(%s) ORDER BY dst, src, rel",
                    (list(ids),)):
                cache[int(me)].append((int(other), float(w)))

        def edges_of(mid: int) -> list[tuple[int, float]]:
            if int(mid) not in cache:
                prefetch([int(mid)])
            return cache[int(mid)]
        return _graph.spread_with(edges_of, seeds, scores, prefetch=prefetch)


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
    pushed = pg._pushed(node)  # the filter in SQL (jsonfilter), or None: in Python
    if pushed is not None:
        where.append(f"(metaj IS NULL OR {pushed[0]})")
        params.extend(pushed[1])
    sim = "0::float8" if plan.mode == "lexical" else "-(vec <#> %s::vector)"
    cond = " AND ".join(where)
    args = ([] if plan.mode == "lexical" else [plan.vector.astype(np.float32)]) + params
    rows, _ = fetch_columns(pg.conn, f"SELECT id, ts, ns, type, question, {sim} AS cos, "
                         f"{'metaj IS NULL' if pushed is not None else 'false'} AS unsure "
                         f"FROM memories WHERE {cond}", args,
                         [("id", ">i8"), ("ts", ">i8"), ("ns", ">i8"), ("type", ">i2"),
                          ("question", "?"), ("cos", ">f8"), ("unsure", "?")], ("id",))
    if node is not None and rows.size:
        check = rows["id"][rows["unsure"]] if pushed is not None else None
        if check is None or check.size:  # re-check (or check) those rows in Python
            with pg.conn.cursor(binary=True) as cur:
                if check is None:
                    cur.execute(f"SELECT id, meta FROM memories WHERE {cond} ORDER BY id", params)
                else:
                    cur.execute("SELECT id, meta FROM memories WHERE id = ANY(%s) ORDER BY id",
                                [check.tolist()])
                fail = [int(i) for i, m in cur
                        if not F.evaluate(node, R.decode(bytes(m), "metadata"))]
            if fail:
                rows = rows[~np.isin(rows["id"], np.asarray(fail, np.int64))]
    if not rows.size:
        return []
    n = rows.size
    slots = np.zeros(n, SLOT_DTYPE)
    slots["id"] = rows["id"]
    slots["ts"] = rows["ts"]
    slots["type"] = rows["type"]
    questions = rows["id"][rows["question"]].astype(np.uint64)
    cos = rows["cos"].astype(np.float32)
    slots["ns"] = rows["ns"]
    q = dataclasses.replace(plan, type_codes=None, since_us=None, until_us=None, allowed=None)
    cand = _Candidates(pg, slots, _Cosines(cos, q.vector), questions, pg.state.seq)
    hits = _retrieval.run(cand.engine, cast(Any, cand), q)  # the planner reads it like a Snapshot
    recs = pg.records([h.id for h in hits])
    return [(h, recs[h.id]) for h in hits if h.id in recs]
