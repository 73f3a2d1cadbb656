"""``remember_many`` validated column by column: a :class:`Block` for ``_ingest.apply_block``.

:func:`prepare_block` checks a call's items as ``_validate.prepare_remember`` does, but a
field at a time over the whole call (C passes: ``map``, ``set``, ``str.join``, numpy)
instead of item by item, and keeps the result as columns: the texts and their UTF-8,
the metadata checked and encoded once per distinct value (items of equal flat metadata
share one checked dict and one CBOR encoding), the timestamps and type codes as arrays,
the vectors as one checked block. It accepts the common shapes only (a list of texts,
or of plain dicts of the known fields with plain values); for anything else, or for
any value the checks refuse, it returns None and the caller validates item by item,
which names the first bad item as always. Whatever it accepts, it accepts with the
same values, encodings and errors as the item-by-item path (``tests/test_bulk_ingest.py``
compares the stores both leave).
"""

from __future__ import annotations

import itertools
import operator
from typing import Any, Callable

import numpy as np

from . import _records as R
from ._timeutil import to_us
from .embedders import check_vectors, embed_checked
from .errors import InvalidInputError

__all__ = ["Block", "prepare_block", "embed_block", "MIN_BLOCK"]

#: Calls of fewer items are validated item by item (the same result; no gain below).
MIN_BLOCK = 64

_FIELDS = frozenset(("text", "metadata", "type", "timestamp", "key", "vector", "pinned"))
#: Value classes whose equal values encode the same (compared with their classes: 1,
#: 1.0 and True differ; float zeros are left out, 0.0 == -0.0)
_MEMO_CLASSES = frozenset((str, int, bool, type(None), float))
#: Value classes of which no two hold equal values (with at most one of _NUMBERS).
_PLAIN_CLASSES = frozenset((str, int, bool, type(None)))
_NUMBERS = frozenset((int, bool))
_DTYPE = operator.attrgetter("dtype")
_EMPTY: dict[str, Any] = {}
_EPISODIC = R.TYPE_CODES["episodic"]


class Block:
    """A validated ``remember_many`` call, by columns (one namespace).

    ``texts``/``raw``: the texts and their UTF-8; ``metas``: each item's checked
    metadata (items of equal flat metadata share one dict: read it, never change it);
    ``e_meta``: its canonical CBOR; ``types``: type codes (int64); ``ts``: timestamps
    in microseconds (int64); ``keys``/``pinned``: per item, or None when no item has
    one; ``vectors``: the checked (k, dim) float32 rows, or None until embedded.
    """

    __slots__ = ("ns", "texts", "raw", "metas", "e_meta", "types", "ts", "keys", "pinned",
                 "vectors")

    def __init__(self, ns: str, texts: list[str], raw: list[bytes], metas: list[dict[str, Any]],
                 e_meta: list[bytes], types: np.ndarray, ts: np.ndarray,
                 keys: list[str | None] | None, pinned: list[bool] | None,
                 vectors: np.ndarray | None) -> None:
        self.ns, self.texts, self.raw, self.metas, self.e_meta = ns, texts, raw, metas, e_meta
        self.types, self.ts, self.keys, self.pinned, self.vectors = types, ts, keys, pinned, vectors

    def __len__(self) -> int:
        return len(self.texts)


class _Refused(Exception):
    """Some item is not of a shape or value this path accepts (the caller goes item by item)."""


def prepare_block(eng: Any, ns: str, items: list[Any]) -> Block | None:
    """The checked :class:`Block` of ``items`` (the call's list), or None when the
    item-by-item path must decide (uncommon shapes, or a value it refuses and names)."""
    from . import _ingest
    k = len(items)
    if k < max(MIN_BLOCK, _ingest.MIN_RUN) or getattr(eng, "kind", None) != "embedded":
        return None  # (the Postgres engine takes requests item by item)
    try:
        return _prepare(eng, ns, items, k)
    except (_Refused, InvalidInputError, TypeError, ValueError):
        # (TypeError: e.g. an unhashable type name; the item-by-item path names it. Nothing
        # was changed: the clock is read last, once everything else is accepted.)
        return None


def _prepare(eng: Any, ns: str, items: list[Any], k: int) -> Block:
    classes = set(map(type, items))
    if classes == {str}:
        texts: list[Any] = items
        cols: dict[str, list[Any]] = {}
    elif classes == {dict}:
        fields: set[str] = set().union(*items)
        if not fields <= _FIELDS or "text" not in fields:
            raise _Refused
        # (a missing field is None, as its absence reads; "pinned": None is refused)
        cols = {f: list(map(dict.get, items, itertools.repeat(f))) if f != "pinned" else
                list(map(dict.get, items, itertools.repeat(f), itertools.repeat(False)))
                for f in fields}
        texts = cols.pop("text")
    else:
        raise _Refused
    raw = _texts(texts)
    ts_col = cols.get("timestamp")
    ts = _timestamps(ts_col, k)
    metas, e_meta = _metadata(cols.get("metadata"), k)
    types = _types(cols.get("type"), k)
    keys = _keys(cols.get("key"))
    pinned = cols.get("pinned")
    if pinned is not None:
        if set(map(type, pinned)) != {bool}:
            raise _Refused
        pinned = pinned if any(pinned) else None
    vectors = _vectors(cols.get("vector"), eng.dim, k)
    if ts_col is None or None in ts_col:  # (last: nothing after it refuses the call)
        now = to_us(eng.clock(), "clock()")
        if ts_col is None:
            ts[:] = now
        else:
            ts[[i for i, t in enumerate(ts_col) if t is None]] = now
    return Block(ns, texts, raw, metas, e_meta, types, ts, keys, pinned, vectors)


def _texts(texts: list[Any]) -> list[bytes]:
    """The UTF-8 of each text (every one a non-blank str of at most MAX_TEXT_BYTES)."""
    if set(map(type, texts)) != {str} or not all(texts) or any(map(str.isspace, texts)):
        raise _Refused
    try:
        raw = list(map(str.encode, texts))
    except UnicodeEncodeError:
        raise _Refused from None
    if max(map(len, raw)) > R.MAX_TEXT_BYTES:
        raise _Refused
    return raw


def _timestamps(col: list[Any] | None, k: int) -> np.ndarray:
    """Microseconds of each item's timestamp (int or float seconds; None: 0, for the
    caller to set to the clock's)."""
    if col is None:
        return np.zeros(k, np.int64)
    if set(map(type, col)) - {int, float, type(None)}:
        raise _Refused
    return np.fromiter((0 if t is None else to_us(t, "timestamp") for t in col), np.int64, k)


def _types(col: list[Any] | None, k: int) -> np.ndarray:
    """The type code of each item (a falsy type: episodic)."""
    if col is None:
        return np.full(k, _EPISODIC, np.int64)
    names = [t or "episodic" for t in col]
    if set(map(type, names)) != {str} or not set(names) <= R.TYPE_CODES.keys():
        raise _Refused
    return np.fromiter(map(R.TYPE_CODES.__getitem__, names), np.int64, k)


def _keys(col: list[Any] | None) -> list[str | None] | None:
    """Each item's key (None: none), every key checked and distinct in the call."""
    if col is None:
        return None
    given = [key for key in col if key is not None]
    if not given:
        return None
    if len(set(given)) != len(given) or set(map(type, given)) != {str}:
        raise _Refused  # (item by item names the duplicate)
    for key in given:
        R.check_key(key)
    return col


def _metadata(col: list[Any] | None, k: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(each item's checked metadata, its canonical CBOR): checked and encoded once per
    distinct flat value, compared with the classes of its values."""
    if col is None:
        return [_EMPTY] * k, [b"\xa0"] * k
    if set(map(type, col)) - {dict, type(None)}:
        raise _Refused
    if None in col:
        col = [m if m is not None else _EMPTY for m in col]
    try:
        # (the items of each, in C passes; with their value classes unless the call's
        # values are of classes no two of which hold equal values: str, None and one of
        # int and bool, where equal items are equal metadata)
        keys: list[Any] = list(map(tuple, map(dict.items, col)))
        classes = set(map(type, itertools.chain.from_iterable(map(dict.values, col))))
        plain = classes <= _PLAIN_CLASSES and len(classes & _NUMBERS) <= 1
        if not plain:
            keys = list(zip(keys, map(tuple, map(map, itertools.repeat(type),
                                                 map(dict.values, col)))))
        groups = dict.fromkeys(keys)
    except TypeError:  # an unhashable value (a list, a nested dict): each item alone
        return _each(col)
    if len(groups) * 2 > k:  # mostly distinct: item by item is as quick
        return _each(col)
    clean: dict[Any, dict[str, Any] | None] = {}
    enc: dict[Any, bytes | None] = {}
    for key in groups:
        items: tuple[tuple[str, Any], ...]
        kinds: tuple[type, ...]
        items, kinds = (key, ()) if plain else key
        if all(c in _MEMO_CLASSES for c in kinds) and not any(
                c is float and not v for c, (_k, v) in zip(kinds, items)):
            got, enc[key] = R.check_metadata_encoded(dict(items))
            clean[key] = got or _EMPTY
        else:  # (its items are checked one by one)
            clean[key] = enc[key] = None
    metas = list(map(clean.__getitem__, keys))
    e_meta = list(map(enc.__getitem__, keys))
    if None in e_meta:
        for i, e in enumerate(e_meta):
            if e is None:
                got, e_meta[i] = R.check_metadata_encoded(col[i])
                metas[i] = got or _EMPTY
    return metas, e_meta  # type: ignore[return-value]


def _each(col: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """:func:`_records.check_metadata_encoded` of each metadata of ``col``."""
    checked = [R.check_metadata_encoded(m) for m in col]
    return [c or _EMPTY for c, _ in checked], [r for _, r in checked]


def _vectors(col: list[Any] | None, dim: int, k: int) -> np.ndarray | None:
    """The given vectors as one checked block (every item has one, arrays of one dtype
    and shape ``(dim,)``); None when no item has one (they are embedded)."""
    if col is None:
        return None
    classes = set(map(type, col))
    if classes == {type(None)}:
        return None
    first = col[0]
    if len(classes) != 1 or not isinstance(first, np.ndarray) or set(map(len, col)) != {dim} \
            or set(map(_DTYPE, col)) != {first.dtype}:
        raise _Refused
    block = np.concatenate(col)  # (1-d rows of one dtype: each converts as it would alone)
    if block.shape != (k * dim,):
        raise _Refused
    return check_vectors(block.reshape(k, dim), k, dim, "vector")


def embed_block(eng: Any, block: Block, prog: Callable[[str, int, int], Any] | None) -> None:
    """Embed the texts of a block given without vectors (one embedder call; in chunks
    reporting ``"embed"`` progress when ``prog`` is given)."""
    if block.vectors is not None:
        return
    if prog is None:
        block.vectors = embed_checked(eng.require_embedder(), block.texts)
    else:
        from ._progress import embed
        block.vectors = np.stack(embed(eng.require_embedder(), block.texts, prog))
