"""Pausing Python's cyclic garbage collector during a bulk call.

A ``remember_many`` of 20,000 texts allocates a few hundred thousand short-lived
containers (request lists and tuples, record and posting pairs) and no reference
cycles; the collector still runs hundreds of young-generation passes and, as the
long-lived objects grow, full passes over every tracked object of the process
(~4-5 us per memory at 100k, ~8% of a text ingest). :func:`paused` switches it off for
the call and back on after (only if it was on: a caller's own ``gc.disable()`` is
kept), counting nested and concurrent calls from several threads, so it is switched
back on when the last one ends. Reference counting frees everything as usual; only
cycles wait for the end of the call.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from typing import ContextManager, Iterator

__all__ = ["MIN_ITEMS", "paused"]

#: Calls with fewer items leave the collector alone (nothing to gain).
MIN_ITEMS = 1024

_lock = threading.Lock()
_depth = 0
_was_enabled = False


_UNTOUCHED = contextlib.nullcontext()  # (a single remember: no generator to set up)


def paused(items: int) -> ContextManager[None]:
    """Run the block with the cyclic collector off when ``items`` >= MIN_ITEMS."""
    return _UNTOUCHED if items < MIN_ITEMS else _paused()


@contextlib.contextmanager
def _paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def _after_fork() -> None:  # the calls in progress belong to the parent's threads
    global _depth
    if _depth:
        _depth = 0
        if _was_enabled:
            gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
