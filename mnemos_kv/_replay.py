"""Deterministic export and replay of a store's history, and the logical state digest.

A replay file is self-describing::

    "MNMSRPL1" | u64 base section length | u64 log section length | u32 header length
    header (canonical CBOR: file version, store format version, embedder name and dim,
            namespaces filter, since_seq, base_seq, first/last seq)
    base section   frames of a base snapshot (local seqs 1..m, ending with a ``base`` op)
    log section    the logged frames after it (their own seqs, consecutive)
    trailer        one frame: {"op": "end", "digest": state digest of the source, "frames": n}

Replaying applies the logged ops through the same ``Engine.apply_op`` the source ran,
with the logged ids, timestamps and vectors (never the wall clock or the embedder),
so the target ends with the same ids, records, edges, vectors (bit for bit), answers
and the same ``state_digest()``. Exporting the replayed store gives the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
import mmap
import os
import shutil
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from . import _capacity
from . import _progress
from . import _records as R
from . import _storage as S
from ._engine import DEFAULT_NS_ID, Engine, Snapshot
from ._log import FILE_HEADER, FRAME_HEADER, encode_frame, iter_frames
from .errors import (CorruptionError, EmbedderMismatchError, FormatVersionError, InvalidInputError,
                     LogCorruptionError, ReplayError)

log = logging.getLogger("mnemos_kv")

REPLAY_MAGIC = b"MNMSRPL1"
REPLAY_VERSION = 1
_PREFIX = struct.Struct("<8sQQI")
BATCH = 2000


# -- digest --------------------------------------------------------------------------------

def state_digest(engine: Any, snap: Any, namespaces: Sequence[str] | None = None) -> str:
    """SHA-256 over the logical state: namespaces, memories (with vectors), edges, counters.

    Internal layout (slots, generations, log segments) is left out, so a compacted
    store and its uncompacted twin that ran the same operations digest the same,
    except for the ``compact`` op's sequence number, which is part of the history.
    With ``namespaces``, only those namespaces' memories and edges count, and the
    store-wide counters are left out. ``snap`` is any engine's read view (the
    ``_backend.Reader`` protocol), so an embedded store and a PostgreSQL store holding
    the same state digest the same.
    """
    st = snap.state
    h = hashlib.sha256()
    h.update(R.encode(["mnemos-digest", 1, engine.embedder_name, engine.dim]))
    nss = snap.namespaces()
    if namespaces is None:
        sel = {int(info["id"]): name for name, info in nss.items()}
        h.update(R.encode(["counters", st.seq, st.next_id]))
    else:
        sel = {int(nss[n]["id"]): n for n in sorted(set(namespaces)) if n in nss}
    for nid in sorted(sel, key=lambda i: sel[i]):
        h.update(R.encode(["ns", sel[nid]]))
    for rec, vec in snap.digest_records():
        if rec.ns not in sel:
            continue
        item = ["mem", rec.id, sel[rec.ns], rec.text, rec.metadata, rec.type, rec.ts, rec.key, vec]
        if rec.upd is not None:  # (never-updated memories digest as before)
            item.append(rec.upd)
        h.update(R.encode(item))
    for src, dst, rel, w, src_ns in snap.digest_edges():
        if src_ns is None or src_ns not in sel:
            continue
        h.update(R.encode(["edge", src, dst, rel, w]))
    for item in _capacity.digest_items(snap, sel, namespaces is None):
        h.update(R.encode(item))  # limits, pins, evicted counters (none: nothing added)
    return h.hexdigest()


# -- export ------------------------------------------------------------------------------

def check_out_path(path: Any, what: str) -> str:
    """A path a new file can be written to: its directory exists, it is not a directory."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes) or not os.fspath(path):
        raise InvalidInputError(f"{what} must be a non-empty str or os.PathLike, got {path!r}")
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InvalidInputError(f"{what} {path!r} is a directory; name a file in it")
    if not os.path.isdir(parent):
        raise InvalidInputError(f"{what} {path!r}: its directory {parent!r} does not exist")
    return path

@dataclass(frozen=True)
class ExportInfo:
    """What ``export_replay`` wrote."""

    path: str
    frames: int
    base_frames: int
    first_seq: int | None
    last_seq: int
    bytes: int
    digest: str


class _NsFilter:
    """Follows which memory ids belong to the selected namespaces while scanning ops."""

    def __init__(self, ns_ids: set[int], names: set[str]) -> None:
        self.ns_ids, self.names = ns_ids, names
        self.ids: set[int] = set()

    def keep(self, op: dict[str, Any]) -> bool:
        kind = op["op"]
        if kind == "ns":
            if op["name"] in self.names:
                self.ns_ids.add(int(op["id"]))
                return True
            return False
        if kind == "mem":
            if int(op["ns"]) in self.ns_ids:
                self.ids.add(int(op["id"]))
                return True
            return False
        if kind in ("forget", "evict", "pin", "meta", "update"):
            return int(op["id"]) in self.ids
        if kind in ("link", "unlink"):
            return int(op["src"]) in self.ids
        if kind in ("capacity", "drop"):
            return op.get("ns") is not None and int(op["ns"]) in self.ns_ids
        if kind == "evicted":
            op["counts"] = [[n, c] for n, c in op["counts"] if int(n) in self.ns_ids]
            return bool(op["counts"])
        return kind in ("base", "compact")


def export_replay(engine: Engine, path: str, *, namespaces: Sequence[str] | None = None,
                  since_seq: int | None = None, progress: Any = None) -> ExportInfo:
    """Write the replay file for the store's retained history (see the module doc).

    When a compaction in another process removes the log files of the snapshot being
    exported, the export starts again on a newer snapshot.
    """
    from ._log import LogGone
    check_out_path(path, "export path")
    for attempt in range(5):
        try:
            return _export_once(engine, path, namespaces=namespaces, since_seq=since_seq,
                                progress=progress)
        except LogGone:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def check_export_args(namespaces: Sequence[str] | None, since_seq: int | None
                      ) -> list[str] | None:
    """The sorted namespace names of an export (None: all). :raises InvalidInputError:"""
    if namespaces is not None:
        if isinstance(namespaces, str):
            namespaces = [namespaces]
        names = sorted(set(namespaces))
        if not names:
            raise InvalidInputError("namespaces must name at least one namespace")
    else:
        names = None
    if since_seq is not None and (isinstance(since_seq, bool) or not isinstance(since_seq, int)
                                  or since_seq < 0):
        raise InvalidInputError(f"since_seq must be a non-negative int, got {since_seq!r}")
    return names


def check_since(since_seq: int | None, seq: int, base_seq: int) -> None:
    """``since_seq`` must lie within the retained history ``[base_seq, seq]``."""
    if since_seq is not None:
        if since_seq > seq:
            raise InvalidInputError(f"since_seq {since_seq} is beyond the store's seq {seq}")
        if since_seq < base_seq:
            raise InvalidInputError(
                f"history before seq {base_seq} was compacted into a base snapshot; export "
                f"with since_seq >= {base_seq}, or without since_seq for the full state")


def _export_once(engine: Engine, path: str, *, namespaces: Sequence[str] | None,
                 since_seq: int | None, progress: Any = None) -> ExportInfo:
    from ._snapshot import inline_vector, snapshot_file, snapshot_frames, snapshot_gen

    names = check_export_args(namespaces, since_seq)
    with engine.snapshot() as snap:
        st = snap.state
        log = engine.open_log(st)
        base_seq = log.base_seq
        check_since(since_seq, st.seq, base_seq)

        def base() -> Iterator[bytes]:
            spath = snapshot_file(engine.path, base_seq)
            by_row = snapshot_gen(spath)
            if by_row and by_row != st.gen:
                raise CorruptionError(f"{spath}: names the vector rows of generation "
                                      f"{by_row}, but the store is at generation {st.gen}")
            for _o, _s, p in snapshot_frames(spath):
                if by_row:
                    op = R.decode(p, "snapshot frame")
                    if "vrow" in op:  # the replay file carries the vector itself
                        p = R.encode(inline_vector(op, snap.matrix, spath))
                yield p

        if log.size() < st.log_end:  # frames are never silently left out
            raise CorruptionError(
                f"{log.path}: {log.size()} bytes, but {st.log_end} are committed (after a "
                "machine crash, the unflushed log tail is restored by the first read-write "
                "open); nothing was exported")

        def frames() -> Iterator[tuple[int, bytes]]:
            for _off, seq, payload in log.frames(FILE_HEADER, st.log_end):
                if b"\x64vrow" in payload and (since_seq is None or seq > since_seq):
                    op = R.decode(payload, "log frame")
                    if "vrow" in op:  # format 3: the replay file carries the vector itself
                        payload = R.encode(inline_vector(op, snap.matrix, log.path))
                yield seq, payload

        return write_export(engine, snap, path, names, since_seq, base_seq,
                            base if base_seq > 0 else None, frames(), st.seq - base_seq,
                            progress)


def write_export(engine: Any, snap: Any, path: str, names: list[str] | None,
                 since_seq: int | None, base_seq: int, base: Any,
                 frames: Iterable[tuple[int, bytes]], total: int, progress: Any) -> ExportInfo:
    """Write a replay file from any engine's retained history (shared by every engine).

    ``snap``: the read view the history belongs to (its digest ends the file);
    ``base``: None, or a callable giving the payloads of the base snapshot at
    ``base_seq``; ``frames``: ``(seq, payload)`` of the logged ops after ``base_seq``,
    ascending; ``total``: how many, for ``progress("log", done, total)``.
    """
    flt = None
    if names is not None:
        flt = _NsFilter({DEFAULT_NS_ID} if "default" in names else set(), set(names))
    # base section (scanned with a filter even when not exported: it says which
    # memory ids belong to the selected namespaces)
    # The sections are streamed into a scratch file (bounded memory for any log
    # size), then copied behind the header, which needs their lengths and counts.
    scratch = f"{path}.body.tmp"
    out = open(scratch, "w+b")
    try:
        n_base = 0
        if base is not None and (since_seq is None or flt is not None):
            for p in base():
                if flt is not None:
                    op = R.decode(p, "snapshot frame")
                    if not flt.keep(op):
                        continue
                    if op["op"] == "evicted":  # counters narrowed to the namespaces kept
                        p = R.encode(op)
                if since_seq is None:
                    n_base += 1
                    out.write(encode_frame(n_base, p))
        base_len = out.tell()
        # log section
        start = base_seq if since_seq is None else since_seq
        n_log, first, last = 0, None, start
        renumber = flt is not None
        scanned = 0
        for seq, payload in frames:
            scanned += 1
            if progress is not None and scanned % _progress.EVERY == 0:
                progress("log", scanned, total)
            if flt is not None and not flt.keep(R.decode(payload, "log frame")):
                continue
            if seq <= start:
                continue
            n_log += 1
            out_seq = (n_log if renumber else seq)
            first = out_seq if first is None else first
            last = out_seq
            out.write(encode_frame(out_seq, payload))
        log_len = out.tell() - base_len
        digest = state_digest(engine, snap, names)
        header: dict[str, Any] = {"version": REPLAY_VERSION, "format_version": R.REPLAY_FORMAT_VERSION,
                  "embedder": engine.embedder_name, "dim": engine.dim, "namespaces": names,
                  "since_seq": since_seq, "base_seq": base_seq if n_base else 0,
                  "first_seq": first,
                  "last_seq": last if n_log else (base_seq if n_base else start),
                  "renumbered": renumber}
        hdr = R.encode(header)
        trailer = encode_frame(0, R.encode({"op": "end", "digest": digest,
                                            "frames": n_base + n_log}))
        blob = _PREFIX.pack(REPLAY_MAGIC, base_len, log_len, len(hdr)) + hdr
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
            out.seek(0)
            shutil.copyfileobj(out, f, 1 << 20)
            f.write(trailer)
            f.flush()
            os.fsync(f.fileno())
    finally:
        out.close()
        os.unlink(scratch)
    os.replace(tmp, path)
    return ExportInfo(path=os.fspath(path), frames=n_base + n_log, base_frames=n_base,
                      first_seq=first, last_seq=int(header["last_seq"]),
                      bytes=len(blob) + base_len + log_len + len(trailer), digest=digest)


# -- replay --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayResult:
    """What ``replay`` did. ``complete`` is False when a non-strict replay stopped early
    at ``stopped_at`` (byte offset) / ``stopped_frame`` (index) because of ``error``."""

    applied: int
    complete: bool
    digest: str
    source_digest: str | None
    stopped_at: int | None = None
    stopped_frame: int | None = None
    error: str | None = None

    @property
    def digest_matches(self) -> bool:
        return self.source_digest is not None and self.digest == self.source_digest


class _Frames:
    """Verified frames of a mapped replay file, kept as positions: payloads are sliced
    from the mapping on iteration, so a replay holds no copy of the whole file."""

    def __init__(self, data: Any, with_seq: bool) -> None:
        self.data, self.with_seq = data, with_seq
        self.offsets, self.seqs, self.lengths = array("q"), array("q"), array("q")

    def add(self, off: int, seq: int, length: int) -> None:
        self.offsets.append(off)
        self.seqs.append(seq)
        self.lengths.append(length)

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[Any]:
        for off, seq, n in zip(self.offsets, self.seqs, self.lengths):
            payload = bytes(self.data[off + FRAME_HEADER: off + FRAME_HEADER + n])
            yield (off, seq, payload) if self.with_seq else (off, payload)


@dataclass
class _Parsed:
    header: dict[str, Any]
    base: _Frames                     # iterates (offset, payload)
    log: _Frames                      # iterates (offset, seq, payload)
    trailer: dict[str, Any] | None
    error: LogCorruptionError | None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad_header_field(h: dict[str, Any]) -> str:
    """What is wrong with a replay header's fields ("" when nothing): the header has no
    checksum of its own, so its types are checked before anything uses them."""
    for k in ("version", "format_version", "dim", "base_seq"):
        if k in h and not (_is_int(h[k]) and h[k] >= 0):
            return f"{k} is {h[k]!r}, expected an int >= 0"
    if "embedder" in h and not isinstance(h["embedder"], str):
        return f"embedder is {h['embedder']!r}, expected a str"
    for k in ("since_seq", "first_seq", "last_seq"):
        if h.get(k) is not None and not _is_int(h[k]):
            return f"{k} is {h[k]!r}, expected an int or null"
    ns = h.get("namespaces")
    if ns is not None and not (isinstance(ns, list) and all(isinstance(n, str) for n in ns)):
        return f"namespaces is {ns!r}, expected a list of names or null"
    if "renumbered" in h and not isinstance(h["renumbered"], bool):
        return f"renumbered is {h['renumbered']!r}, expected a bool"
    return ""


def _parse(path: str) -> _Parsed:
    if os.path.isdir(path):
        raise InvalidInputError(f"replay file {path!r} is a directory, not a replay file")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"replay file {path!r} does not exist") from exc
    except OSError as exc:
        raise InvalidInputError(f"replay file {path!r} cannot be read: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        data: Any = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise S.translate(exc) from exc
    finally:
        os.close(fd)
    if size < _PREFIX.size:
        raise LogCorruptionError(f"{path}: {size} bytes, shorter than the replay file header",
                                 path=path, offset=0, frame=0)
    magic, base_len, log_len, hdr_len = _PREFIX.unpack_from(data, 0)
    if magic != REPLAY_MAGIC:
        raise LogCorruptionError(f"{path}: not a mnemos-kv replay file (magic {bytes(magic)!r})",
                                 path=path, offset=0, frame=0)
    if _PREFIX.size + hdr_len > size:
        raise LogCorruptionError(f"{path}: truncated inside its header", path=path, offset=_PREFIX.size,
                                 frame=0)
    header = R.decode(bytes(data[_PREFIX.size:_PREFIX.size + hdr_len]), "replay header")
    if not isinstance(header, dict) or "version" not in header:
        raise LogCorruptionError(f"{path}: malformed header", path=path, offset=_PREFIX.size, frame=0)
    bad = _bad_header_field(header)
    if bad:
        raise LogCorruptionError(f"{path}: malformed header: {bad}", path=path,
                                 offset=_PREFIX.size, frame=0)
    if header["version"] > REPLAY_VERSION or header.get("format_version", 0) > R.FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: replay file version {header['version']} (store format "
            f"{header.get('format_version')}) is newer than this mnemos-kv reads "
            f"({REPLAY_VERSION}/{R.FORMAT_VERSION}); upgrade mnemos-kv")
    out = _Parsed(header, _Frames(data, False), _Frames(data, True), None, None)
    off = _PREFIX.size + hdr_len
    index = 0
    sections = ((off, base_len, "base"), (off + base_len, log_len, "log"),
                (off + base_len + log_len, None, "trailer"))
    try:
        for start, length, kind in sections:
            if kind == "trailer":
                end = size
                if start >= size:
                    raise LogCorruptionError(
                        f"{path}: truncated: the end-of-file frame is missing at byte {start} "
                        f"(frame {index})", path=path, offset=start, frame=index)
            else:
                end = min(start + length, size)
            for f_off, seq, payload in iter_frames(data, start, end, path=path, first_index=index):
                index += 1
                if kind == "base":
                    out.base.add(f_off, seq, len(payload))
                elif kind == "log":
                    out.log.add(f_off, seq, len(payload))
                else:
                    op = R.decode(payload, "replay trailer")
                    if op.get("op") != "end":
                        raise LogCorruptionError(f"{path}: frame {index - 1} at byte {f_off} is not "
                                                 "the end-of-file frame", path=path, offset=f_off,
                                                 frame=index - 1)
                    out.trailer = op
            if kind != "trailer" and start + length > size:
                raise LogCorruptionError(
                    f"{path}: truncated at byte {size}: the {kind} section claims "
                    f"{start + length - size} more bytes (frame {index})", path=path, offset=size,
                    frame=index)
        if out.trailer is not None and out.trailer.get("frames") != len(out.base) + len(out.log):
            raise LogCorruptionError(f"{path}: the end frame counts {out.trailer.get('frames')} "
                                     f"frames, the file holds {len(out.base) + len(out.log)}",
                                     path=path, offset=size, frame=index)
    except LogCorruptionError as exc:
        out.error = exc
    return out


def replay(engine: Any, path: str, *, strict: bool = True, resume: bool = False,
           progress: Any = None) -> ReplayResult:
    """Apply a replay file to the store (see ``Mnemos.replay`` for the rules).

    Any engine: it needs ``read_state()``, ``write([("op", op), ...], allow_gaps=)``,
    ``replay_compact()`` (a logged ``compact`` op) and ``restore_base(ops, progress)``.
    """
    engine.check_writable()
    parsed = _parse(os.fspath(path))
    hdr = parsed.header
    if hdr.get("embedder") != engine.embedder_name or hdr.get("dim") != engine.dim:
        raise EmbedderMismatchError(
            f"{path}: made with embedder {hdr.get('embedder')!r} (dim {hdr.get('dim')}); this "
            f"store uses {engine.embedder_name!r} (dim {engine.dim})")
    if parsed.error is not None and strict:
        raise parsed.error
    st = engine.read_state()
    if resume:
        if parsed.base or hdr.get("renumbered"):
            raise ReplayError(f"{path}: resume needs an unfiltered export made with since_seq; this "
                              "file holds a base snapshot or a namespace filter")
        if hdr.get("since_seq") != st.seq:
            raise ReplayError(f"{path}: continues from seq {hdr.get('since_seq')}, but this store is "
                              f"at seq {st.seq}")
    elif st.seq != 0 or st.live != 0 or st.next_id != 1:
        raise ReplayError(f"store {engine.path!r} is not empty (seq {st.seq}); replay into a new "
                          "store, or pass resume=True to continue a store from an incremental export")
    filtered = bool(hdr.get("renumbered"))
    applied = 0
    # base section: restore in batches without logging, then checkpoint the target
    if parsed.base:
        applied += engine.restore_base(
            (R.decode(p, "snapshot frame") for _o, p in parsed.base), progress)
    batch: list[dict[str, Any]] = []
    last_seq = None

    def flush() -> None:
        nonlocal applied
        if batch:
            engine.write([("op", op) for op in batch], allow_gaps=filtered)
            applied += len(batch)
            if progress is not None:
                progress("replay", applied, len(parsed.base) + len(parsed.log))
            got = engine.read_state().seq
            if not filtered and got != last_seq:
                raise ReplayError(f"replay diverged: after seq {last_seq} the store is at seq {got}")
            batch.clear()

    for _off, seq, payload in parsed.log:
        op = R.decode(payload, "log frame")
        if op.get("op") == "compact":
            flush()
            out = engine.replay_compact()
            applied += 1
            if not filtered and out["seq"] != seq:
                raise ReplayError(f"replay diverged: compaction at seq {out['seq']}, logged at {seq}")
            continue
        if len(batch) >= BATCH and op.get("op") != "evict":
            flush()  # never between a write's ops and the evictions that end it
        batch.append(op)
        last_seq = seq
    flush()
    with engine.snapshot() as snap:
        digest = state_digest(engine, snap, hdr.get("namespaces"))
    err = parsed.error
    log.debug("%s: replayed %d frames from %s", engine.path, applied, path)
    source = parsed.trailer.get("digest") if parsed.trailer else None
    if err is None and source is not None and digest != source:
        raise ReplayError(f"replay of {path} finished but the state digest {digest[:16]}… differs "
                          f"from the source's {source[:16]}…")
    return ReplayResult(applied=applied, complete=err is None, digest=digest, source_digest=source,
                        stopped_at=None if err is None else err.offset,
                        stopped_frame=None if err is None else err.frame,
                        error=None if err is None else str(err))


def restore_base(engine: Engine, ops: Iterable[dict[str, Any]], progress: Any = None) -> int:
    """Apply the ops of a base snapshot (or a loaded dump) in batches, without logging,
    then checkpoint: the new log starts after a base snapshot holding them. Returns
    how many ops. ``progress("restore", done, total=0)`` after each batch."""
    applied = 0
    total = len(ops) if isinstance(ops, list) else 0
    chunk: list[dict[str, Any]] = []
    last_kind = None
    for op in ops:
        last_kind = op.get("op")
        chunk.append(op)
        if len(chunk) >= BATCH:
            engine.write([("op", o) for o in chunk], log=False, allow_gaps=True)
            applied += len(chunk)
            chunk = []
            if progress is not None:
                progress("restore", applied, total)
    if chunk:
        engine.write([("op", o) for o in chunk], log=False, allow_gaps=True)
        applied += len(chunk)
    if last_kind == "base":
        _checkpoint_now(engine)
    if progress is not None:
        progress("restore", applied, applied)
    return applied


def _checkpoint_now(engine: Engine) -> None:
    """Snapshot the (just restored) state and start a new log segment after it."""
    from ._snapshot import checkpoint, remove_superseded

    holder: dict[str, int] = {}

    def body(txn: Any) -> None:
        st = engine._state_in(txn)
        log = engine.open_log(st)
        holder.update(seg=st.log_seg, base=log.base_seq)
        matrix, _ = engine.vectors.view(st.gen, st.n_slots)
        checkpoint(engine, txn, st, matrix)
        txn.put(b"state", R.encode(st.to_dict()), db=engine.env.db("meta"))

    engine.env.write(body)
    remove_superseded(engine.path, holder["seg"], holder["base"])
    engine.open_log(engine.read_state())


def iter_ops(path: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(section, seq, op) of every frame of a replay file, for inspection (strict)."""
    parsed = _parse(path)
    if parsed.error is not None:
        raise parsed.error
    for i, (_o, p) in enumerate(parsed.base, 1):
        yield "base", i, R.decode(p, "snapshot frame")
    for _o, seq, p in parsed.log:
        yield "log", seq, R.decode(p, "log frame")
