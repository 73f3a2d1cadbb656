"""``postgresql://`` store URLs: the ``schema`` parameter, libpq parameters, redaction."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import InvalidInputError

__all__ = ["DEFAULT_SCHEMA", "LIBPQ_PARAMS", "parse_url", "redact"]

#: The schema a URL without ``?schema=`` uses.
DEFAULT_SCHEMA = "mnemos"
#: Query parameters passed through to libpq unchanged (any other one is refused).
LIBPQ_PARAMS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service",
    "connect_timeout", "application_name", "options", "target_session_attrs",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword",
    "gssencmode", "channel_binding", "krbsrvname", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout",
})
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_url(url: str) -> tuple[str, str]:
    """``(conninfo URL for libpq, schema name)`` of a store URL.

    :raises InvalidInputError: an unknown query parameter, several ``schema``
        parameters, or a schema name that is not a plain identifier.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"not a valid PostgreSQL URL: {redact(url)!r} ({exc})") from None
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise InvalidInputError(f"not a PostgreSQL URL: {redact(url)!r}")
    params = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in params if k == "schema"]
    unknown = sorted({k for k, _v in params if k != "schema" and k not in LIBPQ_PARAMS})
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter(s) {unknown} in {redact(url)!r}; a store URL takes "
            f"'schema' and the libpq parameters {sorted(LIBPQ_PARAMS)}")
    if len(schemas) > 1:
        raise InvalidInputError(f"{redact(url)!r} gives 'schema' {len(schemas)} times")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_RE.fullmatch(schema) or schema.lower().startswith("pg_"):
        raise InvalidInputError(
            f"schema must be a plain identifier (letters, digits, _; at most 63; not pg_*), "
            f"got {schema!r}")
    rest = urlencode([(k, v) for k, v in params if k != "schema"], quote_via=quote)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, rest, parts.fragment))
    return conninfo, schema


def redact(url: str) -> str:
    """``url`` without its password (for messages, ``Mnemos.path`` and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            out = url
        else:
            host = parts.netloc.rsplit("@", 1)[1]
            user = parts.username or ""
            out = urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query,
                              parts.fragment))
    except ValueError:
        return "postgresql://…"
    return re.sub(r"(password=)[^&]*", r"\1***", out)
