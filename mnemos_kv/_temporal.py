"""Dates in questions: a small deterministic parser from English time expressions to a window.

``parse(text, now)`` finds the time expressions of a query and returns the time
window they name (UTC, ``[start, end)`` in epoch seconds), or None. No network, no
locale, no wall clock: relative expressions are anchored to ``now`` (the caller's
``ask(now=...)`` or the store's clock). Recognised (case-insensitive):

* absolute days: ``2023-10-13``, ``October 13, 2023``, ``13 October 2023``,
  ``Oct 13th``, ``1 February, 2023``; numeric ``10/13/2023`` and ``13/10/2023``
  (a slash date whose two readings are both valid, ``03/04/2023``, covers both days);
* months and years: ``October 2023``, ``2023-10``, ``in October`` (a bare month needs
  a preposition before it — ``in``, ``during``, ``since``, ``of``, ``last``... — so
  that "may" and "march" as words never count), ``in 2023``;
* relative to ``now``: ``today``, ``yesterday``, ``tomorrow``, ``the day before
  yesterday``, ``last/this/next week|weekend|month|year``, ``the past week|month|year``,
  ``3 days ago``, ``two weeks ago``, ``a month ago``, ``recently``, weekdays (``on
  Friday`` / ``Friday`` = the most recent Friday on or before ``now``'s day, ``last
  Friday`` = the one before ``now``'s day, ``next Friday`` = the one after);
* offsets from a date: ``two weeks before August 11, 2023``, ``3 days after
  2023-05-01``, ``the week before May 3, 2023``, ``last weekend before April 10, 2023``
  — the window runs from the offset date to the named date (the event is somewhere
  between, and it is talked about at the latest on the named date).

A day without a year (``October 13``) and a bare month are the most recent such
day/month on or before ``now``. When the query also names an absolute date, relative
expressions are anchored to it instead ("last Friday, on 23 January 2022" is
21 January 2022). Weeks start on Monday (ISO 8601). Impossible dates
(``February 30, 2023``) are not time expressions. Several expressions give the span
from the earliest start to the latest end. Offsets from events ("two days before the
trip") name no date and give nothing.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

__all__ = ["TimeWindow", "parse"]

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}
_FULL_MONTHS = [m for m in _MONTHS if len(m) > 4 or m in ("may", "june", "july")]
_WEEKDAYS = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4,
             "saturday": 5, "sunday": 6}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
            "a couple of": 2, "a few": 3, "several": 3}

_MON = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_FULLMON = r"(?P<mon>" + "|".join(sorted(_FULL_MONTHS, key=len, reverse=True)) + r")"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_NUM = r"(?P<n>\d{1,3}|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + r")"
_UNIT = r"(?P<unit>day|week|weekend|month|year)s?"
_WD = r"(?P<wd>" + "|".join(_WEEKDAYS) + r")"

# absolute dates, most specific first; each may be preceded by an offset phrase
_DATE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso_day", re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b")),
    ("slash", re.compile(r"\b(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})\b")),
    ("mdy", re.compile(r"\b" + _MON + r"\s+" + _DAY + r"(?:\s*,?\s*" + _YEAR + r")?\b")),
    ("dmy", re.compile(r"\b" + _DAY + r"\s+(?:of\s+)?" + _MON + r"(?:\s*,?\s*" + _YEAR + r")?\b")),
    ("my", re.compile(r"\b" + _MON + r"\s*,?\s*" + _YEAR + r"\b")),
    ("iso_month", re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})\b")),
    ("bare_month", re.compile(
        r"\b(?P<prep>in|during|since|until|till|by|before|after|of|early|late|mid|last|this|next|between"
        r"|through|throughout|from)\s+(?:the\s+month\s+of\s+)?" + _FULLMON + r"\b")),
    ("year", re.compile(
        r"\b(?:in|during|since|of|by|before|after|until|till|from|throughout)\s+"
        r"(?:the\s+year\s+)?" + _YEAR + r"\b")),
]
_OFFSET = re.compile(
    r"(?:\b" + _NUM + r"\s+" + _UNIT + r"|\bthe\s+(?P<unit1>day|week|weekend|month|year)"
    r"|\blast\s+(?P<unit2>week|weekend|month|year))\s+(?P<dir>before|after|prior\s+to)\s+(?:on\s+)?$")
_RELATIVE: list[tuple[str, re.Pattern[str]]] = [
    ("daybeforeyesterday", re.compile(r"\bthe\s+day\s+before\s+yesterday\b")),
    ("ago", re.compile(r"\b" + _NUM + r"\s+" + _UNIT + r"\s+ago\b")),
    ("lastunit", re.compile(r"\b(?P<which>last|this|next|past|previous)\s+(?P<unit>week|weekend|month|year)\b")),
    ("weekday", re.compile(r"\b(?:(?P<which>last|this|next|on)\s+)?" + _WD + r"\b")),
    ("word", re.compile(r"\b(?P<word>today|tonight|yesterday|tomorrow|recently)\b")),
]

# a cheap first test: a query without any of these holds no time expression
_MAYBE = re.compile(r"\d|today|tonight|yesterday|tomorrow|recent|week|month|year|day|"
                    + "|".join(m for m in _MONTHS if len(m) > 3) + r"|jan|feb|mar|apr|jun|jul|aug"
                    r"|sep|oct|nov|dec")


@dataclass(frozen=True)
class TimeWindow:
    """A parsed time window: ``[start, end)`` in epoch seconds (UTC) and what named it."""

    start: float
    end: float
    expressions: tuple[str, ...]


def _ts(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()


def _month_span(y: int, m: int) -> tuple[date, date]:
    return date(y, m, 1), (date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1))


def _add_months(d: date, k: int) -> date:
    idx = d.year * 12 + d.month - 1 + k
    y, m = divmod(idx, 12)
    return date(y, m + 1, min(d.day, calendar.monthrange(y, m + 1)[1]))


def _unit_span(unit: str, d: date) -> tuple[date, date]:
    """The calendar day/week/weekend/month/year containing ``d``."""
    if unit == "day":
        return d, d + timedelta(days=1)
    if unit == "week":
        start = d - timedelta(days=d.weekday())
        return start, start + timedelta(days=7)
    if unit == "weekend":  # the weekend of d's week (Saturday, Sunday)
        start = d - timedelta(days=d.weekday()) + timedelta(days=5)
        return start, start + timedelta(days=2)
    if unit == "month":
        return _month_span(d.year, d.month)
    return date(d.year, 1, 1), date(d.year + 1, 1, 1)


def _shift(unit: str, d: date, k: int) -> date:
    """``d`` moved by ``k`` units."""
    if unit == "day":
        return d + timedelta(days=k)
    if unit in ("week", "weekend"):
        return d + timedelta(days=7 * k)
    if unit == "month":
        return _add_months(d, k)
    return _add_months(d, 12 * k)


def _number(raw: str) -> int | None:
    raw = re.sub(r"\s+", " ", raw)
    if raw.isdigit():
        return int(raw)
    return _NUMBERS.get(raw)


def _recent(month: int, day: int | None, today: date) -> int:
    """The year of the most recent ``month``/``day`` on or before ``today``."""
    y = today.year
    if (month, day or 1) > (today.month, today.day):
        y -= 1
    return y


def _absolute(kind: str, m: re.Match[str], today: date) -> tuple[date, date] | None:
    """The span of one absolute date match, or None when it names no real date."""
    g = m.groupdict()
    try:
        if kind == "iso_day":
            d = date(int(g["year"]), int(g["month"]), int(g["day"]))
            return d, d + timedelta(days=1)
        if kind == "slash":
            a, b, y = int(g["a"]), int(g["b"]), int(g["year"])
            readings = []
            for mo, da in ((a, b), (b, a)):  # US month/day, then day/month
                try:
                    readings.append(date(y, mo, da))
                except ValueError:
                    pass
            if not readings:
                return None
            return min(readings), max(readings) + timedelta(days=1)
        if kind in ("mdy", "dmy"):
            mo, da = _MONTHS[g["mon"]], int(g["day"])
            y = int(g["year"]) if g.get("year") else _recent(mo, da, today)
            d = date(y, mo, da)
            return d, d + timedelta(days=1)
        if kind in ("my", "iso_month"):
            mo = _MONTHS[g["mon"]] if kind == "my" else int(g["month"])
            return _month_span(int(g["year"]), mo)
        if kind == "bare_month":
            mo = _MONTHS[g["mon"]]
            prep = g["prep"]
            y = _recent(mo, None, today)
            if prep == "last" and y == today.year and mo == today.month:
                y -= 1
            elif prep == "next":
                y = today.year if mo > today.month else today.year + 1
            return _month_span(y, mo)
        if kind == "year":
            y = int(g["year"])
            return date(y, 1, 1), date(y + 1, 1, 1)
    except ValueError:
        return None
    return None


def _offset(prefix: str, span: tuple[date, date]) -> tuple[tuple[date, date], int] | None:
    """Apply an offset phrase ending ``prefix`` ("two weeks before") to a date span."""
    m = _OFFSET.search(prefix)
    if m is None:
        return None
    g = m.groupdict()
    unit = g["unit"] or g["unit1"] or g["unit2"]
    k = _number(g["n"]) if g["n"] else 1
    if k is None or k > 1000:
        return None
    before = g["dir"] != "after"
    start, end = span
    if before:
        lo = _shift(unit, start, -k)
        lo = _unit_span(unit, lo)[0] if unit in ("week", "weekend") else lo
        return (lo, end), m.start()
    hi = _shift(unit, end, k)
    return (start, _unit_span(unit, hi - timedelta(days=1))[1]
            if unit in ("week", "weekend") else hi), m.start()


def _relative(kind: str, m: re.Match[str], today: date) -> tuple[date, date] | None:
    g = m.groupdict()
    if kind == "daybeforeyesterday":
        d = today - timedelta(days=2)
        return d, d + timedelta(days=1)
    if kind == "word":
        w = g["word"]
        if w == "recently":
            return today - timedelta(days=30), today + timedelta(days=1)
        d = today + timedelta(days={"today": 0, "tonight": 0, "yesterday": -1, "tomorrow": 1}[w])
        return d, d + timedelta(days=1)
    if kind == "ago":
        k = _number(g["n"])
        if k is None or k > 1000:
            return None
        return _unit_span(g["unit"], _shift(g["unit"], today, -k))
    if kind == "lastunit":
        unit, which = g["unit"], g["which"]
        if which == "past":
            length = {"week": 7, "weekend": 7, "month": 30, "year": 365}[unit]
            return today - timedelta(days=length), today + timedelta(days=1)
        k = {"last": -1, "previous": -1, "this": 0, "next": 1}[which]
        return _unit_span(unit, _shift(unit, today, k))
    if kind == "weekday":
        wd, which = _WEEKDAYS[g["wd"]], g["which"]
        back = (today.weekday() - wd) % 7
        if which == "last" and back == 0:
            back = 7
        if which == "next":
            ahead = (wd - today.weekday()) % 7 or 7
            d = today + timedelta(days=ahead)
        else:
            d = today - timedelta(days=back)
        return d, d + timedelta(days=1)
    return None


def parse(text: str, now: float) -> TimeWindow | None:
    """The time window named by the expressions in ``text`` (see the module doc), or None.

    ``now``: epoch seconds, the anchor of relative expressions (its UTC day). Never
    raises on any text or anchor: what leaves the calendar (year 0 or 10000) is no window.
    """
    try:
        return _parse(text, now)
    except (ValueError, OverflowError, OSError):
        return None


def _parse(text: str, now: float) -> TimeWindow | None:
    if not text:
        return None
    low = text.casefold()
    if _MAYBE.search(low) is None:
        return None
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    taken = [False] * len(low)
    spans: list[tuple[date, date]] = []
    found: list[str] = []

    def free(a: int, b: int) -> bool:
        return not any(taken[a:b])

    def take(a: int, b: int) -> None:
        for i in range(a, b):
            taken[i] = True

    for kind, pat in _DATE_PATTERNS:
        for m in pat.finditer(low):
            if not free(m.start(), m.end()):
                continue
            span = _absolute(kind, m, today)
            if span is None:
                take(m.start(), m.end())  # an impossible date is not re-read as a month
                continue
            start = m.start()
            off = _offset(low[:m.start()], span)
            if off is not None and free(off[1], m.start()):
                span, start = off
            take(start, m.end())
            spans.append(span)
            found.append(text[start:m.end()].strip())
    # a query that names a date speaks from it: "last Friday, on 23 January 2022"
    anchor = max(e for _, e in spans) - timedelta(days=1) if spans else today
    for kind, pat in _RELATIVE:
        for m in pat.finditer(low):
            if not free(m.start(), m.end()):
                continue
            span = _relative(kind, m, anchor)
            if span is None:
                continue
            take(m.start(), m.end())
            spans.append(span)
            found.append(text[m.start():m.end()].strip())
    if not spans:
        return None
    lo = min(s for s, _ in spans)
    hi = max(e for _, e in spans)
    order = sorted(range(len(found)), key=lambda i: low.find(found[i].casefold()))
    return TimeWindow(_ts(lo), _ts(hi), tuple(found[i] for i in order))
