"""The tables of a PostgreSQL store, their creation and the schema version row.

One store = one PostgreSQL schema (``?schema=`` of the URL). ``meta`` holds the
version row (``schema_version``), the store format version and the embedder; a
schema written by a newer mnemos-kv (a larger ``schema_version``) is refused, an
older one is brought up to date (``UPGRADES``) by the first read-write open.
``state`` is one row of counters (``seq``, ``next_id``, ``next_ns``, ``live``,
``live_bytes``, ``base_seq``); writers lock it, which serialises them in commit order.
"""

from __future__ import annotations

from typing import Any

from .. import _records as R
from ..errors import EmbedderMismatchError, FormatVersionError, NotAStoreError, StoreError

__all__ = ["SCHEMA_VERSION", "ensure", "tables"]

#: Version of the table layout below; bump it (and add to :data:`UPGRADES`) when it changes.
#: 5: the postings of lexical index version 5 (hyphenated compounds as one word too).
SCHEMA_VERSION = 5


def _fill_metaj(conn: Any) -> None:
    """Version 3: write ``metaj`` (the metadata as exact JSON) of every memory."""
    from .jsonfilter import to_json
    rows = conn.execute("SELECT id, meta FROM memories").fetchall()
    with conn.cursor() as cur:
        cur.executemany("UPDATE memories SET metaj = %s::jsonb WHERE id = %s",
                        [(to_json(R.decode(bytes(m), "metadata")), i) for i, m in rows])


#: Memories read per batch when the postings are rebuilt.
REINDEX_BATCH = 10_000


def _reindex_postings(conn: Any) -> None:
    """Version 5: rebuild the BM25 postings and statistics of every memory with the
    current tokeniser (``_lexical_index.doc_terms``, as the write path indexes), in
    batches of REINDEX_BATCH memories (each read, then copied in)."""
    from .. import _lexical_index
    conn.execute("DELETE FROM postings")
    conn.execute("DELETE FROM lexstats")
    stats: dict[int, list[int]] = {}
    last = -1
    with conn.cursor() as cur:
        while True:
            rows = cur.execute("SELECT id, ns, text FROM memories WHERE id > %s ORDER BY id "
                               "LIMIT %s", (last, REINDEX_BATCH)).fetchall()
            if not rows:
                break
            last = int(rows[-1][0])
            with cur.copy("COPY postings (ns, term, id, tf, dl) FROM STDIN") as cp:
                for mid, ns, text in rows:
                    terms, length, slength = _lexical_index.doc_terms(text)
                    for term, (tf, dl) in terms.items():
                        cp.write_row((ns, term, mid, tf, dl))
                    d = stats.setdefault(int(ns), [0, 0, 0])
                    d[0] += 1
                    d[1] += length
                    d[2] += slength
        cur.executemany("INSERT INTO lexstats (ns, docs, total, stotal) VALUES (%s, %s, %s, %s)",
                        [(ns, *d) for ns, d in sorted(stats.items())])


#: What brings a schema of version ``v`` to ``v + 1`` (run on a read-write open): DDL,
#: or a function of the connection.
UPGRADES: dict[int, list[Any]] = {
    1: [  # 2: capacity is enforced; eviction notes for explain_eviction
        """CREATE TABLE evictions (seq bigint PRIMARY KEY, id bigint NOT NULL UNIQUE,
            ns bigint NOT NULL, info bytea NOT NULL)""",
    ],
    2: [  # 3: metadata filters run in SQL over a jsonb copy of the metadata
        "ALTER TABLE memories ADD COLUMN metaj jsonb",
        _fill_metaj,
        # equalities of a filter (metaj @> ...) from the index; rows JSON cannot hold
        # (metaj NULL: checked in Python) from a small partial one, so that
        # "metaj IS NULL OR (metaj @> ... AND ...)" is a BitmapOr of the two
        "CREATE INDEX memories_metaj ON memories USING gin (metaj jsonb_path_ops)",
        "CREATE INDEX memories_unsure ON memories (ns) WHERE metaj IS NULL",
    ],
    3: [  # 4: capacity reads the oldest memories of each type of a scope from an index
        "CREATE INDEX memories_ns_type ON memories (ns, type, ts, id)",
        "CREATE INDEX memories_type ON memories (type, ts, id)",
    ],
    4: [  # 5: lexical index version 5 (hyphenated compounds also as one word)
        _reindex_postings,
    ],
}
#: Up to this dimension the vector column is stored inline (``STORAGE PLAIN``: 4 bytes
#: per dimension must fit an 8 KiB page with the rest of the row once the text is
#: moved out of line); larger vectors keep pgvector's default (compressed or TOASTed).
PLAIN_DIM = 1536


def tables(dim: int) -> list[str]:
    """The DDL of a store's tables (in the current ``search_path`` schema)."""
    return [
        "CREATE TABLE meta (name text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE state (one int PRIMARY KEY DEFAULT 1 CHECK (one = 1),
            seq bigint NOT NULL, next_id bigint NOT NULL, next_ns bigint NOT NULL,
            live bigint NOT NULL, live_bytes bigint NOT NULL, base_seq bigint NOT NULL)""",
        """CREATE TABLE namespaces (id bigint PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE,
            count bigint NOT NULL DEFAULT 0, bytes bigint NOT NULL DEFAULT 0)""",
        f"""CREATE TABLE memories (id bigint PRIMARY KEY, ns bigint NOT NULL, text text NOT NULL,
            meta bytea NOT NULL, type smallint NOT NULL, ts bigint NOT NULL,
            key text COLLATE "C", upd bigint, seq bigint NOT NULL,
            question boolean NOT NULL, vec vector({int(dim)}) NOT NULL,
            metaj jsonb)""",  # meta as exact JSON for filters in SQL (see jsonfilter)
        # vectors inline in the row when they fit a page (a scan then reads no TOAST)
        *(["ALTER TABLE memories ALTER COLUMN vec SET STORAGE PLAIN"] if dim <= PLAIN_DIM else []),
        "CREATE INDEX memories_ns_ts ON memories (ns, ts, id)",
        *UPGRADES[2][2:],
        *UPGRADES[3],
        "CREATE UNIQUE INDEX memories_ns_key ON memories (ns, key) WHERE key IS NOT NULL",
        """CREATE TABLE edges (src bigint NOT NULL, dst bigint NOT NULL,
            rel text COLLATE "C" NOT NULL, w double precision NOT NULL,
            PRIMARY KEY (src, dst, rel))""",
        "CREATE INDEX edges_dst ON edges (dst, src, rel)",
        """CREATE TABLE postings (ns bigint NOT NULL, term bytea NOT NULL, id bigint NOT NULL,
            tf integer NOT NULL, dl integer NOT NULL,
            PRIMARY KEY (ns, term, id) INCLUDE (tf, dl))""",  # BM25 reads are index-only
        """CREATE TABLE lexstats (ns bigint PRIMARY KEY, docs bigint NOT NULL,
            total bigint NOT NULL, stotal bigint NOT NULL)""",
        "CREATE TABLE oplog (seq bigint PRIMARY KEY, payload bytea NOT NULL)",
        "CREATE TABLE base (n bigint PRIMARY KEY, payload bytea NOT NULL)",
        """CREATE TABLE limits (scope bigint PRIMARY KEY, max_entries bigint,
            max_bytes bigint)""",
        "CREATE TABLE pins (id bigint PRIMARY KEY, ns bigint NOT NULL)",
        "CREATE TABLE evicted (ns bigint PRIMARY KEY, count bigint NOT NULL)",
        # the last _capacity.NOTES_MAX evictions (info: the CBOR note explain_eviction reads)
        UPGRADES[1][0],
    ]


def ensure(conn: Any, schema: str, embedder: Any, readonly: bool, where: str) -> dict[str, Any]:
    """Create the store in ``schema`` when it has none, else check its version row.

    Returns ``{"schema_version", "format_version", "embedder", "dim"}``. Creation runs
    under a transaction-scoped advisory lock, so concurrent openers create it once.
    """
    from psycopg import sql
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"mnemos-kv:{schema}"])
        exists = conn.execute("SELECT to_regclass(%s)", [f'"{schema}".meta']).fetchone()[0]
        if exists is None:
            if readonly:
                raise NotAStoreError(f"{where} holds no store; cannot create one read-only")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident))
            _search_path_with_vector(conn, schema, local=True)
            for ddl in tables(int(embedder.dim)):
                conn.execute(ddl)  # type: ignore[arg-type]  # our own constant DDL
            rows = [("schema_version", str(SCHEMA_VERSION)),
                    ("format_version", str(R.FORMAT_VERSION)),
                    ("embedder", str(embedder.name)), ("dim", str(int(embedder.dim)))]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO meta (name, value) VALUES (%s, %s)", rows)
            conn.execute("INSERT INTO state VALUES (1, 0, 1, 1, 0, 0, 0)")
            conn.execute("INSERT INTO namespaces (id, name) VALUES (0, 'default')")
        meta = dict(conn.execute(sql.SQL("SELECT name, value FROM {}.meta").format(ident)).fetchall())
        version = meta.get("schema_version", "")
        if not readonly and version.isdigit() and int(version) < SCHEMA_VERSION:
            conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident))
            _search_path_with_vector(conn, schema, local=True)
            for v in range(int(version), SCHEMA_VERSION):
                for step in UPGRADES[v]:
                    if callable(step):
                        step(conn)
                    else:
                        conn.execute(step)  # our own constant DDL
            conn.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'",
                         [str(SCHEMA_VERSION)])
            meta["schema_version"] = str(SCHEMA_VERSION)
    try:
        out = {"schema_version": int(meta["schema_version"]),
               "format_version": int(meta["format_version"]),
               "embedder": meta["embedder"], "dim": int(meta["dim"])}
    except (KeyError, ValueError) as exc:
        raise StoreError(f"{where}: the meta table is malformed ({exc!r})") from None
    if out["schema_version"] > SCHEMA_VERSION:
        raise FormatVersionError(
            f"{where} has schema version {out['schema_version']}; this mnemos-kv reads up to "
            f"{SCHEMA_VERSION}. Upgrade mnemos-kv to open it.")
    if out["format_version"] > R.FORMAT_VERSION:
        raise FormatVersionError(
            f"{where} has format version {out['format_version']}; this mnemos-kv reads up to "
            f"{R.FORMAT_VERSION}. Upgrade mnemos-kv to open it.")
    return out


def _search_path_with_vector(conn: Any, schema: str, local: bool) -> None:
    """Put ``schema`` first on the search path, then the schema of the ``vector`` type."""
    from psycopg import sql
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                       "ON n.oid = e.extnamespace WHERE e.extname = 'vector'").fetchone()
    if row is None:
        raise StoreError("the pgvector extension is not installed in this database")
    conn.execute(sql.SQL("SET {} search_path TO {}, {}").format(
        sql.SQL("LOCAL") if local else sql.SQL("SESSION"), sql.Identifier(schema),
        sql.Identifier(row[0])))


def ensure_extension(conn: Any, where: str) -> None:
    """``CREATE EXTENSION vector`` when it is missing (needs the privilege to create it)."""
    import psycopg
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('mnemos-kv:extension'))")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError(
            f"{where}: the pgvector extension is missing and could not be created "
            f"({type(exc).__name__}: {exc}); install pgvector and run CREATE EXTENSION vector "
            "as a privileged user") from exc


def set_search_path(conn: Any, schema: str) -> None:
    """The session's search path: the store schema, then pgvector's."""
    _search_path_with_vector(conn, schema, local=False)


def check_embedder(meta: dict[str, Any], embedder: Any, given: bool, where: str) -> Any:
    """The embedder to use (None: the store's custom one was not given)."""
    if embedder.name == meta["embedder"] and int(embedder.dim) == meta["dim"]:
        return embedder
    if given:
        raise EmbedderMismatchError(
            f"store {where} was made with embedder {meta['embedder']!r} (dim {meta['dim']}); "
            f"got {embedder.name!r} (dim {embedder.dim}). Open it with the same embedder.")
    return None
