"""Checks of ``data.mdb`` that read the file with ``pread``, never through LMDB's map.

LMDB trusts its file: a truncated file makes it fault on a page past the end
(SIGBUS), a zeroed or scrambled page trips one of its assertions (SIGABRT). Both kill
the process. So before LMDB maps the file we check its two meta pages and the file
size (O(1), on every open: :func:`check_meta`), and before the deep reads of
``verify`` and ``dump`` we walk every page reachable from the current meta page and
check its header (O(pages): :func:`walk`). Both raise or report
:class:`~mnemos_kv.errors.CorruptionError` text instead of letting LMDB crash.

:func:`read_table` reads a small sub-database (``meta``) without LMDB, for
``recover`` when the environment cannot be opened.

Layout (LMDB 0.9, 64-bit, little-endian): a page starts with ``pgno u64, pad u16,
flags u16, lower u16, upper u16`` (an overflow page has ``pages u32`` in place of
lower/upper); a meta page holds ``magic u32, version u32, address u64, mapsize u64,
free MDB_db, main MDB_db, last_pgno u64, txnid u64`` after that header; an ``MDB_db``
is ``pad u32 (page size, in the free db), flags u16, depth u16, branch, leaf,
overflow, entries, root`` (u64 each).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Iterator

from .errors import CorruptionError

MDB_MAGIC = 0xBEEFC0DE
MDB_DATA_VERSION = 1
PAGEHDR = 16
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = (1 << 64) - 1
_PAGE = struct.Struct("<QHHHH")
_META = struct.Struct("<IIQQ")
_DB = struct.Struct("<IHHQQQQQ")
_NODE = struct.Struct("<HHHH")
MAX_DEPTH = 64


@dataclass(frozen=True)
class Meta:
    """The meta page LMDB will use (the one with the larger txnid)."""

    page: int
    psize: int
    txnid: int
    last_pg: int
    free_root: int
    main_root: int
    main_depth: int
    file_size: int


def _meta_at(raw: bytes, page: int, path: str) -> tuple[int, int, int, int, int, int]:
    pgno, _pad, flags, _lo, _up = _PAGE.unpack_from(raw, 0)
    if not flags & P_META or pgno != page:
        raise CorruptionError(f"{path}: meta page {page} is damaged (flags {flags:#x}, "
                              f"page number {pgno})")
    magic, version, _addr, _mapsize = _META.unpack_from(raw, PAGEHDR)
    if magic != MDB_MAGIC:
        raise CorruptionError(f"{path}: meta page {page} has a bad magic {magic:#x}")
    if version != MDB_DATA_VERSION:
        raise CorruptionError(f"{path}: meta page {page} has LMDB data version {version}, "
                              f"expected {MDB_DATA_VERSION}")
    free = _DB.unpack_from(raw, PAGEHDR + _META.size)
    main = _DB.unpack_from(raw, PAGEHDR + _META.size + _DB.size)
    last_pg, txnid = struct.unpack_from("<QQ", raw, PAGEHDR + _META.size + 2 * _DB.size)
    psize = free[0]
    return psize, txnid, last_pg, free[7], main[7], main[2]


class MetaMoved(Exception):
    """Neither meta page holds the asked transaction id any more (newer commits)."""


#: Reads of the meta pages before a damage is reported: writers in other processes may
#: commit between the reads of the two pages (or during one), which can look like
#: damage once; a damaged file looks damaged on every read.
META_READS: int = 5


def check_meta(path: str, txnid: int | None = None) -> Meta:
    """Check both meta pages of the LMDB file ``path`` and its size; return the current one
    (or the one of transaction ``txnid``: a reader's snapshot; MetaMoved when gone).

    :raises CorruptionError: a meta page is damaged, or the file is shorter than the
        current meta page says (truncated), or a root page lies beyond its end, on
        :data:`META_READS` reads in a row.
    """
    for attempt in range(META_READS):
        try:
            return _check_meta_once(path, txnid)
        except CorruptionError:
            if attempt == META_READS - 1:
                raise
            time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


def _check_meta_once(path: str, txnid: int | None) -> Meta:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CorruptionError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        head = os.pread(fd, 4096, 0)
        if len(head) < PAGEHDR + _META.size + 2 * _DB.size + 16:
            raise CorruptionError(f"{path}: {os.fstat(fd).st_size} bytes, too short for an "
                                  f"LMDB file")
        psize = _meta_at(head, 0, path)[0]
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            raise CorruptionError(f"{path}: meta page 0 gives page size {psize}")
        second = os.pread(fd, psize, psize)
        if len(second) < psize:
            raise CorruptionError(f"{path}: {os.fstat(fd).st_size} bytes, shorter than its two "
                                  f"meta pages")
        # The size is read AFTER the meta pages: a writer in another process writes a
        # commit's data pages (growing the file) before its meta page, so a size read
        # first can be older than the meta page read next (a live store then looked
        # truncated to a reader opening during a commit).
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    metas = [_meta_at(head, 0, path), _meta_at(second, 1, path)]
    # (the loop must not rebind ``txnid``, the argument: it once did, and the current
    # meta page was then always page 1, a transaction behind half of the time)
    for i, (ps, page_txnid, *_rest) in enumerate(metas):
        if ps != psize:
            raise CorruptionError(f"{path}: meta page {i} gives page size {ps}, meta page 0 {psize}")
        if page_txnid and page_txnid % 2 != i:
            raise CorruptionError(f"{path}: meta page {i} holds transaction id {page_txnid} "
                                  f"(meta page {i} holds only {'even' if i == 0 else 'odd'} ones)")
    if abs(metas[0][1] - metas[1][1]) > 1:
        raise CorruptionError(f"{path}: the meta pages hold transaction ids {metas[0][1]} and "
                              f"{metas[1][1]} (they must be consecutive)")
    cur = 1 if metas[1][1] > metas[0][1] else 0
    if txnid is not None:
        if metas[txnid % 2][1] != txnid:
            raise MetaMoved()
        cur = txnid % 2
    ps, txnid, last_pg, free_root, main_root, depth = metas[cur]
    need = (last_pg + 1) * psize
    if last_pg < 1 or need > size:
        raise CorruptionError(f"{path}: truncated: {size} bytes, but its meta page (transaction "
                              f"{txnid}) uses {last_pg + 1} pages of {psize} bytes ({need} bytes)")
    for what, root in (("main", main_root), ("free", free_root)):
        if root != P_INVALID and not 2 <= root <= last_pg:
            raise CorruptionError(f"{path}: the {what} database root page {root} is outside "
                                  f"2..{last_pg}")
    return Meta(cur, psize, txnid, last_pg, free_root, main_root, depth, size)


class _Reader:
    """Pages of one LMDB file read by pread, each checked before it is trusted."""

    def __init__(self, path: str, meta: Meta) -> None:
        self.path, self.meta = path, meta
        self.fd = os.open(path, os.O_RDONLY)
        self.pages = 0

    def close(self) -> None:
        os.close(self.fd)

    def page(self, pgno: int, want: int) -> bytes:
        """Page ``pgno``, checked: its number, a flag of ``want``, its bounds."""
        m = self.meta
        if not 2 <= pgno <= m.last_pg:
            raise CorruptionError(f"{self.path}: a reference to page {pgno}, outside 2..{m.last_pg}")
        raw = os.pread(self.fd, m.psize, pgno * m.psize)
        if len(raw) < m.psize:
            raise CorruptionError(f"{self.path}: page {pgno} is cut short by the end of the file")
        got, _pad, flags, lower, upper = _PAGE.unpack_from(raw, 0)
        if got != pgno:
            raise CorruptionError(f"{self.path}: page {pgno} is damaged (it says it is page {got}, "
                                  f"flags {flags:#x})")
        if not flags & want:
            raise CorruptionError(f"{self.path}: page {pgno} has flags {flags:#x}, expected a "
                                  f"{'branch' if want & P_BRANCH else ''}"
                                  f"{'/' if want & P_BRANCH and want & P_LEAF else ''}"
                                  f"{'leaf' if want & P_LEAF else ''}"
                                  f"{'overflow' if want & P_OVERFLOW else ''} page")
        if flags & P_OVERFLOW:
            n = struct.unpack_from("<I", raw, 12)[0]
            if n < 1 or pgno + n - 1 > m.last_pg:
                raise CorruptionError(f"{self.path}: overflow page {pgno} claims {n} pages")
        elif flags & (P_BRANCH | P_LEAF):
            if not PAGEHDR <= lower <= upper <= m.psize or (lower - PAGEHDR) % 2:
                raise CorruptionError(f"{self.path}: page {pgno} has bounds lower {lower}, "
                                      f"upper {upper}")
        self.pages += 1
        return raw

    def nodes(self, raw: bytes, pgno: int) -> Iterator[tuple[int, int, int, bytes, int]]:
        """(flags, lo|hi, node offset, key, data offset) of each node of a branch/leaf page."""
        lower, upper = struct.unpack_from("<HH", raw, 12)
        n = (lower - PAGEHDR) // 2
        psize = len(raw)
        for i in range(n):
            off = struct.unpack_from("<H", raw, PAGEHDR + 2 * i)[0]
            if not upper <= off <= psize - _NODE.size:
                raise CorruptionError(f"{self.path}: page {pgno} node {i} at offset {off} is "
                                      f"outside {upper}..{psize}")
            lo, hi, nflags, ksize = _NODE.unpack_from(raw, off)
            kstart = off + _NODE.size
            if kstart + ksize > psize:
                raise CorruptionError(f"{self.path}: page {pgno} node {i} key overruns the page")
            yield nflags, lo | (hi << 16), off, raw[kstart:kstart + ksize], kstart + ksize

    def tree(self, root: int, label: str, *, descend: bool = True, big: bool = False,
             ordered: bool = True) -> Iterator[tuple[bytes, int, bytes | None]]:
        """Walk a B-tree from ``root``, checking every page; yields (key, node flags, data).

        ``descend`` also walks each named sub-database found on the way. A value on
        overflow pages (whose head page is checked) yields None as data, or with ``big``
        its ``size u64, first page u64``, so the caller can read it. ``ordered``: the
        leaf keys must strictly ascend in LMDB's default order (bytes, then length): a
        tree whose pages are sound but whose keys are not is iterated whole by a cursor,
        yet a search in it misses keys (the freelist's integer keys are not checked).
        """
        if root == P_INVALID:
            return
        last: bytes | None = None
        stack = [(root, 0)]
        while stack:
            pgno, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise CorruptionError(f"{self.path}: {label}: tree deeper than {MAX_DEPTH} at "
                                      f"page {pgno}")
            raw = self.page(pgno, P_BRANCH | P_LEAF)
            flags = _PAGE.unpack_from(raw, 0)[2]
            if flags & P_LEAF2:
                continue  # fixed-size keys, no node headers: nothing more to check
            children = []
            for nflags, size, off, key, doff in self.nodes(raw, pgno):
                if flags & P_BRANCH:
                    child = size | (nflags << 32)
                    children.append(child)
                    continue
                if ordered:
                    if last is not None and key <= last:
                        raise CorruptionError(
                            f"{self.path}: {label}: page {pgno}: key {key[:32]!r} does not "
                            f"follow {last[:32]!r} (keys out of order: lookups would miss it)")
                    last = key
                if nflags & F_BIGDATA:
                    if doff + 8 > len(raw):
                        raise CorruptionError(f"{self.path}: page {pgno}: overflow pointer overruns")
                    opg = struct.unpack_from("<Q", raw, doff)[0]
                    head = self.page(opg, P_OVERFLOW)
                    pages = struct.unpack_from("<I", head, 12)[0]
                    if size > pages * self.meta.psize - PAGEHDR:
                        raise CorruptionError(f"{self.path}: overflow page {opg} holds "
                                              f"{pages} pages, too few for {size} bytes")
                    yield key, nflags, struct.pack("<QQ", size, opg) if big else None
                    continue
                if doff + size > len(raw):
                    raise CorruptionError(f"{self.path}: page {pgno}: a value of {size} bytes "
                                          "overruns the page")
                data = raw[doff:doff + size]
                if nflags & F_SUBDATA and descend:
                    if size != _DB.size:
                        raise CorruptionError(f"{self.path}: page {pgno}: a sub-database record "
                                              f"of {size} bytes")
                    sub_root = _DB.unpack(data)[7]
                    yield from self.tree(sub_root, f"{label}/{key!r}")
                yield key, nflags, data
            for child in reversed(children):
                stack.append((child, depth + 1))


def walk(path: str, txnid: int | None = None) -> tuple[list[str], int]:
    """Check every page reachable from the current meta page (or that of transaction
    ``txnid``, which the caller keeps open so its pages are not reused meanwhile):
    (problems, pages checked). Reads with pread only, so a damaged file gives problems,
    never a signal. :raises MetaMoved: ``txnid`` is no longer in a meta page.
    """
    try:
        meta = check_meta(path, txnid)
    except CorruptionError as exc:
        return [str(exc)], 0
    rd = _Reader(path, meta)
    try:
        try:
            for _ in rd.tree(meta.free_root, "freelist", ordered=False):
                pass
            for _ in rd.tree(meta.main_root, "main"):
                pass
        except CorruptionError as exc:
            return [str(exc)], rd.pages
        return [], rd.pages
    finally:
        rd.close()


def read_table(path: str, name: bytes, big: bool = False) -> dict[bytes, bytes]:
    """The plain (non-dupsort) sub-database ``name`` as a dict, read without LMDB.

    For ``recover``: small tables (values on overflow pages are left out unless ``big``:
    then they are read from their checked overflow pages).
    :raises CorruptionError: a page on the way is damaged, or there is no such table.
    """
    meta = check_meta(path)
    rd = _Reader(path, meta)
    try:
        root = None
        for key, nflags, data in rd.tree(meta.main_root, "main", descend=False):
            if key == name and nflags & F_SUBDATA and data is not None:
                root = _DB.unpack(data)[7]
        if root is None:
            raise CorruptionError(f"{path}: no {name.decode()!r} table")
        out = {}
        for k, f, d in rd.tree(root, name.decode(), descend=False, big=big):
            if d is None:
                continue
            if f & F_BIGDATA:  # tree() checked the overflow pages hold ``size`` bytes
                size, pgno = struct.unpack("<QQ", d)
                d = os.pread(rd.fd, size, pgno * meta.psize + PAGEHDR)
                if len(d) != size:
                    raise CorruptionError(f"{path}: overflow page {pgno} is cut short")
            out[k] = d
        return out
    finally:
        rd.close()

