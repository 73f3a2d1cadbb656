"""One cache object per owner (an engine, a slot column), made on first use and
dropped with its owner: the shared shape of the per-engine caches of the planner."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class PerOwner(Generic[T]):
    """``get(owner)`` returns the owner's ``T``, built by ``make(owner)`` the first time."""

    def __init__(self, make: Callable[[Any], T]) -> None:
        self._make = make
        self._items: "weakref.WeakKeyDictionary[Any, T]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, owner: Any) -> T:
        with self._lock:
            item = self._items.get(owner)
            if item is None:
                item = self._items[owner] = self._make(owner)
            return item
