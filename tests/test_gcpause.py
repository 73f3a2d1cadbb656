"""The cyclic garbage collector is paused during a big ``remember_many`` and restored
after it, whatever happens (``_gcpause``)."""

from __future__ import annotations

import gc
import threading

import pytest

from mnemos_kv import HashingEmbedder, InvalidInputError, Mnemos, _gcpause


class _Spy(HashingEmbedder):
    """A hashing embedder that notes whether the collector was on during each call."""

    def __init__(self) -> None:
        super().__init__(16)
        self.seen: list[bool] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.seen.append(gc.isenabled())
        return super().embed(texts)


def test_remember_many_pauses_the_collector_and_restores_it(tmp_path) -> None:
    assert gc.isenabled()
    spy = _Spy()
    with Mnemos.open(str(tmp_path / "s"), embedder=spy) as db:
        db.remember_many([f"memory {i}" for i in range(_gcpause.MIN_ITEMS)])
        assert spy.seen == [False] and gc.isenabled()
        db.remember_many([f"small {i}" for i in range(10)])  # below MIN_ITEMS: left alone
        assert spy.seen == [False, True] and gc.isenabled()
        with pytest.raises(InvalidInputError):  # an error inside: restored all the same
            db.remember_many([f"x {i}" for i in range(_gcpause.MIN_ITEMS)] + [{"text": 3}])
        assert gc.isenabled()
        gc.disable()  # the caller's own choice is kept
        try:
            db.remember_many([f"more {i}" for i in range(_gcpause.MIN_ITEMS)])
            assert not gc.isenabled()
        finally:
            gc.enable()
        assert db.count() == _gcpause.MIN_ITEMS * 2 + 10


def test_concurrent_pauses_restore_the_collector_once_the_last_ends() -> None:
    inside, release = threading.Barrier(3), threading.Event()
    states: list[bool] = []

    def hold() -> None:
        with _gcpause.paused(_gcpause.MIN_ITEMS):
            inside.wait()
            release.wait()
            states.append(gc.isenabled())

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled() and states[0] is False
    with _gcpause.paused(_gcpause.MIN_ITEMS):
        with _gcpause.paused(_gcpause.MIN_ITEMS):  # nested
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
