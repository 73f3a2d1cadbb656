"""The PostgreSQL test fixtures work: a server with pgvector, a fresh schema per test
that is dropped afterwards (skipped, with the reason, when no server can be had)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import _pg


def test_server_answers_and_has_pgvector(pg_url: str) -> None:
    with _pg.connect(pg_url) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        dist = conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector").fetchone()[0]
    assert major >= 14, f"server version {major}: the docs promise PostgreSQL >= 14"
    assert version is not None
    assert dist == 2.0


def test_store_url_names_a_new_schema_of_the_same_server(pg_url: str, pg_store_url: str) -> None:
    params = dict(parse_qsl(urlsplit(pg_store_url).query))
    schema = params["schema"]
    assert schema.startswith("mnemos_t") and not _pg.schema_exists(pg_url, schema)
    # the rest of the URL is the server's, byte for byte
    assert pg_store_url.replace(f"schema={schema}", "").rstrip("?&") == pg_url
    with _pg.connect(pg_url) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.t (v vector(3))")
    assert _pg.schema_exists(pg_url, schema)


def test_schema_names_are_distinct_and_dropped(pg_url: str) -> None:
    a, b = _pg.schema_name(), _pg.schema_name()
    assert a != b
    with _pg.connect(pg_url) as conn:
        conn.execute(f"CREATE SCHEMA {a}")
        conn.execute(f"CREATE TABLE {a}.t (id bigint)")
    _pg.drop_schema(pg_url, a)
    assert not _pg.schema_exists(pg_url, a)
    _pg.drop_schema(pg_url, b)  # a schema that does not exist: nothing to do


def test_with_schema_keeps_the_url() -> None:
    assert _pg.with_schema("postgresql://u@h:5/db", "s1") == "postgresql://u@h:5/db?schema=s1"
    assert (_pg.with_schema("postgresql://postgres:@/postgres?host=/tmp/x", "s2")
            == "postgresql://postgres:@/postgres?host=/tmp/x&schema=s2")
    assert _pg.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
