"""CRC-32 (``zlib.crc32``) of many short byte strings at once, by numpy table passes.

The hashing embedder hashes ~40 short features per text (character n-grams, bigram
names, stemmed words), each ``zlib.crc32(prefix + feature)``; one Python call per
feature is most of its time on unseen words. Here the strings are spans of one byte
buffer and the table-driven CRC (the reflected polynomial 0xEDB88320 that zlib uses,
one byte per step) runs over all spans together: one numpy step per byte position.
The values are zlib's exactly (integer arithmetic; tests/test_hashing.py compares them).
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["LONG", "crc32_fixed", "crc32_spans", "register", "utf8_spans"]

#: Spans longer than this many bytes are hashed one by one by ``zlib.crc32`` (the numpy
#: passes take one step per byte position of the longest span; below 256: the lengths
#: are sorted as bytes).
LONG: int = 64


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0xEDB88320), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_ONES = np.uint32(0xFFFFFFFF)


def register(prefix: bytes) -> int:
    """The CRC register after ``prefix`` (``zlib.crc32(prefix)`` before its final xor):
    the start state of :func:`crc32_fixed` and :func:`crc32_spans`."""
    return zlib.crc32(prefix) ^ 0xFFFFFFFF


def crc32_fixed(start: int, buf: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``zlib.crc32(prefix + buf[s:s + length])`` for each ``s`` of ``starts`` (uint32),
    ``start`` being :func:`register` of the prefix; ``buf`` is uint8."""
    crc = np.full(starts.size, start, np.uint32)
    for j in range(length):
        crc = _TABLE[crc.astype(np.uint8) ^ buf[starts + j]] ^ (crc >> 8)
    return crc ^ _ONES


def crc32_spans(state: np.ndarray | int, buf: np.ndarray, starts: np.ndarray,
                lens: np.ndarray, *, final: bool = True) -> np.ndarray:
    """The CRC of each span ``buf[s:s + n]`` (``starts``, ``lens``), continued from
    ``state`` (a register from :func:`register`, one for all spans or one per span):
    ``zlib.crc32`` of the bytes before and the span (uint32), or with ``final=False``
    the register after the span (to continue it with another span)."""
    m = starts.size
    crc = np.empty(m, np.uint32)
    crc[:] = state
    long = np.flatnonzero(lens > LONG)
    for i in long.tolist():  # (rare: a long word or term, by zlib from its register)
        n, s0 = int(lens[i]), int(starts[i])
        crc[i] = zlib.crc32(buf[s0:s0 + n].tobytes(), int(crc[i]) ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
    if long.size:
        lens = np.where(lens > LONG, 0, lens)
    if m:
        # the longest first (step j runs over a prefix of them): a stable sort of
        # lengths <= LONG as bytes, which numpy does by radix sort
        order = np.argsort((LONG - lens).astype(np.uint8), kind="stable")
        s = starts[order]
        ln = lens[order]
        c = crc[order]
        live = np.searchsorted(-ln, -np.arange(int(ln[0]), dtype=np.int64), side="left")
        for j, k in enumerate(live.tolist()):
            head = c[:k]
            c[:k] = _TABLE[head.astype(np.uint8) ^ buf[s[:k] + j]] ^ (head >> 8)
        crc[order] = c
    return crc ^ _ONES if final else crc


def utf8_spans(strings: list[str], sep: bytes = b"") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(one uint8 buffer of the UTF-8 ``strings``, each followed by ``sep``; each one's
    start; each one's length in bytes, ``sep`` not counted)."""
    enc = list(map(str.encode, strings))
    lens = np.fromiter(map(len, enc), np.int64, len(enc))
    buf = np.frombuffer(sep.join(enc) + sep, np.uint8)
    step = lens + len(sep)
    return buf, np.cumsum(step) - step, lens
