"""The LMDB environment: named sub-databases, key encodings, transactions, map growth.

This is the one place where ``lmdb.Error`` becomes a :class:`~mnemos_kv.errors.MnemosError`.
An environment is opened once per process per path and shared (LMDB forbids opening
the same environment twice in one process); handles are reference counted.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from . import _openlock
from .errors import DiskFullError, MapFullError, StorageError, MnemosError

T = TypeVar("T")

#: Named sub-databases, created on first write-open. Keys are big-endian so that
#: cursor order equals numeric order.
DB_NAMES = (
    b"meta",       # store metadata: format, embedder, counters (CBOR values)
    b"records",    # id(u64) -> record (CBOR)
    b"edges_out",  # src(u64) dst(u64) relation(utf8) -> weight (f64)
    b"edges_in",   # dst(u64) src(u64) relation(utf8) -> weight (f64)
    b"time",       # ns(u32) ts(i64 offset-binary) id(u64) -> b""
    b"namespaces", # name(utf8) -> namespace info (CBOR)
    b"keys",       # ns(u32) key(utf8) -> id(u64)
    b"postings",   # ns(u32) term(utf8) -> dups of id(u64) tf(u32) len(u32), see _lexical_index
    b"lexstats",   # ns(u32) -> docs(u64) total_len(u64); b"version" -> u32
    b"capacity",   # limits, pins, evicted counters, eviction notes (see _capacity)
)

#: LMDB flags of the sub-databases that are not plain key -> value tables.
DB_FLAGS: dict[bytes, dict[str, bool]] = {
    b"postings": {"dupsort": True, "dupfixed": True},
}

DEFAULT_MAP_SIZE = 1 << 30   # 1 GiB of address space; grows on demand
MAX_DBS = 32

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_TS_OFFSET = 1 << 63


def u64(n: int) -> bytes:
    """Big-endian unsigned 64-bit key."""
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def u32(n: int) -> bytes:
    return _U32.pack(n)


def from_u32(b: bytes) -> int:
    return _U32.unpack(b)[0]


def f64(x: float) -> bytes:
    return _F64.pack(x)


def from_f64(b: bytes) -> float:
    return _F64.unpack(b)[0]


def ts_key(ts_us: int) -> bytes:
    """Signed microseconds as offset-binary so byte order equals time order."""
    return _U64.pack(ts_us + _TS_OFFSET)


def from_ts_key(b: bytes) -> int:
    return _U64.unpack(b)[0] - _TS_OFFSET


def translate(exc: BaseException) -> MnemosError:
    """Map an LMDB/OS error to the most precise MnemosError (callers chain ``from exc``)."""
    if isinstance(exc, MnemosError):
        return exc
    if isinstance(exc, lmdb.MapFullError):
        return MapFullError(f"LMDB map is full ({exc}); open with a larger map_size=")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on device: {exc}")
    if isinstance(exc, lmdb.Error) and "No space left" in str(exc):
        return DiskFullError(f"no space left on device: {exc}")
    return StorageError(f"storage failure: {type(exc).__name__}: {exc}")


class Environment:
    """One LMDB environment (per process, per path) with its named sub-databases."""

    def __init__(self, path: str, *, readonly: bool, map_size: int, sync: bool) -> None:
        self.path = path
        self.readonly = readonly
        self.sync = sync
        self.map_size = map_size
        self.refs = 0
        self.write_lock = threading.RLock()  # serialises this process's writers
        # readers of this process, counted so that a compaction can swap the LMDB
        # file only when none is inside a transaction (see quiesce())
        self._gate = threading.Condition(threading.Lock())
        self._readers = 0
        self._closed_for_swap = False
        # shared open lock, taken before LMDB opens the file (see _openlock)
        self.open_lock_fd = _openlock.acquire_shared(path)
        try:
            self.env = self._open_env()
            self.dbs: dict[str, Any] = {}
            self._open_dbs()
        except BaseException:
            _openlock.release(self.open_lock_fd)
            raise

    def _open_env(self) -> lmdb.Environment:
        try:
            return lmdb.open(
                self.path, subdir=True, readonly=self.readonly, create=not self.readonly,
                map_size=self.map_size, max_dbs=MAX_DBS, max_readers=256,
                sync=self.sync, metasync=self.sync, lock=True, readahead=False,
                meminit=False,
            )
        except lmdb.Error as exc:
            raise translate(exc) from exc

    def _open_dbs(self) -> None:
        try:
            if self.readonly:
                # py-lmdb loses handles opened inside an explicit read transaction; let
                # it use its own.
                for name in DB_NAMES:
                    try:
                        self.dbs[name.decode()] = self.env.open_db(
                            name, create=False, **DB_FLAGS.get(name, {}))
                    except lmdb.NotFoundError:
                        pass
            else:
                with self.env.begin(write=True) as txn:
                    for name in DB_NAMES:
                        self.dbs[name.decode()] = self.env.open_db(
                            name, txn=txn, create=True, **DB_FLAGS.get(name, {}))
        except lmdb.Error as exc:
            raise translate(exc) from exc

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def has_db(self, name: str) -> bool:
        return name in self.dbs

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only snapshot; never blocks and never sees a half-done write.

        (It waits only while a compaction of this process swaps the LMDB file.)"""
        with self._gate:
            while self._closed_for_swap:
                self._gate.wait()
            self._readers += 1
        try:
            try:
                txn = self._begin(write=False)
            except lmdb.Error as exc:
                raise translate(exc) from exc
            try:
                yield txn
            finally:
                txn.abort()
        finally:
            with self._gate:
                self._readers -= 1
                if not self._readers:
                    self._gate.notify_all()

    def _begin(self, write: bool) -> lmdb.Transaction:
        try:
            return self.env.begin(write=write, buffers=False)
        except lmdb.MapResizedError:
            # Another process grew the map: adopt its size, then retry once.
            self.env.set_mapsize(0)
            return self.env.begin(write=write, buffers=False)

    def write(self, body: Callable[[lmdb.Transaction], T],
              on_abort: Callable[[], None] | None = None) -> T:
        """Run ``body`` in one write transaction and commit it.

        The LMDB write transaction is the cross-process writer lock. On any failure
        the transaction is aborted and ``on_abort`` runs (to undo side files). When
        the map is full it is doubled (the size is adopted by other processes on
        their next transaction) and the whole body runs again.
        """
        with self.write_lock:
            for _attempt in range(8):
                try:
                    txn = self._begin(write=True)
                except lmdb.Error as exc:
                    raise translate(exc) from exc
                try:
                    result = body(txn)
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    txn.abort()
                    if on_abort is not None:
                        on_abort()
                    self._grow()
                    continue
                except BaseException as exc:
                    txn.abort()
                    if on_abort is not None:
                        on_abort()
                    if isinstance(exc, (lmdb.Error, OSError)):
                        raise translate(exc) from exc
                    raise
            raise MapFullError(f"LMDB map still full after growing to {self.env.info()['map_size']} bytes")

    def _grow(self) -> None:
        size = self.env.info()["map_size"]
        try:
            self.env.set_mapsize(size * 2)
        except lmdb.Error as exc:
            raise translate(exc) from exc

    def sync_to_disk(self) -> None:
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            raise translate(exc) from exc

    # -- swapping the LMDB file (compaction; see _lmdb_rewrite) ------------------

    @contextmanager
    def quiesce(self, timeout: float) -> Iterator[bool]:
        """Hold this process's writers and readers off the environment.

        Yields True when no transaction of this process is open (and none can start
        until the block ends), False when readers did not finish within ``timeout``
        seconds (then nothing may be swapped).
        """
        with self.write_lock:
            with self._gate:
                self._closed_for_swap = True
                ok = self._gate.wait_for(lambda: self._readers == 0, timeout)
                if not ok:
                    self._closed_for_swap = False
                    self._gate.notify_all()
            try:
                yield ok
            finally:
                if ok:
                    with self._gate:
                        self._closed_for_swap = False
                        self._gate.notify_all()

    def reopen(self, swap: Callable[[], None]) -> None:
        """Close the LMDB environment, run ``swap`` (which replaces its files), reopen it.

        Only inside ``quiesce`` (no transaction of this process is open) and while no
        other process has the store open (``_openlock.exclusive``). When ``swap``
        fails, the environment is reopened on the files as they are and the error
        propagates.
        """
        self.map_size = max(self.map_size, int(self.env.info()["map_size"]))
        self.env.close()
        try:
            swap()
        finally:
            self.env = self._open_env()
            self.dbs = {}
            self._open_dbs()

    def close(self) -> None:
        self.env.close()
        _openlock.release(self.open_lock_fd)
        self.open_lock_fd = None


_registry: dict[str, Environment] = {}
_registry_lock = threading.Lock()


def acquire(path: str, *, readonly: bool, map_size: int, sync: bool) -> Environment:
    """The process-wide Environment for ``path``, opened on first use."""
    key = os.path.realpath(path)
    with _registry_lock:
        env = _registry.get(key)
        if env is None:
            env = Environment(key, readonly=readonly, map_size=map_size, sync=sync)
            _registry[key] = env
        elif env.readonly and not readonly:
            raise StorageError(
                f"{path!r} is already open read-only in this process; close it before "
                "opening it for writing")
        env.refs += 1
        return env


def release(env: Environment) -> None:
    """Drop one reference; the environment closes with its last user."""
    with _registry_lock:
        env.refs -= 1
        if env.refs <= 0:
            _registry.pop(env.path, None)
            env.close()
