"""Consistency check of a store: LMDB records, vector file, slot columns and log, against each other.

Runs in one read snapshot, so it can check a store that other processes are writing.
Every mismatch becomes one line in the report; nothing is repaired.
"""

from __future__ import annotations

import os
import zlib

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _filter_index
from . import _progress
from . import _records as R
from . import _storage as S
from ._engine import Engine
from ._log import LogGone
from .errors import CorruptionError

MAX_PROBLEMS = 1000


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


class _Superseded(Exception):
    """The snapshot's log segment or base snapshot was removed by a newer compaction."""


def verify(engine: Engine, *, deep: bool = True, progress: Any = None) -> VerifyReport:
    """Check the store; ``deep`` also compares every logged vector with the matrix.

    When a compaction (in another process) removes the log files of the snapshot being
    checked, the check starts again on a newer snapshot.
    """
    for _attempt in range(4):
        try:
            return _verify_once(engine, deep, progress)
        except _Superseded:
            continue
    return _verify_once(engine, deep, progress)


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
                    rep.add(f"record {k.hex()}: {exc}")
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
                pass
            if last_op.get("op") != "base" or int(last_op.get("seq", -1)) != log.base_seq:
                rep.add(f"{path}: does not end with the base op of seq {log.base_seq}")
        except CorruptionError as exc:
            if not os.path.exists(path) and engine.read_state().log_seg != st.log_seg:
                raise _Superseded() from None
            rep.add(f"{path}: {exc}")
    size = log.size()
    if size < st.log_end:
        rep.add(f"{log.path}: {size} bytes, but {st.log_end} are committed")
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
    logged: list[tuple[int, int, int]] = []  # (id, crc32 of the vector, seq)
    try:
        for _off, seq, payload in log.frames(FILE_HEADER, st.log_end):
            n += 1
            last = seq
            if progress is not None and n % _progress.EVERY == 0:
                progress("log", n, st.seq - log.base_seq)
            if deep:
                op = R.decode(payload, "log frame")
                if op.get("op") in ("mem", "update"):
                    logged.append((int(op["id"]), zlib.crc32(op["vec"]), seq))
    except CorruptionError as exc:
        rep.add(str(exc))
        return
    if deep and logged:
        start = st.n_slots - len(logged)
        if start < 0:
            rep.add(f"log holds {len(logged)} new vectors, the generation only {st.n_slots} slots")
        else:
            bad = 0
            for k, (mid, crc, seq) in enumerate(logged):
                slot = start + k
                if int(snap.slots["id"][slot]) != mid:
                    rep.add(f"slot {slot} holds id {int(snap.slots['id'][slot])}, its log frame "
                            f"(seq {seq}) wrote id {mid}")
                    bad += 1
                elif zlib.crc32(snap.matrix[slot].tobytes()) != crc:
                    rep.add(f"memory {mid}: vector differs from its log frame (seq {seq})")
                    bad += 1
                if bad >= 20:
                    break
    if n and last != st.seq:
        rep.add(f"log ends at seq {last}, the store committed seq {st.seq}")
    rep.checked["log_frames"] = n
