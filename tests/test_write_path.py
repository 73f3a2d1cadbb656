"""The shortcuts of the single-write path give exactly what the general code gives.

* ``_records.encode`` writes plain-typed maps through cbor2's plain mode after putting
  their keys in canonical order: the bytes must equal cbor2's canonical mode for every
  value (hypothesis over nested maps, lists, ints of every size, strings, byte strings,
  booleans, None and floats, with keys of every length and script).
* ``check_vectors`` of one vector takes a shortcut when its squared norm is finite
  and positive: the row must be bit-identical to the batch path's, and every bad
  vector must still be refused with the same error.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import _records as R
from mnemos_kv.embedders import check_vectors
from mnemos_kv.errors import InvalidInputError

SETTINGS = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

_keys = st.one_of(st.text(max_size=3), st.text(min_size=20, max_size=30),
                  st.sampled_from(["i", "n", "t", "m", "y", "ts", "s", "q", "k", "x", "u",
                                   "op", "vrow", "vcrc", "id", "count", "bytes"]))
_scalars = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32,
                     (1 << 64) - 1, 1 << 64, -(1 << 64), -(1 << 64) - 1, -1, -24, -25]),
    st.text(max_size=40), st.binary(max_size=40), st.booleans(), st.none(),
    st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, 1.5, 1e300, math.inf, -math.inf]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=20)


@SETTINGS
@given(st.dictionaries(_keys, _values, max_size=12))
def test_encode_is_canonical_cbor(value: dict[str, Any]) -> None:
    assert R.encode(value) == cbor2.dumps(value, canonical=True)


@pytest.mark.parametrize("value", [
    {"i": 7, "n": 0, "t": "text", "m": {}, "y": 0, "ts": -5, "s": 3, "q": 9},
    {"b": 1, "a": {"zz": [1, "x", {"c": None, "b": True}], "y": b"\x00"}},
    {"k": 1.5}, {"k": [1, 2.5]}, {1: "int key"}, {"é": 1, "e": 2}, {"x" * 30: 1, "y": 2},
    {"big": 1 << 64}, {"neg": -(1 << 64) - 1}, {"t": ("a", "b")},
])
def test_encode_examples(value: dict[Any, Any]) -> None:
    assert R.encode(value) == cbor2.dumps(value, canonical=True)


def _batch_path(v: np.ndarray) -> np.ndarray:
    """What ``check_vectors`` gives a vector as one row among others."""
    other = np.ones((1, v.size), np.float32)
    return check_vectors(np.vstack([np.asarray(v, np.float32).reshape(1, -1), other]),
                         2, v.size)[0]


@pytest.mark.parametrize("seed", range(20))
def test_single_vector_matches_batch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for dtype, scale in ((np.float32, 1.0), (np.float64, 1e-3), (np.float32, 1e15),
                         (np.int64, 1000)):
        v = (rng.standard_normal(48) * scale).astype(dtype)
        one = check_vectors(v, 1, 48)
        assert one.dtype == np.float32 and one.flags.c_contiguous and one.shape == (1, 48)
        assert one[0].tobytes() == _batch_path(v).tobytes()


@pytest.mark.parametrize("bad, message", [
    (np.array([1.0, np.nan, 0.0], np.float32), "NaN or infinity"),
    (np.array([1.0, np.inf, 0.0], np.float32), "NaN or infinity"),
    (np.array([-np.inf, 1.0, 0.0], np.float64), "NaN or infinity"),
    (np.array([1.0, 2.0], np.float32), "shape"),
])
def test_single_vector_still_refused(bad: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_vectors(bad, 1, 3)


def test_single_vector_edge_norms() -> None:
    """A zero vector and one whose squared norm overflows or underflows float32 take
    the general path, as before (zero stays zero; no error is invented)."""
    for v in (np.zeros(3, np.float32), np.array([1e30, 1e30, 0], np.float32),
              np.array([1e-30, 0, 0], np.float32)):
        one = check_vectors(v, 1, 3)
        assert one[0].tobytes() == _batch_path(v).tobytes()
