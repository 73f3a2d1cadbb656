"""PostgreSQL for the test suite: the server URL and one fresh schema per test.

``server_url`` gives ``MNEMOS_TEST_PG_URL`` when set, else starts a private server with
``pgserver`` (PostgreSQL 16 + pgvector, from pip) in a scratch directory. Anything
missing or failing becomes a :class:`Unavailable` whose message the fixtures turn into a
visible ``pytest.skip`` reason.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ENV = "MNEMOS_TEST_PG_URL"
_names = itertools.count(1)


class Unavailable(Exception):
    """No PostgreSQL server for the tests (the message says why)."""


def connect(url: str, **kw: Any) -> Any:
    """A psycopg connection (autocommit) to ``url`` (without a ``schema`` parameter)."""
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install 'mnemos-kv[postgres]' or "
                          "'.[test]')") from exc
    return psycopg.connect(url, autocommit=True, **kw)


def start_server(pgdata: str) -> tuple[str, Any]:
    """(url, server handle) of a private pgserver server in ``pgdata``."""
    import warnings
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise Unavailable(f"{ENV} is not set and pgserver is not installed "
                          "(pip install pgserver, or install '.[test]')") from exc
    errors = []
    for attempt in range(3):  # pg_ctl waits 10 s at most: a loaded machine may need another go
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                srv = pgserver.get_server(pgdata, cleanup_mode="stop")
            return srv.get_uri(), srv
        except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip
            errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(1 + attempt)
    raise Unavailable(f"pgserver could not start a server in {pgdata} (3 attempts): "
                      + "; ".join(errors))


def prepare(url: str) -> str:
    """Check the server answers and has pgvector (created if missing); its version."""
    try:
        with connect(url, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    except Unavailable:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Unavailable(f"PostgreSQL at {redact(url)} is not usable: "
                          f"{type(exc).__name__}: {exc}") from exc
    if row is None:
        raise Unavailable(f"PostgreSQL at {redact(url)} has no pgvector extension")
    return str(row[0])


def redact(url: str) -> str:
    """``url`` without its password (for messages)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def schema_name() -> str:
    """A new schema name for this process: deterministic (pid + a counter), never reused
    within the process; prefixed so a leftover is recognisable."""
    return f"mnemos_t{os.getpid()}_{next(_names)}"


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema=NAME`` added to its query (the rest kept byte for byte)."""
    if "schema" in dict(parse_qsl(urlsplit(url).query)):
        raise ValueError(f"{redact(url)} already names a schema")
    base, sep, frag = url.partition("#")
    return f"{base}{'&' if '?' in base else '?'}schema={schema}{sep}{frag}"


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (waits at most 30 s for locks)."""
    with connect(url) as conn:
        conn.execute("SET lock_timeout = '30s'")
        from psycopg import sql
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def schema_exists(url: str, schema: str) -> bool:
    with connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (schema,)).fetchone() is not None
