"""A dict memo looked up a whole batch at a time (the bulk ingest's word and feature memos).

The hits come out of one C pass (``map(memo.get, keys)``); the batch's distinct misses
are computed together by the caller's function (which can then use C passes or numpy
over all of them) and kept. The memo starts over when keeping them would pass its limit
(its values are a pure function of its keys, so forgetting is always safe); a batch with
more misses than the limit is answered from its own table and keeps nothing.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any, Callable, Hashable, Sequence

__all__ = ["lookup"]


def lookup(memo: dict[Any, Any], keys: Sequence[Hashable],
           compute: Callable[[list[Any]], Sequence[Any]], limit: int) -> list[Any]:
    """``memo[k]`` for each of ``keys`` (no value may be None); ``compute(misses)``
    gives the values of the distinct missing keys, in their order."""
    got = list(map(memo.get, keys))
    if None not in got:
        return got
    miss = list(dict.fromkeys(itertools.compress(
        keys, map(operator.is_, got, itertools.repeat(None)))))
    found = dict(zip(miss, compute(miss)))
    if len(memo) + len(found) > limit:
        memo.clear()
    if len(found) <= limit:
        memo.update(found)
    return list(map(found.get, keys, got))  # (a hit: its memo value; a miss: the new one)
