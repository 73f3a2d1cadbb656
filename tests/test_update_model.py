"""update / upsert / forget / drop_namespace / compact against a plain-Python model,
on random operation sequences (property-based)."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemos_kv import Mnemos

NAMES = ["default", "a", "b"]
WORDS = ["apple", "river", "stone", "cloud", "ember", "frost"]

op_st = st.one_of(
    st.tuples(st.just("remember"), st.sampled_from(NAMES), st.integers(0, 5), st.integers(0, 3),
              st.integers(0, 50)),
    st.tuples(st.just("update"), st.sampled_from(NAMES), st.integers(0, 99), st.integers(-1, 5),
              st.integers(-1, 3)),
    st.tuples(st.just("upsert"), st.sampled_from(NAMES), st.integers(0, 3), st.integers(0, 5),
              st.integers(0, 3)),
    st.tuples(st.just("forget"), st.sampled_from(NAMES), st.integers(0, 99)),
    st.tuples(st.just("drop"), st.sampled_from(NAMES)),
    st.tuples(st.just("compact")),
)


def _text(i: int, salt: int) -> str:
    return f"{WORDS[i]} {WORDS[(i + salt) % 6]} note {salt}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, min_size=1, max_size=30))
def test_store_matches_the_model(ops) -> None:
    model: dict[str, dict[int, dict]] = {n: {} for n in NAMES}
    next_id = 1
    with tempfile.TemporaryDirectory() as d, Mnemos.open(f"{d}/s.mem", clock=lambda: 5000.0) as db:
        for step, op in enumerate(ops):
            kind, rest = op[0], op[1:]
            if kind == "compact":
                db.compact()
                continue
            name = rest[0]
            h = db if name == "default" else db.namespace(name)
            mem = model[name]
            if kind == "remember":
                _, i, g, ts = rest
                mid = h.remember(_text(i, step), {"g": g}, timestamp=ts)
                assert mid == next_id
                next_id += 1
                mem[mid] = {"text": _text(i, step), "meta": {"g": g}, "ts": ts * 1e6, "key": None,
                            "upd": None}
            elif kind == "update" and mem:
                _, pick, ti, g = rest
                mid = sorted(mem)[pick % len(mem)]
                kw = {}
                if ti >= 0:
                    kw["text"] = _text(ti, step)
                if g >= 0:
                    kw["metadata"] = {"g": g}
                if not kw:
                    continue
                m = h.update(mid, **kw)
                want = dict(mem[mid])
                want.update({"text": kw.get("text", want["text"]), "meta": kw.get("metadata", want["meta"])})
                changed = (want["text"], want["meta"]) != (mem[mid]["text"], mem[mid]["meta"])
                if changed:
                    want["upd"] = 5000.0
                mem[mid] = want
                assert (m.text, m.metadata) == (want["text"], want["meta"])
            elif kind == "upsert":
                _, k, i, g = rest
                key = f"key{k}"
                mid = h.upsert(key, _text(i, step), {"g": g}, timestamp=None)
                hit = [x for x, v in mem.items() if v["key"] == key]
                if hit:
                    assert mid == hit[0]
                    old = mem[mid]
                    new = dict(old, text=_text(i, step), meta={"g": g}, key=key)
                    if (new["text"], new["meta"]) != (old["text"], old["meta"]):
                        new["upd"] = 5000.0
                    mem[mid] = new
                else:
                    assert mid == next_id
                    next_id += 1
                    mem[mid] = {"text": _text(i, step), "meta": {"g": g}, "ts": 5000.0 * 1e6,
                                "key": key, "upd": None}
            elif kind == "forget" and mem:
                mid = sorted(mem)[rest[1] % len(mem)]
                h.forget(mid)
                del mem[mid]
            elif kind == "drop":
                n = db.drop_namespace(name)
                assert n == len(mem)
                mem.clear()
        # the store answers like the model
        assert db.stats()["total"] == sum(len(m) for m in model.values())
        for name in NAMES:
            h = db if name == "default" else db.namespace(name)
            mem = model[name]
            got = [(m.id, m.text, m.metadata, m.key, m.created_at * 1e6,
                    m.updated_at if mem[m.id]["upd"] is not None else None) for m in h.memories()]
            want = [(i, v["text"], v["meta"], v["key"], v["ts"], v["upd"])
                    for i, v in sorted(mem.items(), key=lambda t: (t[1]["ts"], t[0]))]
            assert got == want
            assert h.count() == len(mem)
            for g in range(4):
                assert h.count(filter={"g": g}) == sum(1 for v in mem.values() if v["meta"]["g"] == g)
            for i, v in mem.items():
                if v["key"] is not None:
                    assert h.get_by_key(v["key"]).id == i
            if mem:
                hits = h.ask("apple river stone cloud ember frost note", top_k=100)
                assert sorted(x.id for x in hits) == sorted(mem)
        assert db.verify().ok
