"""Time input: ISO-8601 strings and dates for timestamps; durations like "7 days"."""

from __future__ import annotations

import datetime as dt

import pytest

from mnemos_kv import InvalidInputError, Mnemos
from mnemos_kv._retrieval import DEFAULT_HALF_LIFE_S, parse_half_life
from mnemos_kv._timeutil import parse_duration, to_us

JAN1 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize("value, seconds", [
    ("2026-01-01", JAN1),
    ("20260101", JAN1),
    ("2026-01-01T00:00", JAN1),
    ("2026-01-01T09:30", JAN1 + 9 * 3600 + 1800),
    ("2026-01-01 09:30:15", JAN1 + 9 * 3600 + 1800 + 15),
    ("2026-01-01T09:30:15.25", JAN1 + 9 * 3600 + 1800 + 15.25),
    ("2026-01-01T09:30:00Z", JAN1 + 9 * 3600 + 1800),
    ("2026-01-01T09:30:00z", JAN1 + 9 * 3600 + 1800),
    ("2026-01-01T09:30:00+02:00", JAN1 + 7 * 3600 + 1800),
    ("2026-01-01T09:30:00-05:00", JAN1 + 14 * 3600 + 1800),
    ("  2026-01-01  ", JAN1),
    (dt.date(2026, 1, 1), JAN1),
    (dt.datetime(2026, 1, 1, 1), JAN1 + 3600),                       # naive = UTC
    (dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), JAN1),
    (JAN1, JAN1),
    (JAN1 + 0.5, JAN1 + 0.5),
])
def test_timestamps(value, seconds) -> None:
    assert to_us(value) == round(seconds * 1_000_000)


@pytest.mark.parametrize("value", ["", "   ", "yesterday", "2026-13-01", "2026-01-32",
                                   "2026-01-01T25:00", "01/02/2026", "1767225600", "7 days",
                                   True, None, [2026], object()])
def test_bad_timestamps(value) -> None:
    with pytest.raises(InvalidInputError) as exc:
        to_us(value, "since")
    assert "since" in str(exc.value)


@pytest.mark.parametrize("value, seconds", [
    ("7d", 7 * 86_400), ("7 days", 7 * 86_400), ("1 day", 86_400), ("1.5d", 129_600),
    ("12h", 43_200), ("12 hours", 43_200), ("1 hr", 3600), ("2w", 1_209_600),
    ("2 weeks", 1_209_600), ("30 minutes", 1800), ("30m", 1800), ("45 min", 2700),
    ("90s", 90), ("90 seconds", 90), ("1y", 31_557_600), (" 3 Days ", 259_200), (".5h", 1800),
    (3600, 3600), (2.5, 2.5), (dt.timedelta(hours=2), 7200),
])
def test_durations(value, seconds) -> None:
    assert parse_duration(value, "half-life") == seconds
    assert parse_half_life(value) == seconds


@pytest.mark.parametrize("value", ["", "7", "days", "7 fortnights", "7 d d", "-7d", "0d", "0",
                                   -5, 0, float("inf"), float("nan"), "7dd", [7], "1e3s"])
def test_bad_durations(value) -> None:
    with pytest.raises(InvalidInputError):
        parse_half_life(value)


def test_half_life_flags() -> None:
    assert parse_half_life(None) is None and parse_half_life(False) is None
    assert parse_half_life(True) == DEFAULT_HALF_LIFE_S


def test_store_accepts_iso_and_dates(db: Mnemos) -> None:
    a = db.remember("new year party", timestamp="2026-01-01T20:00:00+01:00")
    b = db.remember("second of january", timestamp=dt.date(2026, 1, 2))
    c = db.remember("march plans", timestamp="2026-03-01")
    assert db.get(a).created_at == JAN1 + 19 * 3600
    assert db.get(b).created_at == JAN1 + 86_400
    assert [m.id for m in db.memories(since="2026-01-02", until="2026-02-01")] == [b]
    assert [m.id for m in db.memories(until=dt.date(2026, 1, 1))] == []
    assert sorted(h.id for h in db.ask("plans party january", since="2026-01-02T00:00Z")) == [b, c]
    assert db.ask("party", recency_bias="7 days")
    assert db.update(c, timestamp="2026-04-01").created_at == to_us("2026-04-01") / 1e6
    with pytest.raises(InvalidInputError):
        db.remember("bad", timestamp="someday")
    with pytest.raises(InvalidInputError):
        db.ask("party", since="not a date")
    with pytest.raises(InvalidInputError):
        db.ask("party", recency_bias="a while")


def test_summarize_older_accepts_duration_and_iso(opener) -> None:
    db = opener("s.mem", clock=lambda: JAN1 + 40 * 86_400)
    for i in range(3):
        db.remember(f"old note {i}", timestamp=JAN1 + i)
    assert len(db.summarize_older("30 days")) == 1
    db2 = opener("s2.mem", clock=lambda: JAN1 + 40 * 86_400)
    for i in range(3):
        db2.remember(f"old note {i}", timestamp=JAN1 + i)
    assert db2.summarize_older("2025-12-31") == []
    assert len(db2.summarize_older("2026-01-02")) == 1
    with pytest.raises(InvalidInputError):
        db2.summarize_older("ages ago")
