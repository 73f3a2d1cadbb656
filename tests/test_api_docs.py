"""docs/api.md is checked against the code: every public name documented there, with
its current signature, and every one with a docstring."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib

import pytest

import mnemos_kv
from mnemos_kv import Batch, Memory, Mnemos, Namespace, PendingId, filters

API = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()


def signature(name: str, fn) -> str:
    """``name(a, b=1, *, c=None)``: the parameters without annotations (as docs/api.md shows them)."""
    parts: list[str] = []
    star = False
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        if p.kind == p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind == p.VAR_POSITIONAL:
            parts.append("*" + p.name)
            star = True
            continue
        if p.kind == p.VAR_KEYWORD:
            parts.append("**" + p.name)
            continue
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"{name}({', '.join(parts)})"


def public_members(cls):
    """(name, object) of the public attributes a mnemos_kv class defines (own or inherited)."""
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is None or owner is object or not owner.__module__.startswith("mnemos_kv"):
            continue
        obj = owner.__dict__[name]
        if isinstance(obj, (classmethod, staticmethod)):
            obj = obj.__func__
        if isinstance(obj, property) or callable(obj):
            yield name, obj


@pytest.mark.parametrize("name", mnemos_kv.__all__)
def test_every_exported_name_is_documented(name: str) -> None:
    obj = getattr(mnemos_kv, name)
    assert f"`{name}`" in API or f"`{name}(" in API, f"{name} is not in docs/api.md"
    if name in ("MemoryId", "__version__"):
        return  # an alias of int, a string
    own_doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    assert own_doc and own_doc.strip(), f"{name} has no docstring"


@pytest.mark.parametrize("cls", [Mnemos, Namespace, Memory, Batch, PendingId])
def test_every_public_method_is_documented_with_its_signature(cls) -> None:
    missing, undocumented = [], []
    for name, obj in public_members(cls):
        if isinstance(obj, property):
            want = f"`{name}` (property)"
        else:
            want = f"`{signature(name, obj)}`"
        if want not in API:
            missing.append(want)
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
    assert not missing, f"docs/api.md lacks (or has another signature for) {missing}"
    assert not undocumented, f"{cls.__name__} members without a docstring: {undocumented}"


def test_memory_fields_and_filters_are_documented() -> None:
    for f in dataclasses.fields(Memory):
        assert f"| `{f.name}` |" in API, f"Memory.{f.name} is not in docs/api.md"
    for name in ("validate", "matches"):
        assert f"`filters.{signature(name, getattr(filters, name))}`" in API


def test_the_check_can_fail() -> None:
    """The signature check sees a change: a made-up parameter is not in the docs."""
    def update(id, *, text=None, colour=None):  # noqa: A002 - mirrors the real one
        """x"""
    assert f"`{signature('update', update)}`" not in API
    assert f"`{signature('update', Mnemos.update)}`" in API
