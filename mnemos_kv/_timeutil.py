"""Conversions between user time input and the stored integer microseconds.

Accepted timestamps (``timestamp=``, ``since=``, ``until=``): seconds since the Unix
epoch (int/float), an aware or naive ``datetime`` (naive = UTC), a ``date``
(midnight UTC), or an ISO-8601 string: ``"2026-01-01"``, ``"2026-01-01T09:30"``,
``"2026-01-01 09:30:00.5"``, ``"2026-01-01T09:30:00Z"``, ``"2026-01-01T09:30:00+02:00"``
(no offset = UTC). Durations (half-lives, ages): seconds, a ``timedelta``, or a
string like ``"7d"``, ``"7 days"``, ``"12h"``, ``"30 minutes"``, ``"2w"``, ``"1.5d"``.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

from .errors import InvalidInputError

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_LIMIT_US = (1 << 62)

#: Duration units (lower case) -> seconds.
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86_400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 604_800),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years"), 31_557_600),  # Julian year
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)\s*")
_ISO_HINT = re.compile(r"^\s*[+-]?\d{4}-?\d{2}")


def _parse_iso(value: str, what: str) -> _dt.datetime:
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        if len(text) in (8, 10) and "T" not in text and " " not in text and ":" not in text:
            d = _dt.date.fromisoformat(text)
            return _dt.datetime(d.year, d.month, d.day)
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"{what} {value!r} is not an ISO-8601 date or time; expected e.g. '2026-01-01', "
            "'2026-01-01T09:30', '2026-01-01T09:30:00Z' or '2026-01-01T09:30:00+02:00'") from None


def to_us(value: Any, what: str = "timestamp") -> int:
    """A user timestamp (see the module doc) -> int microseconds since the epoch (UTC)."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{what} must be seconds (int/float), a datetime, a date or an "
                                "ISO-8601 string, got bool")
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInputError(f"{what} must not be an empty string")
        value = _parse_iso(value, what)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    elif isinstance(value, _dt.date):
        return to_us(_dt.datetime(value.year, value.month, value.day), what)
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{what} must be finite, got {value!r}")
        us = int(round(value * 1_000_000))
    else:
        raise InvalidInputError(
            f"{what} must be seconds since the epoch (int/float), a datetime, a date or an "
            f"ISO-8601 string, got {type(value).__name__}")
    if not -_LIMIT_US < us < _LIMIT_US:
        raise InvalidInputError(f"{what} {value!r} is out of range")
    return us


def looks_like_iso(value: str) -> bool:
    """Whether a string reads as a date/time (else it may be a duration)."""
    return bool(_ISO_HINT.match(value))


def parse_duration(value: Any, what: str) -> float:
    """Seconds of a duration: a number, a ``timedelta`` or a string like ``"7 days"``.

    :raises InvalidInputError: anything else, a unit we do not know, or a value that
        is not positive and finite.
    """
    if isinstance(value, _dt.timedelta):
        secs = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    elif isinstance(value, str):
        mt = _DURATION.fullmatch(value)
        unit = _UNITS.get(mt.group(2).lower()) if mt else None
        if mt is None or unit is None:
            raise InvalidInputError(
                f"{what} {value!r} is not a duration; expected a number and a unit, like '7d', "
                "'7 days', '12h', '30 minutes', '2w' or '1.5d' (units: s, m, h, d, w, y and "
                "their names)")
        secs = float(mt.group(1)) * unit
    else:
        raise InvalidInputError(
            f"{what} must be seconds, a timedelta or a string like '7 days', got "
            f"{type(value).__name__} {value!r}")
    if not math.isfinite(secs) or secs <= 0:
        raise InvalidInputError(f"{what} must be positive and finite, got {value!r}")
    return secs


def from_us(us: int) -> float:
    return us / 1_000_000
