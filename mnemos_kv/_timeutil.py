"""Conversions between user timestamps and the stored integer microseconds."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from .errors import InvalidInputError

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_LIMIT_US = (1 << 62)


def to_us(value: Any, what: str = "timestamp") -> int:
    """Seconds since the epoch (int/float) or a datetime (naive = UTC) -> int microseconds."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{what} must be seconds (int/float) or a datetime, got bool")
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
            f"{what} must be seconds since the epoch (int/float) or a datetime, "
            f"got {type(value).__name__}")
    if not -_LIMIT_US < us < _LIMIT_US:
        raise InvalidInputError(f"{what} {value!r} is out of range")
    return us


def from_us(us: int) -> float:
    return us / 1_000_000
