"""The PostgreSQL + pgvector engine (optional extra ``mnemos-kv[postgres]``).

``Mnemos.open("postgresql://...")`` lands here. Modules: ``url`` (the store URL and
its ``schema`` parameter), ``schema`` (tables, the version row), ``engine`` (the
``_backend.Backend``/``Reader`` implementation: connections, snapshots, the write
transaction), ``write`` (requests -> ops -> SQL), ``search`` (``ask``: SQL candidates
ranked by the shared planner). Nothing here is imported by ``import mnemos_kv``.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import MissingDependencyError

__all__ = ["open_engine"]

INSTALL_HINT = "pip install 'mnemos-kv[postgres]'"


def open_engine(url: str, *, embedder: Any, embedder_given: bool, clock: Callable[[], float],
                readonly: bool, durable: bool) -> Any:
    """A ``PgEngine`` for ``url``. :raises MissingDependencyError: psycopg/pgvector missing."""
    from .url import parse_url
    parse_url(url)  # a malformed URL is an input error, whatever is installed
    try:
        import psycopg  # noqa: F401
        import pgvector.psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"a PostgreSQL store needs psycopg 3 and pgvector ({exc.name or exc} is not "
            f"installed): {INSTALL_HINT}") from exc
    from .engine import PgEngine
    return PgEngine(url, embedder=embedder, embedder_given=embedder_given, clock=clock,
                    readonly=readonly, durable=durable)
