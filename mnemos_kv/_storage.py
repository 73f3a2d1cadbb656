"""The LMDB environment: named sub-databases, key encodings, transactions, map growth.

This is the one place where ``lmdb.Error`` becomes a :class:`~mnemos_kv.errors.MnemosError`.
An environment is opened once per process per path and shared (LMDB forbids opening
the same environment twice in one process); handles are reference counted. A child
process created by ``fork()`` forgets its parent's environments (it must open its own;
see docs/concurrency.md).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from . import _openlock
from .errors import DiskFullError, MapFullError, MnemosError, StorageError, StoreError

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
    b"postings",   # ns(u32) term(utf8) -> dups of id(u48) tf(u24) len(u24), see _lexical_index
    b"lexstats",   # ns(u32) -> docs(u64) stem_len(u64) surface_len(u64); b"version" -> u32
    b"capacity",   # limits, pins, evicted counters, eviction notes (see _capacity)
    b"fields",     # ns(u32) path tag value -> dups of id(u64): the filter index, see _filter_index
    b"pending",    # log seg(u32) offset(u64) -> log frames not yet fdatasync'ed to the log
                   # file (format 3; see _engine and docs/durability.md)
    b"vrows",      # gen(u32) slot(u64) -> vector row not yet fdatasync'ed to the vector
                   # file (format 3: the log frames name rows instead of carrying them)
    b"lexstage",   # id(u64) -> ns(u32) + the memory's BM25 postings, staged by a small
                   # write until the next flush merges them into ``postings`` (format 5;
                   # see _lexstage)
)

log = logging.getLogger("mnemos_kv")

#: LMDB flags of the sub-databases that are not plain key -> value tables.
DB_FLAGS: dict[bytes, dict[str, bool]] = {
    b"postings": {"dupsort": True, "dupfixed": True},
    b"fields": {"dupsort": True, "dupfixed": True},
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


def put_last(txn: lmdb.Transaction, key: bytes, value: bytes, db: Any) -> None:
    """Put ``key`` -> ``value`` where ``key`` is usually past every key of ``db`` (new
    ids, log offsets, slots): LMDB appends it to the last leaf, which it fills whole
    instead of splitting it in half (fewer pages per commit, a smaller file); any other
    key is put as usual."""
    if not txn.put(key, value, db=db, append=True):
        txn.put(key, value, db=db)


def fsync_path(path: str) -> None:
    """fsync a file or directory by path (a directory: its entries are durable)."""
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: str) -> None:
    """Remove a file; one that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def translate(exc: BaseException) -> MnemosError:
    """Map an LMDB/OS error to the most precise MnemosError (callers chain ``from exc``)."""
    if isinstance(exc, MnemosError):
        return exc
    if isinstance(exc, lmdb.MapFullError):
        return MapFullError(f"LMDB map is full ({exc}); open with a larger map_size=")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "a file reached its size limit (EFBIG)" if getattr(exc, "errno", None) == errno.EFBIG \
            else "no space left on device"
        return DiskFullError(f"{why} (nothing of the failed call was kept): {exc}")
    if isinstance(exc, lmdb.Error) and any(s in str(exc) for s in (
            "No space left", "quota", "File too large")):
        return DiskFullError(f"no space left on device (nothing of the failed call was kept): {exc}")
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                        lmdb.VersionMismatchError, lmdb.PageFullError)):
        from .errors import NeedsRecoveryError
        return NeedsRecoveryError(
            f"data.mdb is damaged ({type(exc).__name__}: {exc}); rebuild the store from its log "
            "with Mnemos.recover(path) or `mnemos-kv recover PATH`")
    return StorageError(f"storage failure: {type(exc).__name__}: {exc}")


_FORKED = ("{path!r} was open in the parent process when this process was forked; LMDB "
           "cannot open it again here. Open stores after fork(), close them before forking, "
           "or start child processes with the 'spawn' method")

#: Below this much free space, a short write (which LMDB reports as EIO) means a full disk.
LOW_SPACE_BYTES = 1 << 20


def translate_write(exc: BaseException, path: str) -> MnemosError:
    """:func:`translate` for a failed write under ``path``.

    A write that fills the disk may end as a *short* write rather than ENOSPC, and
    LMDB reports a short write as EIO. When the filesystem is then (nearly) out of
    space, that is a full disk: say so.
    """
    err = translate(exc)
    if type(err) is StorageError and ("Input/output error" in str(exc) or "short write" in str(exc)):
        try:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
        except OSError:
            return err
        if free < LOW_SPACE_BYTES:
            return DiskFullError(
                f"no space left on device under {path!r} ({free} bytes free; nothing of the "
                f"failed call was kept): {exc}")
    return err


def txn_commit(txn: lmdb.Transaction) -> None:
    """Commit a write transaction (one function, so tests can make it fail)."""
    txn.commit()


def env_sync(env: lmdb.Environment) -> None:
    """LMDB's fdatasync of its data file (one function, so tests can make it fail)."""
    env.sync(True)


#: How long a map resize waits for this process's other transactions to finish.
RESIZE_WAIT_S = 30.0


#: How many times a transaction begin adopts a map that other processes keep growing.
RESIZE_RETRIES = 64


class Environment:
    """One LMDB environment (per process, per path) with its named sub-databases.

    The environment is opened with ``metasync=False``: a commit fdatasyncs the data
    pages, and writes the meta page without a sync. :meth:`write` with ``sync=True``
    (the default, used by ``durability="full"``) then fdatasyncs the file, which makes
    the commit exactly as durable as LMDB's own synchronous commit; without it (the
    ``"fast"`` mode) a machine crash may undo the last committed transaction, never
    more and never half of one (LMDB keeps the previous meta page intact).

    Every transaction of this process passes one gate. Growing the map
    (``mdb_env_set_mapsize``) and swapping the LMDB file (compaction, see
    ``_lmdb_rewrite``) replace the memory map, which invalidates open transactions:
    both close the gate and wait until no transaction of this process is open; new
    ones wait for the gate to reopen (a thread that already holds one passes, since
    the closer is waiting for it).
    """

    def __init__(self, path: str, *, readonly: bool, map_size: int) -> None:
        self.path = path
        self.readonly = readonly
        self.map_size = map_size
        self.refs = 0
        self.forked = False                  # set in a child process after fork()
        self.pid = os.getpid()
        self.write_lock = threading.RLock()  # serialises this process's writers
        self._gate = threading.Condition(threading.Lock())
        self._active = 0                     # open transactions in this process
        self._closed: int | None = None      # thread id holding the gate closed
        self._mine = threading.local()       # open transactions of the current thread
        # shared open lock, taken before LMDB opens the file (see _openlock)
        self.open_lock_fd = _openlock.acquire_shared(path)
        try:
            self.env = self._open_env()
            self.dbs: dict[str, Any] = {}
            self._late = threading.Lock()  # (open_late)
            try:
                # Free the reader slots of processes that died holding a read
                # transaction: they would pin old pages and fill the reader table.
                self.env.reader_check()
            except lmdb.Error:
                pass
            self._open_dbs()
        except BaseException:
            _openlock.release(self.open_lock_fd)
            raise

    def _open_env(self) -> lmdb.Environment:
        if self.path in _inherited and self.pid == os.getpid():
            # py-lmdb 3 refuses this itself ("already open in this process"); 1.x/2.x
            # would open it, and LMDB forbids using an environment across fork()
            raise StoreError(_FORKED.format(path=self.path))
        try:
            return lmdb.open(
                self.path, subdir=True, readonly=self.readonly, create=not self.readonly,
                map_size=self.map_size, max_dbs=MAX_DBS, max_readers=256,
                sync=True, metasync=False, lock=True, readahead=False,
                meminit=False,
            )
        except lmdb.Error as exc:
            if "already open in this process" in str(exc) and self.path in _inherited:
                raise StoreError(_FORKED.format(path=self.path)) from exc
            raise translate(exc) from exc

    def _open_dbs(self) -> None:
        if not self.readonly:
            def body(txn: lmdb.Transaction) -> None:
                for name in DB_NAMES:
                    self.dbs[name.decode()] = self.env.open_db(
                        name, txn=txn, create=True, **DB_FLAGS.get(name, {}))
            self.write(body, sync=False)
            return
        # py-lmdb loses handles opened inside an explicit read transaction; let it use
        # its own (no other transaction of this environment exists yet).
        for _attempt in range(3):
            try:
                for name in DB_NAMES:
                    try:
                        self.dbs[name.decode()] = self.env.open_db(
                            name, create=False, **DB_FLAGS.get(name, {}))
                    except lmdb.NotFoundError:
                        pass
                return
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise translate(exc) from exc
        raise StorageError(f"{self.path!r}: the LMDB map kept growing while opening")

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def open_late(self, name: str) -> bool:
        """Open sub-database ``name`` when another process created it after this
        (read-only) environment opened (e.g. the first read-write open of a newer library
        upgrading the store); False when it does not exist. Transactions begun before
        cannot use the handle: begin a new one."""
        with self._late:
            if name in self.dbs:
                return True
            try:
                self.dbs[name] = self.env.open_db(name.encode(), create=False,
                                                  **DB_FLAGS.get(name.encode(), {}))
            except lmdb.NotFoundError:
                return False
            except lmdb.Error as exc:
                raise translate(exc) from exc
            return True

    def has_db(self, name: str) -> bool:
        return name in self.dbs

    # -- the transaction gate ---------------------------------------------------

    def _enter(self) -> None:
        mine = getattr(self._mine, "n", 0)
        me = threading.get_ident()
        with self._gate:
            # A thread that already holds a transaction must not wait: the closer is
            # waiting for that transaction (nested reads, e.g. get_vector inside a
            # memories() loop, pass; the map cannot change while they run).
            while self._closed is not None and self._closed != me and not mine:
                self._gate.wait()
            self._active += 1
        self._mine.n = mine + 1

    def _leave(self) -> None:
        self._mine.n -= 1
        with self._gate:
            self._active -= 1
            if self._closed is not None and self._active == 0:
                self._gate.notify_all()

    @contextmanager
    def _gate_closed(self, timeout: float) -> Iterator[bool]:
        """Close the gate and wait until no transaction of this process is open.

        Yields True then (no new one starts, except in this thread, until the block
        ends), or False when they did not end within ``timeout`` seconds (the gate is
        open again).
        """
        me = threading.get_ident()
        with self._gate:
            while self._closed is not None and self._closed != me:
                self._gate.wait()
            nested = self._closed == me
            self._closed = me
            ok = self._gate.wait_for(lambda: self._active == 0, timeout)
            if not ok and not nested:
                self._closed = None
                self._gate.notify_all()
        try:
            yield ok
        finally:
            if ok and not nested:
                with self._gate:
                    self._closed = None
                    self._gate.notify_all()

    def _resize(self, size: int, why: str) -> None:
        """Set the map size (0: adopt the size another process grew it to)."""
        if getattr(self._mine, "n", 0):
            raise MapFullError(
                f"{why}, but this thread still holds an open read of {self.path!r} (an "
                "unfinished memories() iterator?); finish it and retry")
        with self._gate_closed(RESIZE_WAIT_S) as ok:
            if not ok:
                raise MapFullError(
                    f"{why}, but transactions of other threads stayed open for "
                    f"{RESIZE_WAIT_S:.0f} s (unfinished memories() iterators?)")
            try:
                self.env.set_mapsize(size)
            except lmdb.Error as exc:
                raise translate(exc) from exc
            self.map_size = max(self.map_size, int(self.env.info()["map_size"]))
        if size:
            log.info("%s: LMDB map grown to %d bytes (%s)", self.path, self.map_size, why)
        else:
            log.debug("%s: adopted the LMDB map size %d grown by another process", self.path,
                      self.map_size)

    # -- transactions -----------------------------------------------------------

    def _begin(self, write: bool) -> lmdb.Transaction:
        """Begin a transaction (inside the gate); adopts a map grown by another process."""
        self._enter()
        try:
            for _attempt in range(RESIZE_RETRIES):
                try:
                    return self.env.begin(write=write, buffers=False)
                except lmdb.MapResizedError:
                    pass
                # Another process grew the map beyond ours: adopt its size, then retry
                # (again if it, or a third process, grew it once more in between).
                self._leave()
                self._resize(0, "another process grew the LMDB map")
                self._enter()
            return self.env.begin(write=write, buffers=False)
        except BaseException as exc:
            self._leave()
            if isinstance(exc, lmdb.Error):
                raise translate(exc) from exc
            raise

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read-only snapshot; never blocks on writers and never sees a half-done write.

        (It waits only while this process grows the map or swaps the LMDB file.)"""
        txn = self._begin(write=False)
        try:
            yield txn
        except lmdb.Error as exc:  # e.g. MDB_CORRUPTED from a damaged page
            raise translate(exc) from exc
        finally:
            try:
                txn.abort()
            finally:
                self._leave()

    def write(self, body: Callable[[lmdb.Transaction], T],
              on_abort: Callable[[lmdb.Transaction], None] | None = None, *,
              sync: bool = True) -> T:
        """Run ``body`` in one write transaction and commit it.

        The LMDB write transaction is the cross-process writer lock. On any failure
        the transaction is aborted and ``on_abort`` runs to undo side files (log tail,
        dead marks, new vector files), inside a fresh write transaction that it must
        not change: the abort released the lock, so another process may have committed
        in between, and only under the lock can the undo tell its leftovers from that
        process's committed work. When the map is full it is doubled (other processes
        adopt the new size at their next transaction) and the whole body runs again.
        ``sync`` makes the commit durable before returning (see the class docstring).
        """
        with self.write_lock:
            for _attempt in range(16):
                txn = self._begin(write=True)
                try:
                    try:
                        result = body(txn)
                        txn_commit(txn)
                    except BaseException:
                        txn.abort()
                        raise
                    finally:
                        self._leave()
                except lmdb.MapFullError:
                    self._undo(on_abort)
                    self._grow()
                    continue
                except BaseException as exc:
                    self._undo(on_abort)
                    if isinstance(exc, (lmdb.Error, OSError)):
                        raise translate_write(exc, self.path) from exc
                    raise
                if sync:
                    self.sync_to_disk()
                return result
            raise MapFullError(f"LMDB map still full after growing to {self.env.info()['map_size']} bytes")

    def _undo(self, on_abort: Callable[[lmdb.Transaction], None] | None) -> None:
        """Run ``on_abort`` under the writer lock, in a transaction that is then aborted.

        When it cannot run (the environment itself fails), the leftovers stay for the
        next writer of any process, whose transaction drops an uncommitted log tail
        and its dead marks first (``Engine._reconcile``); the original error is what
        the caller sees.
        """
        if on_abort is None:
            return
        try:
            txn = self._begin(write=True)
        except (MnemosError, lmdb.Error, OSError) as exc:
            log.warning("%s: could not undo a failed write now (%s); the next writer will",
                           self.path, exc)
            return
        try:
            on_abort(txn)
        except (MnemosError, lmdb.Error, OSError) as exc:
            log.warning("%s: could not undo a failed write now (%s); the next writer will",
                           self.path, exc)
        finally:
            try:
                txn.abort()
            finally:
                self._leave()

    def _grow(self) -> None:
        size = int(self.env.info()["map_size"])
        self._resize(size * 2, f"the LMDB map of {self.path!r} is full ({size} bytes)")

    def map_size_now(self) -> int:
        """The current size of this process's map of the LMDB file."""
        return int(self.env.info()["map_size"])

    def sync_to_disk(self) -> None:
        """fdatasync the LMDB data file: every commit so far (meta page included) is durable."""
        try:
            env_sync(self.env)
        except lmdb.Error as exc:
            raise translate(exc) from exc

    # -- swapping the LMDB file (compaction; see _lmdb_rewrite) ------------------

    @contextmanager
    def quiesce(self, timeout: float) -> Iterator[bool]:
        """Hold this process's writers and readers off the environment.

        Yields True when no transaction of this process is open (and none can start,
        except in this thread, until the block ends), False when they did not finish
        within ``timeout`` seconds (then nothing may be swapped).
        """
        with self.write_lock:
            with self._gate_closed(timeout) as ok:
                yield ok

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
        if not self.forked:  # an environment inherited across fork() belongs to the parent
            self.env.close()
        _openlock.release(self.open_lock_fd)  # (a forked copy of the descriptor: the
        self.open_lock_fd = None              # parent's shared lock stays)


_registry: dict[str, Environment] = {}
_registry_lock = threading.Lock()
#: Paths whose environment this process inherited, open, from its parent by fork().
_inherited: set[str] = set()


def acquire(path: str, *, readonly: bool, map_size: int) -> Environment:
    """The process-wide Environment for ``path``, opened on first use."""
    key = os.path.realpath(path)
    with _registry_lock:
        env = _registry.get(key)
        if env is None:
            env = Environment(key, readonly=readonly, map_size=map_size)
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
            if _registry.get(env.path) is env:
                del _registry[env.path]
            env.close()


def _after_fork_in_child() -> None:
    """A forked child must not use its parent's environments: LMDB forbids it."""
    global _registry_lock
    _registry_lock = threading.Lock()  # the parent may have held it while forking
    for key, env in _registry.items():
        env.forked = True
        _inherited.add(key)
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
