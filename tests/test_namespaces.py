"""Namespaces: isolation, listing, counts, cross-namespace search."""

from __future__ import annotations

import pytest

from mnemos_kv import InvalidInputError, MemoryNotFoundError, Mnemos


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


def test_handles_are_isolated(db: Mnemos) -> None:
    a = db.namespace("agent_a")
    a_short = db.namespace("agent")
    b = db.namespace("agent_b")
    ida = a.remember("agent a knows the launch code")
    idb = b.remember("agent b knows the launch date")
    idd = db.remember("default memory about launch")
    assert a.get(ida).namespace == "agent_a"
    for handle, foreign in ((a, idb), (b, ida), (a, idd), (db, ida), (a_short, ida)):
        with pytest.raises(MemoryNotFoundError):
            handle.get(foreign)
        with pytest.raises(MemoryNotFoundError):
            handle.forget(foreign)
        with pytest.raises(MemoryNotFoundError):
            handle.neighbors(foreign)
    with pytest.raises(MemoryNotFoundError):
        a.connect(ida, idb)
    assert [h.id for h in a.ask("launch", top_k=10)] == [ida]
    assert [h.id for h in b.ask("launch", top_k=10)] == [idb]
    assert [h.id for h in db.ask("launch", top_k=10)] == [idd]
    assert a_short.ask("launch") == [] and a_short.count() == 0
    assert (a.count(), b.count(), db.count()) == (1, 1, 1)
    assert a.get(ida).text.startswith("agent a")  # nothing was changed by the failed calls


def test_keys_are_per_namespace(db: Mnemos) -> None:
    a, b = db.namespace("a"), db.namespace("b")
    ia = a.remember("x", key="k")
    ib = b.remember("y", key="k")
    assert a.get_by_key("k").id == ia and b.get_by_key("k").id == ib
    with pytest.raises(MemoryNotFoundError):
        db.get_by_key("k")


def test_listing_and_stats(db: Mnemos) -> None:
    assert db.namespaces() == ["default"]
    db.namespace("shared")  # a handle alone creates nothing
    assert db.namespaces() == ["default"]
    db.namespace("shared").remember_many(["s1", "s2"])
    db.namespace("agent_a").remember("a1")
    db.remember("d1")
    assert db.namespaces() == ["agent_a", "default", "shared"]
    st = db.stats()
    assert st["namespaces"] == {"agent_a": {"count": 1}, "default": {"count": 1}, "shared": {"count": 2}}
    assert st["total"] == 4
    db.namespace("shared").forget(db.namespace("shared").ask("s1", top_k=1)[0].id)
    assert db.stats()["namespaces"]["shared"]["count"] == 1


def test_cross_namespace_ask(db: Mnemos) -> None:
    shared = db.namespace("shared")
    s = shared.remember("The payment provider is Stripe")
    agent = db.namespace("agent_a", read=["shared"])
    p = agent.remember("I should double check the payment provider invoices")
    hits = agent.ask("payment provider", top_k=5, namespaces=["agent_a", "shared"])
    assert {h.id for h in hits} == {s, p}
    assert {h.namespace for h in hits} == {"shared", "agent_a"}
    assert [h.id for h in agent.ask("payment provider", top_k=5)] == [p]  # default: own only
    with pytest.raises(InvalidInputError, match="may not read"):
        db.namespace("agent_b").ask("payment", namespaces=["agent_a"])
    with pytest.raises(MemoryNotFoundError):
        agent.get(s)  # read access is for search across namespaces; get stays confined
    with pytest.raises(MemoryNotFoundError):
        agent.forget(s)
    # the root handle may search any namespace, and unknown names simply match nothing
    assert {h.id for h in db.ask("payment", top_k=5, namespaces=["shared", "agent_a", "nobody"])} == {s, p}


def test_namespace_isolation_survives_reopen(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        ida = s.namespace("agent_a").remember("alpha")
    with Mnemos.open(store_path) as s:
        with pytest.raises(MemoryNotFoundError):
            s.namespace("agent_b").get(ida)
        assert s.namespace("agent_a").get(ida).text == "alpha"
