"""Property tests: any input either works or raises a MnemosError; round-trips are exact."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import InvalidInputError, Mnemos, MnemosError

json_leaf = st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40) | st.binary(max_size=40)
json_like = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4)
                         | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(text=st.text(max_size=300), meta=st.dictionaries(st.text(max_size=10), json_like, max_size=5))
def test_remember_any_text_and_metadata(db: Mnemos, text: str, meta: dict) -> None:
    before = db.stats()["seq"]
    try:
        mid = db.remember(text, metadata=meta)
    except InvalidInputError:
        assert db.stats()["seq"] == before  # rejected: nothing written
        return
    m = db.get(mid)
    assert m.text == text and m.metadata == meta
    try:
        hits = db.ask(text, top_k=3)
    except InvalidInputError:
        return
    assert all(math.isfinite(h.score) for h in hits)


@SETTINGS
@given(query=st.text(max_size=200), k=st.integers(min_value=-3, max_value=20))
def test_ask_any_query(db: Mnemos, query: str, k: int) -> None:
    if db.count() == 0:
        db.remember_many(["alpha beta", "gamma delta 42", "Ünïcode wörds ñ", "y" * 300])
    try:
        hits = db.ask(query, top_k=k)
    except MnemosError:
        return
    assert len(hits) <= k and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
