"""_temporal.parse: a table of expressions -> windows (UTC, [start, end)), incl. ambiguous and invalid ones."""

from __future__ import annotations

import datetime as dt

import pytest

from mnemos_kv import _temporal

UTC = dt.timezone.utc
#: Wednesday 18 October 2023, 15:00 UTC
NOW = dt.datetime(2023, 10, 18, 15, tzinfo=UTC).timestamp()


def d(y: int, m: int, day: int) -> float:
    return dt.datetime(y, m, day, tzinfo=UTC).timestamp()


TABLE = [
    # absolute days
    ("What happened on 2023-05-07?", d(2023, 5, 7), d(2023, 5, 8)),
    ("What did she show on October 13, 2023?", d(2023, 10, 13), d(2023, 10, 14)),
    ("What did Gina find on 1 February, 2023?", d(2023, 2, 1), d(2023, 2, 2)),
    ("the 3rd of March 2022 meeting", d(2022, 3, 3), d(2022, 3, 4)),
    ("Dinner on Oct 13th", d(2023, 10, 13), d(2023, 10, 14)),          # no year: most recent
    ("Dinner on December 24", d(2022, 12, 24), d(2022, 12, 25)),       # ... not in the future
    ("the 10/18/2023 call", d(2023, 10, 18), d(2023, 10, 19)),         # only US reading valid
    ("the 18/10/2023 call", d(2023, 10, 18), d(2023, 10, 19)),         # only day-first valid
    ("the 03/04/2023 call", d(2023, 3, 4), d(2023, 4, 4)),             # ambiguous: both readings
    # months and years
    ("What setback did she face in October 2023?", d(2023, 10, 1), d(2023, 11, 1)),
    ("report for 2023-02", d(2023, 2, 1), d(2023, 3, 1)),
    ("When did Melanie go camping in June?", d(2023, 6, 1), d(2023, 7, 1)),
    ("Any trips in November?", d(2022, 11, 1), d(2022, 12, 1)),        # bare month: most recent
    ("What is planned for next March?", d(2024, 3, 1), d(2024, 4, 1)),
    ("How many beach trips in 2023?", d(2023, 1, 1), d(2024, 1, 1)),
    ("between March and May 2023", d(2023, 3, 1), d(2023, 6, 1)),      # span of several
    # relative to now
    ("What did I eat yesterday?", d(2023, 10, 17), d(2023, 10, 18)),
    ("plans for today", d(2023, 10, 18), d(2023, 10, 19)),
    ("what about the day before yesterday", d(2023, 10, 16), d(2023, 10, 17)),
    ("What did we decide last week?", d(2023, 10, 9), d(2023, 10, 16)),
    ("anything this month", d(2023, 10, 1), d(2023, 11, 1)),
    ("the trip last year", d(2022, 1, 1), d(2023, 1, 1)),
    ("What event was last weekend?", d(2023, 10, 14), d(2023, 10, 16)),  # the latest one
    ("meetings in the past week", d(2023, 10, 11), d(2023, 10, 19)),
    ("I met her 3 days ago", d(2023, 10, 15), d(2023, 10, 16)),
    ("We moved two years ago", d(2021, 1, 1), d(2022, 1, 1)),
    ("a month ago", d(2023, 9, 1), d(2023, 10, 1)),
    ("What did she say on Friday?", d(2023, 10, 13), d(2023, 10, 14)),
    ("the call last Wednesday", d(2023, 10, 11), d(2023, 10, 12)),     # not today
    ("lunch on Wednesday", d(2023, 10, 18), d(2023, 10, 19)),          # today is Wednesday
    ("next Monday's review", d(2023, 10, 23), d(2023, 10, 24)),
    ("What did she paint recently?", d(2023, 9, 18), d(2023, 10, 19)),
    # offsets from a date
    ("the puppy she got two weeks before August 11, 2023", d(2023, 7, 24), d(2023, 8, 12)),
    ("3 days after 2023-05-01", d(2023, 5, 1), d(2023, 5, 5)),
    ("What did John do the week before August 3, 2023?", d(2023, 7, 24), d(2023, 8, 4)),
    ("last weekend before April 10, 2023", d(2023, 4, 8), d(2023, 4, 11)),
    # a named date anchors the relative expressions of the same query
    ("What did Joanna finish last Friday on 23 January, 2022?", d(2022, 1, 21), d(2022, 1, 24)),
]

NOTHING = [
    "",
    "How long has she been doing yoga?",
    "May I ask what you think?",              # "may" the verb
    "We will march to the square",            # "march" the verb, no preposition
    "She ran 2000 meters",                    # a number, not a year
    "What did she do two days before the trip?",   # an event, not a date
    "Meet on February 30, 2023",              # impossible date
    "the 31/31/2023 call",                    # neither reading valid
    "version 10.2.3 released",
]


@pytest.mark.parametrize("text,start,end", TABLE)
def test_expression_table(text: str, start: float, end: float) -> None:
    w = _temporal.parse(text, NOW)
    assert w is not None, text
    got = (dt.datetime.fromtimestamp(w.start, UTC), dt.datetime.fromtimestamp(w.end, UTC))
    assert (w.start, w.end) == (start, end), (text, got, w.expressions)
    assert w.expressions and all(e.casefold() in text.casefold() for e in w.expressions)


@pytest.mark.parametrize("text", NOTHING)
def test_no_time_expression(text: str) -> None:
    assert _temporal.parse(text, NOW) is None


def test_deterministic_and_independent_of_the_time_of_day() -> None:
    q = "what did we do last week and yesterday?"
    a = _temporal.parse(q, NOW)
    b = _temporal.parse(q, d(2023, 10, 18) + 1)  # same UTC day, other hour
    assert a == b == _temporal.parse(q, NOW)


def test_edges_of_the_calendar_give_no_window_instead_of_an_error() -> None:
    far_past = dt.datetime(1, 1, 3, tzinfo=UTC).timestamp()
    far_future = dt.datetime(9999, 12, 30, tzinfo=UTC).timestamp()
    assert _temporal.parse("what happened 900 years ago", far_past) is None
    assert _temporal.parse("plans for next year", far_future) is None
    assert _temporal.parse("yesterday", 1e30) is None


def test_random_text_never_raises() -> None:
    hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
    st = hypothesis.strategies
    words = st.sampled_from(["in", "on", "last", "next", "the", "before", "after", "ago", "week",
                             "weekend", "month", "year", "days", "May", "October", "13", "2023",
                             "1/2/2023", "99/99/9999", "Friday", "yesterday", "two", "0", "31",
                             "February", "30,", "9999", "0001", "-", "of", "recently"])

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(words, max_size=8), st.floats(-6e10, 2.5e11))
    def check(parts: list[str], now: float) -> None:
        w = _temporal.parse(" ".join(parts), now)
        assert w is None or w.start < w.end

    check()
