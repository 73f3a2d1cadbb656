"""The batch memo behind the ingest's word and feature memos (``_batchmemo.lookup``)."""

from __future__ import annotations

from mnemos_kv import _batchmemo


def test_lookup_computes_each_distinct_miss_once_and_keeps_it() -> None:
    memo = {"a": 1}
    asked: list[list[str]] = []

    def compute(miss: list[str]) -> list[int]:
        asked.append(miss)
        return [ord(k) for k in miss]
    assert _batchmemo.lookup(memo, ["a", "b", "c", "b"], compute, 10) == [1, 98, 99, 98]
    assert asked == [["b", "c"]] and memo == {"a": 1, "b": 98, "c": 99}
    assert _batchmemo.lookup(memo, ["c", "a"], compute, 10) == [99, 1] and len(asked) == 1


def test_lookup_starts_over_at_its_limit_and_keeps_no_batch_above_it() -> None:
    memo = {"a": 1, "b": 2}
    assert _batchmemo.lookup(memo, ["a", "x", "y"], lambda m: [0] * len(m), 3) == [1, 0, 0]
    assert memo == {"x": 0, "y": 0}  # (2 + 2 > 3: cleared, then the new ones kept)
    assert _batchmemo.lookup(memo, list("pqrs"), lambda m: list(range(len(m))), 3) == [0, 1, 2, 3]
    assert memo == {}  # (4 misses > 3: answered from the batch's own table)
