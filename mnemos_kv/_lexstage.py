"""Staged BM25 postings: what small writes add, merged into ``postings`` at a flush.

A single ``remember`` used to put one posting per term (~19 for a 12-word text) into
the ``postings`` table: each a different B-tree leaf (a common term's duplicates are a
sub-tree of their own), so its commit wrote ~40 pages for the postings alone (of ~55).
Since format 5, a small write (fewer than ``STAGE_MAX`` new memories) stages its
memories in the ``lexstage`` table instead, one key per memory, appended at the end of
the table, and the next *flush* (every 256 operations, ``sync()``, ``close()``, a big
write, compaction, see ``_engine``) merges every staged entry into ``postings`` in key
order, in its own write transaction.

Since format 7 a small write stages nothing but the ids it adds: the staged memories
are the consecutive ids of a *window*, ``meta/lexwin`` = ``first u64 BE, end u64 BE``
(absent: none), and their postings are those of their records' texts
(:func:`_lexical_index.doc_terms`), derived by whoever reads them (readers, once per
process and record: :func:`record_terms`; the merge, for all of them at once with the
bulk tokeniser). The window key shares ``meta``'s page with the state record the write
changes anyway, so a small durable write neither tokenises nor writes a page for its
postings. A memory indexed directly (a big write) may come after the window; the next
small write then merges the window first (staged ids stay consecutive).

Formats 5-6 staged each memory in the table ``lexstage`` (plain): key ``id u64 BE``;
value ``ns u32 BE`` then, per term of the memory in term order, ``term length u8 |
term | tf u24 BE | doc length u24 BE`` (the same terms, frequencies and lengths
:func:`_lexical_index.doc_terms` gives). Such entries (left by an older library's
writes before a crash) are still read and merged; format 7 writes none.
The BM25 statistics are staged with them: a staged memory is counted in ``lexstats`` by
the merge (one update per namespace), and readers add the staged memories' share
(documents, and the field lengths their terms carry: :func:`lengths`).

Invariants (what keeps every reader's answer the same as without staging):

* a memory's postings are either all in ``postings`` or all staged, never both;
* a staged memory's record is live and its text unchanged until the merge (anything
  that removes or changes it merges first, below);
* staged ids ascend in the order they were staged (they are new memories), so between
  two merges the committed table only grows at its end;
* anything that removes postings (forget, evict, update of a staged memory, dropping a
  namespace, bulk forget, reindexing) merges the staged entries first
  (:func:`merge_for`, :func:`merge`), so removal only ever sees ``postings``.

Readers see the union at their snapshot: :func:`view` gives a snapshot's staged
postings per (namespace, term), which ``_lexical_index.fetch`` merges into the stored
list by id: the same arrays, hence bit-identical scores and the same order. The view
of a read-only snapshot is cached per engine and extended as the table grows (a
staged entry is decoded once per process); a merge starts a new cache.
"""

from __future__ import annotations

import bisect
import struct
import threading
from typing import Any, Iterable, Mapping

import lmdb
import numpy as np

from . import _lexical
from . import _records as R
from ._percache import PerOwner
from ._rawmemo import RawMemo, owned
from .errors import CorruptionError

__all__ = ["DB", "STAGE_MAX", "WINDOW_KEY", "encode", "decode", "record_terms", "window", "stage",
           "merge", "merge_for", "view", "View", "staged_count"]

#: The staging table (see ``_storage.DB_NAMES``).
DB = "lexstage"
#: A write adding fewer memories than this stages their postings; a bigger one (bulk
#: ingest) writes them into ``postings`` directly, in key order.
STAGE_MAX = 16

#: The ``meta`` key of the window of staged ids (format 7): ``first u64, end u64`` (BE).
WINDOW_KEY = b"lexwin"
_WINDOW = struct.Struct(">QQ")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_LEN = [bytes((i,)) for i in range(256)]
#: What a view's arrays hold (``_lexical_index.DECODED_DTYPE``): id u64, tf u32, dl u32.
_ROW = struct.Struct("<QII")


def encode(ns: int, terms: Mapping[bytes, tuple[int, int]]) -> bytes:
    """The staged value of one memory of namespace ``ns`` with posting ``terms``
    (term bytes -> (tf, length), sorted by term)."""
    parts = [_U32.pack(ns)]
    add = parts.append
    for term, (tf, dl) in terms.items():
        add(_LEN[len(term)] + term)
        add(((tf << 24) | dl).to_bytes(6, "big"))
    return b"".join(parts)


def decode(value: bytes) -> tuple[int, list[tuple[bytes, int, int]]]:
    """(namespace, [(term, tf, length)]) of a staged value.
    :raises CorruptionError: not what :func:`encode` writes."""
    if len(value) < 4:
        raise CorruptionError("data.mdb: a staged postings entry (lexstage) is shorter than "
                              "its namespace")
    ns = _U32.unpack_from(value, 0)[0]
    out = []
    pos, end = 4, len(value)
    while pos < end:
        n = value[pos]
        stop = pos + 1 + n + 6
        if n == 0 or stop > end:
            raise CorruptionError(f"data.mdb: a staged postings entry (lexstage) is cut or "
                                  f"damaged at byte {pos} of {end}")
        term = value[pos + 1:pos + 1 + n]
        tf = int.from_bytes(value[pos + 1 + n:pos + 4 + n], "big")
        dl = int.from_bytes(value[pos + 4 + n:stop], "big")
        out.append((term, tf, dl))
        pos = stop
    return ns, out


#: Posting terms of staged memories by their record's stored bytes (``_rawmemo``): a
#: process derives a staged memory's terms once, whichever snapshot reads them.
_TERMS: RawMemo[tuple[int, list[tuple[bytes, int, int]]]] = RawMemo(max_bytes=8 << 20,
                                                                    max_item=1 << 20)


def _missing(mid: int) -> CorruptionError:
    return CorruptionError(f"data.mdb: memory {mid} is staged (lexstage window) but has no "
                           "record")


def record_terms(txn: lmdb.Transaction, env: Any, mid: int
                 ) -> tuple[int, list[tuple[bytes, int, int]]]:
    """(namespace, [(term, tf, length)]) of the staged memory ``mid`` of the window:
    the postings of its record's text (``_lexical_index.doc_terms``), memoised by the
    record's bytes. :raises CorruptionError: the record is missing or damaged (a staged
    memory's record stays until the merge)."""
    raw = txn.get(_U64.pack(mid), db=env.db("records"))
    if raw is None:
        raise _missing(mid)
    owned_raw = owned(raw)
    # (the tokeniser's one switch is part of the key: the terms depend on it)
    memo = None if owned_raw is None else (owned_raw, _lexical.COMPOUNDS)
    got = _TERMS.get(memo) if memo is not None else None
    if got is None:
        from . import _lexical_index  # (it imports this module)
        rec = R.Record.from_bytes(raw)
        terms = _lexical_index.doc_terms(rec.text)[0]
        got = (rec.ns, [(t, tf, dl) for t, (tf, dl) in terms.items()])
        if memo is not None:
            _TERMS.put(memo, got, len(raw) + 64 * len(terms))
    return got


def window(txn: lmdb.Transaction, env: Any) -> tuple[int, int]:
    """(first, end) of the staged ids of ``txn`` (format 7; equal: none staged).
    :raises CorruptionError: the window key is damaged."""
    raw = txn.get(WINDOW_KEY, db=env.db("meta"))
    if raw is None:
        return 0, 0
    if len(raw) != _WINDOW.size:
        raise CorruptionError(f"data.mdb: the staged ids (meta/{WINDOW_KEY.decode()}) are "
                              f"{len(raw)} bytes, expected {_WINDOW.size}")
    lo, hi = _WINDOW.unpack(raw)
    if hi < lo:
        raise CorruptionError(f"data.mdb: the staged ids (meta/{WINDOW_KEY.decode()}) end at "
                              f"{hi}, before their first {lo}")
    return lo, hi


def stage(txn: lmdb.Transaction, env: Any, first: int, end: int) -> None:
    """Stage the new memories ``first``..``end - 1`` (a small write's, consecutive and
    newer than every staged id): the window grows to take them. When a memory indexed
    directly (a big write) came after the window, the window is merged first (staged
    ids stay consecutive)."""
    lo, hi = window(txn, env)
    if lo != hi and hi != first:
        merge(txn, env)
        lo = hi = first
    if lo == hi:
        lo = first
    txn.put(WINDOW_KEY, _WINDOW.pack(lo, end), db=env.db("meta"))


def _table_count(txn: lmdb.Transaction, env: Any) -> int:
    """Entries of the ``lexstage`` table (a format-5/6 writer's; 0 without the table)."""
    if not env.has_db(DB):
        return 0
    return int(txn.stat(env.db(DB))["entries"])


def staged_count(txn: lmdb.Transaction, env: Any) -> int:
    """How many memories have staged postings in ``txn``."""
    lo, hi = window(txn, env)
    return _table_count(txn, env) + hi - lo


def merge(txn: lmdb.Transaction, env: Any) -> int:
    """Move every staged posting into ``postings`` (in (key, id) order) and count the
    staged memories into ``lexstats`` (one update per namespace): the window's, from
    their record texts tokenised at once (``_lexical_index.add_many``, the bulk path of
    a big write), and a format-5/6 table's; then empty both. Returns how many memories
    were staged."""
    lo, hi = window(txn, env)
    n = _merge_table(txn, env) if _table_count(txn, env) else 0
    if lo == hi:
        return n
    from . import _lexical_index  # (it imports this module)
    items: list[tuple[int, int, str, Any]] = []
    with txn.cursor(db=env.db("records")) as cur:
        for mid in range(lo, hi):
            if not cur.set_key(_U64.pack(mid)):
                raise _missing(mid)
            rec = R.Record.from_bytes(cur.value())
            items.append((rec.ns, mid, rec.text, None))
    _lexical_index.add_many(txn, env, items)
    txn.delete(WINDOW_KEY, db=env.db("meta"))
    return n + hi - lo


def _merge_table(txn: lmdb.Transaction, env: Any) -> int:
    """:func:`merge` of the ``lexstage`` table's entries (formats 5-6: the postings
    themselves); returns how many."""
    from . import _lexical_index  # (it imports this module)
    ddb = env.db(DB)
    pairs: list[tuple[bytes, bytes]] = []
    sums: dict[int, list[int]] = {}
    n = 0
    with txn.cursor(db=ddb) as cur:
        add = pairs.append
        for k, v in cur:
            n += 1
            idb = k[2:]  # the id as u48 (ids stay below 2^48, see _lexical_index.posting)
            prefix = v[:4]
            length = slength = 0
            pos, end = 4, len(v)
            while pos < end:  # term, then tf u24 + length u24: the posting's last 6 bytes
                stop = pos + 1 + v[pos]
                if stop == pos + 1 or stop + 6 > end:
                    decode(v)  # raises, saying where
                add((prefix + v[pos + 1:stop], idb + v[stop:stop + 6]))
                kind = v[pos + 1]  # (as :func:`lengths`)
                if kind == 1:
                    slength = int.from_bytes(v[stop + 3:stop + 6], "big")
                elif kind > 2:
                    length = int.from_bytes(v[stop + 3:stop + 6], "big")
                pos = stop + 6
            tot = sums.setdefault(_U32.unpack(prefix)[0], [0, 0, 0])
            tot[0] += 1
            tot[1] += length
            tot[2] += slength
    pairs.sort()  # (key, id): the table's order
    with txn.cursor(db=env.db("postings")) as cur:
        cur.putmulti(pairs, dupdata=True)
    for ns in sorted(sums):
        _lexical_index.bump(txn, env, ns, *sums[ns])
    txn.drop(ddb, delete=False)
    return n


def merge_for(txn: lmdb.Transaction, env: Any, mid: int) -> None:
    """Before removing or changing memory ``mid``: when it is staged, merge (removal
    then finds its postings in ``postings``, as without staging; and its record is not
    needed for them any more)."""
    lo, hi = window(txn, env)
    if lo <= mid < hi or (env.has_db(DB) and txn.get(_U64.pack(mid), db=env.db(DB)) is not None):
        merge(txn, env)


#: Per namespace: the staged entries' indexes and cumulative (documents, stem length,
#: surface length) after each.
_Counts = dict[int, tuple[list[int], list[tuple[int, int, int]]]]


def lengths(terms: Iterable[tuple[bytes, int, int]]) -> tuple[int, int]:
    """(stem-field length, surface-field length) of a memory from its posting terms: the
    field length its stem terms / surface terms (first byte 1) carry (0 without any;
    the marker and speaker terms, first byte 0 and 2, carry 1 and are skipped)."""
    length = slength = 0
    for term, _tf, dl in terms:
        kind = term[0]
        if kind == 1:
            slength = dl
        elif kind > 2:
            length = dl
    return length, slength


class View:
    """The staged postings of one snapshot: ``get(ns, term, dtype)`` -> array (id, tf, dl;
    sorted by id) or None; ``stats(ns)`` -> their share of the namespace's BM25
    statistics (documents, stem length, surface length)."""

    __slots__ = ("_terms", "_counts", "_n", "_sorted")

    def __init__(self, terms: dict[tuple[int, bytes], tuple[list[int], bytearray]],
                 counts: _Counts, n: int, by_ns: dict[int, list[bytes]]) -> None:
        self._terms, self._counts, self._n = terms, counts, n
        self._sorted = by_ns

    def stats(self, ns: int) -> tuple[int, int, int]:
        got = self._counts.get(ns)
        if got is None:
            return 0, 0, 0
        k = bisect.bisect_left(got[0], self._n)
        return got[1][k - 1] if k else (0, 0, 0)

    def prefixed(self, ns: int, prefix: bytes) -> list[bytes]:
        """The staged terms of namespace ``ns`` visible in this snapshot that start with
        ``prefix``, sorted: a binary search in the namespace's sorted terms (a scan of
        every staged term, up to a flush's worth of memories' ~20 each, without them)."""
        n = self._n
        terms = self._sorted.get(ns)
        if not terms:
            return []
        terms = terms[:]  # (one copy: a newer snapshot's view may insert into the list)
        out = []
        for i in range(bisect.bisect_left(terms, prefix), len(terms)):
            t = terms[i]
            if not t.startswith(prefix):
                break
            idx = self._terms[(ns, t)][0]
            if idx and idx[0] < n:  # staged before this snapshot's end
                out.append(t)
        return out

    def get(self, ns: int, term: bytes, dtype: np.dtype) -> np.ndarray | None:
        got = self._terms.get((ns, term))
        if got is None:
            return None
        idx, rows = got
        k = bisect.bisect_left(idx, self._n)  # entries staged before this snapshot's end
        if not k:
            return None
        return np.frombuffer(bytes(rows[:k * _ROW.size]), dtype=dtype)


class _Build:
    """Decoded staged entries of one run between merges (append-only; shared by views):
    a format-5/6 table's entries first, then the window's ids."""

    def __init__(self, first: tuple[bytes, int]) -> None:
        self.first = first
        self.keys: list[int] = []  # the staged ids, in order
        self.tables = 0  # how many of them are table entries
        self.terms: dict[tuple[int, bytes], tuple[list[int], bytearray]] = {}
        self.counts: _Counts = {}
        #: per namespace: its terms in ``terms``, sorted (for :meth:`View.prefixed`)
        self.by_ns: dict[int, list[bytes]] = {}

    def add(self, mid: int, ns: int, terms: list[tuple[bytes, int, int]]) -> None:
        i = len(self.keys)
        for term, tf, dl in terms:
            got = self.terms.get((ns, term))
            if got is None:
                got = self.terms[(ns, term)] = ([], bytearray())
                bisect.insort(self.by_ns.setdefault(ns, []), term)
            got[1].extend(_ROW.pack(mid, tf, dl))  # rows first: readers bisect the indexes
            got[0].append(i)
        length, slength = lengths(terms)
        c = self.counts.get(ns)
        if c is None:
            c = self.counts[ns] = ([], [])
        d, t, u = c[1][-1] if c[1] else (0, 0, 0)
        c[1].append((d + 1, t + length, u + slength))
        c[0].append(i)
        self.keys.append(mid)


class _Cache:
    """Per engine: the builds of the last few runs (readers of older snapshots may still
    ask for the run before a merge)."""

    KEEP = 4

    def __init__(self, _owner: Any) -> None:
        self.lock = threading.Lock()
        self.builds: list[_Build] = []

    def build_for(self, first: tuple[bytes, int]) -> _Build:
        for b in self.builds:
            if b.first == first:
                return b
        b = _Build(first)
        self.builds = [b] + self.builds[:self.KEEP - 1]
        return b


_CACHES: PerOwner[_Cache] = PerOwner(_Cache)


def _fill(build: _Build, txn: lmdb.Transaction, env: Any, n_table: int, lo: int, hi: int) -> None:
    """Decode what ``build`` lacks of the ``n_table`` table entries of ``txn``, then of the
    window ``lo``..``hi - 1``."""
    if build.tables < n_table:
        with txn.cursor(db=env.db(DB)) as cur:
            if build.tables:
                if not cur.set_key(_U64.pack(build.keys[build.tables - 1])):
                    raise CorruptionError("data.mdb: a staged postings entry vanished between "
                                          "merges")
                more: Iterable[tuple[bytes, bytes]] = cur.iternext()
                next(iter(more), None)  # (the entry the build already holds)
            else:
                cur.first()
                more = cur.iternext()
            for k, v in more:
                if build.tables >= n_table:
                    break
                build.add(_U64.unpack(k)[0], *decode(v))
                build.tables += 1
    start = lo + len(build.keys) - build.tables
    for mid in range(start, hi):
        build.add(mid, *record_terms(txn, env, mid))


def view(txn: lmdb.Transaction, env: Any, owner: Any = None) -> View | None:
    """The staged postings visible in ``txn`` (None: none). With ``owner`` (an engine;
    ``txn`` read-only), the decoded entries are cached per owner and shared between its
    snapshots; without, they are decoded for this call only (a write transaction, whose
    entries may still be aborted; the derived terms are memoised all the same)."""
    lo, hi = window(txn, env)
    n_table = _table_count(txn, env)
    n = n_table + hi - lo
    if not n:
        return None
    first_entry = b""
    if n_table:
        with txn.cursor(db=env.db(DB)) as cur:
            cur.first()
            first_entry = cur.key() + cur.value()
    first = (first_entry, lo)
    if owner is None:
        build = _Build(first)
        _fill(build, txn, env, n_table, lo, hi)
        return View(build.terms, build.counts, n, build.by_ns)
    cache = _CACHES.get(owner)
    with cache.lock:
        build = cache.build_for(first)
        if build.tables > n_table or (build.tables < n_table and len(build.keys) > build.tables):
            # (a table that grew after window entries, or shrank without a merge: cannot
            # happen; rebuild rather than guess)
            cache.builds.remove(build)
            build = cache.build_for(first)
        if len(build.keys) < n:
            _fill(build, txn, env, n_table, lo, hi)
        return View(build.terms, build.counts, n, build.by_ns)
