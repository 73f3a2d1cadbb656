"""The ANN candidate stage: an inverted-file index over the mmap'd matrix.

Large stores (see :func:`wanted`) do not score every row for a vector ask: the planner
takes as candidates the slots of the lists whose bound can beat the k-th best cosine
(at most ``NPROBE``), plus every slot the index does not cover yet, and scores those
exactly. In the default modes (:func:`strict`) that answer is used only when the bound
proves it exact; otherwise the exact scan answers. numpy only, no extra.

Everything here is a pure function of the vector rows, so the same operations give the
same index and the same answers in every process (export -> replay included):

* *epoch*: the centroids of generation ``G`` are trained (deterministic k-means: evenly
  spaced sample, evenly spaced initial centroids, fixed iterations, first-max ties) on
  rows ``[0, T)`` where ``T = train_size(n)`` is the largest ``TRAIN_BASE * 4**k <= n``;
* *coverage*: a snapshot of ``n`` slots uses the lists of slots ``[0, covered(n))``
  (``n`` rounded down to ``CHUNK``); slots ``[covered(n), n)`` are scanned exactly;
* a slot's list is the argmax of its row against the centroids, computed in fixed
  blocks of ``CHUNK`` rows (same matrix shapes everywhere, so the same float results).

MVCC: rows below a snapshot's ``n_slots`` never change within a generation, and the
planner checks every candidate's ``dead`` mark, namespace, type and time against its own
snapshot, so a reader never sees a slot from outside its snapshot and a forgotten
memory never comes back. The index is derived data, kept in ``ann.G.T.idx`` (header,
centroids, then the list of each slot in CRC-checked chunks, appended by whichever
process first needs them, under ``flock``). A missing file is rebuilt; a damaged
chunk or header is logged and recomputed from the matrix; a read-only process keeps
what it computes in memory. Compaction starts a new generation and so a new index.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._percache import PerOwner
from ._storage import fsync_path, unlink_quiet

__all__ = ["THRESHOLD", "NPROBE", "APPROXIMATE", "MODES", "wanted", "strict", "train_size", "covered", "for_engine",
           "index_file", "remove_files"]

log = logging.getLogger("mnemos_kv")

#: Automatic mode (``ann=None``) uses the index from this many slots on.
THRESHOLD: int = 65_536
#: Smallest training prefix; epochs are TRAIN_BASE * 4**k rows (``ann=True`` needs >= it).
TRAIN_BASE: int = 4096
#: Slots are assigned to lists in blocks of this many; the rest is scanned exactly.
CHUNK: int = 1024
#: Lists probed per query at most (unless filters ask for more): the bound below stops
#: earlier when it can.
NPROBE: int = 16
#: Lists probed first; more are probed, nearest bound first, only while a list's bound
#: can beat the k-th best cosine found so far (see :meth:`IndexState.bounds`).
NPROBE_MIN: int = 2
#: Lists per epoch: TRAIN_BASE // 64 ... MAX_LISTS (an average of 64 training rows each).
MAX_LISTS: int = 4096
ROWS_PER_LIST: int = 64
#: k-means: sampled training rows per list and iterations.
SAMPLE_PER_LIST: int = 16
KMEANS_ITERS: int = 6
#: The first list look-ups of an index state (a few asks: an ask takes one to three)
#: scan the list column; the next one builds the inverted lists (an argsort of every
#: slot) once.
LAZY_PROBES: int = 6

MAGIC = b"MNMSANN1"
VERSION = 2
_HDR = struct.Struct("<8sIIQQII")  # magic, version, dim, gen, T, nlist, centroid crc
_HEADER = 64
_CHUNK_BYTES = CHUNK * 4 + 4       # uint16 list per slot, uint16 cosine code per slot, crc32
_CHUNK_DTYPE = np.dtype([("d", "<u2", (CHUNK,)), ("a", "<u2", (CHUNK,)), ("c", "<u4")])
#: A slot's cosine with its list's centroid is kept as ``floor((cos - EPS + 1) * SCALE)``:
#: a lower bound, so the bounds made from it never exclude a row they should not.
_CODE_SCALE = 32767.5
_CODE_EPS = 1e-6
#: Slack added to each list's bound against float rounding of the cosines compared with it.
BOUND_SLACK = 1e-4


def train_size(n: int) -> int:
    """The training prefix (epoch) for a snapshot of ``n`` slots; 0 = too small for an index."""
    if n < TRAIN_BASE:
        return 0
    t = TRAIN_BASE
    while t * 4 <= n:
        t *= 4
    return t


def n_lists(t: int) -> int:
    return int(min(MAX_LISTS, max(16, t // ROWS_PER_LIST)))


def covered(n: int) -> int:
    """Slots ``[0, covered(n))`` are taken from the lists; the rest are scanned exactly."""
    return (n // CHUNK) * CHUNK


#: ``ann=`` value of the old behaviour: candidates from at most NPROBE lists even when
#: the bound does not close (faster, not exact; hybrid asks ranked over those candidates).
APPROXIMATE = "approximate"
#: The values ``Mnemos.open(ann=...)`` accepts.
MODES: tuple[bool | str | None, ...] = (None, True, False, APPROXIMATE)


def wanted(mode: bool | str | None, n: int) -> bool:
    """Whether a snapshot of ``n`` slots uses the index under ``mode`` (None = automatic)."""
    if mode is False or n < TRAIN_BASE:
        return False
    return mode is True or mode == APPROXIMATE or n >= THRESHOLD


def strict(mode: bool | str | None) -> bool:
    """Whether answers under ``mode`` must equal the exact scan's (all but APPROXIMATE):
    the index serves ``mode="vector"`` asks whose bound closes, the exact scan the rest."""
    return mode != APPROXIMATE


def build_cost_note(n: int, t: int, dim: int) -> str:
    """A rough expected build time for the log line (measured on a loaded 2-core machine:
    ~4 s at 100k x 384, ~66 s at 1M x 384; it grows with rows x lists x dim)."""
    secs = 4.0 * (n / 100_000) * (n_lists(t) / 1024) ** 0.6 * (dim / 384)
    return f"~{secs:.0f} s" if secs >= 1 else "under a second"


def index_file(root: str, gen: int, t: int) -> str:
    return os.path.join(root, f"ann.{gen:06d}.{t:012d}.idx")


def remove_files(root: str, keep_gen: int | None = None) -> None:
    """Remove index files of every generation but ``keep_gen`` (None: all of them)."""
    for name in os.listdir(root):
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "ann" and parts[1].isdigit():
            if keep_gen is None or int(parts[1]) != keep_gen:
                unlink_quiet(os.path.join(root, name))


# --------------------------------------------------------------------------- building

def _assign(matrix: np.ndarray, centroids: np.ndarray, lo: int, hi: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Lists of rows ``[lo, hi)`` (block-aligned), one fixed-shape product per CHUNK, and
    each row's cosine with its list's centroid as a lower-bound code (:func:`code_of`)."""
    out = np.empty(hi - lo, np.uint16)
    codes = np.empty(hi - lo, np.uint16)
    ct = np.ascontiguousarray(centroids.T)
    for a in range(lo, hi, CHUNK):
        b = min(a + CHUNK, hi)
        block = np.ascontiguousarray(matrix[a:b], dtype=np.float32)
        prod = block @ ct
        best = np.argmax(prod, axis=1)
        out[a - lo:b - lo] = best
        codes[a - lo:b - lo] = code_of(prod[np.arange(b - a), best])
    return out, codes


def code_of(cos: np.ndarray) -> np.ndarray:
    """uint16 codes of cosines, rounded down: ``cos >= value_of(code)`` (a safe bound)."""
    x = np.floor((cos.astype(np.float64) - _CODE_EPS + 1.0) * _CODE_SCALE)
    return np.clip(x, 0, 65534).astype(np.uint16)


def value_of(code: np.ndarray) -> np.ndarray:
    """The cosine lower bound a code stands for (65535, an empty list: 1.0)."""
    return np.minimum(code.astype(np.float64) / _CODE_SCALE - 1.0, 1.0)


def train(matrix: np.ndarray, t: int) -> np.ndarray:
    """Deterministic spherical k-means over an evenly spaced sample of rows ``[0, t)``."""
    k = n_lists(t)
    m = min(t, k * SAMPLE_PER_LIST)
    sample = np.ascontiguousarray(matrix[(np.arange(m, dtype=np.int64) * t) // m],
                                  dtype=np.float32)
    cen = sample[(np.arange(k, dtype=np.int64) * m) // k].copy()
    for _ in range(KMEANS_ITERS):
        lab = _assign(sample, cen, 0, m)[0].astype(np.int64)
        cnt = np.bincount(lab, minlength=k)
        order = np.argsort(lab, kind="stable")
        used = np.flatnonzero(cnt)
        starts = np.concatenate(([0], np.cumsum(cnt)[:-1]))[used]
        sums = np.add.reduceat(sample[order].astype(np.float64), starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        ok = norms[:, 0] > 0
        cen[used[ok]] = (sums[ok] / norms[ok]).astype(np.float32)
    return cen


def _chunk_crc(i: int, data: bytes | memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(struct.pack("<Q", i)))


@dataclass(frozen=True)
class IndexState:
    """One immutable state of an epoch's index: lists of slots ``[0, n)``."""

    t: int
    centroids: np.ndarray   # nlist x dim float32
    n: int                  # slots assigned (a multiple of CHUNK)
    lists: np.ndarray       # uint16, slot -> list
    codes: np.ndarray       # uint16, slot -> code of its cosine with its list's centroid
    #: the inverted lists, made by the LAZY_PROBES + 1-th probe (a process that asks
    #: once does not sort a million slots): [int32 slots sorted by (list, slot), int64
    #: offsets (nlist + 1)]; [probes so far]
    inverted: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)
    probes: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)
    #: covered slot count -> each list's lowest code among those slots and the terms of
    #: the bound made from it (see :meth:`_bound_terms`)
    low_codes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False)
    #: (covered slots, size) -> an evenly spaced sample of rows (see :meth:`spaced_sample`)
    samples: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False)

    def members(self, best: np.ndarray, c: int | None = None) -> np.ndarray:
        """The slots (sorted, int64) of the lists ``best`` (below ``c`` when given)."""
        inv = self.inverted
        if not inv:
            self.probes[0] += 1
            if self.probes[0] <= LAZY_PROBES:  # one pass over the list column
                lut = np.zeros(self.centroids.shape[0], bool)
                lut[best] = True
                out = np.flatnonzero(lut[self.lists]).astype(np.int64)
                return out[out < c] if c is not None and self.n > c else out
            order = np.argsort(self.lists, kind="stable").astype(np.int32)
            counts = np.bincount(self.lists, minlength=self.centroids.shape[0])
            inv = [order, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)]
            self.inverted[:] = inv  # (two threads may both build it: the same arrays)
        order, offsets = inv[0], inv[1]
        parts = [order[offsets[p]:offsets[p + 1]] for p in best.tolist()]
        out = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, np.int64)
        return out[out < c] if c is not None and self.n > c else out

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The cosine of ``query`` with each centroid (for :meth:`probe`)."""
        return self.centroids @ query

    def spaced_sample(self, matrix: np.ndarray, c: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` evenly spaced slots of ``[0, c)`` and a contiguous copy of their rows (kept:
        rows below ``c`` never change within a generation)."""
        key = (c, m)
        got = self.samples.get(key)
        if got is None:
            m = min(m, c)
            rows = (np.arange(m, dtype=np.int64) * c) // m if m else np.empty(0, np.int64)
            got = (rows, np.ascontiguousarray(matrix[rows], dtype=np.float32))
            if len(self.samples) >= 2:
                self.samples.clear()
            self.samples[key] = got
        return got

    def _bound_terms(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per list, for a snapshot of ``c`` slots: (lowest cosine code among its slots,
        65535 for none: the widest angle between a member and its centroid; that code's
        cosine ``a``; ``sqrt(1 - a*a)``; whether the list is empty): the
        query-independent half of :meth:`bounds`, computed once per ``c``."""
        got = self.low_codes.get(c)
        if got is None:
            low = np.full(self.centroids.shape[0], 65535, np.uint16)
            np.minimum.at(low, self.lists[:c], self.codes[:c])
            a = value_of(low)
            got = (low, a, np.sqrt(np.maximum(0.0, 1.0 - a * a)), low == 65535)
            if len(self.low_codes) >= 4:  # (only an older snapshot asks for another c)
                self.low_codes.clear()
            self.low_codes[c] = got
        return got

    def bounds(self, scores: np.ndarray, c: int, qnorm: float = 1.0) -> np.ndarray:
        """Per list, an upper bound of the query's cosine with any of its slots below ``c``
        (``-inf`` for a list without one). On the unit sphere the angle from the query
        to a member is at least (query to centroid) - (widest member to centroid), so
        the cosine is at most ``cos(max(0, phi - theta))``."""
        _low, a, sin_a, empty = self._bound_terms(c)
        s = scores.astype(np.float64)
        s /= qnorm
        np.minimum(s, 1.0, out=s)
        np.maximum(s, -1.0, out=s)  # (np.clip, without its overhead)
        sin_s = 1.0 - s * s
        np.sqrt(sin_s, out=sin_s)
        inside = s >= a
        ub = s * a
        sin_s *= sin_a
        ub += sin_s
        ub[inside] = 1.0
        ub *= qnorm
        ub += BOUND_SLACK
        ub[empty] = -np.inf
        return ub

    def probe(self, query: np.ndarray, n: int, nprobe: int, farthest: bool = False,
              scores: np.ndarray | None = None) -> np.ndarray:
        """Sorted slots below ``covered(n)`` of the ``nprobe`` lists nearest ``query``
        (``farthest``: of the lists least similar to it, where its lowest cosines are).
        ``scores``: :meth:`scores` of the query, when the caller has them."""
        c = covered(n)
        if scores is None:
            scores = self.scores(query)
        if farthest:
            scores = -scores
        k = min(nprobe, scores.size)
        part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
        # deterministic choice at the boundary: score descending, then list ascending
        best = part[np.lexsort((part, -scores[part].astype(np.float64)))][:k]
        return self.members(best, c)


def _with_lists(st_t: int, cen: np.ndarray, lists: np.ndarray,
                codes: np.ndarray | None = None) -> IndexState:
    if codes is None:  # (tests: no bound information, every list may hold anything)
        codes = np.zeros(lists.size, np.uint16)
    return IndexState(st_t, cen, int(lists.size), lists, codes)


class NotBuilt(Exception):
    """The index file a snapshot needs is not there (yet) and the caller would not build it."""


class AnnCache:
    """The index states of one engine, per (generation, epoch); thread-safe."""

    def __init__(self, root: str, dim: int, readonly: bool) -> None:
        self.root, self.dim, self.readonly = root, dim, readonly
        self._lock = threading.Lock()
        self._states: dict[tuple[int, int], IndexState] = {}

    def state(self, gen: int, matrix: np.ndarray, n: int, build: bool = True) -> IndexState:
        """The index of the snapshot (generation ``gen``, rows ``matrix[:n]``), covering
        at least ``covered(n)`` slots; loads, extends or builds it as needed.

        :raises NotBuilt: ``build`` is False and the index would have to be trained, or
            THRESHOLD or more rows assigned, here (no usable index file yet).
        """
        t = train_size(n)
        c = covered(n)
        key = (gen, t)
        with self._lock:
            st = self._states.get(key)
            if st is not None and st.n >= c:
                return st
            if st is None:
                cen, lists, codes = self._load_or_train(gen, t, matrix, c, build)
            else:
                cen, lists, codes = st.centroids, st.lists, st.codes
            if lists.size < c:
                lists, codes = self._extend(gen, t, cen, lists, codes, matrix, c)
            st = _with_lists(t, cen, lists, codes)
            # keep the newest epoch of each generation only
            self._states = {k: v for k, v in self._states.items() if k[0] == gen and k[1] >= t}
            self._states[key] = st
            return st

    # -- file -----------------------------------------------------------------------

    def _load_or_train(self, gen: int, t: int, matrix: np.ndarray, c: int, build: bool = True
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = index_file(self.root, gen, t)
        k = n_lists(t)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        if raw:
            got = self._parse(path, raw, gen, t, k)
            if got is not None:
                if c - got[1].size >= THRESHOLD:  # (e.g. a build interrupted by a crash)
                    if not build:
                        raise NotBuilt(path)
                    log.warning("mnemos_kv: assigning %d rows to the ANN index %s: this call "
                                "waits for it (%s)", c - got[1].size, path,
                                build_cost_note(c - got[1].size, t, self.dim))
                return got
        if not build:
            raise NotBuilt(path)
        log.warning("mnemos_kv: building the ANN index of generation %d (epoch %d rows, %d "
                    "lists) over %d rows, once per epoch: this call waits for it (%s); the "
                    "next ones use it (Mnemos.open(ann=False) never builds it)",
                    gen, t, k, c, build_cost_note(c, t, self.dim))
        cen = train(matrix, t)
        if not self.readonly:
            self._create(path, gen, t, cen)
        return cen, np.empty(0, np.uint16), np.empty(0, np.uint16)

    def _parse(self, path: str, raw: bytes, gen: int, t: int, k: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(centroids, lists and codes of the valid leading chunks), or None when the header
        is damaged or of another version."""
        body = _HEADER + k * self.dim * 4
        if len(raw) < body:
            log.warning("mnemos_kv: ANN index %s is truncated; rebuilding it", path)
            return None
        magic, version, dim, g, tt, nl, crc = _HDR.unpack_from(raw, 0)
        if magic == MAGIC and version != VERSION:
            log.warning("mnemos_kv: ANN index %s has format version %d, not %d; rebuilding it",
                        path, version, VERSION)
            return None
        if (magic, version, dim, g, tt, nl) != (MAGIC, VERSION, self.dim, gen, t, k) \
                or zlib.crc32(memoryview(raw)[_HEADER:body]) != crc:
            log.warning("mnemos_kv: ANN index %s has a damaged header; rebuilding it", path)
            return None
        # views of the bytes read, no copies: the centroids, then each chunk (lists, crc)
        cen = np.frombuffer(raw, dtype="<f4", count=k * self.dim, offset=_HEADER).reshape(k, self.dim)
        n_chunks = (len(raw) - body) // _CHUNK_BYTES
        chunks = np.frombuffer(raw, dtype=_CHUNK_DTYPE, count=n_chunks, offset=body)
        crcs = chunks["c"].tolist()
        view = memoryview(raw)
        good = n_chunks
        for i in range(n_chunks):
            pos = body + i * _CHUNK_BYTES
            if _chunk_crc(i, view[pos:pos + CHUNK * 4]) != crcs[i]:
                log.warning("mnemos_kv: ANN index %s: chunk %d is damaged; recomputing from it",
                            path, i)
                good = i
                break
        lists = chunks["d"][:good].reshape(-1).astype(np.uint16)
        codes = chunks["a"][:good].reshape(-1).astype(np.uint16)
        if lists.size and (int(lists.max()) >= k or int(codes.max()) == 65535):
            log.warning("mnemos_kv: ANN index %s holds an out-of-range value; rebuilding it", path)
            return cen, np.empty(0, np.uint16), np.empty(0, np.uint16)
        return cen, lists, codes

    def _create(self, path: str, gen: int, t: int, cen: np.ndarray) -> None:
        cen_bytes = np.ascontiguousarray(cen, dtype="<f4").tobytes()
        head = _HDR.pack(MAGIC, VERSION, self.dim, gen, t, cen.shape[0], zlib.crc32(cen_bytes))
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(head.ljust(_HEADER, b"\0") + cen_bytes)
                f.flush()
                os.fdatasync(f.fileno())
            os.replace(tmp, path)
            fsync_path(self.root)
        except OSError as exc:  # derived data: the answer stays right without the file
            unlink_quiet(tmp)
            log.warning("mnemos_kv: could not write the ANN index %s: %s", path, exc)
            return
        # older epochs of this generation are superseded
        for name in os.listdir(self.root):
            parts = name.split(".")
            if len(parts) == 4 and parts[0] == "ann" and parts[1] == f"{gen:06d}" \
                    and parts[2].isdigit() and int(parts[2]) < t:
                unlink_quiet(os.path.join(self.root, name))

    def _extend(self, gen: int, t: int, cen: np.ndarray, lists: np.ndarray, codes: np.ndarray,
                matrix: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Lists and codes of slots ``[0, c)``: computed past ``lists``, appended to the file."""
        start = lists.size
        new, new_codes = _assign(matrix, cen, start, c)
        out = np.concatenate([lists, new])
        out_codes = np.concatenate([codes, new_codes])
        if not self.readonly:
            self._append(index_file(self.root, gen, t), cen.shape[0], start, new, new_codes)
        return out, out_codes

    def _append(self, path: str, k: int, start: int, new: np.ndarray, codes: np.ndarray) -> None:
        """Append chunks ``start // CHUNK ...`` (under flock; the file may have moved on)."""
        body = _HEADER + k * self.dim * 4
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return  # removed (compaction, a newer epoch): nothing to keep up to date
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            have = max(0, (size - body) // _CHUNK_BYTES)
            first = start // CHUNK
            if have < first:  # another process truncated it: leave it for the next reader
                return
            # rewrite from our first chunk: a concurrent writer wrote the same bytes, and a
            # damaged chunk we recomputed is replaced
            blob = bytearray()
            for j in range(new.size // CHUNK):
                data = np.ascontiguousarray(new[j * CHUNK:(j + 1) * CHUNK], dtype="<u2").tobytes() \
                    + np.ascontiguousarray(codes[j * CHUNK:(j + 1) * CHUNK], dtype="<u2").tobytes()
                blob += data + struct.pack("<I", _chunk_crc(first + j, data))
            if blob:
                os.pwrite(fd, bytes(blob), body + first * _CHUNK_BYTES)
                os.fdatasync(fd)
        except OSError as exc:
            log.warning("mnemos_kv: could not extend the ANN index %s: %s", path, exc)
        finally:
            os.close(fd)


_caches: PerOwner[AnnCache] = PerOwner(lambda e: AnnCache(e.path, e.dim, e.readonly))


def for_engine(engine: Any) -> AnnCache:
    """The index cache of an engine (created on first use; nothing is read until then)."""
    return _caches.get(engine)
