"""``migrate``: copy a store's history into another store through the replay format.

SRC and DST are store paths or PostgreSQL URLs, in any combination. An empty DST gets
SRC's whole history (``export_replay`` then ``replay``). A DST that already holds a
prefix of SRC's history (an earlier migrate) gets only the operations after its own
sequence number (``export_replay(since_seq=...)`` then ``replay(resume=True)``), so
running migrate again keeps a copy in sync incrementally. Before anything is written,
DST's last logged operations are compared with SRC's at the same sequence numbers; a
DST that was written to on its own (it *diverged*) is refused. ``replay`` checks the
state digest at the end in any case.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import InvalidInputError, ReplayError

#: How many of DST's last logged operations are compared with SRC's before a sync.
CHECK_WINDOW = 1000

_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class MigrateResult:
    """What :func:`migrate` did. ``mode``: ``"full"`` (DST was empty), ``"incremental"``
    (DST continued from ``since_seq``) or ``"up-to-date"`` (nothing to copy)."""

    src: str
    dst: str
    mode: str
    since_seq: int     # DST's seq before the call
    seq: int           # DST's seq after it (SRC's seq when exported; with namespaces, renumbered)
    applied: int       # frames applied to DST
    checked: int       # DST operations compared with SRC's before writing
    digest: str        # DST's state digest after the call (equal to SRC's at the export)


class _StandIn:
    """SRC's embedder by name and dimension: a replay never embeds, so DST needs no model
    (open DST later with the real embedder to remember text)."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim = name, dim

    def embed(self, texts: Any) -> Any:
        raise InvalidInputError("migrate does not embed text")


def _is_url(target: str) -> bool:
    return target.lower().startswith(_SCHEMES)


def _target(value: Any, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes) or not os.fspath(value):
        raise InvalidInputError(f"{what} must be a store path or a postgresql:// URL (str), "
                                f"got {value!r}")
    return os.fspath(value)


def _same(a: str, b: str) -> bool:
    if _is_url(a) or _is_url(b):
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def _scratch_parent(src: str, dst: str) -> str | None:
    """Where the replay file is written: next to a local DST (else a local SRC), so it lands
    on the disk that has room for the store; the system temp dir between two servers."""
    for t in (dst, src):
        if not _is_url(t):
            parent = os.path.dirname(os.path.abspath(t))
            if os.path.isdir(parent):
                return parent
    return None


def migrate(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
            namespaces: Sequence[str] | None = None,
            progress: Callable[[str, int, int], Any] | None = None,
            workdir: str | os.PathLike[str] | None = None) -> MigrateResult:
    """Copy store ``src``'s history into store ``dst`` (paths or PostgreSQL URLs).

    An empty (or new) ``dst`` gets the whole history; a ``dst`` made by an earlier
    migrate from ``src`` gets only what ``src`` did since, so calling it again keeps a
    copy in sync. ``dst`` ends with ``src``'s ids, records, vectors, edges and
    ``state_digest()``. ``namespaces`` copies only those (into an empty ``dst`` only: a
    filtered copy cannot be continued). The replay file is written in ``workdir``
    (default: next to a local ``dst`` or ``src``, else the temp dir) and removed.
    ``progress(phase, done, total)``: ``"log"`` (export), ``"check"``, ``"restore"``,
    ``"replay"``.

    :raises ReplayError: ``dst`` is not a copy of ``src``'s history (it was written to on
        its own, is ahead of ``src``, or ``src`` compacted away the operations it lacks).
    :raises EmbedderMismatchError: ``dst`` uses another embedder than ``src``.
    """
    from ._progress import check
    from .store import Mnemos
    s_path, d_path = _target(src, "src"), _target(dst, "dst")
    prog = check(progress)
    if _same(s_path, d_path):
        raise InvalidInputError(f"src and dst are the same store ({s_path!r})")
    names: list[str] | None = None
    if namespaces is not None:
        names = [namespaces] if isinstance(namespaces, str) else list(namespaces)
        if not names:
            raise InvalidInputError("namespaces must name at least one namespace (or be None)")
    if workdir is not None and not os.path.isdir(workdir):
        raise InvalidInputError(f"workdir {os.fspath(workdir)!r} is not a directory")
    if not _is_url(s_path) and not os.path.isdir(s_path):
        raise InvalidInputError(f"src {s_path!r} is not a store directory")
    with Mnemos.open(s_path, readonly=True) as s:
        emb = s.stats()["embedder"]
        with Mnemos.open(d_path, embedder=_StandIn(emb["name"], int(emb["dim"]))) as d:
            tmp = tempfile.mkdtemp(prefix="mnemos-migrate-",
                                   dir=os.fspath(workdir) if workdir is not None
                                   else _scratch_parent(s_path, d_path))
            try:
                return _copy(s, d, s_path, d_path, names, prog, tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def _copy(s: Any, d: Any, s_path: str, d_path: str, names: list[str] | None,
          prog: Any, tmp: str) -> MigrateResult:
    dst_stats = d.stats()
    dseq = int(dst_stats["seq"])
    out = os.path.join(tmp, "migrate.replay")
    if dseq == 0 and int(dst_stats["total"]) == 0:
        s.export_replay(out, namespaces=names, progress=prog)
        res = d.replay(out, progress=prog)
        return MigrateResult(s_path, d_path, "full", 0, int(d.stats()["seq"]), res.applied, 0,
                             res.digest)
    if names is not None:
        raise InvalidInputError(
            f"dst {d_path!r} is not empty: namespaces= copies into an empty store only (a "
            "filtered copy cannot be continued); migrate everything, or into a new store")
    sseq = int(s.stats()["seq"])
    if dseq > sseq:
        raise ReplayError(
            f"dst {d_path!r} is at seq {dseq}, beyond src {s_path!r} at seq {sseq}: it is not "
            "a copy of src's history (written to on its own?); migrate into a new, empty store")
    if dseq == sseq:
        digest = d.state_digest()
        if digest != s.state_digest():
            raise ReplayError(
                f"dst {d_path!r} and src {s_path!r} are both at seq {sseq} but their states "
                "differ: dst is not a copy of src; migrate into a new, empty store")
        return MigrateResult(s_path, d_path, "up-to-date", dseq, dseq, 0, 0, digest)
    checked = _check_prefix(s, d, s_path, d_path, dseq, tmp, prog)
    try:
        s.export_replay(out, since_seq=dseq, progress=prog)
    except InvalidInputError as exc:  # src compacted the operations dst lacks
        raise ReplayError(f"dst {d_path!r} is at seq {dseq}, but src {s_path!r} cannot export "
                          f"from there ({exc}); migrate into a new, empty store") from exc
    res = d.replay(out, resume=True, progress=prog)
    return MigrateResult(s_path, d_path, "incremental", dseq, int(d.stats()["seq"]), res.applied,
                         checked, res.digest)


def _check_prefix(s: Any, d: Any, s_path: str, d_path: str, dseq: int, tmp: str,
                  prog: Any) -> int:
    """Compare dst's last logged operations (up to CHECK_WINDOW, as far as both logs
    reach) with src's at the same seqs; raise ReplayError at the first difference.
    Returns how many were compared."""
    from . import _records as R
    from ._replay import iter_ops
    a, b = os.path.join(tmp, "check-src.replay"), os.path.join(tmp, "check-dst.replay")
    for lo in (max(0, dseq - CHECK_WINDOW), dseq - 1):
        if lo < 0:
            break
        try:  # a log compacted into a base snapshot does not reach back to lo: try less
            d.export_replay(b, since_seq=lo)
            s.export_replay(a, since_seq=lo)
        except InvalidInputError:
            continue
        break
    else:
        return 0
    theirs: dict[int, Any] = {}
    for sect, seq, op in iter_ops(a):
        if sect != "log":
            continue
        if seq > dseq:  # the operations dst lacks: the sync's export has them
            break
        theirs[seq] = op
    n = 0
    for _sect, seq, op in iter_ops(b):
        mine = theirs.get(seq)
        same = mine is not None and (R.encode(mine) == R.encode(op)
                                     or mine["op"] == op["op"] == "compact")
        if not same:
            raise ReplayError(
                f"dst {d_path!r} has diverged from src {s_path!r}: their operations at seq {seq} "
                f"differ (dst: {op.get('op')!r}, src: "
                f"{mine.get('op') if mine is not None else 'none'!r}); dst was written to on "
                "its own. Nothing was copied; migrate into a new, empty store")
        n += 1
        if prog is not None and n % 1000 == 0:
            prog("check", n, dseq - lo)
    os.unlink(a)
    os.unlink(b)
    return n
