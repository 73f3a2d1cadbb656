"""Argument validation for the public API: every check raises InvalidInputError, before any write."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from . import _records as R
from . import _retrieval
from ._timeutil import to_us
from .embedders import check_vectors, embed_checked
from .errors import InvalidInputError

if TYPE_CHECKING:
    from ._engine import Engine

_NS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")  # fullmatch: no trailing "\n"
MAX_TOP_K = 10_000
_RELATION = re.compile(r"\S(.{0,62}\S)?")  # fullmatch


def check_namespace(name: Any) -> str:
    """A valid namespace name (exact names; no prefixes or patterns)."""
    if not isinstance(name, str) or not _NS_NAME.fullmatch(name):
        raise InvalidInputError(
            f"namespace name must be 1-128 characters of letters, digits, '_', '.', ':' or '-', "
            f"starting with a letter or digit; got {name!r}")
    return name


#: Ids are stored as u64 keys and i64 slot columns: the largest id there can be.
MAX_ID = (1 << 63) - 1


def check_id(mid: Any, what: str = "id") -> int:
    """A positive int memory id (at most MAX_ID)."""
    if isinstance(mid, bool) or not isinstance(mid, (int, np.integer)) or not 1 <= mid <= MAX_ID:
        raise InvalidInputError(f"{what} must be a positive int memory id (at most 2**63-1), got {mid!r}")
    return int(mid)


def as_list(items: Any, what: str) -> list[Any]:
    """An iterable argument as a list; anything else (None, a number, ...) is bad input."""
    if items is None or isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        raise InvalidInputError(f"{what} must be a list (or another iterable), got "
                                f"{type(items).__name__}")
    return list(items)


def check_types(types: Any) -> tuple[tuple[int, ...] | None, tuple[float, ...]]:
    """``ask(types=...)`` -> (type codes to keep or None, ranking weight per type code)."""
    weights = dict(_retrieval.TYPE_WEIGHTS)
    if types is None:
        return None, tuple(weights[t] for t in R.MEMORY_TYPES)
    if isinstance(types, str):
        types = [types]
    if isinstance(types, Mapping):
        for name, w in types.items():
            R.check_type(name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
                raise InvalidInputError(
                    f"types weight for {name!r} must be a finite number >= 0, got {w!r}")
            weights[name] = float(w)
        chosen = list(types)
    else:
        try:
            chosen = [R.check_type(t) for t in types]
        except TypeError:
            raise InvalidInputError(
                f"types must be a type name, a list of them or a dict of weights, got {types!r}") from None
    if not chosen:
        raise InvalidInputError("types must name at least one memory type")
    codes = tuple(sorted({R.TYPE_CODES[t] for t in chosen}))
    return codes, tuple(weights[t] for t in R.MEMORY_TYPES)


def check_top_k(top_k: Any) -> int:
    """An int from 1 to MAX_TOP_K."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be an int from 1 to {MAX_TOP_K}, got {top_k!r}")
    return int(top_k)


def prepare_remember(eng: Any, ns: str, items: Iterable[Any],
                     keys_seen: set[str], first: int = 0) -> list[list[Any]]:
    """Validate remember items into engine requests (vector None where still to embed;
    a tenth item, the canonical CBOR of the metadata, for the bulk write path).

    ``keys_seen`` collects the keys of the call (a key may appear once); ``first``
    numbers the items in error messages.
    """
    prepared: list[list[Any]] = []
    given: list[tuple[int, int, Any]] = []  # (position, item number, vector as given)
    now: int | None = None
    memo: dict[Any, tuple[dict[str, Any], bytes]] = {}
    for i, item in enumerate(items, first):
        if isinstance(item, str):
            if type(item) is str and item.isascii() and len(item) <= R.MAX_TEXT_BYTES \
                    and item and not item.isspace():  # the common case, checked as below
                if now is None:
                    now = to_us(eng.clock(), "clock()")
                prepared.append(["remember", ns, item, {}, "episodic", now, None, None, False,
                                 b"\xa0"])
                continue
            item = {"text": item}
        elif type(item) is dict and item.keys() <= _ITEM_FIELDS:
            fast = _fast_item(item, ns, i, memo)
            if fast is not None:
                if fast[5] is None:
                    if now is None:
                        now = to_us(eng.clock(), "clock()")
                    fast[5] = now
                if fast[7] is not None:
                    given.append((len(prepared), i, fast[7]))
                    fast[7] = None
                key = fast[6]
                if key is not None:
                    kk = f"{ns}\0{key}"
                    if kk in keys_seen:
                        raise InvalidInputError(
                            f"key {key!r} appears twice in one remember_many call")
                    keys_seen.add(kk)
                prepared.append(fast)
                continue
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"item {i} must be a str or a dict, got {type(item).__name__}")
        unknown = set(item) - {"text", "metadata", "type", "timestamp", "key", "vector",
                               "pinned"}
        if unknown:
            raise InvalidInputError(f"item {i} has unknown fields {sorted(unknown)}")
        text = R.check_text(item.get("text"), f"item {i} text")
        meta, meta_cbor = R.check_metadata_encoded(item.get("metadata"))
        type_ = R.check_type(item.get("type", "episodic") or "episodic")
        ts_in = item.get("timestamp")
        if ts_in is None:
            if now is None:
                now = to_us(eng.clock(), "clock()")
            ts = now
        else:
            ts = to_us(ts_in, f"item {i} timestamp")
        key = R.check_key(item.get("key"))
        if key is not None:
            kk = f"{ns}\0{key}"
            if kk in keys_seen:
                raise InvalidInputError(f"key {key!r} appears twice in one remember_many call")
            keys_seen.add(kk)
        vec = item.get("vector")
        if vec is not None:
            given.append((len(prepared), i, vec))
        pinned = item.get("pinned", False)
        if not isinstance(pinned, bool):
            raise InvalidInputError(f"item {i} pinned must be a bool, got {pinned!r}")
        prepared.append(["remember", ns, text, meta, type_, ts, key, None, pinned, meta_cbor])
    for (pos, _i, _v), row in zip(given, _checked_vectors(eng.dim, given)):
        prepared[pos][7] = row
    return prepared


_ITEM_FIELDS = frozenset(("text", "metadata", "type", "timestamp", "key", "vector", "pinned"))
_TS_TYPES = (int, float)


_MEMO_CLASSES = (str, int, bool, type(None), float)


def _metadata(metadata: Any, memo: dict[Any, tuple[dict[str, Any], bytes]]
              ) -> tuple[dict[str, Any], bytes]:
    """:func:`_records.check_metadata_encoded`, computed once per call for equal flat
    metadata (str, int, bool, None and non-zero float values, compared with their
    classes: 1, 1.0 and True differ, and 0.0 and -0.0 are not memoised)."""
    if metadata is None:
        return {}, b"\xa0"
    key = None
    if type(metadata) is dict and len(metadata) <= 16:
        key = tuple([(k, v.__class__, v) for k, v in metadata.items()])
        for _k, cls, v in key:
            if cls not in _MEMO_CLASSES or (cls is float and not v):
                key = None
                break
        if key is not None:
            hit = memo.get(key)
            if hit is not None:
                return dict(hit[0]), hit[1]
    clean, raw = R.check_metadata_encoded(metadata)
    if key is not None:
        memo[key] = (clean, raw)
        clean = dict(clean)
    return clean, raw


def _fast_item(item: dict[str, Any], ns: str, i: int,
               memo: dict[Any, tuple[dict[str, Any], bytes]]) -> list[Any] | None:
    """The request of a dict item whose fields have the common plain types, checked as
    the general path checks them (timestamp None: the clock's; the vector still to
    check); None when the general path must decide (and name the error)."""
    text = item.get("text")
    if type(text) is not str or not text or text.isspace() or not text.isascii() \
            or len(text) > R.MAX_TEXT_BYTES:
        return None
    meta, meta_cbor = _metadata(item.get("metadata"), memo)
    type_ = item.get("type", "episodic") or "episodic"
    if type(type_) is not str or type_ not in R.TYPE_CODES:
        return None
    ts_in = item.get("timestamp")
    ts = None
    if ts_in is not None:
        if type(ts_in) not in _TS_TYPES:
            return None
        ts = to_us(ts_in, f"item {i} timestamp")
    key = item.get("key")
    if key is not None and (type(key) is not str or not key or not key.isascii()
                            or len(key) > R.MAX_KEY_BYTES):
        return None
    pinned = item.get("pinned", False)
    if type(pinned) is not bool:
        return None
    return ["remember", ns, text, meta, type_, ts, key, item.get("vector"), pinned, meta_cbor]


def _checked_vectors(dim: int, given: Sequence[tuple[int, int, Any]]) -> np.ndarray:
    """The given vectors validated and normalised in one pass; a bad one is reported by
    its item number (checked one by one only then)."""
    if not given:
        return np.empty((0, dim), np.float32)
    first = given[0][2]
    # one pass when every vector is an array of one dtype (so each converts exactly as
    # it would alone, and check_vectors sees that dtype); else item by item
    if isinstance(first, np.ndarray) and first.shape == (dim,) and all(
            isinstance(v, np.ndarray) and v.dtype == first.dtype and v.shape == (dim,)
            for _, _, v in given):
        try:
            block = first.reshape(1, dim) if len(given) == 1 else np.stack([v for _, _, v in given])
            return check_vectors(block, len(given), dim, "vector")
        except InvalidInputError:
            pass  # found again below, named by its item number
    return np.stack([check_vectors(v, 1, dim, f"item {i} vector")[0] for _, i, v in given])


def embed_missing(eng: Any, prepared: Sequence[list[Any]]) -> None:
    """Embed, in one embedder call, the texts of prepared requests that have no vector."""
    todo = [p for p in prepared if p[7] is None]
    if todo:
        vecs = embed_checked(eng.require_embedder(), [p[2] for p in todo])
        for p, v in zip(todo, vecs):
            p[7] = v


def check_relation(relation: Any) -> str:
    """An edge relation: 1-64 characters, no surrounding spaces."""
    if not isinstance(relation, str) or not _RELATION.fullmatch(relation):
        raise InvalidInputError(
            f"relation must be a str of 1-64 characters without surrounding spaces, got {relation!r}")
    R.utf8_size(relation, "relation")
    return relation


def check_relation_filter(relation: Any) -> str | None:
    """``disconnect``'s relation: None (every relation) or any encodable str."""
    if relation is not None:
        if not isinstance(relation, str):
            raise InvalidInputError(f"relation must be a str or None, got {relation!r}")
        R.utf8_size(relation, "relation")
    return relation


def check_weight(weight: Any) -> float:
    """A finite edge weight."""
    try:
        w = float(weight)
    except (TypeError, ValueError, OverflowError):
        w = float("nan")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(w):
        raise InvalidInputError(f"weight must be a finite number, got {weight!r:.60}")
    return w
