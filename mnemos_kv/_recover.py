"""``recover``: rebuild a store's LMDB file and vector files from its base snapshot and log.

The base snapshot plus the replay log hold every committed operation with its ids,
timestamps and vectors; LMDB (``data.mdb``) and the vector/slot files are a view of
them. Recovery reads the intact part of those two files (never through LMDB's map),
writes them as a replay file, and replays it into a new store with the one applier
(``_replay.replay`` -> ``Engine.apply_op``), so the rebuilt store holds the same ids,
records, edges and vectors. In place, the files it replaces are moved aside as
``<name>.damaged-<n>``; nothing is deleted. See docs/durability.md for what each lost
or damaged file costs.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import _lmdbcheck, _openlock
from . import _records as R
from ._log import FILE_HEADER, LOG_MAGIC, _FILE_HDR, encode_frame, iter_file_frames, log_file
from ._storage import unlink_quiet
from .errors import (CorruptionError, InvalidInputError, LogCorruptionError, MnemosError,
                     StoreError)

_LOG_NAME = re.compile(r"log\.(\d{6,})\.mlog")
#: Files of a store that recovery replaces (moved aside in place, never deleted).
_REPLACED = re.compile(r"(data\.mdb|lock\.mdb|log\.\d+\.mlog|base\.\d+\.msnap|"
                       r"vectors\.\d+\.f32|slots\.\d+\.bin)")


@dataclass
class RecoveryReport:
    """What ``recover`` did: ``memories`` live memories restored from ``frames`` operations;
    ``lost`` says what could not be restored (empty: everything committed is back)."""

    path: str
    target: str
    frames: int = 0
    base_frames: int = 0
    log_frames: int = 0
    memories: int = 0
    last_seq: int = 0
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.lost

    def __str__(self) -> str:
        lines = [f"recovered {self.path} into {self.target}: {self.memories} memories from "
                 f"{self.frames} operations ({self.base_frames} from the base snapshot, "
                 f"{self.log_frames} from the log), up to seq {self.last_seq}"]
        lines += [f"  not restored: {x}" for x in self.lost]
        lines += [f"  note: {x}" for x in self.notes]
        lines += [f"  moved aside: {x}" for x in self.moved_aside]
        return "\n".join(lines)


class _StandIn:
    """The store's embedder by name and dimension only: replay never embeds."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim

    def embed(self, texts: Any) -> Any:
        raise StoreError("recover does not embed text")


def _read_lmdb_meta(root: str, rep: RecoveryReport) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(format, state) from data.mdb read without LMDB, or None where unreadable."""
    path = os.path.join(root, "data.mdb")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        rep.notes.append("data.mdb is missing or empty: the log decides what was committed")
        return None, None
    try:
        table = _lmdbcheck.read_table(path, b"meta")
        fmt = R.decode(table[b"format"], "store format") if b"format" in table else None
        st = R.decode(table[b"state"], "store state") if b"state" in table else None
        return fmt, st
    except (CorruptionError, OSError) as exc:
        rep.notes.append(f"data.mdb is unreadable ({exc}): the log decides what was committed")
        return None, None


def _log_header(path: str) -> tuple[int, int] | None:
    """(segment, base seq) of a log file whose header is intact, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(FILE_HEADER)
    except OSError:
        return None
    if len(head) < FILE_HEADER:
        return None
    magic, _version, seg, base_seq, _ = _FILE_HDR.unpack(head)
    return (seg, base_seq) if magic == LOG_MAGIC else None


def _frames(fd: int, start: int, end: int, path: str, what: str, rep: RecoveryReport,
            first_seq: int | None, snapshot: bool = False) -> Iterator[tuple[int, bytes]]:
    """Intact frames of a file (``snapshot``: a base snapshot, either layout); the first
    damaged one ends the stream (noted as lost)."""
    from ._snapshot import iter_snapshot_fd
    size = os.fstat(fd).st_size
    source = (iter_snapshot_fd(fd, path) if snapshot
              else iter_file_frames(fd, start, min(end, size), path=path))
    try:
        for off, seq, payload in source:
            if first_seq is not None:
                if seq != first_seq:
                    rep.lost.append(f"{path}: frame at byte {off} has seq {seq}, expected "
                                    f"{first_seq}; it and the {size - off} bytes after it")
                    return
                first_seq = None
            R.decode(payload, what)  # a frame whose CRC holds but whose op does not decode
            yield seq, payload
    except (LogCorruptionError, CorruptionError) as exc:
        off = getattr(exc, "offset", -1)
        rest = f"{size - off} bytes from byte {off}" if off >= 0 else "the rest of the file"
        rep.lost.append(f"{what}: {exc}; {rest} could not be read")


def _log_with_pending(root: str, lpath: str, seg: int, st: dict[str, Any] | None,
                      rep: RecoveryReport, scratch: str) -> int:
    """A read descriptor of the log segment ``seg``, completed from data.mdb's ``pending``
    table when the file lost committed bytes after ``log_sync`` (format 3: a machine
    crash before the log was flushed). Read by pread, without LMDB; unlinked scratch copy."""
    fd = os.open(lpath, os.O_RDONLY)
    if st is None or int(st.get("log_seg", 0)) != seg:
        return fd
    start, end = int(st.get("log_sync", st.get("log_end", 0))), int(st.get("log_end", 0))
    if start >= end:
        return fd
    try:
        table = _lmdbcheck.read_table(os.path.join(root, "data.mdb"), b"pending", big=True)
    except (CorruptionError, OSError) as exc:
        rep.notes.append(f"the unflushed log frames in data.mdb are unreadable ({exc})")
        return fd
    from ._engine import _PENDING_KEY
    from ._pending import unpack
    pieces, pos = [], start
    for k in sorted(table):
        kseg, off = _PENDING_KEY.unpack(k)
        if kseg == seg and off == pos and off < end:
            try:
                frames = unpack(table[k])[0]  # (format 7: the write's rows follow them)
            except CorruptionError:
                break
            pieces.append(frames)
            pos += len(frames)
    if pos != end:
        rep.notes.append(f"the unflushed log frames in data.mdb cover bytes {start}..{pos} of "
                         f"{end}")
        return fd
    tail = b"".join(pieces)
    if os.pread(fd, end - start, start) == tail:
        return fd
    rep.notes.append(f"{os.path.basename(lpath)}: committed bytes {start}..{end} (lost from the "
                     "file by a crash before it was flushed) were taken from data.mdb")
    out = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.unlink(scratch)
        pos = 0
        while pos < start:
            chunk = os.pread(fd, min(start - pos, 1 << 24), pos)
            if not chunk:
                break
            os.pwrite(out, chunk, pos)
            pos += len(chunk)
        os.pwrite(out, tail, start)
    except BaseException:
        os.close(out)
        raise
    finally:
        os.close(fd)
    return out


def recover(path: str, *, to: str | None = None, embedder: Any = None) -> RecoveryReport:
    """Rebuild the store at ``path`` from its base snapshot and log (see Mnemos.recover);
    when they cannot restore everything but data.mdb is intact, keep data.mdb's state and
    rebuild the history files from it instead."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidInputError(f"path must be a store directory, got {path!r}")
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise InvalidInputError(f"{root!r} is not a directory")
    if to is not None:
        if not isinstance(to, (str, os.PathLike)) or not os.fspath(to):
            raise InvalidInputError(f"to must be a new directory path, got {to!r}")
        target = os.path.abspath(os.fspath(to))
        if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
            raise InvalidInputError(f"to={target!r} exists and is not an empty directory")
        if target == root:
            raise InvalidInputError("to= must differ from the store path (omit it to recover in place)")
    else:
        target = root
    rep = RecoveryReport(path=root, target=target)
    fmt, st = _read_lmdb_meta(root, rep)
    scratch = f"{target}.recover-{os.getpid()}"
    from_log, from_lmdb = scratch + "-log", scratch + "-lmdb"
    for d in (from_log, from_lmdb):
        shutil.rmtree(d, ignore_errors=True)  # our own leftovers (same pid)
    chosen = keep = None
    try:
        try:
            _from_log(root, from_log, rep, fmt, st, embedder)
            chosen = from_log
        except CorruptionError as exc:
            if fmt is None or st is None:
                raise
            rep.lost.append(str(exc))
        if not rep.complete and fmt is not None and st is not None and _lmdb_intact(root):
            # The log cannot give everything back, but data.mdb is intact: rebuild the
            # history files (a base snapshot) from it instead.
            alt = RecoveryReport(path=root, target=target)
            try:
                _from_lmdb(root, from_lmdb, alt, fmt, st, embedder)
            except MnemosError as exc:
                rep.notes.append(f"rebuilding from data.mdb failed too: {exc}")
            else:
                alt.notes.append("the log could not restore everything (" + "; ".join(rep.lost)
                                 + "); data.mdb is intact, so the store was kept from it "
                                 "and its history files rebuilt: a base snapshot of the state "
                                 f"at seq {alt.last_seq} (the operations before it are no "
                                 "longer exported one by one)")
                rep, chosen = alt, from_lmdb
        if chosen is None:
            raise CorruptionError(f"{root!r}: nothing to recover from: " + "; ".join(rep.lost)
                                  + " (nothing was changed)")
        if to is not None:
            if os.path.isdir(target):
                os.rmdir(target)  # empty (checked above)
            os.rename(chosen, target)
        else:
            try:
                _swap_in(root, chosen, rep)
            except StoreError:
                keep = chosen  # the message names it
                raise
    finally:
        for d in (from_log, from_lmdb):
            if d != keep:
                shutil.rmtree(d, ignore_errors=True)
    return rep


def _lmdb_intact(root: str) -> bool:
    """data.mdb's pages all check out (read by pread, never mapped)."""
    path = os.path.join(root, "data.mdb")
    try:
        problems, _pages = _lmdbcheck.walk(path)
    except OSError:
        return False
    return not problems


def _from_lmdb(root: str, build: str, rep: RecoveryReport, fmt: dict[str, Any],
               st: dict[str, Any], embedder: Any) -> None:
    """Keep the LMDB state and the current vector files; write new history files.

    Copies data.mdb and the current generation's files into ``build``, points the state
    at a fresh, empty log segment, then checkpoints (a base snapshot of the whole state,
    every vector row checked) and verifies.
    """
    import lmdb

    from ._log import LogFile
    from ._replay import _checkpoint_now
    from ._storage import DEFAULT_MAP_SIZE
    from ._vectors import slot_file, vector_file
    from .store import Mnemos

    gen = int(st["gen"])
    os.makedirs(build)
    for src in (os.path.join(root, "data.mdb"), vector_file(root, gen), slot_file(root, gen)):
        shutil.copy2(src, os.path.join(build, os.path.basename(src)))
    segs = [int(m.group(1)) for m in map(_LOG_NAME.fullmatch, os.listdir(root)) if m]
    seg = max(segs + [int(st.get("log_seg", 1))]) + 1
    size = os.path.getsize(os.path.join(build, "data.mdb"))
    env = lmdb.open(build, subdir=True, max_dbs=32, map_size=max(DEFAULT_MAP_SIZE, 2 * size))
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            state = R.decode(txn.get(b"state", db=meta), "store state")
            state.update(log_seg=seg, log_end=FILE_HEADER, vsync_seq=state["seq"],
                         vsync_slots=state["n_slots"], vsync_off=FILE_HEADER,
                         log_sync=FILE_HEADER)
            txn.put(b"state", R.encode(state), db=meta)
            for name in (b"pending", b"vrows"):  # the checkpoint below supersedes them
                try:
                    txn.drop(env.open_db(name, txn=txn, create=False), delete=False)
                except lmdb.NotFoundError:
                    pass
        env.sync(True)
    finally:
        env.close()
    LogFile.create(build, seg, 0)
    emb = embedder if embedder is not None else _StandIn(str(fmt["embedder"]), int(fmt["dim"]))
    with Mnemos.open(build, embedder=emb) as db:
        _checkpoint_now(db._engine.local("recover"))
        v = db.verify()
        if not v.ok:
            raise CorruptionError(f"the store kept from data.mdb fails verify: {v.problems[:3]}")
        stats = db.stats()
        rep.memories, rep.last_seq = stats["total"], stats["seq"]


def _from_log(root: str, build: str, rep: RecoveryReport, fmt: dict[str, Any] | None,
              st: dict[str, Any] | None, embedder: Any) -> None:
    """Replay the base snapshot and the intact log frames into a new store at ``build``."""
    from ._replay import REPLAY_VERSION, _PREFIX, REPLAY_MAGIC
    from ._snapshot import _SNAP_HDR, SNAP_MAGICS, snapshot_file
    from .store import Mnemos

    target = build
    # -- which log segment ----------------------------------------------------------------
    segs = {}
    for name in os.listdir(root):
        m = _LOG_NAME.fullmatch(name)
        if m:
            hdr = _log_header(os.path.join(root, name))
            if hdr is None:
                rep.notes.append(f"{name}: damaged header, skipped")
            elif hdr[0] == int(m.group(1)):
                segs[hdr[0]] = hdr[1]
    seg = None
    if st is not None and int(st.get("log_seg", 0)) in segs:
        seg = int(st["log_seg"])
    elif segs:
        seg = max(segs)
        if st is not None:
            rep.notes.append(f"the log segment data.mdb names ({st.get('log_seg')}) is missing; "
                             f"using segment {seg}")
    if seg is None:
        raise CorruptionError(f"{root!r}: no replay log with an intact header; nothing to recover "
                              "from (nothing was changed)")
    lpath = log_file(root, seg)
    base_seq = segs[seg]

    # -- the operations: base snapshot, then log ------------------------------------------
    tmp_dir = os.path.dirname(target) or "."
    os.makedirs(tmp_dir, exist_ok=True)
    body = os.path.join(tmp_dir, f".{os.path.basename(target)}.recover-{os.getpid()}.body")
    replay_path = os.path.join(tmp_dir, f".{os.path.basename(target)}.recover-{os.getpid()}.replay")
    dim = int(fmt["dim"]) if fmt is not None and "dim" in fmt else None
    base_gen = 0
    n_base = n_log = 0
    first = last = None
    base_ok = True
    try:
        _collect = open(body, "w+b")
    except OSError as exc:
        raise StoreError(f"cannot write the recovery scratch file {body!r}: {exc}") from exc
    with _collect as out:
        try:
            if base_seq:
                bpath = snapshot_file(root, base_seq)
                try:
                    bfd = os.open(bpath, os.O_RDONLY)
                except OSError as exc:
                    base_ok = False
                    rep.lost.append(f"the base snapshot {bpath} is missing ({exc.strerror}): every "
                                    f"memory written before seq {base_seq} and the {os.path.basename(lpath)} "
                                    "frames after it")
                else:
                    try:
                        head = os.pread(bfd, _SNAP_HDR.size, 0)
                        if len(head) < _SNAP_HDR.size or _SNAP_HDR.unpack(head)[0] not in SNAP_MAGICS:
                            base_ok = False
                            rep.lost.append(f"{bpath}: damaged header: the whole base snapshot "
                                            "and the log after it")
                        else:
                            last_op = None
                            base_gen = int(_SNAP_HDR.unpack(head)[2])
                            rows = _BaseRows(root, base_gen, embedder, fmt, rep)
                            for _s, p in _frames(bfd, _SNAP_HDR.size, 1 << 62, bpath,
                                                 "base snapshot", rep, 1, snapshot=True):
                                op = R.decode(p, "base snapshot frame")
                                if "vrow" in op:  # format 3: the vector is in the vector file
                                    op = rows.inline(op)
                                    p = R.encode(op)
                                dim = _dim_of(op, dim)
                                last_op = op.get("op")
                                n_base += 1
                                out.write(encode_frame(n_base, p))
                            if last_op != "base":
                                base_ok = False
                                if not any(x.startswith("base snapshot") for x in rep.lost):
                                    rep.lost.append(f"{bpath}: ends before its final frame")
                                rep.lost.append(f"the log after seq {base_seq}: it cannot apply "
                                                "to an incomplete base snapshot")
                            rows.close()
                    finally:
                        os.close(bfd)
            base_len = out.tell()
            if base_ok:
                end = 1 << 62
                if st is not None and int(st.get("log_seg", 0)) == seg:
                    end = int(st.get("log_end", end))
                    size = os.path.getsize(lpath)
                    if size > end:
                        rep.notes.append(f"{os.path.basename(lpath)}: {size - end} bytes after "
                                         "the committed end (a write that never returned) "
                                         "were left out")
                fd = _log_with_pending(root, lpath, seg, st, rep, body + ".log")
                log_rows: _BaseRows | None = None
                try:
                    for seq, p in _frames(fd, FILE_HEADER, end, lpath, "log", rep, base_seq + 1):
                        op = R.decode(p, "log frame")
                        if "vrow" in op:  # format 3: the vector is in the vector file
                            if log_rows is None:
                                log_rows = _log_rows(root, st, base_gen, embedder, fmt, rep)
                            op = log_rows.inline(op)
                            p = R.encode(op)
                        dim = _dim_of(op, dim)
                        n_log += 1
                        first = seq if first is None else first
                        last = seq
                        out.write(encode_frame(seq, p))
                finally:
                    os.close(fd)
                    if log_rows is not None:
                        log_rows.close()
            log_len = out.tell() - base_len
            # -- the embedder --------------------------------------------------------------
            if embedder is not None:
                from .embedders import resolve
                emb = resolve(embedder)
            elif fmt is not None and "embedder" in fmt and dim is not None:
                emb = _StandIn(str(fmt["embedder"]), int(dim))
            elif dim is not None and dim == _default_dim():
                from .embedders import resolve
                emb = resolve(None)
                rep.notes.append(f"the store's embedder is unknown (data.mdb unreadable); its "
                                 f"vectors have the default embedder's dimension, so the "
                                 f"default {emb.name!r} was assumed (pass embedder= otherwise)")
            else:
                raise StoreError(
                    f"{root!r}: data.mdb is unreadable, so the store's embedder is unknown; pass "
                    f"embedder= (its name and dim{'' if dim is None else f' {dim}'}) to recover")
            if dim is not None and int(emb.dim) != dim:
                raise InvalidInputError(f"embedder dim {emb.dim}, but the log holds {dim}-float vectors")
            header = {"version": REPLAY_VERSION, "format_version": R.REPLAY_FORMAT_VERSION,
                      "embedder": emb.name, "dim": int(emb.dim), "namespaces": None,
                      "since_seq": None, "base_seq": base_seq if n_base else 0,
                      "first_seq": first, "last_seq": last if last is not None else base_seq,
                      "renumbered": False}
            head = R.encode(header)
            with open(replay_path, "wb") as f:
                f.write(_PREFIX.pack(REPLAY_MAGIC, base_len, log_len, len(head)) + head)
                out.seek(0)
                shutil.copyfileobj(out, f, 1 << 20)
                f.write(encode_frame(0, R.encode({"op": "end", "frames": n_base + n_log})))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            unlink_quiet(replay_path)
            raise
        finally:
            unlink_quiet(body)
    rep.base_frames, rep.log_frames, rep.frames = n_base, n_log, n_base + n_log
    rep.last_seq = last if last is not None else (base_seq if base_ok else 0)

    # -- build the new store ---------------------------------------------------------------
    try:
        with Mnemos.open(build, embedder=emb) as db:
            db.replay(replay_path, strict=True)
            rep.memories = db.stats()["total"]
            v = db.verify()
            if not v.ok:
                raise CorruptionError(f"the rebuilt store fails verify: {v.problems[:3]}")
    finally:
        unlink_quiet(replay_path)
    if st is not None and int(st.get("seq", 0)) > rep.last_seq:
        rep.lost.append(f"data.mdb had committed up to seq {st['seq']}; the log holds only up to "
                        f"seq {rep.last_seq}")


def _log_rows(root: str, st: dict[str, Any] | None, base_gen: int, embedder: Any,
              fmt: dict[str, Any] | None, rep: RecoveryReport) -> "_BaseRows":
    """The rows format-3 log frames name: the current generation's vector file (the one
    data.mdb names, else the base snapshot's, else the newest there is), completed by
    the rows not yet flushed to the file that data.mdb holds (``pending``, format 7;
    ``vrows`` before) when it is readable."""
    from ._engine import _VROW_KEY
    from ._pending import rows_in
    if st is not None:
        gen = int(st.get("gen", 1))
    elif base_gen:
        gen = base_gen
    else:
        gens = [int(m.group(1)) for m in map(re.compile(r"vectors\.(\d{6})\.f32").fullmatch,
                                             os.listdir(root)) if m]
        gen = max(gens, default=1)
    extra: dict[int, bytes] = {}
    if st is not None:
        for name in (b"vrows", b"pending"):  # (formats 3-6: vrows; format 7: pending)
            try:
                table = _lmdbcheck.read_table(os.path.join(root, "data.mdb"), name, big=True)
            except (CorruptionError, OSError):
                table = {}
            if name == b"vrows":
                for k, v in table.items():
                    g, slot = _VROW_KEY.unpack(k)
                    if g == gen:
                        extra[slot] = v
            elif table and fmt and isinstance(fmt.get("dim"), int) and fmt["dim"] > 0:
                # (a damaged entry, or an unknown row width: those rows are read from the file)
                extra.update(rows_in(table.values(), 4 * fmt["dim"])[0])
    return _BaseRows(root, gen, embedder, fmt, rep, extra, what="log")


class _BaseRows:
    """The vector rows a format-3 base snapshot names, read by pread from the vector file
    of its generation and checked against the snapshot's CRC-16. A row that is lost or
    damaged is embedded again from its text: with a deterministic embedder (the default
    one is) that gives the same vector back, which its CRC-16 confirms; otherwise the
    report says which memories got a new vector."""

    def __init__(self, root: str, gen: int, embedder: Any, fmt: dict[str, Any] | None,
                 rep: RecoveryReport, extra: dict[int, bytes] | None = None,
                 what: str = "base snapshot") -> None:
        from ._vectors import HEADER, VEC_MAGIC, vector_file
        self.rep, self.embedder, self.fmt = rep, embedder, fmt
        self.extra, self.what = extra or {}, what
        self.path = vector_file(root, gen)
        self.fd: int | None = None
        self.dim = 0
        self.header = HEADER
        self.emb: Any = None
        self.redone = self.differ = 0
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            rep.notes.append(f"{os.path.basename(self.path)}, which holds the {what}'s vectors, "
                             f"is unreadable ({exc.strerror}): they are embedded again")
            return
        head = os.pread(fd, 20, 0)
        if len(head) == 20 and head[:8] == VEC_MAGIC and \
                int.from_bytes(head[12:16], "little") == gen:
            self.fd, self.dim = fd, int.from_bytes(head[8:12], "little")
        else:
            os.close(fd)
            rep.notes.append(f"{os.path.basename(self.path)} has a damaged header: the {what}'s "
                             "vectors are embedded again")

    def _embedder(self) -> Any:
        if self.emb is None:
            from .embedders import resolve
            if self.embedder is not None:
                self.emb = resolve(self.embedder)
            elif self.fmt is not None and self.fmt.get("embedder") == resolve(None).name:
                self.emb = resolve(None)
            elif self.fmt is None and self.dim == int(resolve(None).dim):
                self.emb = resolve(None)
                self.rep.notes.append("the store's embedder is unknown (data.mdb unreadable); "
                                      "the default one has the vectors' dimension and was used "
                                      "to embed the lost rows again")
            else:
                raise StoreError(
                    f"{self.path}: vector rows the {self.what} needs are lost or damaged, and "
                    "the store's embedder is not the default one; pass embedder= to recover "
                    "to embed their texts again")
        return self.emb

    def inline(self, op: dict[str, Any]) -> dict[str, Any]:
        from ._vectors import ROW_KEYS, op_row_ok
        out = {k: v for k, v in op.items() if k not in ROW_KEYS}
        row = op["vrow"]
        if self.fd is not None and isinstance(row, int) and row >= 0:
            n = self.dim * 4
            vec = os.pread(self.fd, n, self.header + row * n)
            if len(vec) == n and op_row_ok(op, vec):
                out["vec"] = vec
                return out
        kept = self.extra.get(row) if isinstance(row, int) else None
        if kept is not None and op_row_ok(op, kept):  # not yet flushed to the vector file
            out["vec"] = kept
            return out
        from .embedders import embed_checked
        vec = embed_checked(self._embedder(), [op["text"]])[0].astype("<f4").tobytes()
        self.redone += 1
        if not op_row_ok(op, vec):
            self.differ += 1
            self.rep.notes.append(f"memory {op.get('id')}: its vector row was lost and its text "
                                  "embedded again gives a different vector (was it given "
                                  "explicitly?)")
        out["vec"] = vec
        return out

    def close(self) -> None:
        if self.redone:
            self.rep.notes.append(f"{self.redone} vectors of the {self.what} were lost or "
                                  f"damaged in {os.path.basename(self.path)} and embedded again "
                                  f"from their texts ({self.redone - self.differ} identical, by "
                                  "their checksums)")
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _default_dim() -> int:
    from .embedders import resolve
    return int(resolve(None).dim)


def _dim_of(op: dict[str, Any], dim: int | None) -> int | None:
    if dim is None and op.get("op") == "mem" and isinstance(op.get("vec"), bytes):
        return len(op["vec"]) // 4
    return dim


def _swap_in(root: str, build: str, rep: RecoveryReport) -> None:
    """Move the replaced files of ``root`` aside (``.damaged-<n>``) and the rebuilt ones in."""
    fd = _openlock.acquire_shared(root)
    try:
        with _openlock.exclusive(root, fd) as why:
            if why is not None:
                raise StoreError(f"cannot recover {root!r} in place: {why}; close the other "
                                 f"processes (the rebuilt store is kept in {build!r})")
            n = 1
            names = sorted(os.listdir(root))
            while any(f"{x}.damaged-{n}" in names for x in names):
                n += 1
            for name in names:
                if _REPLACED.fullmatch(name):
                    aside = f"{name}.damaged-{n}"
                    os.rename(os.path.join(root, name), os.path.join(root, aside))
                    rep.moved_aside.append(aside)
            for name in sorted(os.listdir(build)):
                if name in _openlock.LOCK_FILES:
                    continue
                os.rename(os.path.join(build, name), os.path.join(root, name))
            from ._storage import fsync_path
            fsync_path(root)
    finally:
        _openlock.release(fd)
    shutil.rmtree(build, ignore_errors=True)


__all__ = ["recover", "RecoveryReport"]
