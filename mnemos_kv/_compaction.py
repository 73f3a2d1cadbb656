"""Compaction: recover the space of forgotten, evicted and merged memories in every file.

:func:`compact` runs three steps:

1. (optional) semantic merging of near-duplicates (``_semantic``): logged ops in one
   write transaction;
2. :func:`compact_vectors`: the live rows are copied, in slot order, into a new file
   generation; every live record's slot is updated; a ``compact`` op is logged; then a
   checkpoint writes a base snapshot and starts a new log segment (see ``_snapshot``).
   All of it is committed with the state in one LMDB transaction; superseded files are
   removed after the commit. Readers holding an older snapshot keep their mapping of
   the old generation (unlinked files stay mapped) and move to the new one on their
   next read. A crash before the commit leaves the old state in force (the half-written
   new files are strays, removed by the next compaction); a crash after it leaves the
   new one;
3. the LMDB file rewrite (``_lmdb_rewrite``), only when no other process has the store
   open; it changes no logical state, and a crash leaves one complete file or the other.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import Any, Callable

import lmdb
import numpy as np

from . import _ann
from . import _records as R
from . import _storage as S
from ._engine import Engine, _Ctx
from ._snapshot import checkpoint, remove_stale, remove_superseded
from ._vectors import VectorFiles, slot_file, vector_file

log = logging.getLogger("mnemos_kv")


def _remove_generations(root: str, keep: int) -> None:
    """Remove vector/slot files of every generation but ``keep`` (write lock held)."""
    for name in os.listdir(root):
        parts = name.split(".")
        if len(parts) >= 3 and parts[0] in ("vectors", "slots", "ann") and parts[1].isdigit():
            if int(parts[1]) != keep:
                S.unlink_quiet(os.path.join(root, name))



Progress = Callable[[str, int, int], Any]
_ROWS_CHUNK = 1 << 15


def file_usage(root: str) -> dict[str, dict[str, int]]:
    """Per file of the store: apparent ``bytes`` and ``disk_bytes`` (allocated blocks)."""
    out = {}
    for name in sorted(os.listdir(root)):
        try:
            st = os.stat(os.path.join(root, name))
        except FileNotFoundError:  # removed meanwhile (another process compacting)
            continue
        if stat.S_ISREG(st.st_mode):
            out[name] = {"bytes": st.st_size, "disk_bytes": st.st_blocks * 512}
    return out


def _build_index(engine: Engine) -> None:
    """Build the new generation's ANN index now when the store was opened with ``ann=True``
    or ``"approximate"`` (automatic mode: on the first vector ask that wants it; derived
    data: a failure is only logged)."""
    with engine.snapshot() as snap:
        if engine.ann_mode is not None and _ann.wanted(engine.ann_mode, snap.state.n_slots):
            try:
                _ann.for_engine(engine).state(snap.state.gen, snap.matrix, snap.state.n_slots)
            except (OSError, ValueError, MemoryError) as exc:
                _ann.log.warning("mnemos_kv: ANN index not built after compaction: %s", exc)


def compact(engine: Engine, *, merge_similar: float | None = None,
            progress: Progress | None = None, rewrite_lmdb: bool = True) -> dict[str, Any]:
    """Merge near-duplicates (optional), rewrite the vector files, checkpoint the log and
    rewrite the LMDB file when no other process has the store open; returns a report."""
    from . import _lmdb_rewrite, _semantic
    engine.check_writable()
    if merge_similar is not None:
        merge_similar = _semantic.check_threshold(merge_similar)
    t0 = time.perf_counter()
    before = file_usage(engine.path)
    merged = 0
    log.info("%s: compaction started", engine.path)
    if merge_similar is not None:
        merged = _semantic.merge_similar(engine, merge_similar, progress)
        log.info("%s: compaction merged %d near-duplicates (cosine >= %s)", engine.path, merged,
                 merge_similar)
    out: dict[str, Any] = dict(compact_vectors(engine, progress))
    log.info("%s: compaction wrote generation %d (%d -> %d slots) and a checkpoint at seq %d",
             engine.path, out["generation"], out["slots_before"], out["slots_after"], out["seq"])
    if rewrite_lmdb:
        done, note = _lmdb_rewrite.rewrite(engine.env, progress)
    else:
        done, note = False, "LMDB file left as it is (rewrite_lmdb=False)"
    out.update(merged=merged, lmdb_compacted=done, lmdb_note=note, files_before=before,
               files_after=file_usage(engine.path), seconds=time.perf_counter() - t0)
    log.info("%s: compaction done in %.2f s", engine.path, out["seconds"])
    return out


def compact_vectors(engine: Engine, progress: Progress | None = None) -> dict[str, int]:
    """Rewrite live vector rows into generation ``gen + 1`` and checkpoint the log."""
    engine.check_writable()
    result: dict[str, int] = {}
    holder: dict[str, Any] = {}

    def body(txn: lmdb.Transaction) -> dict[str, int]:
        holder.clear()
        st = engine._state_in(txn)
        engine.open_log(st)
        if st.log_sync < st.log_end and engine.log.size() < st.log_end:
            engine._restore_log(txn, st)
        engine._reconcile(txn, st)
        old_mat, old_slots = engine.vectors.view(st.gen, st.n_slots)
        keep = np.flatnonzero(old_slots["dead"] == 0)
        # live rows in id order (an update appends a newer slot for an older id): the
        # new generation's id column ascends again, like a replay of the base snapshot
        keep = keep[np.argsort(old_slots["id"][keep], kind="stable")]
        new_gen = st.gen + 1
        holder.update(gen=new_gen, old_gen=st.gen, old_seg=st.log_seg,
                      old_base=engine.log.base_seq)
        # strays of an interrupted compaction (we hold the write lock)
        _remove_generations(engine.path, st.gen)
        remove_stale(engine.path, st.log_seg, engine.log.base_seq)
        VectorFiles.create(engine.path, engine.dim, new_gen, rows=max(int(keep.size), 1))
        fresh = VectorFiles(engine.path, engine.dim, readonly=False)
        try:
            mat, slots = fresh.ensure(new_gen, int(keep.size))
            n_keep = int(keep.size)
            for lo in range(0, n_keep, _ROWS_CHUNK):
                part = keep[lo: lo + _ROWS_CHUNK]
                mat[lo: lo + part.size] = old_mat[part]
                slots[lo: lo + part.size] = old_slots[part]
                if progress is not None:
                    progress("vectors", lo + part.size, n_keep)
            rdb = engine.env.db("records")
            for new_slot, mid in enumerate(old_slots["id"][keep].tolist()):
                raw = txn.get(S.u64(mid), db=rdb)
                if raw is None:
                    raise R.CorruptionError(f"live slot holds id {mid} with no record")
                txn.put(S.u64(mid), R.Record.from_bytes(raw).with_slot(new_slot).to_bytes(), db=rdb)
                if progress is not None and (new_slot + 1) % 10_000 == 0:
                    progress("records", new_slot + 1, n_keep)
            if progress is not None:
                progress("records", n_keep, n_keep)
            fresh.sync()
        finally:
            fresh.close()
        ctx = _Ctx(txn, st, mat, slots)
        engine.apply_op(ctx, {"op": "compact", "gen": new_gen})
        holder["log_end"] = st.log_end
        st.log_end = engine.log.append(st.log_end, b"".join(ctx.frames), True)  # write-ahead, both modes
        holder["appended"] = True
        result.update(slots_before=st.n_slots, slots_after=int(keep.size), generation=new_gen,
                      seq=st.seq)
        st.gen, st.n_slots = new_gen, int(keep.size)
        st.unsorted = 0
        engine.vectors.ensure(new_gen, st.n_slots)
        new_mat, _ = engine.vectors.view(new_gen, st.n_slots)
        if progress is not None:
            progress("snapshot", 0, 1)
        checkpoint(engine, txn, st, new_mat)
        if progress is not None:
            progress("snapshot", 1, 1)
        holder["new_seg"] = st.log_seg
        txn.put(b"state", R.encode(st.to_dict()), db=engine.env.db("meta"))
        return result

    def on_abort(txn: lmdb.Transaction) -> None:  # under the writer lock (see Env.write)
        if holder.get("appended"):
            engine.undo_tail(txn)
        gen = holder.get("gen")
        if gen is not None:
            # this attempt's files are removed below, or were replaced by another
            # process's compaction that committed since: no mapping of them may stay
            engine.vectors.discard(gen)
            if gen != engine._state_in(txn).gen:  # (not committed since)
                for p in (vector_file(engine.path, gen), slot_file(engine.path, gen)):
                    S.unlink_quiet(p)

    out = engine.env.write(body, on_abort)
    # after the commit: remove exactly what this compaction superseded
    for p in (vector_file(engine.path, holder["old_gen"]), slot_file(engine.path, holder["old_gen"])):
        S.unlink_quiet(p)
    remove_superseded(engine.path, holder["old_seg"], holder["old_base"])
    _ann.remove_files(engine.path, keep_gen=holder["gen"])
    engine.open_log(engine.read_state())
    _build_index(engine)
    if progress is not None:
        progress("committed", 1, 1)
    return out
