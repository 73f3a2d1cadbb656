"""The transactional core: one write transaction over LMDB, the vector files and the log.

Every mutation is an *op* (a plain dict, CBOR-encoded into a log frame). A write
resolves the caller's requests into ops (assigning ids from the store counters),
applies them to the LMDB transaction and to vector rows beyond the committed slot
count (invisible to readers), appends their frames to the log and makes them durable,
then marks forgotten slots dead, and commits. ``apply_op`` is also what replay runs.

Readers take an LMDB snapshot, read the counters in it (slot count, generation,
sequence) and look only at the rows and liveness that snapshot implies.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import lmdb
import numpy as np

from . import (_capacity, _filter_index, _forget, _ingest, _lexical_index, _lexstage, _lmdbcheck,
               _mutate, _openlock, _pending)
from . import _records as R
from . import _storage as S
from ._backend import EngineChecks
from ._log import FILE_HEADER, LogFile, encode_frame, iter_frames, log_file
from ._rawmemo import RawMemo, owned
from ._vectors import (ROW_KEYS, SLOT_DTYPE, GenerationGone, VectorFiles, bad_rows, op_row_fields,
                       op_row_ok, row_crc, rows_pass, slot_file, slot_row, vector_file)
from .errors import (ClosedError, CorruptionError, DuplicateKeyError, EmbedderMismatchError,
                     FormatVersionError, InvalidInputError, MemoryNotFoundError,
                     NeedsRecoveryError, NotAStoreError, StorageError, StoreError)

logger = logging.getLogger("mnemos_kv")

DEFAULT_NS = "default"
DEFAULT_NS_ID = 0
_NS_REV = b"\x00"  # namespaces db: b"\0" + u32(id) -> name (names never start with NUL)
#: Vector and slot files, and the log file, are fdatasync'ed (a *flush*) at least every
#: this many operations. Between flushes a committed frame is durable in LMDB's
#: ``pending`` table (the commit's own sync), so a small write costs one LMDB commit.
VSYNC_EVERY = 256
#: A write whose frames would take ``pending`` beyond this many bytes syncs the log
#: file itself instead (large batches: one log fdatasync is cheaper than copying their
#: frames into LMDB).
PENDING_MAX_BYTES = 1 << 20
_PENDING_KEY = struct.Struct(">IQ")  # log segment, byte offset of the frames in it
_VROW_KEY = struct.Struct(">IQ")     # generation, slot
#: Decoded records by their stored bytes (``_rawmemo``), for the answers of ``ask``: one
#: process-wide memo (a decoding depends on the bytes alone), bounded.
_RECORDS: RawMemo[R.Record] = RawMemo(max_bytes=16 << 20, max_item=256 << 10)
#: Accounted bytes of a kept record per stored byte (the decoded objects weigh more).
RECORD_OVERHEAD = 4


def vrow_key(gen: int, slot: int) -> bytes:
    """Key of the ``vrows`` entry holding the unflushed vector row ``slot`` of ``gen``."""
    return _VROW_KEY.pack(gen, slot)


def logged_op(op: dict[str, Any], slot: int, crc: int | None = None) -> dict[str, Any]:
    """The form of a ``mem``/``update`` op in the log file (format 3): the vector's slot
    and checksum (``vrow``, and ``vc32``, its CRC-32, since format 6; ``vcrc``, a
    CRC-16, before) instead of its bytes, which the vector file holds (each vector is
    stored once; export puts it back)."""
    out = {k: v for k, v in op.items() if k != "vec" and k not in ROW_KEYS}
    out.update(op_row_fields(slot, op["vec"], crc))  # (``crc``: the row's, when known)
    return out


def pending_key(seg: int, off: int) -> bytes:
    """Key of the ``pending`` entry holding the frames written at ``off`` of segment ``seg``."""
    return _PENDING_KEY.pack(seg, off)


@dataclass
class State:
    """The counters in ``meta/state``; one consistent copy per transaction."""

    seq: int = 0          # last committed log sequence number
    next_id: int = 1      # next memory id
    n_slots: int = 0      # rows used in the current generation
    log_end: int = 0      # committed end of the current log segment (bytes)
    log_seg: int = 1      # current log segment
    gen: int = 1          # current vector/slot file generation
    next_ns: int = 1      # next namespace id (0 is "default")
    live: int = 0         # live memories, all namespaces
    vsync_seq: int = 0    # vector/slot files are known durable up to this seq ...
    vsync_slots: int = 0  # ... holding this many rows ...
    vsync_off: int = 0    # ... and the log frames after it start at this offset
    live_bytes: int = 0   # capacity bytes of the live memories (see _capacity.entry_bytes)
    usage: int = 0        # 1: live_bytes and namespace "bytes" are tracked since creation
    unsorted: int = 0     # 1: an update gave an id a slot after larger ids (slot ids not
                          # ascending) in this generation; compaction sorts them again
    log_sync: int = 0     # the log file is fdatasync'ed up to here; the frames in
                          # [log_sync, log_end) are also in the ``pending`` table (format 3;
                          # a store of an older format has none: log_sync = log_end)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# -- the counter rules every engine's apply_op shares ---------------------------------------

def take_id(st: State, mid: int, allow_gaps: bool) -> None:
    """A ``mem`` op's id must be the store's next id (a replay of a namespace-filtered
    export may skip ids: ``allow_gaps``). :raises CorruptionError:"""
    if allow_gaps and mid > st.next_id:
        st.next_id = mid
    if mid != st.next_id:
        raise CorruptionError(f"op assigns id {mid} but the store's next id is {st.next_id}")


def take_ns(st: State, nid: int, allow_gaps: bool) -> None:
    """An ``ns`` op's id must be the next namespace id (gaps as for ``take_id``)."""
    if allow_gaps and nid > st.next_ns:
        st.next_ns = nid
    if nid != st.next_ns:
        raise CorruptionError(f"op creates namespace id {nid}, expected {st.next_ns}")


def base_counters(st: State, op: dict[str, Any]) -> int:
    """A ``base`` op (the end of a base snapshot) sets the source's counters; returns its seq."""
    if int(op["next_id"]) < st.next_id or int(op["next_ns"]) < st.next_ns:
        raise CorruptionError("base snapshot counters are behind its content")
    st.next_id, st.next_ns = int(op["next_id"]), int(op["next_ns"])
    return int(op["seq"])


@dataclass
class Snapshot:
    """What a reader sees: an LMDB read transaction plus the matching vector views."""

    txn: lmdb.Transaction
    state: State
    matrix: np.ndarray
    slots: np.ndarray
    engine: Any = None  # the engine it came from (per-engine caches key on it)
    _staged: Any = field(default=False, repr=False)  # the staged postings (False: not read)

    def staged(self) -> "_lexstage.View | None":
        """This snapshot's staged BM25 postings (``_lexstage``), read once."""
        if self._staged is False:
            self._staged = _lexstage.view(self.txn, self.engine.env, self.engine)
        return self._staged

    def live_mask(self) -> np.ndarray:
        dead = self.slots["dead"]
        return (dead == 0) | (dead > self.state.seq)

    # -- the Reader protocol (see _backend): what the facade reads through -----------

    def ns_id(self, name: str) -> int | None:
        return self.engine.ns_id(name, self.txn)

    def ns_name(self, nid: int) -> str:
        return self.engine.ns_name(nid, self.txn)

    def namespaces(self) -> dict[str, dict[str, Any]]:
        return self.engine.namespaces(self.txn)

    def namespaces_from(self, head: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, info) of the namespaces whose name starts with ``head``, by name."""
        prefix = head.encode()
        with self.txn.cursor(db=self.engine.env.db("namespaces")) as cur:
            if cur.set_range(prefix):
                for k, v in cur:
                    if not bytes(k).startswith(prefix):
                        break
                    yield bytes(k).decode(), R.decode(bytes(v), "namespace")

    def ns_count(self, name: str) -> int:
        raw = self.txn.get(name.encode(), db=self.engine.env.db("namespaces"))
        return 0 if raw is None else int(R.decode(raw, "namespace")["count"])

    def record(self, mid: int) -> R.Record | None:
        return self.engine.record(self.txn, mid)

    def key_id(self, nid: int, key: str) -> int | None:
        return self.engine.key_id(self.txn, nid, key)

    def vector(self, rec: R.Record) -> np.ndarray:
        return self.engine.checked_vector(self, rec)

    def edges(self, mid: int, direction: str) -> list[tuple[int, int, str, float]]:
        return self.engine.edges(self.txn, mid, direction)

    def count(self, nid: int, node: Any) -> int:
        """Live memories of namespace ``nid`` whose metadata matches the parsed filter."""
        from . import _retrieval
        return int(np.count_nonzero(_retrieval.filter_mask(self.engine, self, [nid], node)))

    def memories(self, nid: int, since_us: int | None, until_us: int | None,
                 node: Any) -> Iterator[R.Record]:
        """Live records of namespace ``nid`` in (timestamp, id) order, within the bounds,
        matching the parsed filter ``node`` (None: all)."""
        from . import _retrieval
        eng = self.engine
        lo = S.ts_key(since_us) if since_us is not None else b""
        wanted: set[bytes] | None = None
        if node is not None:
            hit = _retrieval.filter_mask(eng, self, [nid], node)
            wanted = {S.u64(int(i)) for i in self.slots["id"][np.flatnonzero(hit)].tolist()}
            if not wanted:
                return
        prefix = S.u32(nid)
        with self.txn.cursor(db=eng.env.db("time")) as cur:
            if not cur.set_range(prefix + lo):
                return
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    break
                if until_us is not None and S.from_ts_key(k[4:12]) > until_us:
                    break
                if wanted is not None and k[12:20] not in wanted:
                    continue
                rec = eng.record(self.txn, S.from_u64(k[12:20]))
                if rec is not None:
                    yield rec

    def search(self, plan: Any, node: Any) -> list[tuple[Any, R.Record]]:
        """The planner's hits for ``plan`` (a ``_retrieval.Query``; ``node``: a parsed
        metadata filter or None) with their records, best first."""
        import dataclasses as _dc

        from . import _retrieval
        eng = self.engine
        if node is not None and plan.ns_ids:
            plan = _dc.replace(plan, allowed=_retrieval.filter_mask(eng, self, plan.ns_ids, node))
        out = []
        damaged: CorruptionError | None = None
        for hit in _retrieval.run(eng, self, plan):
            try:
                rec = eng.record(self.txn, hit.id, memo=True)
            except CorruptionError as exc:  # raised after the vectors ranked before it
                damaged = exc
                break
            if rec is not None:
                out.append((hit, rec))
        # a corrupted vector is an error, not an answer: the rows of the answers are
        # checked at once (one CRC over their XOR; row by row when that fails)
        eng.check_vectors(self, [rec for _, rec in out])
        if damaged is not None:
            raise damaged
        return out

    # what the planner (_retrieval) reads besides the slot columns
    def bm25_postings(self, ns_ids: Sequence[int], terms: Sequence[bytes],
                      **kw: Any) -> tuple[np.ndarray, np.ndarray]:
        return _lexical_index.bm25_postings(self.txn, self.engine.env, ns_ids, terms,
                                            staged=self.staged(), **kw)

    def question_ids(self, ns_ids: Sequence[int]) -> np.ndarray:
        return _lexical_index.question_ids(self.txn, self.engine.env, ns_ids, self.staged())

    def lexical_documents(self, ns_ids: Sequence[int]) -> int:
        return _lexical_index.stats(self.txn, self.engine.env, ns_ids, self.staged())[0]

    def term_counts(self, ns_ids: Sequence[int], terms: Sequence[bytes]) -> np.ndarray:
        return _lexical_index.term_counts(self.txn, self.engine.env, ns_ids, terms, self.staged())

    def surface_prefixed(self, ns_ids: Sequence[int], prefix: str, limit: int) -> list[str] | None:
        return _lexical_index.surface_prefixed(self.txn, self.engine.env, ns_ids, prefix, limit,
                                               self.staged())

    def graph_spread(self, seeds: Sequence[int], scores: Sequence[float]
                     ) -> tuple[np.ndarray, np.ndarray]:
        from . import _graph
        return _graph.spread(self.txn, self.engine.env, seeds, scores)

    def speaker_ids(self, ns_ids: Sequence[int], text: str) -> tuple[np.ndarray, int]:
        return _lexical_index.speaker_ids(self.txn, self.engine.env, ns_ids, text,
                                          self.staged())

    def has_edges(self) -> bool:
        return bool(int(self.txn.stat(self.engine.env.db("edges_in"))["entries"]))

    def reply_sources(self, dst_ids: Sequence[int], relation: str) -> list[tuple[int, int]]:
        """``(i, src)`` for each edge ``src -relation-> dst_ids[i]`` of positive weight."""
        env = self.engine.env
        rel_bytes = relation.encode("utf-8")
        out: list[tuple[int, int]] = []
        with self.txn.cursor(db=env.db("edges_in")) as cur:
            for i, dst in enumerate(dst_ids):
                key = S.u64(int(dst))
                if not cur.set_range(key):
                    continue
                for k, v in cur:
                    if not k.startswith(key):
                        break
                    if k[16:] == rel_bytes and S.from_f64(v) > 0:
                        out.append((i, S.from_u64(k[8:16])))
        return out

    def graph(self, nids: Sequence[int]) -> Any:
        from . import _graph
        return _graph.to_networkx(self.engine, self.txn, list(nids))

    def is_pinned(self, nid: int, mid: int) -> bool:
        return _capacity.is_pinned(self.engine, self.txn, nid, mid)

    def limits(self) -> dict[str, Any]:
        return _capacity.limits(self.engine, self.txn)

    def evicted_counts(self) -> dict[int, int]:
        return _capacity.evicted_counts(self.engine, self.txn)

    def pinned_ids(self, nid: int | None) -> list[int]:
        return [int(i) for i in _capacity.pinned_ids(self.engine, self.txn, nid).tolist()]

    def eviction_note(self, mid: int) -> dict[str, Any] | None:
        return _capacity.note(self.engine, self.txn, mid)

    def capacity_columns(self, nid: int | None) -> tuple[np.ndarray, ...]:
        return _capacity.snapshot_columns(self, nid)

    def digest_records(self) -> Iterator[tuple[R.Record, bytes]]:
        """Every live record in id order with its vector's bytes (for the state digest)."""
        with self.txn.cursor(db=self.engine.env.db("records")) as cur:
            for _k, v in cur:
                rec = R.Record.from_bytes(v)
                yield rec, self.matrix[rec.slot].tobytes()

    def digest_edges(self) -> Iterator[tuple[int, int, str, float, int | None]]:
        """Every edge (src, dst, relation, weight, namespace id of src) in (src, dst,
        relation bytes) order."""
        rdb = self.engine.env.db("records")
        with self.txn.cursor(db=self.engine.env.db("edges_out")) as cur:
            for k, v in cur:
                raw = self.txn.get(k[:8], db=rdb)
                ns = None if raw is None else R.Record.from_bytes(raw).ns
                yield S.from_u64(k[:8]), S.from_u64(k[8:16]), k[16:].decode(), S.from_f64(v), ns


class Ref(NamedTuple):
    """In a ``("bind", request)`` request: the result of request ``item`` of the same write.

    ``db.batch()`` uses it to name a memory remembered earlier in the same transaction,
    whose id is only assigned inside the transaction.
    """

    item: int


@dataclass
class _Ctx:
    txn: lmdb.Transaction
    state: State
    matrix: np.ndarray
    slots: np.ndarray
    frames: list[bytes] = field(default_factory=list)
    dead: list[tuple[int, int]] = field(default_factory=list)   # (slot, seq)
    ns_delta: dict[int, int] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)
    new_ns: list[str] = field(default_factory=list)  # namespaces created (uncommitted)
    log: bool = True           # False: restoring a base snapshot (no log frames)
    allow_gaps: bool = False   # True: logged ids may skip (filtered exports, base snapshots)
    ns_bytes: dict[int, int] = field(default_factory=dict)  # capacity bytes delta per namespace
    evicted: list[R.Record] = field(default_factory=list)   # evicted in this write (callback)
    cap_scopes: set[Any] = field(default_factory=set)       # capacity limits set in this write
    #: memories added whose BM25 postings and filter entries are not written yet (ns,
    #: id, text, metadata): a run of ``mem`` ops indexes them at once (see flush_index);
    #: None: index each one as it is applied
    pending: list[tuple[int, int, str, Any]] | None = None
    #: namespace ids looked up by a run of remember requests (cleared by any other)
    ns_seen: dict[str, int] = field(default_factory=dict)


def clear_pending(env: Any, txn: lmdb.Transaction) -> None:
    """Empty the ``pending`` table (the log file holds its frames durably now)."""
    pdb = env.db("pending")
    if txn.stat(pdb)["entries"]:
        txn.drop(pdb, delete=False)


def clear_vrows(env: Any, txn: lmdb.Transaction) -> None:
    """Empty the ``vrows`` table (the vector file holds its rows durably now)."""
    vdb = env.db("vrows")
    if txn.stat(vdb)["entries"]:
        txn.drop(vdb, delete=False)


def _frames_ok(data: bytes) -> bool:
    """True when ``data`` is whole, checksummed, consecutive log frames."""
    try:
        for _ in iter_frames(data, 0, len(data)):
            pass
    except CorruptionError:
        return False
    return True


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _closed_when_dropped(log: LogFile) -> LogFile:
    """Close ``log``'s descriptor once nothing references it (and never before).

    (``weakref.finalize`` must not be given a bound method of the object: that would
    keep it alive until the interpreter exits.)
    """
    weakref.finalize(log, _close_fd, log.fd)
    return log


def history_files(root: str) -> list[str]:
    """Files of ``root`` that hold store history: a base snapshot, or a log with frames.

    (A log holding only its header is what a creator that died before its first commit
    leaves: nothing to lose.)
    """
    out = []
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if name.startswith("base.") and name.endswith(".msnap"):
            out.append(full)
        elif name.startswith("log.") and name.endswith(".mlog"):
            try:
                if os.path.getsize(full) > FILE_HEADER:
                    out.append(full)
            except OSError:
                pass
    return out


def _lmdb_usable(root: str) -> bool:
    """False when data.mdb is missing or empty (LMDB would make a new, empty one)."""
    try:
        return os.path.getsize(os.path.join(root, "data.mdb")) > 0
    except OSError:
        return False


def path_error(path: str, exc: OSError) -> StoreError:
    """An OSError about the store directory itself, as a StoreError naming the path."""
    import errno as _errno
    why = {_errno.ENOTDIR: "a part of the path is a file, not a directory",
           _errno.EACCES: "permission denied", _errno.EPERM: "permission denied",
           _errno.EROFS: "the file system is read-only",
           _errno.ENAMETOOLONG: "the path is too long",
           _errno.ENOENT: "a parent directory does not exist"}.get(exc.errno or 0, exc.strerror)
    cls = NotAStoreError if exc.errno in (_errno.ENOTDIR, _errno.ENOENT) else StoreError
    return cls(f"cannot use {path!r} as a store: {why} ({type(exc).__name__}: {exc})")


def _slots_needed(req: tuple[Any, ...]) -> int:
    """How many fresh slots a write request may take (rows reserved before applying)."""
    kind = req[0]
    if kind in ("remember", "update", "upsert"):
        return 1
    if kind == "remember_block":  # (a validated remember_many call: _bulkcheck.Block)
        return len(req[1])
    if kind == "op":
        return 1 if req[1].get("op") in _mutate.SLOT_OPS else 0
    if kind in ("call", "apply"):
        return int(req[2])
    if kind == "bind":
        return _slots_needed(req[1])
    return 0


def _plain_forget(req: tuple[Any, ...]) -> bool:
    """A ``("op", {"op": "forget", "id": n})`` request (what replay sends)."""
    if req[0] != "op":
        return False
    op = req[1]
    return op.get("op") == "forget" and len(op) == 2 and type(op.get("id")) is int


class Engine(EngineChecks):
    """The store internals shared by the ``Mnemos`` facade and its namespace handles."""

    def __init__(self, path: str | os.PathLike[str], *, embedder: Any, embedder_given: bool,
                 clock: Callable[[], float], readonly: bool, map_size: int,
                 durable: bool = True) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self.clock = clock
        self.durable = durable  # True: durability="full"; False: "fast" (see docs/durability.md)
        #: ANN candidate stage (see _ann.wanted / _ann.strict): None = above
        #: _ann.THRESHOLD slots (default), True = always, False = never, "approximate"
        self.ann_mode: bool | str | None = None
        self.closed = False
        #: called after a commit with the records this process's write evicted
        self.on_evict: Callable[[list[R.Record]], None] | None = None
        self._check_path()
        self.env = S.acquire(self.path, readonly=readonly, map_size=map_size)
        try:
            self._ns_cache: dict[str, int] = {DEFAULT_NS: DEFAULT_NS_ID}
            self._ns_names: dict[int, str] = {DEFAULT_NS_ID: DEFAULT_NS}
            self._ns_lock = threading.Lock()
            #: the last ``state`` bytes decoded or written, with their counters (every
            #: transaction reads the state; it changes once per commit)
            self._state_memo: tuple[bytes, dict[str, int]] = (b"", {})
            #: the same for each namespace's record (its count changes with every write)
            self._ns_memo: dict[int, tuple[bytes, dict[str, Any]]] = {}
            fmt = self._load_or_create(embedder)
            self.format = fmt
            self.dim = int(fmt["dim"])
            self.embedder_name = str(fmt["embedder"])
            self.embedder = self._match_embedder(embedder, embedder_given)
            self.vectors = VectorFiles(self.path, self.dim, readonly)
            try:
                st = self._open_files()
            except NeedsRecoveryError:
                raise
            except CorruptionError as exc:
                raise NeedsRecoveryError(f"{exc}; nothing was changed. {self.recover_hint()}") from exc
            if not readonly:  # after every check of the open: a refused open writes nothing
                _lexical_index.ensure_built(self.env)  # stores from before the lexical index
                _filter_index.ensure_built(self.env)  # ... and before the filter index
                self._upgrade_format()
            self._vsync_check = not readonly
            logger.debug("%s: opened (%s, seq %d, %d memories, generation %d)", self.path,
                         "read-only" if readonly else "read-write", st.seq, st.live, st.gen)
            if not readonly and (self.log.size() != st.log_end or st.vsync_seq != st.seq):
                logger.info("%s: recovering on open (log %d bytes, committed %d; vector files "
                            "synced to seq %d of %d)", self.path, self.log.size(), st.log_end,
                            st.vsync_seq, st.seq)
                # drops an uncommitted log tail left by a crashed writer, and rewrites
                # the vector rows written since the last file sync from the log
                self.write([])
        except BaseException:
            for part in (getattr(self, "vectors", None), getattr(self, "log", None)):
                if part is not None:  # a refused open keeps no file open
                    part.close()
            S.release(self.env)
            raise

    # -- opening ------------------------------------------------------------------

    def _open_files(self) -> State:
        """Open the log segment and vector generation of the current state.

        A compaction committed by another process between reading the state and
        opening its files removes them: read the newer state and try again.
        """
        st = self.read_state()
        for attempt in range(5):
            log = None
            try:
                log = LogFile(self.path, st.log_seg, self.readonly)
                self.vectors.view(st.gen, st.n_slots)
                self.log = log
                return st
            except CorruptionError:
                if log is not None:
                    log.close()
                fresh = self.read_state()
                if attempt == 4 or (fresh.log_seg, fresh.gen) == (st.log_seg, st.gen):
                    raise
                st = fresh
        raise AssertionError("unreachable")

    def _check_path(self) -> None:
        """Refuse what is not a store, and a store whose LMDB file is lost or damaged,
        before LMDB opens (and would either recreate or map) ``data.mdb``."""
        p = self.path
        try:
            if os.path.exists(p):
                if not os.path.isdir(p):
                    raise NotAStoreError(f"{p!r} is a file, not a mnemos-kv store directory")
                entries = set(os.listdir(p)) - set(_openlock.LOCK_FILES)
                if history_files(p) and not _lmdb_usable(p):
                    raise NeedsRecoveryError(
                        f"{p!r}: data.mdb is {'missing' if 'data.mdb' not in entries else 'empty'}"
                        f" but the replay log holds the store's history; nothing was changed. "
                        f"Rebuild it with Mnemos.recover({p!r}) or `mnemos-kv recover {p}`")
                if "data.mdb" not in entries and entries:
                    raise NotAStoreError(
                        f"{p!r} is a non-empty directory without a mnemos-kv store (no data.mdb)")
                if "data.mdb" not in entries and self.readonly:
                    raise NotAStoreError(f"{p!r} holds no store; cannot create one read-only")
                if "data.mdb" in entries and os.path.getsize(os.path.join(p, "data.mdb")):
                    try:
                        _lmdbcheck.check_meta(os.path.join(p, "data.mdb"))
                    except CorruptionError as exc:
                        raise NeedsRecoveryError(
                            f"{exc}; LMDB cannot open it safely and nothing was changed. Rebuild "
                            f"the store with Mnemos.recover({p!r}) or `mnemos-kv recover {p}`"
                        ) from exc
            else:
                if self.readonly:
                    raise NotAStoreError(f"{p!r} does not exist; cannot create a store read-only")
                os.makedirs(p, exist_ok=True)
        except OSError as exc:
            raise path_error(p, exc) from exc

    def _load_or_create(self, embedder: Any) -> dict[str, Any]:
        if self.env.has_db("meta"):
            with self.env.read() as txn:
                raw = txn.get(b"format", db=self.env.db("meta"))
        else:
            raw = None
        if raw is None:
            if history_files(self.path):
                raise self._lost_lmdb()
            if self.readonly or not self.env.has_db("meta"):
                raise NotAStoreError(f"{self.path!r} holds no initialised mnemos-kv store")
            return self._create(embedder)
        fmt = R.decode(raw, "store format")
        if not isinstance(fmt, dict) or "version" not in fmt:
            raise CorruptionError(f"{self.path!r}: store format record is malformed")
        if fmt["version"] > R.FORMAT_VERSION:
            raise FormatVersionError(
                f"{self.path!r} has format version {fmt['version']}; this mnemos-kv reads up to "
                f"{R.FORMAT_VERSION}. Upgrade mnemos-kv to open it.")
        return fmt

    def _create(self, embedder: Any) -> dict[str, Any]:
        from ._log import LogFile as _LF
        st = State(usage=1)
        fmt = {"version": R.FORMAT_VERSION, "embedder": embedder.name, "dim": int(embedder.dim)}

        def body(txn: lmdb.Transaction) -> None:
            meta = self.env.db("meta")
            if txn.get(b"format", db=meta) is not None:  # another process won the race
                return
            if history_files(self.path):  # under the writer lock: no creator is racing us
                raise self._lost_lmdb()
            # The files are made under the writer lock: a process racing to create
            # the same store waits here, then finds the format record and keeps them.
            VectorFiles.create(self.path, int(embedder.dim), st.gen)
            _LF.create(self.path, st.log_seg, 0)
            S.fsync_path(self.path)  # the log's directory entry is durable before the commit
            st.log_end = st.vsync_off = st.log_sync = os.path.getsize(log_file(self.path, st.log_seg))
            txn.put(b"format", R.encode(fmt), db=meta)
            txn.put(b"state", R.encode(st.to_dict()), db=meta)
            ns = self.env.db("namespaces")
            txn.put(DEFAULT_NS.encode(), R.encode({"id": DEFAULT_NS_ID, "count": 0}), db=ns)
            txn.put(_NS_REV + S.u32(DEFAULT_NS_ID), DEFAULT_NS.encode(), db=ns)
        self.env.write(body)
        with self.env.read() as txn:
            return R.decode(txn.get(b"format", db=self.env.db("meta")), "store format")

    def _upgrade_format(self) -> None:
        """Mark an older-format store as this format (docs/format.md): what this version
        writes (checksummed records and rows) an older mnemos-kv cannot read, so from
        now on it refuses the store with FormatVersionError instead of misreading it."""
        if int(self.format["version"]) >= R.FORMAT_VERSION:
            return
        meta = self.env.db("meta")

        def body(txn: lmdb.Transaction) -> None:
            fmt = R.decode(txn.get(b"format", db=meta), "store format")
            if int(fmt["version"]) < R.FORMAT_VERSION:
                fmt["version"] = R.FORMAT_VERSION
                txn.put(b"format", R.encode(fmt), db=meta)
        self.env.write(body)
        self.format = dict(self.format, version=R.FORMAT_VERSION)

    def recover_hint(self) -> str:
        return (f"Rebuild the store from its log with Mnemos.recover({self.path!r}) or "
                f"`mnemos-kv recover {self.path}`")

    def _lost_lmdb(self) -> NeedsRecoveryError:
        p = self.path
        return NeedsRecoveryError(
            f"{p!r}: data.mdb holds no store, but the replay log holds the store's history "
            f"(data.mdb was replaced or emptied?); nothing was changed. Rebuild it with "
            f"Mnemos.recover({p!r}) or `mnemos-kv recover {p}`")

    def _match_embedder(self, embedder: Any, given: bool) -> Any:
        if embedder.name == self.embedder_name and int(embedder.dim) == self.dim:
            return embedder
        if given:
            raise EmbedderMismatchError(
                f"store {self.path!r} was made with embedder {self.embedder_name!r} "
                f"(dim {self.dim}); got {embedder.name!r} (dim {embedder.dim}). Open it with "
                "the same embedder.")
        return None  # opened without its custom embedder: reads work, embedding does not

    def check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"store {self.path!r} is closed")
        if self.env.forked:
            raise ClosedError(
                f"store {self.path!r} was opened in process {self.env.pid}, before this process "
                "was forked from it; a child process must open stores itself (see "
                "docs/concurrency.md)")

    # -- state ------------------------------------------------------------------------

    def _state_in(self, txn: lmdb.Transaction) -> State:
        raw = txn.get(b"state", db=self.env.db("meta"))
        if raw is None:
            raise CorruptionError(f"{self.path!r}: store state record is missing")
        memo = self._state_memo  # (one read: another thread may replace it)
        if memo[0] == raw:
            return State(**memo[1])
        d = R.decode(raw, "store state")
        st = State()
        for k, v in d.items():
            if hasattr(st, k):
                setattr(st, k, v)
        if "log_sync" not in d:  # formats 1-2 synced the log on every commit
            st.log_sync = st.log_end
        self._state_memo = (raw, st.to_dict())
        return st

    def put_state(self, txn: lmdb.Transaction, st: State) -> None:
        """Write the counters ``st`` into ``meta/state`` (remembered for :meth:`_state_in`)."""
        d = st.to_dict()
        raw = R.encode(d)
        txn.put(b"state", raw, db=self.env.db("meta"))
        self._state_memo = (raw, d)

    def read_state(self) -> State:
        with self.env.read() as txn:
            return self._state_in(txn)

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A consistent read view: LMDB snapshot, counters, and vector rows up to n_slots."""
        self.check_open()
        for attempt in range(5):
            with self.env.read() as txn:
                st = self._state_in(txn)
                try:
                    matrix, slots = self.vectors.view(st.gen, st.n_slots)
                except GenerationGone:
                    # A compaction in another process committed a newer generation and
                    # removed this snapshot's files before we mapped them: take a newer
                    # snapshot.
                    if attempt == 4:
                        raise
                    continue
                if not self.env.has_db(_lexstage.DB) and txn.get(_lexstage.DB.encode()) is not None:
                    # another process made the staging table after this one opened
                    # read-only (it upgraded the store): a snapshot must see it
                    if self.env.open_late(_lexstage.DB) and attempt < 4:
                        continue
                if st.log_seg > self.log.segment:
                    self._follow_log(st)
                yield Snapshot(txn, st, matrix, slots, self)
                return

    def _follow_log(self, st: State) -> None:
        """Move ``self.log`` to the newer segment a snapshot names (a compaction in another
        process checkpointed): a handle that only reads would otherwise keep the removed
        segment open, and its disk space allocated, for as long as it lives."""
        try:
            self.open_log(st)
        except (CorruptionError, OSError) as exc:  # (LogGone: removed by a later compaction)
            # reads do not need the log: the next snapshot tries again, and a write
            # reports a damaged segment
            logger.debug("%s: log segment %d not followed: %s", self.path, st.log_seg, exc)

    # -- namespaces -------------------------------------------------------------------------

    def ns_id(self, name: str, txn: lmdb.Transaction | None = None) -> int | None:
        """The id of namespace ``name``, or None when it does not exist (in ``txn``).

        Always read from the transaction: a namespace dropped (by any process) and made
        again gets a new id, so a cached name -> id could be stale. (id -> name never
        changes: ids are not reused.)
        """
        if txn is None:
            with self.env.read() as t:
                return self.ns_id(name, t)
        raw = txn.get(name.encode(), db=self.env.db("namespaces"))
        if raw is None:
            return None
        known = self._ns_cache.get(name)
        memo = self._ns_memo.get(known) if known is not None else None
        if memo is not None and memo[0] == raw:  # the record this process wrote last
            return known
        nid = int(R.decode(raw, "namespace")["id"])
        with self._ns_lock:
            self._ns_cache[name] = nid
            self._ns_names[nid] = name
        return nid

    def ns_name(self, nid: int, txn: lmdb.Transaction) -> str:
        hit = self._ns_names.get(nid)
        if hit is not None:
            return hit
        raw = txn.get(_NS_REV + S.u32(nid), db=self.env.db("namespaces"))
        if raw is None:
            raise CorruptionError(f"namespace id {nid} has no name")
        name = raw.decode()
        with self._ns_lock:
            self._ns_names[nid] = name
        return name

    def namespaces(self, txn: lmdb.Transaction) -> dict[str, dict[str, Any]]:
        out = {}
        with txn.cursor(db=self.env.db("namespaces")) as cur:
            for k, v in cur:
                if k[:1] != _NS_REV:
                    out[k.decode()] = R.decode(v, "namespace")
        return dict(sorted(out.items()))

    # -- the write path ------------------------------------------------------------------------

    def open_log(self, st: State) -> LogFile:
        """The log segment ``st`` names, reopened when a checkpoint moved to a new one.

        A reader holding an older snapshot gets its own read-only handle of the older
        segment, and ``self.log`` (what writers append to) only ever moves forward: a
        reader never switches it back under a writer thread. Handles that are not the
        current one are closed when dropped, never while another thread may still read
        them (closing could hand the descriptor number to an unrelated file).
        :raises LogGone: that older segment was already removed by a compaction.
        """
        with self._ns_lock:
            if self.log.segment == st.log_seg:
                return self.log
            if st.log_seg < self.log.segment:
                return _closed_when_dropped(LogFile(self.path, st.log_seg, True))
            fresh = LogFile(self.path, st.log_seg, self.readonly)
            old, self.log = self.log, fresh
            _closed_when_dropped(old)  # a reader of this process may still hold it
            return self.log

    def write(self, requests: Sequence[tuple[Any, ...]], *, log: bool = True,
              allow_gaps: bool = False, sync: bool | None = None) -> list[Any]:
        """Resolve, apply, log and commit ``requests`` in one transaction; returns results.

        Each request is a tuple whose first item names it: ``("remember", ns, text,
        metadata, type, ts_us, key, vec)``, ``("forget", ns, id)``, ``("connect", ns, src,
        dst, relation, weight)``, ``("disconnect", ns, src, dst, relation)``, ``("call",
        fn, n_new)`` (``fn(engine, ctx)`` resolves and applies its own ops; it adds at most
        ``n_new`` memories), or ``("op", op)`` (an already-resolved op: replay). In a
        ``connect``, ``src``/``dst`` may be ``("ref", i)``: the id made by request ``i``
        of the same call (used by ``ingest_document`` to add and link in one go).
        ``("bind", request)`` is ``request`` with its :class:`Ref` items replaced by the
        results of earlier requests of this write (used by ``db.batch()``).

        A write with any request but ``"op"`` ends by enforcing the capacity limits
        (evictions are ops of the same transaction; see ``_capacity``).

        The log frames are durable before the commit returns: in the ``pending`` table of
        the commit itself, or fdatasync'ed to the log before it (write-ahead; see
        docs/durability.md). ``sync`` (default: the store's durability) also makes the
        LMDB commit durable before returning; without it a machine crash may undo this
        commit (never part of it).
        """
        self.check_writable()
        n_new = sum(_slots_needed(r) for r in requests)
        enforce = any(r[0] != "op" for r in requests)
        holder: dict[str, Any] = {}

        def body(txn: lmdb.Transaction) -> list[Any]:
            st = self._state_in(txn)
            holder.clear()
            holder["log_end"] = st.log_end
            self.open_log(st)
            size = self.log.size()
            if st.log_sync < st.log_end and (self._vsync_check or size < st.log_end):
                self._restore_log(txn, st)  # after a machine crash: frames from ``pending``
                size = self.log.size()
            self._reconcile(txn, st, size)
            if self._vsync_check:
                self._recover_vectors(txn, st)
            matrix, slots = self.vectors.ensure(st.gen, st.n_slots + n_new, have=st.n_slots)
            ctx = _Ctx(txn, st, matrix, slots, log=log, allow_gaps=allow_gaps, pending=[])
            holder["ctx"] = ctx
            seq0, slots0 = st.seq, st.n_slots
            self._resolve_all(ctx, requests)
            self.flush_index(ctx, stage=log)
            ctx.pending = None  # (capacity eviction reads the index as it goes)
            if enforce:
                _capacity.enforce(self, ctx)
            if not log:
                ctx.frames.clear()
            data = b"".join(ctx.frames)
            at = st.log_end
            # a big write flushes everything rather than copying its frames and rows
            # into LMDB
            # (``pending`` holds the frames since the last flush, and their new rows)
            flush = (not log or not ctx.frames or st.seq - st.vsync_seq >= VSYNC_EVERY
                     or at + len(data) - st.vsync_off
                     + (st.n_slots - st.vsync_slots) * self.dim * 4 > PENDING_MAX_BYTES)
            if ctx.frames:
                # The frames become durable either in the log file (fdatasync'ed now,
                # before the commit: write-ahead) or in ``pending`` (by the commit itself).
                # Dead marks need the first: an uncommitted one must always be findable
                # from a log tail beyond log_end (see _reconcile).
                sync_log = flush or bool(ctx.dead)
                holder["appended"] = True
                st.log_end = self.log.append(at, data, sync_log)
                if sync_log:
                    self._log_synced(txn, st)
                # the new rows, until the vector file is flushed, in the frames' entry
                # (format 7: one table for both; see _pending)
                rows = b"" if flush else matrix[slots0:st.n_slots].tobytes()
                if rows or not sync_log:
                    S.put_last(txn, pending_key(st.log_seg, at), _pending.pack(data, slots0, rows),
                               self.env.db("pending"))
            if ctx.dead:  # after the frames are durable in the log: write-ahead
                marks = np.array(ctx.dead, dtype=np.int64)
                slots["dead"][marks[:, 0]] = marks[:, 1]
            self._flush_ns_counts(ctx)
            if ctx.frames or st.vsync_seq != st.seq or st.seq != seq0:
                if flush:
                    self._mark_synced(txn, st)
                self.put_state(txn, st)
            return ctx.results

        def on_abort(txn: lmdb.Transaction) -> None:
            ctx = holder.get("ctx")
            if ctx is not None:
                self._forget_ns(ctx.new_ns)
            if holder.get("appended"):
                self.undo_tail(txn)

        results = self.env.write(body, on_abort, sync=self.durable if sync is None else sync)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: committed %d requests", self.path, len(requests))
        evicted = holder["ctx"].evicted if holder.get("ctx") is not None else None
        if evicted and self.on_evict is not None:
            _capacity.notify(self.on_evict, evicted)
        return results

    def sync(self) -> None:
        """Make every write committed so far durable, and the vector files synced.

        In ``durability="fast"`` this ends the window in which a machine crash could
        undo the last commit; in both modes it leaves nothing for the next open to redo.
        """
        self.check_writable()
        st = self.read_state()
        if st.vsync_seq != st.seq:
            self.write([], sync=True)  # syncs the vector files, commits, syncs LMDB
        else:
            self.env.sync_to_disk()

    def _mark_synced(self, txn: lmdb.Transaction, st: State) -> None:
        """A flush: fdatasync the log, the vector and the slot files; record that they
        hold everything up to now (and empty ``pending``)."""
        if st.log_sync != st.log_end:
            self.log.sync()
        self._log_synced(txn, st)
        _lexstage.merge(txn, self.env)  # the staged postings, into ``postings`` at once
        self.vectors.sync(st.gen)
        clear_pending(self.env, txn)
        clear_vrows(self.env, txn)  # (left by a format-6 writer)
        st.vsync_seq, st.vsync_slots, st.vsync_off = st.seq, st.n_slots, st.log_end

    def _log_synced(self, txn: lmdb.Transaction, st: State) -> None:
        """The log file was just fdatasync'ed up to ``log_end``: the frames in ``pending``
        are needed no more (its entries stay for their vector rows until the flush,
        :meth:`_mark_synced`; readers skip the frames before ``log_sync``)."""
        st.log_sync = st.log_end

    def _restore_log(self, txn: lmdb.Transaction, st: State) -> None:
        """Rewrite the committed log bytes ``[log_sync, log_end)`` from ``pending`` where
        the file differs, and fdatasync it.

        The log file is not synced on every commit (format 3): after a machine crash its
        unsynced tail may be missing, cut or zeroed, while the committed frames are in
        ``pending``. After a clean shutdown, or without a crash, nothing differs and
        nothing is written.
        """
        found = [(off, v) for seg, off, v in _pending.entries(txn, self.env.db("pending"))
                 if seg == st.log_seg and st.log_sync <= off < st.log_end]
        # (entries before log_sync keep only rows: their frames are in the file)
        # each entry's frames span up to the next entry (the last one: up to log_end)
        ends = [off for off, _v in found[1:]] + [st.log_end]
        if not found or found[0][0] != st.log_sync:
            raise NeedsRecoveryError(
                f"{self.path!r}: the unflushed log frames in data.mdb do not start at byte "
                f"{st.log_sync} of {self.log.path} ({st.log_end} are committed); nothing was "
                f"changed. {self.recover_hint()}")
        rewritten = 0
        for (off, value), end in zip(found, ends):
            try:
                data: bytes | None = _pending.unpack(value)[0]
            except CorruptionError:
                data = None
            have = self.log.read(off, end)
            if data is not None and have == data:
                continue
            if data is None or len(data) != end - off or not _frames_ok(data):
                # a damaged LMDB page: keep the file if it is intact
                if len(have) == end - off and _frames_ok(have):
                    continue
                raise NeedsRecoveryError(
                    f"{self.log.path}: committed bytes {off}..{end} are missing and "
                    f"their copy in data.mdb fails its checksum; nothing was changed. "
                    f"{self.recover_hint()}")
            self.log.append(off, data, durable=False)
            rewritten += 1
        if rewritten:
            self.log.sync()
            logger.info("%s: rewrote %d committed log writes (bytes %d..%d) from data.mdb after "
                        "an unclean shutdown", self.log.path, rewritten, st.log_sync, st.log_end)

    def _recover_vectors(self, txn: lmdb.Transaction, st: State) -> None:
        """Rewrite vector rows and slot columns changed since the last file sync.

        Vector and slot files are fdatasync'ed every VSYNC_EVERY operations, not on
        every commit (the log frames, which carry the vectors, are synced on every
        commit). After a machine crash the rows written since that sync may be lost,
        so the first writer after an open re-applies those frames from the log: a
        bounded amount of work (at most VSYNC_EVERY frames), and a no-op rewrite of
        identical bytes when nothing was lost.
        """
        self._vsync_check = False
        if st.vsync_seq == st.seq or st.vsync_off >= st.log_end:
            return
        matrix, slots = self.vectors.ensure(st.gen, st.n_slots, have=st.n_slots)
        next_slot = st.vsync_slots
        kept = self._unflushed_rows(txn, st)
        new_ids: dict[int, int] = {}
        rows: list[tuple[int, Any, tuple[Any, ...]]] = []
        dead: dict[int, int] = {}
        # (stores made before vsync_off was initialised hold 0 there: frames start after
        # the header)
        for _off, seq, payload in self.log.frames(max(st.vsync_off, FILE_HEADER), st.log_end):
            op = R.decode(payload, "log frame")
            kind = op.get("op")
            if kind in ("forget", "evict", "update"):
                mid = int(op["id"])
                slot = new_ids.get(mid)
                if slot is None:  # its latest slot: an update appends a newer one
                    hit = np.flatnonzero(slots["id"][: st.vsync_slots] == mid)
                    slot = int(hit[-1]) if hit.size else None
                if slot is not None:
                    dead[slot] = seq
            if kind in _mutate.SLOT_OPS:
                if next_slot >= st.n_slots:
                    raise CorruptionError(f"log holds more new memories than the store's {st.n_slots} slots")
                vec = op.get("vec")
                if vec is None:  # format 3: the row is in LMDB until the flush
                    vec = kept.get(next_slot)
                    if vec is None or not op_row_ok(op, vec):  # (a damaged LMDB page:
                        vec = matrix[next_slot].tobytes()   # keep the file's if intact)
                    if op.get("vrow") != next_slot or not op_row_ok(op, vec):
                        raise NeedsRecoveryError(
                            f"{self.path!r}: the unflushed vector row {next_slot} (seq {seq}) "
                            f"is missing or damaged in data.mdb; {self.recover_hint()}")
                rows.append((next_slot, vec,
                             slot_row(op["id"], op["ts"], op["ns"], op["type"], vec)))
                new_ids[int(op["id"])] = next_slot
                next_slot += 1
            elif kind == "drop":  # every slot of the namespace still live at this seq
                nid = int(op["ns"])
                d = slots["dead"][: st.vsync_slots]
                on_disk = np.flatnonzero((slots["ns"][: st.vsync_slots] == nid)
                                         & ((d == 0) | (d >= seq)))
                for slot in on_disk.tolist() + [r[0] for r in rows if int(r[2][3]) == nid]:
                    if slot not in dead:
                        dead[slot] = seq
        logger.info("%s: re-applying log frames after seq %d to the vector files (%d rows, %d "
                    "dead marks) after an unclean shutdown", self.path, st.vsync_seq, len(rows),
                    len(dead))
        # Readers in other processes may be reading these rows: write each row whole,
        # with its final dead mark, and only when it differs (after a clean shutdown
        # nothing differs and nothing is written).
        row = np.zeros(1, SLOT_DTYPE)
        for slot, vec, cols in rows:
            v = np.frombuffer(vec, dtype="<f4")
            if not np.array_equal(matrix[slot], v):
                matrix[slot] = v
            row[0] = cols
            row["dead"][0] = dead.pop(slot, 0)
            if slots[slot : slot + 1].tobytes() != row.tobytes():
                slots[slot] = row[0]
        for slot, seq in dead.items():
            if slots["dead"][slot] != seq:
                slots["dead"][slot] = seq
        self._mark_synced(txn, st)
        self.put_state(txn, st)

    def _unflushed_rows(self, txn: lmdb.Transaction, st: State) -> dict[int, bytes]:
        """The vector rows of generation ``st.gen`` kept in LMDB until the flush, by slot:
        in ``pending`` (format 7) and ``vrows`` (formats 3-6). A damaged ``pending`` entry
        is left out (logged): its rows are taken from the vector file when they pass the
        log's CRC there, else :meth:`_recover_vectors` refuses, naming the row."""
        out, bad = _pending.rows_in(
            (v for _seg, _off, v in _pending.entries(txn, self.env.db("pending"))), self.dim * 4)
        if bad:
            logger.warning("%s: %d unflushed write(s) in data.mdb (pending) are damaged; their "
                           "vector rows are taken from the vector file where it passes its "
                           "checks", self.path, bad)
        with txn.cursor(db=self.env.db("vrows")) as cur:
            for k, v in cur:
                gen, slot = _VROW_KEY.unpack(k)
                if gen == st.gen:
                    out.setdefault(slot, v)
        return out

    def undo_tail(self, txn: lmdb.Transaction) -> None:
        """After a write that appended to the log failed: drop its frames and dead marks.

        Runs under the writer lock (``txn``: a fresh write transaction) against the
        committed state, never against the failed write's own idea of the log's end:
        another process may have committed, and cleaned this tail up, in between.
        """
        st = self._state_in(txn)
        self.open_log(st)
        self._reconcile(txn, st)

    def _reconcile(self, txn: lmdb.Transaction, st: State, size: int | None = None) -> None:
        """Drop log frames beyond the committed end (a writer died before its commit).
        ``size``: the log file's size, when the caller just read it."""
        if size is None:
            size = self.log.size()
        if size == st.log_end:
            return
        if size < st.log_end:
            raise NeedsRecoveryError(
                f"{self.log.path}: log is {size} bytes but the store committed {st.log_end}; "
                f"the log was truncated outside mnemos-kv. {self.recover_hint()}")
        _, slots = self.vectors.ensure(st.gen, st.n_slots, have=st.n_slots)
        tail = self.log.tail_frames(st.log_end)
        if tail and tail[0][1] != st.seq + 1:
            # Not what a writer that died before its commit leaves (its frames continue
            # the committed sequence): LMDB does not prove these frames uncommitted, so
            # they are not cut. (data.mdb older than the log, e.g. restored from a copy.)
            raise NeedsRecoveryError(
                f"{self.log.path}: {size - st.log_end} bytes after the committed end hold frames "
                f"from seq {tail[0][1]}, but the store committed seq {st.seq}; the log and "
                f"data.mdb disagree and nothing was changed. {self.recover_hint()}")
        logger.info("%s: dropping %d uncommitted log bytes after seq %d (a writer died before "
                    "its commit)", self.log.path, size - st.log_end, st.seq)
        # dead marks set by the uncommitted ops (forget, evict, update, drop) carry a seq
        # beyond the committed one: undo them all at once
        undo = np.flatnonzero(slots["dead"][: st.n_slots] > st.seq)
        if undo.size:
            slots["dead"][undo] = 0
        self.log.truncate(st.log_end)

    def _resolve_all(self, ctx: _Ctx, requests: Sequence[tuple[Any, ...]]) -> None:
        """Resolve the requests in order into ``ctx.results``; a run of ``remember``
        requests is applied as one block by ``_ingest``, a run of plain ``forget`` ops
        (replay) in one pass by ``_forget`` (the same state as op by op)."""
        i, n = 0, len(requests)
        while i < n:
            if requests[i][0] == "remember_block":  # a validated remember_many call
                _ingest.apply_block(self, ctx, requests[i][1])
                i += 1
                continue
            j = i
            while j < n and requests[j][0] == "remember":
                j += 1
            if j - i >= _ingest.MIN_RUN:  # a run of new memories: one block, the same state
                if not _ingest.apply_run(self, ctx, requests[i:j]):
                    for req in requests[i:j]:  # (a shape the block path leaves to apply_op)
                        ctx.results.append(self._resolve(ctx, req))
                i = j
                continue
            j = i
            while j < n and _plain_forget(requests[j]):
                j += 1
            if j - i >= _forget.MIN_BULK:
                ids = [int(r[1]["id"]) for r in requests[i:j]]
                if len(set(ids)) == len(ids):
                    _forget.apply(self, ctx, ids, _forget.load(self, ctx.txn, ids))
                    ctx.results.extend([None] * (j - i))
                    i = j
                    continue
            for req in requests[i:max(j, i + 1)]:
                ctx.results.append(self._resolve(ctx, req))
            i = max(j, i + 1)

    def flush_index(self, ctx: _Ctx, stage: bool = False) -> None:
        """Write the BM25 postings and filter entries of the memories added so far
        (``ctx.pending``), all at once: before anything reads or changes the index.
        ``stage`` (the end of a logged write): a few memories' postings go to the staging
        table (``_lexstage``), merged at the next flush."""
        items = ctx.pending
        if items:
            ctx.pending = []
            if stage and len(items) < _lexstage.STAGE_MAX:
                _lexical_index.stage_many(ctx.txn, self.env, items)
            else:
                _lexical_index.add_many(ctx.txn, self.env, items)
            _filter_index.add_many(ctx.txn, self.env, items)

    def _resolve(self, ctx: _Ctx, req: tuple[Any, ...]) -> Any:
        kind = req[0]
        txn = ctx.txn
        if kind != "remember":
            ctx.ns_seen.clear()  # (a request may drop a namespace)
            if ctx.pending and kind not in ("op", "bind"):
                self.flush_index(ctx)  # the request may read the index (e.g. forget_where)
        if kind == "op":  # an already-resolved op (replay)
            return self.apply_op(ctx, req[1])
        if kind in _mutate.REQUESTS:  # update, upsert, drop (namespace)
            return _mutate.REQUESTS[kind](self, ctx, req)
        if kind == "call":  # a part (capacity, semantic compaction) resolving its own ops
            return req[1](self, ctx)
        if kind == "apply":  # the same, through a writer both engines offer (_semantic)
            from ._semantic import LmdbWriter
            return req[1](LmdbWriter(self, ctx))
        if kind == "remember":
            _, ns, text, meta, type_, ts, key, vec = req[:8]
            nid = ctx.ns_seen.get(ns)
            if nid is None:
                nid = ctx.ns_seen[ns] = self._ensure_ns(ctx, ns)
            if key is not None and txn.get(S.u32(nid) + key.encode(), db=self.env.db("keys")):
                raise DuplicateKeyError(f"namespace {ns!r} already has a memory with key {key!r}")
            done = _ingest.apply_one(self, ctx, req, nid)  # (the same bytes as below)
            if done is not None:
                return done
            op = _mutate.mem_op(ctx.state.next_id, nid, text, meta, type_, ts, key, vec,
                                len(req) > 8 and bool(req[8]))
            return self.apply_op(ctx, op)
        if kind == "forget":
            _, ns, mid = req
            self._live_record(ctx, ns, mid)
            return self.apply_op(ctx, {"op": "forget", "id": mid})
        if kind == "connect":
            _, ns, src, dst, rel, w = req
            # ("ref", i): the id returned by request i of this same write (e.g. a chunk
            # remembered earlier in the batch), so one transaction can add and link
            src = ctx.results[src[1]] if isinstance(src, tuple) else src
            dst = ctx.results[dst[1]] if isinstance(dst, tuple) else dst
            self._live_record(ctx, ns, src)
            self._live_record(ctx, ns, dst)
            return self.apply_op(ctx, {"op": "link", "src": src, "dst": dst, "rel": rel, "w": w})
        if kind == "disconnect":
            _, ns, src, dst, rel = req
            self._live_record(ctx, ns, src)
            self._live_record(ctx, ns, dst)
            return self.apply_op(ctx, {"op": "unlink", "src": src, "dst": dst, "rel": rel})
        if kind == "forget_many":  # ("forget_many", ns, ids): one pass over each table
            return _forget.request(req[1], req[2])(self, ctx)
        if kind == "forget_where":  # ("forget_where", ns, parsed filter)
            return _filter_index.forget_where(req[1], req[2])(self, ctx)
        if kind == "pin":  # ("pin", ns, id, on)
            return _capacity.set_pin(req[1], req[2], req[3])(self, ctx)
        if kind == "capacity":  # ("capacity", ns or None, max_entries, max_bytes)
            return _capacity.set_limit(req[1], req[2], req[3])(self, ctx)
        if kind == "bind":
            bound = tuple(ctx.results[x.item] if isinstance(x, Ref) else x for x in req[1])
            return self._resolve(ctx, bound)
        raise InvalidInputError(f"unknown request {kind!r}")

    def _ensure_ns(self, ctx: _Ctx, name: str) -> int:
        nid = self.ns_id(name, ctx.txn)
        if nid is not None:
            return nid
        ctx.new_ns.append(name)  # uncached again if the transaction aborts
        return int(self.apply_op(ctx, {"op": "ns", "name": name, "id": ctx.state.next_ns}))

    def _forget_ns(self, names: Sequence[str]) -> None:
        """Drop cached ids of namespaces created by a transaction that did not commit."""
        with self._ns_lock:
            for name in names:
                nid = self._ns_cache.pop(name, None)
                if nid is not None and self._ns_names.get(nid) == name:
                    del self._ns_names[nid]

    def _live_record(self, ctx: _Ctx, ns: str, mid: int) -> R.Record:
        nid = self.ns_id(ns, ctx.txn)
        raw = ctx.txn.get(S.u64(mid), db=self.env.db("records")) if nid is not None else None
        rec = R.Record.from_bytes(raw) if raw is not None else None
        if rec is None or rec.ns != nid:
            raise MemoryNotFoundError(f"no memory with id {mid} in namespace {ns!r}")
        return rec

    def apply_op(self, ctx: _Ctx, op: dict[str, Any]) -> Any:
        """Apply one op to the transaction and frame it for the log. Shared with replay."""
        st = ctx.state
        txn = ctx.txn
        db = self.env.db
        kind = op["op"]
        seq = st.seq + 1
        result: Any = None
        crc: int | None = None  # a new row's row_crc, for its slot and its log frame
        if ctx.pending and kind != "mem":
            self.flush_index(ctx)
        if kind == "mem":
            mid = int(op["id"])
            take_id(st, mid, ctx.allow_gaps)
            slot = st.n_slots
            vec = np.frombuffer(op["vec"], dtype="<f4")
            if vec.shape != (self.dim,):
                raise CorruptionError(f"op vector has {vec.size} floats, expected {self.dim}")
            type_code = int(op["type"])
            rec = R.Record(id=mid, ns=int(op["ns"]), text=op["text"], metadata=op["meta"],
                           type=R.MEMORY_TYPES[type_code], ts=int(op["ts"]), slot=slot,
                           key=op.get("key"), seq=seq, upd=op.get("upd"))
            ctx.matrix[slot] = vec
            crc = row_crc(op["vec"])
            ctx.slots[slot] = slot_row(mid, rec.ts, rec.ns, type_code, op["vec"], crc)
            S.put_last(txn, S.u64(mid), rec.to_bytes(), db("records"))  # (ids ascend)
            txn.put(S.u32(rec.ns) + S.ts_key(rec.ts) + S.u64(mid), b"", db=db("time"))
            if rec.key is not None:
                txn.put(S.u32(rec.ns) + rec.key.encode(), S.u64(mid), db=db("keys"))
            if ctx.pending is not None:  # indexed with the rest of the run (flush_index)
                ctx.pending.append((rec.ns, mid, rec.text, rec.metadata))
            else:
                _lexical_index.add(txn, self.env, rec.ns, mid, rec.text)  # BM25 postings + stats
                _filter_index.add(txn, self.env, rec.ns, mid, rec.metadata)  # filter index
            _capacity.on_add(self, ctx, rec, op)  # capacity bytes, pinned flag
            st.next_id += 1
            st.n_slots += 1
            st.live += 1
            ctx.ns_delta[rec.ns] = ctx.ns_delta.get(rec.ns, 0) + 1
            result = mid
        elif kind in ("forget", "evict"):
            mid = int(op["id"])
            raw = txn.get(S.u64(mid), db=db("records"))
            if raw is None:
                raise CorruptionError(f"op forgets id {mid}, which is not live")
            rec = R.Record.from_bytes(raw)
            # (first: staged postings are derived from the records, see _lexstage)
            _lexical_index.remove(txn, self.env, rec.ns, mid, rec.text)
            txn.delete(S.u64(mid), db=db("records"))
            txn.delete(S.u32(rec.ns) + S.ts_key(rec.ts) + S.u64(mid), db=db("time"))
            if rec.key is not None:
                txn.delete(S.u32(rec.ns) + rec.key.encode(), db=db("keys"))
            _filter_index.remove(txn, self.env, rec.ns, mid, rec.metadata)
            self._drop_edges(txn, mid)
            _capacity.on_remove(self, ctx, rec, op, seq)  # bytes, pin, eviction note
            ctx.dead.append((rec.slot, seq))
            st.live -= 1
            ctx.ns_delta[rec.ns] = ctx.ns_delta.get(rec.ns, 0) - 1
        elif kind == "link":
            w = S.f64(float(op["w"]))
            rel = op["rel"].encode()
            txn.put(S.u64(op["src"]) + S.u64(op["dst"]) + rel, w, db=db("edges_out"))
            txn.put(S.u64(op["dst"]) + S.u64(op["src"]) + rel, w, db=db("edges_in"))
        elif kind == "unlink":
            src, dst = S.u64(op["src"]), S.u64(op["dst"])
            rel = op.get("rel")
            self._drop_edge_pairs(txn, src, dst, None if rel is None else rel.encode())
        elif kind == "compact":
            pass  # the caller rewrote the files; the op marks the point in the log
        elif kind in _mutate.OPS:  # update, drop: see _mutate
            result = _mutate.OPS[kind](self, ctx, op, seq)
        elif kind in _capacity.OPS:  # capacity, pin, evicted (base), meta: see _capacity
            result = _capacity.OPS[kind](self, ctx, op)
        elif kind == "base":
            # ends a base snapshot: the counters of the source at its sequence number
            seq = base_counters(st, op)
        elif kind == "ns":
            nid = int(op["id"])
            take_ns(st, nid, ctx.allow_gaps)
            name = op["name"]
            ndb = db("namespaces")
            txn.put(name.encode(), R.encode({"id": nid, "count": 0}), db=ndb)
            txn.put(_NS_REV + S.u32(nid), name.encode(), db=ndb)
            st.next_ns += 1
            result = nid
        else:
            raise CorruptionError(f"unknown op {kind!r} in log")
        st.seq = seq
        if kind in _mutate.SLOT_OPS and isinstance(op.get("vec"), bytes):
            op = logged_op(op, st.n_slots - 1, crc)  # the slot it just took
        ctx.frames.append(encode_frame(seq, R.encode(op)))
        return result

    def _drop_edge_pairs(self, txn: lmdb.Transaction, src: bytes, dst: bytes,
                         rel: bytes | None) -> None:
        out_db, in_db = self.env.db("edges_out"), self.env.db("edges_in")
        if rel is not None:
            txn.delete(src + dst + rel, db=out_db)
            txn.delete(dst + src + rel, db=in_db)
            return
        prefix = src + dst
        rels = []
        with txn.cursor(db=out_db) as cur:
            if cur.set_range(prefix):
                for k in cur.iternext(values=False):
                    if not k.startswith(prefix):
                        break
                    rels.append(k[16:])
        for r in rels:
            txn.delete(src + dst + r, db=out_db)
            txn.delete(dst + src + r, db=in_db)

    def _drop_edges(self, txn: lmdb.Transaction, mid: int) -> None:
        """Remove every edge touching ``mid`` from both direction tables."""
        key = S.u64(mid)
        out_db, in_db = self.env.db("edges_out"), self.env.db("edges_in")
        for this_db, mirror_db in ((out_db, in_db), (in_db, out_db)):
            found = []
            with txn.cursor(db=this_db) as cur:
                if cur.set_range(key):
                    for k in cur.iternext(values=False):
                        if not k.startswith(key):
                            break
                        found.append(k)
            for k in found:
                txn.delete(k, db=this_db)
                txn.delete(k[8:16] + k[:8] + k[16:], db=mirror_db)

    def _flush_ns_counts(self, ctx: _Ctx) -> None:
        ndb = self.env.db("namespaces")
        for nid in sorted(set(ctx.ns_delta) | set(ctx.ns_bytes)):
            delta = ctx.ns_delta.get(nid, 0)
            dbytes = ctx.ns_bytes.get(nid, 0)
            if not delta and not dbytes:
                continue
            name = self.ns_name(nid, ctx.txn) if nid in self._ns_names else \
                ctx.txn.get(_NS_REV + S.u32(nid), db=ndb).decode()
            raw = ctx.txn.get(name.encode(), db=ndb)
            memo = self._ns_memo.get(nid)  # (the record this process last wrote)
            info = dict(memo[1]) if memo is not None and memo[0] == raw else \
                R.decode(raw, "namespace")
            info["count"] = int(info.get("count", 0)) + delta
            if dbytes:
                info["bytes"] = int(info.get("bytes", 0)) + dbytes
            raw = R.encode(info)
            ctx.txn.put(name.encode(), raw, db=ndb)
            self._ns_memo[nid] = (raw, info)

    # -- reads ----------------------------------------------------------------------------------

    def record(self, txn: lmdb.Transaction, mid: int, memo: bool = False) -> R.Record | None:
        """The record of ``mid`` (None: none). ``memo``: decoded once per distinct stored
        bytes (``_rawmemo``; the caller still gets its own copy, :meth:`Record.fresh`).
        :raises CorruptionError: it fails its checks."""
        raw = txn.get(S.u64(mid), db=self.env.db("records"))
        if raw is None:
            return None
        key = owned(raw) if memo else None
        if key is not None:
            kept = _RECORDS.get(key)
            if kept is not None:
                return kept.fresh()
        try:
            rec = R.Record.from_bytes(raw)
        except CorruptionError as exc:
            raise CorruptionError(f"memory {mid}: {exc} (in {os.path.join(self.path, 'data.mdb')}; "
                                  f"{self.recover_hint()})") from exc
        if key is None:
            return rec
        _RECORDS.put(key, rec, RECORD_OVERHEAD * len(raw))
        return rec.fresh()

    def check_vector(self, snap: Snapshot, rec: R.Record) -> None:
        """Check the vector row of ``rec`` against its slot's checksum and id.

        :raises CorruptionError: naming the memory and the vector file."""
        self.check_row(rec, snap.matrix, snap.slots, snap.state.gen)

    def check_vectors(self, snap: Snapshot, recs: Sequence[R.Record]) -> None:
        """:meth:`check_vector` of several records, the checksums folded into one CRC
        (``_vectors.rows_pass``); when that fails, row by row, so the error names the
        first damaged row in the given order. :raises CorruptionError:"""
        slots = snap.slots
        for rec in recs:
            slot = rec.slot
            if not 0 <= slot < slots.shape[0] or int(slots["id"][slot]) != rec.id:
                self.check_row(rec, snap.matrix, slots, snap.state.gen)  # raises
        if len(recs) < 2 or rows_pass(snap.matrix, slots, [rec.slot for rec in recs]):
            if len(recs) == 1:
                self.check_vector(snap, recs[0])
            return
        for rec in recs:
            self.check_row(rec, snap.matrix, slots, snap.state.gen)

    def check_row(self, rec: R.Record, matrix: np.ndarray, slots: np.ndarray, gen: int) -> None:
        """:meth:`check_vector` on explicit rows of generation ``gen``."""
        slot = rec.slot
        if not 0 <= slot < slots.shape[0] or int(slots["id"][slot]) != rec.id:
            raise CorruptionError(f"memory {rec.id}: its slot {slot} is not in the slot file "
                                  f"{slot_file(self.path, gen)}; {self.recover_hint()}")
        if bad_rows(matrix, slots, (slot,)):
            raise CorruptionError(
                f"memory {rec.id}: its vector (row {slot} of {vector_file(self.path, gen)}) "
                f"fails its checksum; {self.recover_hint()}")

    def checked_vector(self, snap: Snapshot, rec: R.Record) -> np.ndarray:
        """The vector row of ``rec`` after :meth:`check_vector`."""
        self.check_vector(snap, rec)
        return snap.matrix[rec.slot]

    def edges(self, txn: lmdb.Transaction, mid: int, direction: str) -> list[tuple[int, int, str, float]]:
        """Edges (src, dst, relation, weight) touching ``mid``: 'out', 'in' or 'both'."""
        out: list[tuple[int, int, str, float]] = []
        key = S.u64(mid)
        for dname in (("edges_out",) if direction == "out" else ("edges_in",) if direction == "in"
                      else ("edges_out", "edges_in")):
            with txn.cursor(db=self.env.db(dname)) as cur:
                if cur.set_range(key):
                    for k, v in cur:
                        if not k.startswith(key):
                            break
                        a, b = S.from_u64(k[8:16]), k[16:].decode()
                        w = S.from_f64(v)
                        out.append((mid, a, b, w) if dname == "edges_out" else (a, mid, b, w))
        return out

    def key_id(self, txn: lmdb.Transaction, nid: int, key: str) -> int | None:
        raw = txn.get(S.u32(nid) + key.encode(), db=self.env.db("keys"))
        return None if raw is None else S.from_u64(raw)

    # -- the Backend protocol (see _backend) ------------------------------------------

    #: which engine this is (``Mnemos.backend``)
    kind = "embedded"

    def local(self, call: str) -> "Engine":
        """This engine, for a call only the embedded engine offers (see _backend)."""
        return self

    def stats(self) -> dict[str, Any]:
        """``Mnemos.stats()`` of an embedded store (counts, limits, files and sizes)."""
        import stat as _stat
        with self.snapshot() as snap:
            nss = self.namespaces(snap.txn)
            st = snap.state
            ev = _capacity.evicted_counts(self, snap.txn)
            lims = _capacity.limits(self, snap.txn)
            known = bool(st.usage)
            files = {}
            for name in sorted(os.listdir(self.path)):
                try:  # a compaction in another process may remove files meanwhile
                    s = os.stat(os.path.join(self.path, name))
                except FileNotFoundError:
                    continue
                if _stat.S_ISREG(s.st_mode):
                    files[name] = {"bytes": s.st_size, "disk_bytes": s.st_blocks * 512}
            return {
                "path": self.path,
                "format_version": self.format["version"],
                "embedder": {"name": self.embedder_name, "dim": self.dim},
                "total": st.live,
                "namespaces": {n: {"count": int(info["count"])} for n, info in nss.items()},
                "evicted": sum(ev.values()),
                "capacity": {
                    "limit": lims["store"], "bytes": st.live_bytes if known else None,
                    "namespaces": {n: {"limit": lims["ns"].get(int(info["id"])),
                                       "evicted": ev.get(int(info["id"]), 0),
                                       "bytes": int(info.get("bytes", 0)) if known else None}
                                   for n, info in nss.items()}},
                "slots": st.n_slots,
                "generation": st.gen,
                "seq": st.seq,
                "log": {"segment": st.log_seg, "bytes": st.log_end},
                "files": files,
            }

    def export_replay(self, path: str, *, namespaces: Sequence[str] | None,
                      since_seq: int | None, progress: Any) -> Any:
        from ._replay import export_replay
        return export_replay(self, path, namespaces=namespaces, since_seq=since_seq,
                             progress=progress)

    def replay(self, path: str, *, strict: bool, resume: bool, progress: Any) -> Any:
        from ._replay import replay
        return replay(self, path, strict=strict, resume=resume, progress=progress)

    def replay_compact(self) -> dict[str, Any]:
        """Replay of a logged ``compact`` op: a new vector generation, logged."""
        from ._compaction import compact_vectors
        return compact_vectors(self)

    def restore_base(self, ops: Any, progress: Any = None) -> int:
        """Replay of a base snapshot: its ops unlogged, then a checkpoint."""
        from ._replay import restore_base
        return restore_base(self, ops, progress)

    def close(self) -> None:
        if self.closed:
            return
        if not self.readonly and not self.env.forked:
            try:
                self.sync()  # leave everything durable: the next open has nothing to redo
            except Exception:  # closing must not fail; the next writer recovers
                pass
        self.closed = True
        self.vectors.close()
        self.log.close()
        S.release(self.env)
        logger.debug("%s: closed", self.path)


__all__ = ["Engine", "State", "Snapshot", "Ref", "SLOT_DTYPE", "DEFAULT_NS", "StoreError"]
