"""Shared fixtures: a fresh store per test, a deterministic clock, always closed."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import pytest

from mnemos_kv import Mnemos


class Clock:
    """A deterministic clock: starts at 2026-01-01T00:00:00Z, one second per call."""

    def __init__(self, start: float = 1_767_225_600.0, step: float = 1.0) -> None:
        self._it = itertools.count()
        self.start, self.step = start, step

    def __call__(self) -> float:
        return self.start + next(self._it) * self.step


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "agent.mem")


@pytest.fixture
def db(store_path: str, clock: Clock) -> Iterator[Mnemos]:
    store = Mnemos.open(store_path, clock=clock)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def opener(tmp_path) -> Iterator[Callable[..., Mnemos]]:
    """Open stores under tmp_path; every one opened is closed at the end."""
    opened: list[Mnemos] = []

    def _open(name: str = "agent.mem", **kw) -> Mnemos:
        kw.setdefault("clock", Clock())
        s = Mnemos.open(str(tmp_path / name), **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()
