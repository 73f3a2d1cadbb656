"""Run a test module's store tests on both engines (lmdb and postgres).

A module opts in with one import, which overrides the ``store_path`` and ``opener``
fixtures of conftest.py by the ``backend``-parametrised ones::

    from _engines import opener, store_path  # noqa: F401  (both engines)
"""

from __future__ import annotations

import pytest


@pytest.fixture
def store_path(backend_store_path: str) -> str:
    return backend_store_path


@pytest.fixture
def opener(backend_opener):
    return backend_opener
