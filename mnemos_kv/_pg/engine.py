"""The PostgreSQL engine: the ``_backend.Backend`` protocol over psycopg 3 + pgvector.

Two connections per open store: one for writes (each ``write`` is one transaction
that first locks the ``state`` row, see ``write``), one for snapshots (a
``REPEATABLE READ, READ ONLY`` transaction per ``with engine.snapshot()``), so a
write during a long read (e.g. iterating ``memories()``) neither blocks nor is seen
by it, as with the embedded store. Every call commits before it returns, with the
server's ``synchronous_commit`` (``durability="fast"`` turns it off for the session).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import _capacity
from .. import _records as R
from .._engine import State
from ..errors import (ClosedError, EmbedderMismatchError, ReadOnlyError, StorageError, StoreError,
                      UnsupportedError)
from . import schema as _schema
from .url import parse_url, redact
from .write import (REC_COLS, Ctx, PgScope, as_array, capacity_columns, finish, limits_of,
                    record_of, resolve)

__all__ = ["PgEngine", "PgSnapshot"]


def _connect(conninfo: str, where: str) -> Any:
    import psycopg
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {where}: {type(exc).__name__}: "
                         f"{str(exc).strip()}") from None


def translate(exc: Exception, where: str) -> Exception:
    """A psycopg error as a StorageError naming the store (our own errors pass through)."""
    import psycopg
    if isinstance(exc, psycopg.Error):
        return StorageError(f"{where}: PostgreSQL error: {type(exc).__name__}: {str(exc).strip()}")
    return exc


class PgEngine:
    """A store in one PostgreSQL schema, behind the same facade as the embedded one."""

    kind = "postgres"

    def __init__(self, url: str, *, embedder: Any, embedder_given: bool,
                 clock: Callable[[], float], readonly: bool, durable: bool = True) -> None:
        conninfo, self.schema = parse_url(url)
        self.path = redact(url)
        self.url = url
        self.readonly = readonly
        self.clock = clock
        self.durable = durable
        self.ann_mode: bool | None = False
        self.on_evict: Callable[[list[R.Record]], None] | None = None
        self.closed = False
        self._pid = os.getpid()
        self._wlock = threading.RLock()
        self._rlock = threading.RLock()
        self._snap: PgSnapshot | None = None
        self._snap_owner: int | None = None
        where = f"{self.path} (schema {self.schema!r})"
        self._where = where
        self._w = _connect(conninfo, where)
        try:
            _schema.ensure_extension(self._w, where)
            meta = _schema.ensure(self._w, self.schema, embedder, readonly, where)
            self.format = {"version": meta["format_version"], "embedder": meta["embedder"],
                           "dim": meta["dim"], "schema_version": meta["schema_version"]}
            self.dim = int(meta["dim"])
            self.embedder_name = str(meta["embedder"])
            self.embedder = _schema.check_embedder(meta, embedder, embedder_given, where)
            self._conninfo = conninfo
            # filters run in SQL over ``metaj`` (schema 3) when strings order by code
            # point under COLLATE "C", i.e. in a UTF-8 database (see jsonfilter)
            enc = self._w.execute("SHOW server_encoding").fetchone()[0]
            self.sql_filters = meta["schema_version"] >= 3 and str(enc).upper() in ("UTF8", "UTF-8")
            self._setup(self._w)
            self._r = self._new_conn()
        except BaseException:
            self._w.close()
            if getattr(self, "_r", None) is not None:
                self._r.close()
            raise

    def _setup(self, conn: Any) -> None:
        """A connection's session: the store schema first on the search path, the pgvector
        adapter, and ``synchronous_commit`` off in ``durability="fast"``."""
        from pgvector.psycopg import register_vector
        _schema.set_search_path(conn, self.schema)
        register_vector(conn)
        if not self.durable:
            conn.execute("SET synchronous_commit TO off")

    def _new_conn(self) -> Any:
        conn = _connect(self._conninfo, self._where)
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _live(self, which: str) -> Any:
        """The write (``"_w"``) or read (``"_r"``) connection, made again when the old one
        broke (a server restart, a network cut): the call that saw it break failed with
        StorageError and wrote nothing; the next one reconnects."""
        conn = getattr(self, which)
        if conn.closed or conn.broken:
            conn = self._new_conn()
            setattr(self, which, conn)
        return conn

    # -- lifecycle -----------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"store {self.path!r} is closed")
        if os.getpid() != self._pid:
            raise ClosedError(
                f"store {self.path!r} was opened in process {self._pid}, before this process was "
                "forked from it; a child process must open stores itself")

    def check_writable(self) -> None:
        self.check_open()
        if self.readonly:
            raise ReadOnlyError(f"store {self.path!r} is open read-only")

    def require_embedder(self) -> Any:
        if self.embedder is None:
            raise EmbedderMismatchError(
                f"store {self.path!r} was made with embedder {self.embedder_name!r} "
                f"(dim {self.dim}); pass it as Mnemos.open(..., embedder=...) to embed text")
        return self.embedder

    def local(self, call: str) -> Any:
        """Calls only the embedded engine offers raise UnsupportedError here."""
        self.check_open()
        raise UnsupportedError(f"{call} is not supported by the PostgreSQL engine (it is "
                               "embedded-only; see docs/postgres.md)")

    def sync(self) -> None:
        """Every returned write is committed already; with ``durability="fast"`` this
        waits for the server to flush its WAL (one synchronous commit)."""
        self.check_writable()
        with self._wlock:
            conn = self._live("_w")
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit TO on")
                conn.execute("SELECT txid_current()")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in (self._w, getattr(self, "_r", None)):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing must not fail
                    pass

    # -- state and snapshots ---------------------------------------------------------------

    def read_state(self) -> "PgState":
        self.check_open()
        with self._wlock:
            row = self._live("_w").execute("SELECT seq, next_id, next_ns, live, live_bytes, base_seq "
                                  "FROM state").fetchone()
        return _state(row)

    @contextmanager
    def snapshot(self) -> Iterator["PgSnapshot"]:
        """A consistent read view (nested snapshots of one thread share it)."""
        self.check_open()
        me = threading.get_ident()
        if self._snap is not None and self._snap_owner == me:
            yield self._snap
            return
        with self._rlock:
            try:
                conn = self._live("_r")
                # one round trip: the transaction and its counters (a multi-statement
                # simple query; no parameters), COMMIT at the end (ROLLBACK on error)
                cur = conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                                   "SELECT seq, next_id, next_ns, live, live_bytes, base_seq "
                                   "FROM state")
                cur.nextset()
                snap = PgSnapshot(self, conn, _state(cur.fetchone()))
                self._snap, self._snap_owner = snap, me
                ok = False
                try:
                    yield snap
                    ok = True
                finally:
                    self._snap, self._snap_owner = None, None
                    if not conn.broken:
                        conn.execute("COMMIT" if ok else "ROLLBACK")
            except Exception as exc:
                new = translate(exc, self._where)
                if new is exc:
                    raise
                raise new from exc

    # -- writes ------------------------------------------------------------------------------

    def write(self, requests: Sequence[tuple[Any, ...]], *, log: bool = True,
              allow_gaps: bool = False) -> list[Any]:
        """Resolve and apply ``requests`` in one transaction; all or nothing."""
        self.check_writable()
        with self._wlock:
            try:
                conn = self._live("_w")
                with conn.transaction():
                    cur = conn.cursor()
                    row = cur.execute("SELECT seq, next_id, next_ns, live, live_bytes, base_seq "
                                      "FROM state FOR UPDATE").fetchone()
                    ctx = Ctx(cur, _state(row), self.dim, log=log, allow_gaps=allow_gaps)
                    for req in requests:
                        ctx.results.append(resolve(ctx, req))
                    if not ctx.replay_only:  # as the embedded engine: not on replay
                        _capacity.enforce_in(PgScope(ctx), ctx)
                    finish(ctx)
            except Exception as exc:
                new = translate(exc, self._where)
                if new is exc:
                    raise
                raise new from exc
        if ctx.evicted and self.on_evict is not None:
            _capacity.notify(self.on_evict, ctx.evicted)
        return ctx.results

    # -- replay hooks (see _replay.replay) ---------------------------------------------------

    def replay_compact(self) -> dict[str, Any]:
        """A logged ``compact`` op: nothing to rewrite here, the op keeps its place."""
        self.write([("op", {"op": "compact", "gen": 0})])
        return {"seq": self.read_state().seq}

    def restore_base(self, ops: Any, progress: Any = None) -> int:
        """A base snapshot: its ops applied unlogged, its payloads kept in ``base`` (the
        base section of later exports), ``base_seq`` set to its sequence number."""
        applied = 0
        chunk: list[dict[str, Any]] = []
        payloads: list[bytes] = []
        base_seq = None
        for op in ops:
            payloads.append(R.encode(op))
            if op.get("op") == "base":
                base_seq = int(op["seq"])
            chunk.append(op)
            if len(chunk) >= 2000:
                self.write([("op", o) for o in chunk], log=False, allow_gaps=True)
                applied += len(chunk)
                chunk = []
                if progress is not None:
                    progress("restore", applied, 0)
        if chunk:
            self.write([("op", o) for o in chunk], log=False, allow_gaps=True)
            applied += len(chunk)
        if base_seq is not None:
            with self._wlock, self._live("_w").transaction():
                with self._live("_w").cursor() as cur:
                    cur.execute("DELETE FROM base")
                    cur.executemany("INSERT INTO base (n, payload) VALUES (%s, %s)",
                                    list(enumerate(payloads, 1)))
                    cur.execute("UPDATE state SET base_seq = %s", (base_seq,))
        if progress is not None:
            progress("restore", applied, applied)
        return applied

    def export_replay(self, path: str, *, namespaces: Sequence[str] | None,
                      since_seq: int | None, progress: Any) -> Any:
        from .._replay import check_export_args, check_since, write_export
        names = check_export_args(namespaces, since_seq)
        with self.snapshot() as snap:
            st = snap.state
            check_since(since_seq, st.seq, st.base_seq)
            conn = snap.conn

            def base() -> Iterator[bytes]:
                with conn.cursor(name="mnemos_base") as cur:
                    cur.execute("SELECT payload FROM base ORDER BY n")
                    for (p,) in cur:
                        yield bytes(p)

            def frames() -> Iterator[tuple[int, bytes]]:
                start = st.base_seq if since_seq is None else since_seq
                with conn.cursor(name="mnemos_log") as cur:
                    cur.itersize = 2000
                    cur.execute("SELECT seq, payload FROM oplog WHERE seq > %s ORDER BY seq",
                                (start if names is None else st.base_seq,))
                    for seq, p in cur:
                        yield int(seq), bytes(p)

            return write_export(self, snap, path, names, since_seq, st.base_seq,
                                base if st.base_seq > 0 else None, frames(),
                                st.seq - st.base_seq, progress)

    def replay(self, path: str, *, strict: bool, resume: bool, progress: Any) -> Any:
        from .._replay import replay
        return replay(self, path, strict=strict, resume=resume, progress=progress)

    def stats(self) -> dict[str, Any]:
        with self.snapshot() as snap:
            st = snap.state
            nss = snap.namespaces()
            ev = snap.evicted_counts()
            lims = snap.limits()
            return {
                "path": self.path, "backend": "postgres", "schema": self.schema,
                "format_version": self.format["version"],
                "schema_version": self.format["schema_version"],
                "embedder": {"name": self.embedder_name, "dim": self.dim},
                "total": st.live,
                "namespaces": {n: {"count": int(info["count"])} for n, info in nss.items()},
                "evicted": sum(ev.values()),
                "capacity": {
                    "limit": lims["store"], "bytes": st.live_bytes,
                    "namespaces": {n: {"limit": lims["ns"].get(int(info["id"])),
                                       "evicted": ev.get(int(info["id"]), 0),
                                       "bytes": int(info["bytes"])} for n, info in nss.items()}},
                "seq": st.seq,
                "log": {"base_seq": st.base_seq},
            }


@dataclass
class PgState(State):
    """The embedded engine's counters plus ``base_seq``: the sequence number of the base
    snapshot kept in the ``base`` table (0: none; history starts at seq 1)."""

    base_seq: int = 0


def _state(row: Any) -> PgState:
    seq, next_id, next_ns, live, live_bytes, base_seq = (int(x) for x in row)
    return PgState(seq=seq, next_id=next_id, next_ns=next_ns, live=live, live_bytes=live_bytes,
                   usage=1, base_seq=base_seq)


class PgSnapshot:
    """The ``_backend.Reader`` of a PostgreSQL store: one repeatable-read transaction."""

    def __init__(self, engine: PgEngine, conn: Any, state: PgState) -> None:
        self.engine, self.conn, self.state = engine, conn, state
        self._names: dict[int, str] = {}

    def _one(self, query: str, params: Any = ()) -> Any:
        return self.conn.execute(query, params).fetchone()

    def _all(self, query: str, params: Any = ()) -> list[Any]:
        return self.conn.execute(query, params).fetchall()

    def ns_id(self, name: str) -> int | None:
        row = self._one("SELECT id FROM namespaces WHERE name = %s", (name,))
        return None if row is None else int(row[0])

    def ns_name(self, nid: int) -> str:
        name = self._names.get(nid)  # fixed within the snapshot
        if name is None:
            row = self._one("SELECT name FROM namespaces WHERE id = %s", (nid,))
            name = self._names[nid] = f"<dropped namespace {nid}>" if row is None else str(row[0])
        return name

    def namespaces(self) -> dict[str, dict[str, Any]]:
        return {name: {"id": int(i), "count": int(c), "bytes": int(b)} for i, name, c, b in
                self._all("SELECT id, name, count, bytes FROM namespaces ORDER BY name")}

    def namespaces_from(self, head: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, info) of the namespaces whose name starts with ``head``, by name (an
        index range scan: names are ``COLLATE "C"``)."""
        rows = self._all("SELECT id, name, count, bytes FROM namespaces WHERE name >= %s "
                         "AND starts_with(name, %s) ORDER BY name", (head, head))
        return iter([(name, {"id": int(i), "count": int(c), "bytes": int(b)})
                     for i, name, c, b in rows])

    def ns_count(self, name: str) -> int:
        row = self._one("SELECT count FROM namespaces WHERE name = %s", (name,))
        return 0 if row is None else int(row[0])

    def record(self, mid: int) -> R.Record | None:
        row = self._one(f"SELECT {REC_COLS} FROM memories WHERE id = %s", (mid,))
        return None if row is None else record_of(row)

    def records(self, ids: Sequence[int]) -> dict[int, R.Record]:
        """The records of ``ids`` (and their namespaces' names, kept for ``ns_name``)."""
        if not ids:
            return {}
        cols = ", ".join(f"m.{c.strip()}" for c in REC_COLS.split(","))
        rows = self._all(f"SELECT {cols}, n.name FROM memories m JOIN namespaces n "
                         "ON n.id = m.ns WHERE m.id = ANY(%s)", (list(ids),))
        for r in rows:
            self._names[int(r[1])] = str(r[9])
        return {int(r[0]): record_of(r[:9]) for r in rows}

    def key_id(self, nid: int, key: str) -> int | None:
        row = self._one("SELECT id FROM memories WHERE ns = %s AND key = %s", (nid, key))
        return None if row is None else int(row[0])

    def vector(self, rec: R.Record) -> np.ndarray:
        row = self._one("SELECT vec FROM memories WHERE id = %s", (rec.id,))
        return as_array(row[0])

    def edges(self, mid: int, direction: str) -> list[tuple[int, int, str, float]]:
        out: list[tuple[int, int, str, float]] = []
        if direction in ("out", "both"):
            out += [(mid, int(d), r, float(w)) for d, r, w in self._all(
                "SELECT dst, rel, w FROM edges WHERE src = %s ORDER BY dst, rel", (mid,))]
        if direction in ("in", "both"):
            out += [(int(s), mid, r, float(w)) for s, r, w in self._all(
                "SELECT src, rel, w FROM edges WHERE dst = %s ORDER BY src, rel", (mid,))]
        return out

    def _pushed(self, node: Any) -> tuple[str, list[Any]] | None:
        """The filter as SQL over ``metaj`` (None: evaluate it in Python)."""
        if node is None or not self.engine.sql_filters:
            return None
        from .jsonfilter import where
        return where(node)

    def _matching(self, nid: int, node: Any, since_us: int | None = None,
                  until_us: int | None = None) -> list[Any]:
        """Rows (REC_COLS) of namespace ``nid`` in (ts, id) order, bounded, filtered (in
        SQL where ``jsonfilter`` translates the filter; rows JSON cannot hold and
        untranslatable filters by ``filters.evaluate``)."""
        from .. import filters as F
        cond = "ns = %s"
        params: list[Any] = [nid]
        if since_us is not None:
            cond += " AND ts >= %s"
            params.append(since_us)
        if until_us is not None:
            cond += " AND ts <= %s"
            params.append(until_us)
        if node is None:
            return self._all(f"SELECT {REC_COLS} FROM memories WHERE {cond} ORDER BY ts, id", params)
        pushed = self._pushed(node)
        if pushed is None:
            rows = self._all(f"SELECT {REC_COLS} FROM memories WHERE {cond} ORDER BY ts, id", params)
            return [r for r in rows if F.evaluate(node, R.decode(bytes(r[3]), "metadata"))]
        pred, pparams = pushed
        rows = self._all(f"SELECT {REC_COLS}, metaj IS NULL FROM memories WHERE {cond} "
                         f"AND (metaj IS NULL OR {pred}) ORDER BY ts, id", [*params, *pparams])
        return [r[:9] for r in rows
                if not r[9] or F.evaluate(node, R.decode(bytes(r[3]), "metadata"))]

    def count(self, nid: int, node: Any) -> int:
        from .. import filters as F
        pushed = self._pushed(node)
        if pushed is None:
            rows = self._all("SELECT meta FROM memories WHERE ns = %s", (nid,))
            return sum(1 for (m,) in rows if F.evaluate(node, R.decode(bytes(m), "metadata")))
        pred, pparams = pushed
        n, unsure = self._one(
            "SELECT count(*) FILTER (WHERE metaj IS NOT NULL), "
            "array_agg(meta) FILTER (WHERE metaj IS NULL) FROM memories "
            f"WHERE ns = %s AND (metaj IS NULL OR {pred})", [nid, *pparams])
        return int(n) + sum(1 for m in unsure or () if F.evaluate(node, R.decode(bytes(m), "metadata")))

    def memories(self, nid: int, since_us: int | None, until_us: int | None,
                 node: Any) -> Iterator[R.Record]:
        return iter([record_of(r) for r in self._matching(nid, node, since_us, until_us)])

    def search(self, plan: Any, node: Any) -> list[tuple[Any, R.Record]]:
        from .search import search
        return search(self, plan, node)

    def graph(self, nids: Sequence[int]) -> Any:
        from .._graph import graph_of
        return graph_of(self, nids)

    def is_pinned(self, nid: int, mid: int) -> bool:
        return self._one("SELECT 1 FROM pins WHERE id = %s AND ns = %s", (mid, nid)) is not None

    def limits(self) -> dict[str, Any]:
        return limits_of(self._all("SELECT scope, max_entries, max_bytes FROM limits ORDER BY scope"))

    def evicted_counts(self) -> dict[int, int]:
        return {int(n): int(c) for n, c in self._all("SELECT ns, count FROM evicted ORDER BY ns")}

    def pinned_ids(self, nid: int | None) -> list[int]:
        if nid is None:
            return [int(i) for (i,) in self._all("SELECT id FROM pins ORDER BY id")]
        return [int(i) for (i,) in self._all("SELECT id FROM pins WHERE ns = %s ORDER BY id", (nid,))]

    def eviction_note(self, mid: int) -> dict[str, Any] | None:
        if int(self.engine.format["schema_version"]) < 2:
            return None  # a version-1 schema opened read-only: no notes table
        row = self._one("SELECT info FROM evictions WHERE id = %s", (mid,))
        return None if row is None else R.decode(bytes(row[0]), "eviction note")

    def capacity_columns(self, nid: int | None) -> tuple[np.ndarray, ...]:
        return capacity_columns(self.conn, nid)

    def digest_records(self) -> Iterator[tuple[R.Record, bytes]]:
        with self.conn.cursor(name="mnemos_digest_mem") as cur:
            cur.itersize = 2000
            cur.execute(f"SELECT {REC_COLS}, vec FROM memories ORDER BY id")
            for row in cur:
                yield record_of(row[:9]), as_array(row[9]).tobytes()

    def digest_edges(self) -> Iterator[tuple[int, int, str, float, int | None]]:
        with self.conn.cursor(name="mnemos_digest_edges") as cur:
            cur.itersize = 5000
            cur.execute("SELECT e.src, e.dst, e.rel, e.w, m.ns FROM edges e "
                        "LEFT JOIN memories m ON m.id = e.src ORDER BY e.src, e.dst, e.rel")
            for s, d, r, w, ns in cur:
                yield int(s), int(d), r, float(w), None if ns is None else int(ns)
