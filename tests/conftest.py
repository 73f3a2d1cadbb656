"""Shared fixtures: a fresh store per test, a deterministic clock, always closed."""

from __future__ import annotations

import itertools
import os
import sys
from typing import Callable, Iterator

import pytest

from mnemos_kv import Mnemos

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # tests/_pg.py, whatever pytest's import mode
    sys.path.insert(0, _HERE)


class Clock:
    """A deterministic clock: starts at 2026-01-01T00:00:00Z, one second per call."""

    def __init__(self, start: float = 1_767_225_600.0, step: float = 1.0) -> None:
        self._it = itertools.count()
        self.start, self.step = start, step

    def __call__(self) -> float:
        return self.start + next(self._it) * self.step


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "agent.mem")


@pytest.fixture
def db(store_path: str, clock: Clock) -> Iterator[Mnemos]:
    store = Mnemos.open(store_path, clock=clock)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def opener(tmp_path) -> Iterator[Callable[..., Mnemos]]:
    """Open stores under tmp_path; every one opened is closed at the end."""
    opened: list[Mnemos] = []

    def _open(name: str = "agent.mem", **kw) -> Mnemos:
        kw.setdefault("clock", Clock())
        s = Mnemos.open(str(tmp_path / name), **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


# -- PostgreSQL -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server URL (no ``schema``): ``MNEMOS_TEST_PG_URL`` when set, else a
    private pgserver server started for the session. Skips, with the reason, when
    psycopg or pgserver is missing or no server can be started."""
    import shutil
    import tempfile

    import _pg
    srv = pgdata = None
    if os.environ.get("MNEMOS_TEST_PG") == "0":
        pytest.skip("PostgreSQL tests skipped: MNEMOS_TEST_PG=0 (CI's oldest-py-lmdb run; "
                    "they ran in the main run)")
    try:
        url = os.environ.get(_pg.ENV)
        if not url:
            # not under pytest's basetemp: when run as root the server runs as the user
            # "pgserver", and every new pytest session makes /tmp/pytest-of-root 0700 again
            pgdata = tempfile.mkdtemp(prefix="mnemos-test-pg-")
            url, srv = _pg.start_server(os.path.join(pgdata, "data"))
        _pg.prepare(url)
    except _pg.Unavailable as exc:
        if srv is not None:
            srv.cleanup()
        if pgdata is not None:
            shutil.rmtree(pgdata, ignore_errors=True)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield url
    finally:
        if srv is not None:
            srv.cleanup()
        if pgdata is not None:
            shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    """A store URL in a fresh schema of the test server (pid + counter name), dropped after
    the test."""
    import _pg
    name = _pg.schema_name()
    _pg.drop_schema(pg_url, name)  # a leftover of an earlier run with the same pid
    try:
        yield _pg.with_schema(pg_url, name)
    finally:
        _pg.drop_schema(pg_url, name)


@pytest.fixture
def pg_schemas(pg_url: str) -> Iterator[Callable[[], str]]:
    """Make store URLs in fresh schemas of the test server; all are dropped after the test."""
    import _pg
    made: list[str] = []

    def new() -> str:
        name = _pg.schema_name()
        _pg.drop_schema(pg_url, name)  # a leftover of an earlier run with the same pid
        made.append(name)
        return _pg.with_schema(pg_url, name)

    try:
        yield new
    finally:
        for name in made:
            _pg.drop_schema(pg_url, name)


# -- both engines ---------------------------------------------------------------------------
# A test module runs its store tests on both engines by overriding two fixtures with
# the backend-parametrised ones of tests/_engines.py:
#
#     from _engines import opener, store_path  # noqa: F401
#
# A test of what docs/postgres.md documents as embedded-only carries
# ``@pytest.mark.embedded_only("the documented difference")``: skipped on PostgreSQL.

@pytest.fixture(params=["lmdb", "postgres"])
def backend(request) -> str:
    """The storage engine under test."""
    if request.param == "postgres":
        mark = request.node.get_closest_marker("embedded_only")
        if mark is not None:
            pytest.skip(f"embedded store only (docs/postgres.md): {mark.args[0]}")
    return request.param


@pytest.fixture
def backend_store_path(backend: str, tmp_path, request) -> str:
    """A new store's path: a directory (lmdb) or a URL in a fresh schema (postgres)."""
    if backend == "lmdb":
        return str(tmp_path / "agent.mem")
    return request.getfixturevalue("pg_schemas")()


@pytest.fixture
def backend_opener(backend: str, tmp_path, request) -> Iterator[Callable[..., Mnemos]]:
    """``opener`` on the engine under test: one store per name (a schema on postgres)."""
    # requested before the first store opens, so the schemas are dropped after the stores
    # close (fixtures are torn down in reverse order)
    schemas = request.getfixturevalue("pg_schemas") if backend == "postgres" else None
    opened: list[Mnemos] = []
    urls: dict[str, str] = {}

    def _open(name: str = "agent.mem", **kw) -> Mnemos:
        kw.setdefault("clock", Clock())
        if schemas is None:
            target = str(tmp_path / name)
        else:
            if name not in urls:
                urls[name] = schemas()
            target = urls[name]
        s = Mnemos.open(target, **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


def verified(db: Mnemos) -> bool:
    """``db.verify().ok`` on the embedded engine; True on PostgreSQL, which has no files
    of its own to check (``verify`` is embedded-only: docs/postgres.md)."""
    if getattr(db, "backend", "embedded") == "postgres":
        return True
    return db.verify().ok


def on_postgres(db: Mnemos) -> bool:
    """Whether ``db`` runs on the PostgreSQL engine."""
    return getattr(db, "backend", "embedded") == "postgres"
