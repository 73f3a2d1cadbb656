"""Consistency check of a store: LMDB records, vector file, slot columns and log, against each other.

Runs in one read snapshot, so it can check a store that other processes are writing.
Every mismatch becomes one line in the report; nothing is repaired.
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _filter_index, _lexical_index, _lexstage, _pending
from . import _progress
from . import _records as R
from . import _storage as S
from ._engine import Engine
from ._log import LogGone
from ._vectors import ROW_KEYS, bad_rows, op_row_ok, row_crc, vector_file
from .errors import CorruptionError, StoreError

MAX_PROBLEMS = 1000
#: Vector rows whose checksum ``verify(deep=False)`` checks (evenly spaced over the live
#: ones); ``deep=True`` checks every row.
QUICK_ROWS = 4096


@dataclass
class VerifyReport:
    """What ``verify`` found: ``ok`` is True when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, msg: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(msg)

    def __str__(self) -> str:
        head = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [head] + [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        lines.append("  checked: " + ", ".join(f"{k}={v}" for k, v in self.checked.items()))
        return "\n".join(lines)


#: Checks started again on a newer snapshot when compactions in other processes keep
#: removing the files of the snapshot being checked, before verify gives up.
VERIFY_ATTEMPTS = 50


class _Superseded(Exception):
    """The snapshot's log segment or base snapshot was removed by a newer compaction."""


def lmdb_pages(engine: Engine) -> tuple[list[str], int]:
    """Walk every page of data.mdb reachable in a read snapshot, without LMDB's map:
    (problems, pages). A damaged page becomes a problem line here instead of an LMDB
    assertion (SIGABRT) or a fault (SIGBUS) in the reads that follow."""
    from ._lmdbcheck import MetaMoved, walk
    path = os.path.join(engine.path, "data.mdb")
    for _attempt in range(20):
        with engine.env.read() as txn:  # pins the pages of its snapshot while we walk
            try:
                problems, pages = walk(path, txn.id())
            except MetaMoved:
                continue  # two commits since the read began: take a newer snapshot
        if problems:
            problems = [p + f" (LMDB would crash reading it: rebuild the store with "
                        f"`mnemos-kv recover {engine.path}`)" for p in problems]
        return problems, pages
    return [], 0  # writers kept committing; the LMDB walk below still runs


def verify(engine: Engine, *, deep: bool = True, progress: Any = None) -> VerifyReport:
    """Check the store; ``deep`` also compares every logged vector with the matrix.

    First every page of data.mdb is checked without LMDB (a damaged page is reported,
    and the LMDB reads are skipped: they would crash the process). When a compaction
    (in another process) removes the log files of the snapshot being checked, the
    check starts again on a newer snapshot.

    :raises StoreError: compactions removed the checked snapshot's files
        ``VERIFY_ATTEMPTS`` times in a row (nothing was found wrong).
    """
    problems, pages = lmdb_pages(engine)
    if problems:
        rep = VerifyReport()
        for p in problems:
            rep.add(p)
        rep.checked["lmdb_pages"] = pages
        return rep
    for _attempt in range(VERIFY_ATTEMPTS):
        try:
            return _verify_once(engine, deep, progress)
        except _Superseded:
            continue  # (another process compacted meanwhile: a newer snapshot is whole)
    raise StoreError(
        f"{engine.path!r}: another process compacted the store {VERIFY_ATTEMPTS} times while "
        f"it was being verified (each compaction removes the log files a snapshot's check "
        f"reads); nothing was found wrong: verify again when compactions pause")


def _verify_once(engine: Engine, deep: bool, progress: Any = None) -> VerifyReport:
    rep = VerifyReport()
    db = engine.env.db
    with engine.snapshot() as snap:
        txn, st = snap.txn, snap.state
        live = snap.live_mask()
        slots = snap.slots
        # -- records against slot columns -------------------------------------------------
        n_rec = 0
        fields = _filter_index.Checker(txn, engine.env)
        seen_slots = np.zeros(st.n_slots, bool)
        ns_counts: dict[int, int] = {}
        with txn.cursor(db=db("records")) as cur:
            for k, v in cur:
                n_rec += 1
                if progress is not None and n_rec % _progress.EVERY == 0:
                    progress("records", n_rec, st.live)
                try:
                    rec = R.Record.from_bytes(v)
                except CorruptionError as exc:
                    rep.add(f"memory {S.from_u64(k) if len(k) == 8 else k.hex()}: {exc} "
                            f"(in data.mdb)")
                    continue
                if S.from_u64(k) != rec.id:
                    rep.add(f"record key {S.from_u64(k)} holds id {rec.id}")
                ns_counts[rec.ns] = ns_counts.get(rec.ns, 0) + 1
                if not 0 <= rec.slot < st.n_slots:
                    rep.add(f"memory {rec.id}: slot {rec.slot} outside 0..{st.n_slots - 1}")
                    continue
                row = slots[rec.slot]
                seen_slots[rec.slot] = True
                if int(row["id"]) != rec.id:
                    rep.add(f"memory {rec.id}: slot {rec.slot} holds id {int(row['id'])}")
                if not live[rec.slot]:
                    rep.add(f"memory {rec.id}: slot {rec.slot} is marked dead (seq {int(row['dead'])})")
                if int(row["ns"]) != rec.ns or int(row["ts"]) != rec.ts or \
                        int(row["type"]) != R.TYPE_CODES[rec.type]:
                    rep.add(f"memory {rec.id}: slot columns (ns/ts/type) differ from the record")
                if txn.get(S.u32(rec.ns) + S.ts_key(rec.ts) + S.u64(rec.id), db=db("time")) is None:
                    rep.add(f"memory {rec.id}: missing from the time index")
                if rec.key is not None and engine.key_id(txn, rec.ns, rec.key) != rec.id:
                    rep.add(f"memory {rec.id}: key {rec.key!r} does not map back to it")
                lacking = fields.missing(rec.ns, rec.id, rec.metadata)
                if lacking:
                    rep.add(f"memory {rec.id}: {lacking} metadata entries missing from the filter index")
        orphans = np.flatnonzero(live & ~seen_slots)
        for slot in orphans[:20].tolist():
            rep.add(f"slot {slot} (id {int(slots['id'][slot])}) is live but has no record")
        if n_rec != st.live:
            rep.add(f"state says {st.live} live memories, records hold {n_rec}")
        if fields.on:
            if fields.total() != fields.expected:
                rep.add(f"filter index has {fields.total()} entries, the records make {fields.expected}")
            rep.checked["filter_entries"] = fields.expected
        else:
            rep.notes.append("no filter index yet (a store from before it): built on the next "
                             "read-write open; filters decode the records until then")
        rep.checked["records"] = n_rec
        rep.checked["slots"] = st.n_slots
        # -- namespaces --------------------------------------------------------------------
        for name, info in engine.namespaces(txn).items():
            got = ns_counts.get(int(info["id"]), 0)
            if int(info["count"]) != got:
                rep.add(f"namespace {name!r}: count says {info['count']}, records hold {got}")
        # -- time index ----------------------------------------------------------------------
        n_time = 0
        with txn.cursor(db=db("time")) as cur:
            for k in cur.iternext(values=False):
                n_time += 1
                if txn.get(k[12:20], db=db("records")) is None:
                    rep.add(f"time index entry for missing memory {S.from_u64(k[12:20])}")
        if n_time != n_rec:
            rep.add(f"time index has {n_time} entries for {n_rec} records")
        # -- edges -----------------------------------------------------------------------------
        n_edges = 0
        for this, mirror in (("edges_out", "edges_in"), ("edges_in", "edges_out")):
            with txn.cursor(db=db(this)) as cur:
                for k, v in cur:
                    if this == "edges_out":
                        n_edges += 1
                    if txn.get(k[8:16] + k[:8] + k[16:], db=db(mirror)) != v:
                        rep.add(f"{this} edge {S.from_u64(k[:8])}-{S.from_u64(k[8:16])} "
                                f"{k[16:].decode(errors='replace')!r} has no matching {mirror} entry")
                    for end in (k[:8], k[8:16]):
                        if txn.get(end, db=db("records")) is None:
                            rep.add(f"{this} edge touches missing memory {S.from_u64(end)}")
        rep.checked["edges"] = n_edges
        # -- vectors -----------------------------------------------------------------------------
        mat = snap.matrix
        live_rows = np.flatnonzero(live)
        if live_rows.size:
            sub = mat[live_rows]
            finite = np.isfinite(sub).all(axis=1)
            for slot in live_rows[~finite][:20].tolist():
                rep.add(f"slot {slot}: vector has NaN or infinity")
            norms = np.linalg.norm(sub, axis=1)
            bad = live_rows[finite & ~((np.abs(norms - 1) < 1e-3) | (norms == 0))]
            for slot in bad[:20].tolist():
                rep.add(f"slot {slot}: vector norm {norms[np.searchsorted(live_rows, slot)]:.4f}, expected 1")
            # every row in a deep check; an even sample in a quick one (the light path)
            rows = live_rows if deep or live_rows.size <= QUICK_ROWS else \
                live_rows[np.linspace(0, live_rows.size - 1, QUICK_ROWS).astype(np.int64)]
            rep.checked["vector_checksums"] = int(rows.size)
            for slot in bad_rows(mat, slots, rows)[:MAX_PROBLEMS]:
                rep.add(f"memory {int(slots['id'][slot])}: its vector (row {slot} of "
                        f"{os.path.basename(vector_file(engine.path, st.gen))}) fails its checksum")
        ids = slots["id"]
        if st.n_slots > 1 and not st.unsorted and not bool(np.all(np.diff(ids) > 0)):
            rep.add("slot ids are not strictly increasing")
        if st.unsorted:  # updates append newer slots of older ids: live ids stay unique
            live_ids = ids[live]
            if np.unique(live_ids).size != live_ids.size:
                rep.add("two live slots hold the same id")
        # -- capacity: pins, byte counters, limits ----------------------------------------------
        from ._capacity import verify as verify_capacity
        verify_capacity(engine, snap, rep)
        # -- log ---------------------------------------------------------------------------------
        if progress is not None:
            progress("records", n_rec, n_rec)
        _verify_log(engine, snap, rep, deep, progress)
    return rep


def _compare(engine: Engine, snap: Any, rep: VerifyReport, op: dict[str, Any], seq: int | None,
             base_seq: int | None, where: str) -> None:
    """Compare the live record and vector of a ``mem`` op's memory with the op, when that
    op is what last wrote them (the log frame of seq ``seq``, or a base snapshot of
    ``base_seq`` for records not rewritten since)."""
    mid = int(op["id"])
    raw = snap.txn.get(S.u64(mid), db=engine.env.db("records"))
    if raw is None:
        return
    try:
        rec = R.Record.from_bytes(raw)
    except CorruptionError:
        return  # reported by the records pass
    if (seq is not None and rec.seq != seq) or (base_seq is not None and rec.seq > base_seq):
        return
    name = os.path.basename(where)
    mine = (rec.text, rec.ts, rec.ns) + ((rec.key,) if op["op"] == "mem" else ())
    logged = (op["text"], op["ts"], op["ns"]) + ((op.get("key"),) if op["op"] == "mem" else ())
    if mine != logged:
        rep.add(f"memory {mid}: its record in data.mdb differs from {name} "
                f"(text, time, namespace or key)")
    if seq is not None:
        return  # the log pass checks every logged vector against its own row
    if "vrow" in op:  # format 3: the snapshot names the row (and its checksum) instead
        if op["vrow"] != rec.slot:
            rep.add(f"memory {mid}: its record says slot {rec.slot}, {name} row {op['vrow']}")
        elif 0 <= rec.slot < snap.state.n_slots and \
                not op_row_ok(op, snap.matrix[rec.slot].tobytes()):
            rep.add(f"memory {mid}: its vector (row {rec.slot} of "
                    f"{os.path.basename(vector_file(engine.path, snap.state.gen))}) differs from "
                    f"the checksum in {name}")
        return
    if 0 <= rec.slot < snap.state.n_slots and snap.matrix[rec.slot].tobytes() != op["vec"]:
        rep.add(f"memory {mid}: its vector (row {rec.slot} of "
                f"{os.path.basename(vector_file(engine.path, snap.state.gen))}) differs from {name}")


def _verify_pending(engine: Engine, snap: Any, log: Any, rep: VerifyReport) -> None:
    """The ``pending`` table (format 3) holds exactly the log bytes [log_sync, log_end) of
    the snapshot's segment from ``log_sync`` on, each entry equal to the file's bytes where
    the file has them; entries before ``log_sync`` (format 7: kept for their vector rows
    until the flush) match the file too. Every unflushed vector row (in ``pending``,
    format 7, or ``vrows``, formats 3-6) is one of the unflushed slots and equals the
    vector file's row."""
    st = snap.state
    if not engine.env.has_db("pending"):
        if st.log_sync < st.log_end:
            rep.add(f"data.mdb: no pending table, but log bytes {st.log_sync}..{st.log_end} "
                    "are not flushed")
        return
    pos = st.log_sync
    prev_end = 0
    rows: list[tuple[int, bytes]] = []
    for seg, off, v in _pending.entries(snap.txn, engine.env.db("pending")):
        try:
            frames = _pending.unpack(v)[0]
            rows.extend(_pending.rows_of(v, engine.dim * 4))
        except CorruptionError as exc:
            rep.add(f"{exc} (segment {seg}, byte {off})")
            return
        if seg != st.log_seg or off < prev_end or off >= st.log_end \
                or (off >= st.log_sync and off != pos):
            rep.add(f"data.mdb: a pending entry (segment {seg}, byte {off}) outside the "
                    f"unflushed log bytes {st.log_sync}..{st.log_end} or out of order")
            return
        have = log.read(off, off + len(frames))
        if len(have) == len(frames) and have != frames:
            rep.add(f"{log.path}: bytes {off}..{off + len(frames)} differ from their copy in "
                    "data.mdb's pending table")
        prev_end = off + len(frames)
        if off >= st.log_sync:
            pos += len(frames)
    if pos != st.log_end:
        rep.add(f"data.mdb: the pending table covers log bytes {st.log_sync}..{pos}, but "
                f"{st.log_end} are committed")
    rep.checked["pending_bytes"] = pos - st.log_sync
    if engine.env.has_db("vrows"):
        from ._engine import _VROW_KEY
        with snap.txn.cursor(db=engine.env.db("vrows")) as cur:
            for k, v in cur:
                gen, slot = _VROW_KEY.unpack(k)
                if gen != st.gen:
                    rep.add(f"data.mdb: an unflushed vector row of generation {gen}, not "
                            f"the current {st.gen}")
                else:
                    rows.append((slot, v))
    for slot, v in rows:
        if not st.vsync_slots <= slot < st.n_slots:
            rep.add(f"data.mdb: an unflushed vector row (slot {slot}) outside the unflushed "
                    f"slots {st.vsync_slots}..{st.n_slots}")
        elif snap.matrix[slot].tobytes() != v:
            rep.add(f"slot {slot}: its vector row differs from its unflushed copy in data.mdb")
    rep.checked["unflushed_rows"] = len(rows)


def _verify_staged(engine: Engine, snap: Any, rep: VerifyReport) -> None:
    """Each staged memory (the window of ids, format 7; ``lexstage`` entries, formats
    5-6) is a live memory of its namespace whose postings are not also in ``postings``;
    a format-5/6 entry holds exactly the postings of its text."""
    env = engine.env
    try:
        lo, hi = _lexstage.window(snap.txn, env)
    except CorruptionError as exc:
        rep.add(str(exc))
        return
    if not _lexstage.staged_count(snap.txn, env):
        return
    staged: list[tuple[int, bytes | None]] = []
    if env.has_db(_lexstage.DB):
        with snap.txn.cursor(db=env.db(_lexstage.DB)) as cur:
            staged.extend((S.from_u64(k), v) for k, v in cur)
    if hi > lo and hi > snap.state.next_id:
        rep.add(f"data.mdb: the staged ids {lo}..{hi - 1} go past the last id "
                f"{snap.state.next_id - 1}")
        hi = snap.state.next_id
    staged.extend((mid, None) for mid in range(lo, hi))
    with snap.txn.cursor(db=env.db("postings")) as pcur:
        for mid, v in staged:
            rec = engine.record(snap.txn, mid)
            terms = _lexical_index.doc_terms(rec.text)[0] if rec is not None else {}
            if v is None:
                ns = rec.ns if rec is not None else -1
            else:
                try:
                    ns = _lexstage.decode(v)[0]
                except CorruptionError as exc:
                    rep.add(f"memory {mid}: {exc}")
                    continue
            if rec is None or rec.ns != ns:
                rep.add(f"data.mdb: staged postings of memory {mid} (namespace id {ns}), "
                        "which is not a live memory of that namespace")
                continue
            if v is not None and _lexstage.encode(ns, terms) != v:
                rep.add(f"memory {mid}: its staged postings differ from its text's")
                continue
            if terms:
                key, idb = S.u32(ns) + next(iter(terms)), S.u64(mid)[2:]
                if pcur.set_range_dup(key, idb) and pcur.key() == key \
                        and pcur.value()[:6] == idb:
                    rep.add(f"memory {mid}: its postings are both staged and in the index")
    rep.checked["staged_postings"] = len(staged)


def _verify_log(engine: Engine, snap: Any, rep: VerifyReport, deep: bool,
                progress: Any = None) -> None:
    st = snap.state
    try:
        log = engine.open_log(st)
    except LogGone:
        if engine.read_state().log_seg != st.log_seg:
            raise _Superseded() from None
        raise
    if log.base_seq:
        from ._snapshot import snapshot_file, snapshot_ops
        path = snapshot_file(engine.path, log.base_seq)
        try:
            last_op: dict[str, Any] = {}
            for last_op in snapshot_ops(path):
                if deep and last_op.get("op") == "mem":
                    _compare(engine, snap, rep, last_op, None, log.base_seq, path)
            if last_op.get("op") != "base" or int(last_op.get("seq", -1)) != log.base_seq:
                rep.add(f"{path}: does not end with the base op of seq {log.base_seq}")
        except CorruptionError as exc:
            if not os.path.exists(path) and engine.read_state().log_seg != st.log_seg:
                raise _Superseded() from None
            rep.add(f"{path}: {exc}")
    size = log.size()
    _verify_pending(engine, snap, log, rep)
    _verify_staged(engine, snap, rep)
    if size < st.log_end:
        rep.add(f"{log.path}: {size} bytes, but {st.log_end} are committed"
                + (" (the first read-write open restores them from data.mdb)"
                   if st.log_sync <= size else ""))
        return
    if size > st.log_end:
        rep.notes.append(f"log has {size - st.log_end} uncommitted bytes after the committed end "
                         "(a write in progress, or a crashed writer; the next write drops them)")
    from ._log import FILE_HEADER
    last = log.base_seq
    n = 0
    # Every mem/update op of this segment took the next slot of the generation, so
    # its k-th one is slot n_slots - (count) + k: each logged vector is checked
    # against its own row (live or dead), after the pass has counted them.
    # (id, the checksum fields of the frame (format 3: the row it names; before: a
    # CRC-32 of the vector it carries), seq, that row or None)
    logged: list[tuple[int, dict[str, Any], int, int | None]] = []
    try:
        for _off, seq, payload in log.frames(FILE_HEADER, st.log_end):
            n += 1
            last = seq
            if progress is not None and n % _progress.EVERY == 0:
                progress("log", n, st.seq - log.base_seq)
            if deep:
                op = R.decode(payload, "log frame")
                if op.get("op") in ("mem", "update"):
                    if "vrow" in op:
                        logged.append((int(op["id"]), {k: op[k] for k in ROW_KEYS if k in op},
                                       seq, int(op["vrow"])))
                    else:
                        logged.append((int(op["id"]), {"vc32": row_crc(op["vec"])}, seq, None))
                    _compare(engine, snap, rep, op, seq, None, log.path)
    except CorruptionError as exc:
        rep.add(str(exc))
        return
    if deep and logged:
        start = st.n_slots - len(logged)
        if start < 0:
            rep.add(f"log holds {len(logged)} new vectors, the generation only {st.n_slots} slots")
        else:
            bad = 0
            for k, (mid, chk, seq, vrow) in enumerate(logged):
                slot = start + k
                if vrow is not None and vrow != slot:
                    rep.add(f"memory {mid}: its log frame (seq {seq}) names vector row {vrow}, "
                            f"but it took slot {slot}")
                    bad += 1
                elif int(snap.slots["id"][slot]) != mid:
                    rep.add(f"slot {slot} holds id {int(snap.slots['id'][slot])}, its log frame "
                            f"(seq {seq}) wrote id {mid}")
                    bad += 1
                elif not op_row_ok(chk, snap.matrix[slot].tobytes()):
                    rep.add(f"memory {mid}: vector differs from its log frame (seq {seq})")
                    bad += 1
                if bad >= 20:
                    break
    if n and last != st.seq:
        rep.add(f"log ends at seq {last}, the store committed seq {st.seq}")
    rep.checked["log_frames"] = n
