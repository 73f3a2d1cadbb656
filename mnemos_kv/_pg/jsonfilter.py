"""Metadata filters as SQL over a ``jsonb`` copy of the metadata (``memories.metaj``).

The CBOR ``meta`` column stays the truth; ``metaj`` is a derived copy written with
every memory, in which every number is *exact*: an int as its digits, a float as the
exact decimal of its binary value (``Decimal(f)``, never its shortest repr), so
``numeric`` comparisons in SQL are the exact int/float comparisons Python makes.
Metadata JSON cannot hold exactly (``bytes``, a NUL character in a string or key)
gets ``metaj = NULL``: such rows are always re-checked in Python.

:func:`where` translates a parsed filter (``filters.Node``) into a predicate with the
semantics of ``filters.evaluate``: type-strict equality (``True != 1``, ``1 == 1.0``,
deep for lists and dicts: jsonb's own equality), a missing path equal to ``None``
(SQL NULL from ``->`` chains, which never index into arrays, as ``filters.resolve``),
ordering only number/number (``numeric``) and string/string (``COLLATE "C"``: code
points in a UTF-8 database), ``$ne``/``$nin``/``$not`` as plain negation (every
sub-predicate is a non-NULL boolean). An operand JSON cannot hold exactly makes the
whole filter untranslatable (None): the caller then evaluates it in Python.

Callers select ``metaj IS NULL OR (predicate)`` and re-check the rows whose ``metaj``
is NULL with ``filters.evaluate``, so answers never differ from the reference.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Mapping

from .. import filters as F

__all__ = ["to_json", "where"]


class _Inexact(Exception):
    """A value JSON (as jsonb stores it) cannot hold exactly."""


def _enc(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(str(Decimal(v)))  # exact: "0.1000000000000000055511151231257827..."
    elif isinstance(v, str):
        if "\x00" in v:
            raise _Inexact  # jsonb text cannot hold NUL
        out.append(json.dumps(v, ensure_ascii=False))
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _enc(x, out)
        out.append("]")
    elif isinstance(v, Mapping):
        out.append("{")
        for i, (k, x) in enumerate(v.items()):
            if not isinstance(k, str) or "\x00" in k:
                raise _Inexact
            if i:
                out.append(",")
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _enc(x, out)
        out.append("}")
    else:  # bytes (and anything else): not JSON
        raise _Inexact


def _json(v: Any) -> str:
    out: list[str] = []
    _enc(v, out)
    return "".join(out)


def to_json(meta: Any) -> str | None:
    """``metaj`` of a memory's metadata: exact JSON text, or None when JSON cannot hold
    it exactly (the row is then always re-checked in Python)."""
    try:
        return _json(meta if meta is not None else {})
    except _Inexact:
        return None


def _path(path: tuple[str, ...], params: list[Any]) -> str:
    params.extend(path)
    return "(metaj" + "".join(" -> %s::text" for _ in path) + ")"


def _eq(path: tuple[str, ...], value: Any, params: list[Any]) -> str:
    v = _path(path, params)
    if value is None:  # a missing field (SQL NULL) equals None too
        return f"coalesce({v} = 'null'::jsonb, true)"
    params.append(_json(value))
    return f"coalesce({v} = %s::jsonb, false)"


def _order(path: tuple[str, ...], op: str, value: Any, params: list[Any]) -> str:
    """Number with number (exact ``numeric``), string with string (code points);
    anything else, a missing field included, is false."""
    sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    a = _path(path, params)
    b = _path(path, params)
    if isinstance(value, str):
        if "\x00" in value:
            raise _Inexact
        params.append(value)
        return (f"(CASE WHEN jsonb_typeof({a}) = 'string' THEN "
                f"({b} #>> '{{}}') COLLATE \"C\" {sym} %s::text COLLATE \"C\" ELSE false END)")
    params.append(Decimal(value) if isinstance(value, float) else Decimal(int(value)))
    return (f"(CASE WHEN jsonb_typeof({a}) = 'number' THEN "
            f"({b})::numeric {sym} %s::numeric ELSE false END)")


def _node(node: F.Node, params: list[Any]) -> str:
    if isinstance(node, F.Leaf):
        if node.op == "exists":
            return f"({_path(node.path, params)} IS {'NOT ' if node.value else ''}NULL)"
        if node.op == "eq":
            return _eq(node.path, node.value, params)
        if node.op == "in":
            if not node.value:
                return "false"
            return "(" + " OR ".join(_eq(node.path, x, params) for x in node.value) + ")"
        return _order(node.path, node.op, node.value, params)
    if isinstance(node, F.And):
        return "(" + " AND ".join(_node(x, params) for x in node.items) + ")"
    if isinstance(node, F.Or):
        return "(" + " OR ".join(_node(x, params) for x in node.items) + ")"
    return f"(NOT {_node(node.item, params)})"


def _nest(path: tuple[str, ...], value: Any) -> str:
    for part in reversed(path):
        value = {part: value}
    return _json(value)


def _contained(node: F.Node) -> list[list[str]]:
    """Necessary conditions of ``node`` the GIN index answers: groups of JSON documents,
    ``metaj`` containing at least one document of each group. From the equalities (and
    ``$in`` lists) that must hold at the top (under ``$and`` only): a field equal to a
    value that is not None holds that value at that path, so ``metaj @>`` it."""
    if isinstance(node, F.Leaf):
        if node.op == "eq" and node.value is not None:
            return [[_nest(node.path, node.value)]]
        if node.op == "in" and node.value and all(v is not None for v in node.value):
            return [[_nest(node.path, v) for v in node.value]]
        return []
    if isinstance(node, F.And):
        return [g for x in node.items for g in _contained(x)]
    return []


def where(node: F.Node) -> tuple[str, list[Any]] | None:
    """``(sql, params)``: a non-NULL boolean predicate over ``metaj`` with the semantics
    of ``filters.evaluate(node, metadata)`` for every row whose ``metaj`` is not NULL;
    None when an operand cannot be expressed exactly (evaluate in Python instead).
    Containment tests implied by the filter come first, for the GIN index on ``metaj``."""
    params: list[Any] = []
    try:
        groups = _contained(node)
        exact = _node(node, params)
    except _Inexact:
        return None
    if not groups:
        return exact, params
    docs = [d for g in groups for d in g]
    sql = " AND ".join("(" + " OR ".join("metaj @> %s::jsonb" for _ in g) + ")" for g in groups)
    return f"({sql} AND {exact})", [*docs, *params]
