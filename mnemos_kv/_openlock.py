"""The open lock: who has a store open, so that compaction may rewrite the LMDB file.

LMDB keeps working on the file (inode) a process opened. Replacing ``data.mdb`` by a
rewritten copy while another process has the environment open would send that
process's later writes to the old, unlinked inode: they would be lost. So:

* Every process that opens a store holds a *shared* ``flock`` on ``<store>/open.lock``
  for as long as it has the store open (taken once per process per path, by
  ``_storage.Environment``, *before* LMDB opens the file; blocking, so an opener waits
  while a rewrite is being swapped in).
* A compaction rewrites the LMDB file only when it can hold that lock *exclusively*:
  no other process has the store open. Compactions are serialised by a second lock,
  ``<store>/compact.lock`` (taken non-blocking), because ``flock`` cannot upgrade a
  shared lock atomically: we drop our shared lock, try the exclusive one without
  waiting, and take the shared one back whether or not we got it. While we hold
  ``compact.lock`` no other process ever asks for the exclusive lock, so nobody can
  slip in between.

Where ``fcntl`` is missing (Windows) or the lock file cannot be created (a read-only
directory), there is no lock: the LMDB file is then never rewritten by a compaction
(and a read-only opener without a lock may keep reading the old file after a rewrite
by another process; it never writes, so nothing is lost).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

OPEN_LOCK = "open.lock"
COMPACT_LOCK = "compact.lock"
LOCK_FILES = (OPEN_LOCK, COMPACT_LOCK)


def _open(path: str) -> int | None:
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError:
            continue
    return None


def acquire_shared(root: str) -> int | None:
    """Open ``<root>/open.lock`` and take a shared lock on it (waits while a rewrite
    holds it exclusively). Returns the file descriptor, or None without locking."""
    if fcntl is None:
        return None
    fd = _open(os.path.join(root, OPEN_LOCK))
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    """Drop the shared lock (closing the descriptor releases it)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


@contextmanager
def exclusive(root: str, fd: int | None) -> Iterator[str | None]:
    """Try to make this process the only one with the store open.

    Yields None when the open lock is held exclusively (no other process has the store
    open, and none can open it until the block ends), or a reason string when not.
    ``fd`` is this process's shared open-lock descriptor; it holds the shared lock again
    when the block ends.
    """
    if fcntl is None or fd is None:
        yield "no open lock on this platform or directory"
        return
    cfd = _open(os.path.join(root, COMPACT_LOCK))
    if cfd is None:
        yield "cannot create compact.lock"
        return
    try:
        try:
            fcntl.flock(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield "another process is compacting the store"
            return
        got = False
        fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except OSError:
                got = False
            yield None if got else "other processes have the store open"
        finally:
            # back to shared: nobody else asks for the exclusive lock while we hold
            # compact.lock, so this never waits for long
            fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(cfd)
