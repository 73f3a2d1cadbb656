"""Rewriting the LMDB file without free pages and half-empty pages (part of compaction).

LMDB reuses the pages of deleted entries but never gives them back to the file system,
and deletions leave B-tree pages partly empty. The rewrite copies every named
sub-database, in key order, into a fresh environment with LMDB's append mode (pages
filled completely), checks that every sub-database has the same number of entries,
makes the new file durable and atomically renames it over ``data.mdb``. (LMDB's own
``env.copy(compact=True)`` keeps half-empty pages, and crashes py-lmdb 1.x on a
dupsort+dupfixed sub-database such as ``postings``.)

When it may run (see ``_openlock``): only when this process can hold the store's open
lock exclusively — no other process has the store open, and none can open it until the
swap is done — while no other writer of this process runs (its write lock is held during
the copy) and, for the swap itself, no transaction of this process is open
(``Environment.quiesce``; readers keep going during the copy).
Otherwise the file is left as it is, and the caller reports why.

Crash rules: until the rename the old ``data.mdb`` is untouched (the new one is a stray
in ``data.rewrite.tmp/``, removed by the next rewrite); the rename is atomic and the new
file was fsync'ed before it, so after a crash the store holds one complete file or the
other — with the same logical content.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from typing import Any, Callable

import lmdb

from . import _openlock
from . import _storage as S
from .errors import CorruptionError

log = logging.getLogger("mnemos_kv")

TMP_DIR = "data.rewrite.tmp"
CHUNK = 20_000
#: How long a rewrite waits for this process's open read transactions to end.
QUIESCE_TIMEOUT = 2.0

Progress = Callable[[str, int, int], Any]


_fsync = S.fsync_path

#: Whether py-lmdb's putmulti(append=True) appends duplicates of a dupsort table.
APPEND_DUPS = int(lmdb.__version__.split(".")[0]) >= 3


def _copy(src: lmdb.Environment, handles: dict[bytes, Any], names: list[bytes], dst_dir: str,
          map_size: int, progress: Progress | None) -> None:
    dst = lmdb.open(dst_dir, subdir=True, map_size=map_size, max_dbs=S.MAX_DBS, lock=False,
                    sync=True, metasync=True, readahead=False, meminit=False)
    try:
        with src.begin(buffers=False) as rtxn:
            counts = {n: int(rtxn.stat(handles[n])["entries"]) for n in names}
            total, done = sum(counts.values()), 0
            for name in names:
                sdb = handles[name]
                flags = {k: v for k, v in sdb.flags(rtxn).items() if v}
                with dst.begin(write=True) as wtxn:
                    ddb = dst.open_db(name, txn=wtxn, create=True, **flags)
                    added = 0
                    # MDB_APPEND rejects a second value of the same key; py-lmdb 3 uses
                    # MDB_APPENDDUP for dupsort tables, 1.x does not (it copied a fraction)
                    append = APPEND_DUPS or not flags.get("dupsort")
                    with rtxn.cursor(db=sdb) as rc, wtxn.cursor(db=ddb) as wc:
                        items = rc.iternext(keys=True, values=True)
                        while True:
                            chunk = list(itertools.islice(items, CHUNK))
                            if not chunk:
                                break
                            _consumed, n = wc.putmulti(chunk, append=append)
                            added += n
                            done += len(chunk)
                            if progress is not None:
                                progress("lmdb", done, total)
                    if added != counts[name]:
                        raise CorruptionError(
                            f"LMDB rewrite copied {added} of {counts[name]} entries of "
                            f"sub-database {name.decode(errors='replace')!r}; left the file as it was")
        with dst.begin() as t:
            for name in names:
                got = int(t.stat(dst.open_db(name, txn=t, create=False))["entries"])
                if got != counts[name]:
                    raise CorruptionError(f"LMDB rewrite: {name!r} holds {got} entries, "
                                          f"expected {counts[name]}")
        dst.sync(True)
    finally:
        dst.close()


def rewrite(env: S.Environment, progress: Progress | None = None,
            timeout: float | None = None) -> tuple[bool, str]:
    """Rewrite ``data.mdb`` compactly when no other process has the store open.

    Returns (rewritten, note): the note says the bytes before/after, or why the file
    was left for a later compaction.
    """
    root = env.path
    timeout = QUIESCE_TIMEOUT if timeout is None else timeout
    with _openlock.exclusive(root, env.open_lock_fd) as why:
        if why is not None:
            log.info("%s: LMDB rewrite skipped: %s", root, why)
            return False, f"LMDB file left for a later compaction: {why}"
        # no writer anywhere from here: other processes are locked out by the open lock,
        # this process's writers by its write lock; readers go on while we copy
        with env.write_lock:
            data = os.path.join(root, "data.mdb")
            before = os.stat(data).st_size
            tmp = os.path.join(root, TMP_DIR)
            shutil.rmtree(tmp, ignore_errors=True)
            os.mkdir(tmp)
            try:
                src = env.env
                with src.begin() as t:
                    names = [k for k in t.cursor().iternext(values=False)]
                handles = {}
                for name in names:
                    known = env.dbs.get(name.decode(errors="replace"))
                    handles[name] = known if known is not None else src.open_db(name, create=False)
                try:
                    _copy(src, handles, names, tmp, int(src.info()["map_size"]), progress)
                    new = os.path.join(tmp, "data.mdb")
                    _fsync(new)
                except (lmdb.Error, OSError) as exc:  # e.g. a full disk: the old file stands
                    log.info("%s: LMDB rewrite skipped: the copy failed (%s)", root, exc)
                    return False, (f"LMDB file left for a later compaction: the copy failed "
                                   f"({S.translate(exc)})")

                def swap() -> None:
                    if progress is not None:
                        progress("swap", 0, 1)
                    os.replace(new, data)
                    _fsync(root)
                    if progress is not None:
                        progress("swap", 1, 1)

                # the swap itself needs every transaction of this process closed
                with env.quiesce(timeout) as ok:
                    if not ok:
                        log.info("%s: LMDB rewrite skipped: read transactions of this "
                                 "process stayed open", root)
                        return False, ("LMDB file left for a later compaction: read "
                                       "transactions of this process stayed open")
                    try:
                        env.reopen(swap)
                    except (lmdb.Error, OSError) as exc:  # the file in place stands (old or new)
                        return False, (f"LMDB file left for a later compaction: the swap "
                                       f"failed ({S.translate(exc)})")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        after = os.stat(data).st_size
        log.info("%s: LMDB file rewritten: %d -> %d bytes", root, before, after)
        return True, f"LMDB file rewritten: {before} -> {after} bytes"


def remove_stray(root: str) -> None:
    """Remove the temp directory of an interrupted rewrite (call only while holding the
    open lock exclusively, or when the directory cannot be in use)."""
    shutil.rmtree(os.path.join(root, TMP_DIR), ignore_errors=True)
