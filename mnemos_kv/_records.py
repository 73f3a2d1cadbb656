"""The record schema, its CBOR encoding, and the format version.

Records are CBOR maps written canonically (same value, same bytes). Decoding
rejects every CBOR tag: we only ever write plain maps, lists, strings, numbers,
booleans, null and byte strings, so anything else on disk is corruption.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import cbor2

from .errors import CorruptionError, InvalidInputError

#: Version of the on-disk format written by this library. A store with a larger
#: number is refused with FormatVersionError; smaller numbers are read, and upgraded
#: by the first read-write open (see docs/format.md). 2: records and vector rows
#: carry checksums. 3: committed log frames may live in LMDB's ``pending`` table until
#: the log file is flushed (state ``log_sync``); an older library would not restore them.
#: 4: base snapshots store their frames in zlib-compressed blocks (``_snapshot``).
#: 5: small writes stage their BM25 postings in the ``lexstage`` table until the next
#: flush (``_lexstage``); an older library would not see them.
#: 6: new vector rows are checksummed with CRC-32 (slot flag ``CHECKED32``, the CRC
#: folded to 16 bits; log and snapshot ops ``vc32``) instead of CRC-16 (``CHECKED``,
#: ``vcrc``), which rows and ops written before keep; an older library would treat the
#: new rows as unchecked and fail the ops' checksums.
#: 7: a staged memory's ``lexstage`` value is its namespace alone: its postings are those
#: of its record's text, derived by the readers and the merge (formats 5-6 stored the
#: terms, and such entries are still read); an older library would see no postings.
FORMAT_VERSION = 7
#: The ``format_version`` a replay file's header carries: the version of the op encoding
#: in it. Format 4 changed only the base snapshot's container, not the ops, so replay
#: files stay byte for byte what format 3 wrote (and format-3 readers accept them).
REPLAY_FORMAT_VERSION = 3
#: First byte of a format-2 record: ``0x02, u32 CRC-32 of the CBOR, CBOR``. (A format-1
#: record is the bare CBOR map, whose first byte is 0xa0..0xbf.)
RECORD_V2 = 0x02
_CRC = struct.Struct("<I")

MEMORY_TYPES = ("episodic", "semantic", "procedural")
_FIELDS = frozenset(("i", "n", "t", "m", "ts", "s"))  # what every stored record holds
TYPE_CODES = {name: i for i, name in enumerate(MEMORY_TYPES)}

MAX_TEXT_BYTES = 1 << 20       # one memory's text: 1 MiB of UTF-8
MAX_METADATA_BYTES = 1 << 16   # encoded metadata: 64 KiB
MAX_KEY_BYTES = 256
MAX_DEPTH = 16


def _reject_tag(decoder: Any, tag: Any = None) -> Any:
    raise CorruptionError("unexpected CBOR tag in stored data (we never write tags)")


# cbor2 decodes its known semantic tags (datetimes, regexes, sets, ...) before any
# tag_hook; overriding them with a rejecting decoder means we decode only our types.
_NO_SEMANTIC = {t: _reject_tag for t in list(range(0, 1100)) + [55799]}


def encode(obj: Any) -> bytes:
    """Canonical CBOR: map keys sorted, shortest forms, so equal values give equal bytes.

    cbor2's canonical mode costs ~5x its plain mode (13 µs against 2.6 µs for a record),
    and a single ``remember`` encodes four maps. A value made only of ints, strings,
    byte strings, booleans, None, lists and maps with short ASCII string keys has no
    other canonical choice than the order of its map keys (ints and lengths are always
    written shortest): such a value is put in canonical key order and encoded in plain
    mode, the very same bytes (checked against canonical mode by the tests). Anything
    else (floats, which canonical mode shortens, other keys) takes canonical mode."""
    if type(obj) is dict:
        ordered = _in_order(obj, 0)
        if ordered is not _NOT_PLAIN:
            return cbor2.dumps(ordered)
    return cbor2.dumps(obj, canonical=True)


_NOT_PLAIN = object()
#: Exact types plain CBOR writes as canonical CBOR does (ints: within 64 bits).
_PLAIN_SCALARS = frozenset((int, str, bytes, bool, type(None)))
#: Key tuple of a map -> the keys in canonical order (None: not short ASCII strings).
_KEY_ORDER: dict[tuple[Any, ...], tuple[str, ...] | None] = {}
_KEY_ORDER_MAX = 4096
_INT_LO, _INT_HI = -(1 << 64), 1 << 64
_MAX_NEST = MAX_DEPTH + 8


def _canonical_keys(keys: tuple[Any, ...]) -> tuple[str, ...] | None:
    """``keys`` in canonical CBOR order (encoded length, then bytes), or None when some
    key is not an ASCII string shorter than 24 characters (one-byte CBOR head)."""
    order = _KEY_ORDER.get(keys, _NOT_PLAIN)
    if order is not _NOT_PLAIN:
        return order  # type: ignore[return-value]
    out: tuple[str, ...] | None = None
    if all(type(k) is str and len(k) < 24 and k.isascii() for k in keys):
        out = tuple(sorted(keys, key=lambda k: (len(k), k)))
    if len(_KEY_ORDER) < _KEY_ORDER_MAX:
        _KEY_ORDER[keys] = out
    return out


def _in_order(obj: Any, depth: int) -> Any:
    """``obj`` with every map's keys in canonical order, or ``_NOT_PLAIN`` when plain CBOR
    could write it differently from canonical CBOR (see :func:`encode`)."""
    t = type(obj)
    if t is dict:
        if not obj:
            return obj
        keys = _canonical_keys(tuple(obj))
        if keys is None:
            return _NOT_PLAIN
        out = {}
        for k in keys:
            v = obj[k]
            tv = type(v)
            if tv is int:
                if not _INT_LO <= v < _INT_HI:
                    return _NOT_PLAIN
            elif tv is not str and tv not in _PLAIN_SCALARS:
                if depth >= _MAX_NEST or (tv is not dict and tv is not list and tv is not tuple):
                    return _NOT_PLAIN
                v = _in_order(v, depth + 1)
                if v is _NOT_PLAIN:
                    return _NOT_PLAIN
            out[k] = v
        return out
    if t is list or t is tuple:
        items = []
        for x in obj:
            v = _in_order(x, depth + 1) if type(x) is not str else x
            if v is _NOT_PLAIN:
                return _NOT_PLAIN
            items.append(v)
        return items
    if t in _PLAIN_SCALARS:
        return obj if t is not int or _INT_LO <= obj < _INT_HI else _NOT_PLAIN
    return _NOT_PLAIN


#: How stored CBOR is decoded: only our types, no duplicate keys, bounded depth.
_DECODE: dict[str, Any] = {"semantic_decoders": _NO_SEMANTIC, "tag_hook": _reject_tag,
           "allow_duplicate_keys": False, "strict_hashable_types": True,
           "max_depth": MAX_DEPTH + 8}


def decode(data: bytes, what: str = "record") -> Any:
    """Decode CBOR we wrote; anything else raises CorruptionError."""
    try:
        return cbor2.loads(data, **_DECODE)
    except CorruptionError:
        raise
    except Exception as exc:  # cbor2 raises several types for bad input
        raise CorruptionError(f"cannot decode stored {what}: {exc}") from exc


def decode_many(blob: bytes, count: int, what: str = "record") -> list[Any]:
    """:func:`decode` of ``count`` CBOR items written one after the other in ``blob``
    (one decoder for all, without each call's setup: a quarter less time for short
    records); ``blob`` must hold exactly them. Anything else raises CorruptionError."""
    stream = io.BytesIO(blob)
    try:
        one = cbor2.CBORDecoder(stream, **_DECODE).decode
        out = [one() for _ in range(count)]
    except CorruptionError:
        raise
    except Exception as exc:  # cbor2 raises several types for bad input
        raise CorruptionError(f"cannot decode stored {what}s: {exc}") from exc
    if stream.tell() != len(blob):
        raise CorruptionError(f"stored {what}s: {len(blob) - stream.tell()} bytes after "
                              f"the {count} items")
    return out


def utf8_size(value: str, what: str) -> int:
    """Bytes of ``value`` in UTF-8; a lone surrogate (not encodable) is bad input."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid unicode (lone surrogate?): {exc}") from exc


def check_text(text: Any, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError(f"{what} must not be empty or only whitespace")
    n = utf8_size(text, what)
    if n > MAX_TEXT_BYTES:
        raise InvalidInputError(f"{what} is {n} bytes of UTF-8; the limit is {MAX_TEXT_BYTES}")
    return text


def _check_value(value: Any, path: str, depth: int) -> Any:
    t = type(value)
    if t is int and depth <= MAX_DEPTH and -(1 << 63) <= value < (1 << 64):  # common exact types
        return value
    if t is dict and depth < MAX_DEPTH and all(type(k) is str for k in value):
        out = {}
        for k, v in value.items():
            utf8_size(k, f"metadata key {k!r} at {path}")
            out[k] = _check_value(v, f"{path}.{k}", depth + 1)
        return out
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"metadata nested deeper than {MAX_DEPTH} levels at {path}")
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(f"metadata {path} is not valid unicode: {exc}") from exc
        return value
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 64):
            raise InvalidInputError(f"metadata {path}={value} is outside the 64-bit integer range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"metadata {path}={value!r}: floats must be finite")
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_check_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"metadata keys must be str, got {type(k).__name__} {k!r} at {path}")
            utf8_size(k, f"metadata key {k!r} at {path}")
            out[k] = _check_value(v, f"{path}.{k}", depth + 1)
        return out
    raise InvalidInputError(
        f"metadata {path} has type {type(value).__name__}; expected str, int, float, bool, "
        "None, bytes, list or dict")


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Validate and copy user metadata (a JSON-like dict); raises InvalidInputError."""
    return check_metadata_encoded(metadata)[0]


def check_metadata_encoded(metadata: Any) -> tuple[dict[str, Any], bytes]:
    """:func:`check_metadata`, and the canonical CBOR of the copy (what the size limit
    measures; the bulk write path reuses it). :raises InvalidInputError:"""
    if metadata is None or (type(metadata) is dict and not metadata):
        return {}, b"\xa0"
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    clean = _check_value(metadata, "metadata", 0)
    raw = encode(clean)
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata encodes to {len(raw)} bytes; the limit is "
                                f"{MAX_METADATA_BYTES}")
    return clean, raw


def check_type(type_: Any) -> str:
    if not isinstance(type_, str) or type_ not in TYPE_CODES:  # (a list: not a TypeError)
        raise InvalidInputError(f"type must be one of {', '.join(MEMORY_TYPES)}; got {type_!r}")
    return str(type_)


def check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"key must be a non-empty str or None, got {key!r}")
    if utf8_size(key, "key") > MAX_KEY_BYTES:
        raise InvalidInputError(f"key is longer than {MAX_KEY_BYTES} bytes: {key[:40]!r}...")
    return key


def _checked_body(data: bytes) -> bytes:
    """A stored record's CBOR: format 2's checksum checked (format 1 is bare CBOR).
    :raises CorruptionError:"""
    if data[:1] == b"\x02":
        body = data[5:]
        if len(data) < 5 or _CRC.unpack_from(bytes(data[:5]), 1)[0] != zlib.crc32(body):
            raise CorruptionError("stored record fails its checksum")
        return body
    return data


_new = object.__new__
#: What stored CBOR decodes to that cannot be changed in place (maps and arrays can).
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})


def _copy_value(value: Any) -> Any:
    """A decoded CBOR value with every map and array copied (the rest is immutable)."""
    t = type(value)
    if t is dict:
        return _copy_map(value)
    if t is list:
        return [v if type(v) in _IMMUTABLE else _copy_value(v) for v in value]
    if t in _IMMUTABLE:
        return value
    import copy  # (not expected: the decoder makes no other type)
    return copy.deepcopy(value)


def _copy_map(d: dict[str, Any]) -> dict[str, Any]:
    out = d.copy()
    for k, v in d.items():
        if type(v) not in _IMMUTABLE:
            out[k] = _copy_value(v)
    return out

#: The fields of a decoded record whose type is checked (bool is refused as an int).
_CHECKED_FIELDS = (("id", int), ("ns", int), ("text", str), ("metadata", dict), ("ts", int),
                   ("slot", int))


@dataclass(frozen=True)
class Record:
    """One memory as stored in the ``records`` sub-database."""

    id: int
    ns: int
    text: str
    metadata: dict[str, Any]
    type: str
    ts: int            # event time, microseconds since the Unix epoch (UTC)
    slot: int          # row in the vector matrix of the current generation
    key: str | None = None
    seq: int = 0       # log sequence number of the operation that wrote it
    extra: dict[str, Any] = field(default_factory=dict)  # forward-compatible fields
    upd: int | None = None  # µs of the last update/upsert that changed it (None: never)

    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {"i": self.id, "n": self.ns, "t": self.text, "m": self.metadata,
                             "y": TYPE_CODES[self.type], "ts": self.ts, "s": self.slot,
                             "q": self.seq}
        if self.key is not None:
            d["k"] = self.key
        if self.extra:
            d["x"] = self.extra
        if self.upd is not None:
            d["u"] = self.upd
        body = encode(d)
        return bytes((RECORD_V2,)) + _CRC.pack(zlib.crc32(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> "Record":
        """Decode a stored record (format 2 with its checksum checked, or format 1).

        :raises CorruptionError: the checksum fails or the CBOR is not a record.
        """
        d = decode(_checked_body(data))
        if not isinstance(d, dict):
            raise CorruptionError(f"stored record is a {type(d).__name__}, not a map")
        if not isinstance(d.get("y"), int) or not 0 <= d["y"] < len(MEMORY_TYPES):
            raise CorruptionError(f"stored record has memory type code {d.get('y')!r}")
        try:
            fields = {"id": d["i"], "ns": d["n"], "text": d["t"], "metadata": d["m"],
                      "type": MEMORY_TYPES[d["y"]], "ts": d["ts"], "slot": d["s"],
                      "key": d.get("k"), "seq": d.get("q", 0), "extra": d.get("x", {}),
                      "upd": d.get("u")}
        except (KeyError, IndexError, TypeError) as exc:
            raise CorruptionError(f"stored record is missing a field: {exc!r}") from exc
        for name, want in _CHECKED_FIELDS:
            value = fields[name]
            if not isinstance(value, want) or isinstance(value, bool):
                raise CorruptionError(f"stored record field {name} is a {type(value).__name__}")
        # every field set at once, not through the frozen dataclass's __init__ (one
        # object.__setattr__ per field: 40% of a decode; reads decode many records)
        rec = _new(cls)
        rec.__dict__.update(fields)
        return rec

    @staticmethod
    def fields(data: bytes) -> dict[str, Any]:
        """The stored map of a record (checksum checked), without building a Record:
        keys ``i`` id, ``n`` ns, ``t`` text, ``m`` metadata, ``ts``, ``s`` slot, ``k`` key?
        (bulk paths that read many records). :raises CorruptionError: as :meth:`from_bytes`."""
        d = decode(_checked_body(data))
        if not isinstance(d, dict) or not d.keys() >= _FIELDS:
            raise CorruptionError("stored record is not a map with its fields")
        return d

    def fresh(self) -> "Record":
        """A copy whose metadata and extra fields are copies too (nested maps and lists
        included): what a caller may change without changing this record."""
        rec = _new(type(self))
        d = rec.__dict__
        d.update(self.__dict__)
        d["metadata"] = _copy_map(self.metadata)
        d["extra"] = _copy_map(self.extra)
        return rec

    def with_slot(self, slot: int) -> "Record":
        return replace(self, slot=slot)
