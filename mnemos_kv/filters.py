"""The metadata filter language: validation and the reference semantics.

A filter is a dict, in the style of MongoDB / Chroma / LangGraph (see docs/filters.md)::

    {"team": "a"}                                 equality ({"k": v} = {"k": {"$eq": v}})
    {"n": {"$gt": 1, "$lte": 9}}                  several operators on one field: all hold
    {"user.name": "ann"}                          a dotted path into nested dicts
    {"user": {"name": "ann"}}                     the same (a dict without "$" keys nests)
    {"$or": [{"team": "a"}, {"n": {"$in": [1, 2]}}]}
    {"$not": {"team": "a"}}   {"n": {"$not": {"$gt": 1}}}

Field operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $not``; logical
operators: ``$and $or`` (non-empty lists of filters) and ``$not`` (a filter). Keys of
one dict are combined with an implicit ``$and``; ``{}`` matches everything.

Type rules: numbers (int and float; a bool is not a number) compare with numbers,
strings with strings (by code point); a comparison between mismatched types is false,
never an error. Equality is strict about types too (``True != 1``, ``1 == 1.0``); lists
and dicts are equal when all their items are. A missing field equals ``None`` (so
``{"k": None}`` matches a missing or null ``k``), fails every ordering comparison, and
satisfies ``$ne``/``$nin`` of any other value. ``$ne``, ``$nin`` and ``$not`` are
exactly the negation of ``$eq``, ``$in`` and their operand.

:func:`validate` raises :class:`~mnemos_kv.InvalidInputError` naming the problem;
:func:`matches` is the reference semantics (plain Python), usable by adapters. The
store answers filters from an index (``_filter_index``) with the same results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Union

from .errors import InvalidInputError

__all__ = ["validate", "matches", "FIELD_OPERATORS", "LOGICAL_OPERATORS"]

#: Operators allowed in a field's operator dict.
FIELD_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                             "$exists", "$not"})
#: Operators allowed as keys of a filter.
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$not"})
#: Filters nested deeper than this are refused (a guard against runaway recursion).
MAX_DEPTH = 32

_ORDER = {"$gt", "$gte", "$lt", "$lte"}


# ------------------------------------------------------------------------- the compiled tree

@dataclass(frozen=True)
class Leaf:
    """One primitive test on one path: ``op`` is ``eq``, ``in``, ``gt``, ``gte``, ``lt``,
    ``lte`` or ``exists`` (``$ne``/``$nin`` compile to ``Not(Leaf)``)."""

    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    item: "Node"


Node = Union[Leaf, And, Or, Not]

_MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _where(at: str) -> str:
    return f" at {at}" if at else ""


def _check_operand(v: Any, at: str, depth: int = 0) -> Any:
    """A value a field can be compared with: what metadata may hold (copied)."""
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"filter value nested deeper than {MAX_DEPTH} levels{_where(at)}")
    if v is None or isinstance(v, (bool, str, bytes)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidInputError(f"filter value {v!r}{_where(at)} must be a finite number")
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_check_operand(x, at, depth + 1) for x in v]
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"filter value has a non-str key {k!r}{_where(at)}")
            out[k] = _check_operand(x, at, depth + 1)
        return out
    raise InvalidInputError(
        f"filter value {v!r}{_where(at)} has type {type(v).__name__}; expected str, int, "
        "float, bool, None, bytes, list or dict")


def _check_path(key: Any, prefix: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(key, str):
        raise InvalidInputError(f"filter field names must be str, got {type(key).__name__} {key!r}")
    if not key:
        raise InvalidInputError("filter field name must not be empty")
    parts = tuple(key.split("."))
    if any(p == "" for p in parts):
        raise InvalidInputError(f"filter field {key!r} has an empty path component")
    return prefix + parts


def _compile_ops(path: tuple[str, ...], ops: Mapping[str, Any], depth: int) -> Node:
    """A field's operator dict ``{"$gt": 1, ...}`` as a node (all operators must hold)."""
    name = ".".join(path)
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"filter nested deeper than {MAX_DEPTH} levels at {name!r}")
    if not ops:
        raise InvalidInputError(f"filter field {name!r} has an empty operator dict")
    items: list[Node] = []
    for op in sorted(ops):
        v = ops[op]
        at = f"{name!r} {op}"
        if op not in FIELD_OPERATORS:
            raise InvalidInputError(
                f"unknown filter operator {op!r} on field {name!r}; expected one of "
                f"{', '.join(sorted(FIELD_OPERATORS))}")
        if op in ("$eq", "$ne"):
            leaf: Node = Leaf(path, "eq", _check_operand(v, at))
            items.append(leaf if op == "$eq" else Not(leaf))
        elif op in _ORDER:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise InvalidInputError(
                    f"filter {at} needs a number or a string, got {type(v).__name__} {v!r}")
            items.append(Leaf(path, op[1:], _check_operand(v, at)))
        elif op in ("$in", "$nin"):
            if not isinstance(v, (list, tuple)):
                raise InvalidInputError(f"filter {at} needs a list, got {type(v).__name__} {v!r}")
            leaf = Leaf(path, "in", tuple(_check_operand(x, at) for x in v))
            items.append(leaf if op == "$in" else Not(leaf))
        elif op == "$exists":
            if not isinstance(v, bool):
                raise InvalidInputError(f"filter {at} needs True or False, got {v!r}")
            items.append(Leaf(path, "exists", v))
        else:  # $not: an operator dict
            if not isinstance(v, Mapping) or not v or not all(
                    isinstance(k, str) and k.startswith("$") for k in v):
                raise InvalidInputError(
                    f"filter {at} needs a non-empty operator dict like {{'$gt': 1}}, got {v!r}")
            items.append(Not(_compile_ops(path, v, depth + 1)))
    return items[0] if len(items) == 1 else And(tuple(items))


def _compile(flt: Any, prefix: tuple[str, ...], depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"filter nested deeper than {MAX_DEPTH} levels")
    if not isinstance(flt, Mapping):
        raise InvalidInputError(f"a filter must be a dict, got {type(flt).__name__} {flt!r}")
    items: list[Node] = []
    for key in sorted(flt, key=lambda k: (not isinstance(k, str), str(k))):
        v = flt[key]
        if isinstance(key, str) and key.startswith("$"):
            if prefix:
                raise InvalidInputError(
                    f"operator {key!r} inside the nested field {'.'.join(prefix)!r}: mix of "
                    "fields and operators; use a dotted path or an operator dict")
            if key not in LOGICAL_OPERATORS:
                raise InvalidInputError(
                    f"unknown filter operator {key!r}; at the top of a filter expected "
                    f"{', '.join(sorted(LOGICAL_OPERATORS))} or a field name")
            if key == "$not":
                if not isinstance(v, Mapping) or not v:
                    raise InvalidInputError(f"filter $not needs a non-empty filter dict, got {v!r}")
                items.append(Not(_compile(v, (), depth + 1)))
                continue
            if not isinstance(v, (list, tuple)) or not v:
                raise InvalidInputError(f"filter {key} needs a non-empty list of filters, got {v!r}")
            subs = tuple(_compile(x, (), depth + 1) for x in v)
            items.append(And(subs) if key == "$and" else Or(subs))
            continue
        path = _check_path(key, prefix)
        if isinstance(v, Mapping):
            dollar = [k for k in v if isinstance(k, str) and k.startswith("$")]
            if dollar and len(dollar) != len(v):
                raise InvalidInputError(
                    f"filter field {'.'.join(path)!r} mixes operators {sorted(dollar)} with "
                    "field names; use {'$eq': {...}} to compare with a dict")
            if dollar:
                items.append(_compile_ops(path, v, depth + 1))
            elif not v:
                raise InvalidInputError(
                    f"filter field {'.'.join(path)!r} has an empty dict; use "
                    "{'$eq': {}} to match an empty dict")
            else:
                items.append(_compile(v, path, depth + 1))
        else:
            items.append(Leaf(path, "eq", _check_operand(v, repr(".".join(path)))))
    if len(items) == 1:
        return items[0]
    return And(tuple(items))


def parse(flt: Mapping[str, Any]) -> Node:
    """The validated filter as a tree of :class:`Leaf`, :class:`And`, :class:`Or`, :class:`Not`.

    :raises InvalidInputError: unknown operator, wrong operand type or malformed filter.
    """
    return _compile(flt, (), 0)


def validate(filter: Any) -> None:
    """Check a filter; raises :class:`~mnemos_kv.InvalidInputError` naming the problem."""
    parse(filter)


# ------------------------------------------------------------------------- the semantics

def resolve(metadata: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` (through nested dicts only), or ``_MISSING``."""
    cur = metadata
    for part in path:
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def equal(a: Any, b: Any) -> bool:
    """Filter equality: type-strict (bool is not a number), numbers by value, deep."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (bytes, bytearray)) or isinstance(b, (bytes, bytearray)):
        return isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray)) and a == b
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(equal(x, y) for x, y in zip(a, b)))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return False


def compare(a: Any, op: str, b: Any) -> bool:
    """``a op b`` for numbers with numbers and strings with strings; otherwise False."""
    if _is_number(a) and _is_number(b):
        pass
    elif not (isinstance(a, str) and isinstance(b, str)):
        return False
    if op == "gt":
        return bool(a > b)
    if op == "gte":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def eval_leaf(leaf: Leaf, value: Any) -> bool:
    """Whether the value found at the leaf's path (``_MISSING`` if none) satisfies it."""
    if leaf.op == "exists":
        return (value is not _MISSING) == leaf.value
    if value is _MISSING:
        value = None  # a missing field equals None and orders with nothing
        if leaf.op in _OPS_ORDER:
            return False
    if leaf.op == "eq":
        return equal(value, leaf.value)
    if leaf.op == "in":
        return any(equal(value, x) for x in leaf.value)
    return compare(value, leaf.op, leaf.value)


_OPS_ORDER = frozenset({"gt", "gte", "lt", "lte"})


def evaluate(node: Node, metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies the compiled filter ``node``."""
    if isinstance(node, Leaf):
        return eval_leaf(node, resolve(metadata, node.path))
    if isinstance(node, And):
        return all(evaluate(x, metadata) for x in node.items)
    if isinstance(node, Or):
        return any(evaluate(x, metadata) for x in node.items)
    return not evaluate(node.item, metadata)


def matches(filter: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies ``filter`` (the reference semantics; see the module doc).

    :raises InvalidInputError: the filter is malformed.
    """
    return evaluate(parse(filter), metadata if metadata is not None else {})
