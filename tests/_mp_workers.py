"""Child processes for tests/test_multiprocess.py and tests/test_crash.py.

Run as ``python tests/_mp_workers.py ROLE ARGS...`` with the worktree root on
``PYTHONPATH`` (see :func:`spawn`). Each role prints JSON lines on stdout.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from mnemos_kv import HashingEmbedder, MemoryNotFoundError, Mnemos  # noqa: E402
from mnemos_kv.embedders import check_vectors  # noqa: E402

_EMB = HashingEmbedder()


def spawn(*args: str, **kw: Any) -> subprocess.Popen:
    """Start a worker with this worktree's mnemos_kv first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def result(proc: subprocess.Popen, timeout: float = 120) -> dict[str, Any]:
    """Wait for a worker and return the JSON of its last output line; fail with its stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker timed out; stderr:\n{err[-3000:]}")
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return json.loads(lines[-1])


def expected_vector(text: str) -> np.ndarray:
    """What the default embedder stores for ``text``: normalised float32."""
    return check_vectors(_EMB.embed([text]), 1, _EMB.dim)[0]


def writer_text(idx: int, k: int) -> str:
    return f"writer {idx} note {k}: the {['plan', 'budget', 'risk', 'design'][k % 4]} item {k * 7919 % 1000}"


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- roles ---------------------------------------------------------------------------


def role_writer(path: str, idx: str, n: str, durability: str = "full") -> None:
    """Remember n memories one call each, alternating a private namespace and 'shared'."""
    i, n_ = int(idx), int(n)
    with Mnemos.open(path, durability=durability) as db:
        mine, shared = db.namespace(f"agent_{i}"), db.namespace("shared")
        out = []
        for k in range(n_):
            ns = mine if k % 2 == 0 else shared
            text = writer_text(i, k)
            out.append([ns.remember(text, metadata={"w": i, "k": k}), ns.name, text])
    emit({"done": out})


def _check_snapshot(db: Mnemos, checked: dict[int, int]) -> dict[str, int]:
    """One snapshot: records, slot columns and vectors agree; returns its counts."""
    eng = db._engine
    with eng.snapshot() as snap:
        st = snap.state
        live = snap.live_mask()
        n_live = int(live.sum())
        rdb = eng.env.db("records")
        n_rec = snap.txn.stat(rdb)["entries"]
        assert n_rec == st.live == n_live, f"records {n_rec}, state.live {st.live}, live slots {n_live}"
        ids = snap.slots["id"]
        for slot in np.flatnonzero(live).tolist():
            mid = int(ids[slot])
            if checked.get(slot) == mid:
                continue
            rec = eng.record(snap.txn, mid)
            assert rec is not None, f"live slot {slot} (id {mid}) has no record in the snapshot"
            assert rec.slot == slot, f"record {mid} points at slot {rec.slot}, not {slot}"
            want = expected_vector(rec.text)
            assert np.array_equal(snap.matrix[slot], want), f"memory {mid}: vector is not its text's"
            checked[slot] = mid
        return {"live": n_live, "seq": st.seq}


def role_reader(path: str, stop_file: str, readonly: str = "1") -> None:
    """Ask all the while until ``stop_file`` exists; report what was seen."""
    checked: dict[int, int] = {}
    last = {"live": 0, "seq": 0}
    counts: set[int] = set()
    iters = 0
    errors: list[str] = []
    db = Mnemos.open(path, readonly=readonly == "1")
    try:
        while not os.path.exists(stop_file) or iters < 3:
            iters += 1
            try:
                snap = _check_snapshot(db, checked)
                assert snap["live"] >= last["live"], f"count went down {last['live']} -> {snap['live']}"
                assert snap["seq"] >= last["seq"], "sequence went down"
                nss = db.namespaces()
                hits = db.ask("the plan item", top_k=10_000, namespaces=nss)
                assert len({h.id for h in hits}) == len(hits), "duplicate ids in one answer"
                for h in hits[:: max(1, len(hits) // 40)] + hits[-5:]:
                    v = db.namespace(h.namespace).get_vector(h.id)
                    assert np.array_equal(v, expected_vector(h.text)), f"hit {h.id}: vector mismatch"
                after = sum(db.namespace(n).count() for n in db.namespaces())
                # the ask's snapshot is older than the counts' (no memory is ever forgotten here)
                assert snap["live"] <= after and len(hits) <= after, \
                    f"ask saw {len(hits)}, snapshot {snap['live']}, a later count {after}"
                last = {"live": snap["live"], "seq": snap["seq"]}
                counts.add(snap["live"])
                if iters % 10 == 0:
                    rep = db.verify(deep=False)
                    assert rep.ok, str(rep)
            except AssertionError as exc:
                errors.append(str(exc))
                if len(errors) > 20:
                    break
    finally:
        db.close()
    emit({"iters": iters, "errors": errors, "last": last, "checked": len(checked),
          "distinct_counts": len(counts)})


def role_crash_child(path: str, seed: str, base: str, durability: str) -> None:
    """Random writes forever; after each returned call, report it on stdout."""
    rng = random.Random(int(seed))
    k = int(base)
    with Mnemos.open(path, durability=durability) as db:
        emit({"ready": os.getpid()})
        alive: list[int] = []
        while True:
            r = rng.random()
            if r < 0.6:
                text = f"crash memory {k}: topic {k % 13} detail {k * 31 % 97}"
                mid = db.remember(text)
                alive.append(mid)
                emit({"R": [[mid, text]]})
                k += 1
            elif r < 0.7:
                texts = [f"crash batch memory {k + j}: topic {(k + j) % 13}" for j in range(3)]
                ids = db.remember_many(texts)
                alive.extend(ids)
                emit({"R": [[m, t] for m, t in zip(ids, texts)]})
                k += 3
            elif r < 0.8:
                texts = [f"crash batched {k + j}: topic {(k + j) % 7}" for j in range(4)]
                with db.batch() as b:
                    pend = [b.remember(t) for t in texts]
                    b.connect(pend[0], pend[1])
                    if alive:
                        victim = alive.pop(rng.randrange(len(alive)))
                        emit({"try_F": [victim]})
                        b.forget(victim)
                    else:
                        victim = None
                ids = [p.id for p in pend]
                alive.extend(ids)
                emit({"R": [[m, t] for m, t in zip(ids, texts)], "F": [victim] if victim else []})
                k += 4
            elif r < 0.95 and alive:
                victim = alive.pop(rng.randrange(len(alive)))
                emit({"try_F": [victim]})  # a kill now may or may not have forgotten it
                db.forget(victim)
                emit({"F": [victim]})
            elif r < 0.98 and len(alive) > 1:
                a, b2 = rng.sample(alive, 2)
                db.connect(a, b2, relation="crash")
                emit({"C": [a, b2]})
            else:
                db.compact()
                emit({"compact": True})


def role_growth_writer(path: str, idx: str, n: str) -> None:
    """Remember n large memories into a store opened with the smallest map."""
    i, n_ = int(idx), int(n)
    filler = " ".join(f"w{i}x{j}" for j in range(400))  # ~3 KB of text per memory
    ids = []
    with Mnemos.open(path, map_size=1 << 20) as db:
        ns = db.namespace(f"grow_{i}")
        for k in range(n_):
            if k % 10 == 9:
                with db.batch() as b:
                    pend = [b.remember(f"{k}-{j} {filler}") for j in range(5)]
                ids.extend(p.id for p in pend)
            else:
                ids.append(ns.remember(f"{k} {filler}"))
        emit({"done": ids, "map_size": db._engine.env.map_size_now()})


def role_growth_reader(path: str, stop_file: str) -> None:
    """Read while other processes grow the map; every read must succeed."""
    iters = 0
    errors: list[str] = []
    with Mnemos.open(path, readonly=True, map_size=1 << 20) as db:
        while not os.path.exists(stop_file) or iters < 3:
            iters += 1
            try:
                total = sum(db.namespace(n).count() for n in db.namespaces())
                mems = sum(1 for n in db.namespaces() for _ in db.namespace(n).memories())
                assert mems >= total, f"iterated {mems} memories after counting {total}"
                db.ask("w0x1 w1x2", top_k=5, namespaces=db.namespaces())
            except Exception as exc:  # noqa: BLE001 - report everything
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(errors) > 5:
                    break
        emit({"iters": iters, "errors": errors, "map_size": db._engine.env.map_size_now()})


def role_compactor(path: str, rounds: str) -> None:
    """Remember, forget and compact in rounds (new file generations)."""
    with Mnemos.open(path) as db:
        ns = db.namespace("churn")
        for r in range(int(rounds)):
            ids = ns.remember_many([f"churn round {r} item {j}: the plan item {j}" for j in range(40)])
            ns.forget_many(ids[::2])
            db.compact()
        emit({"done": True, "generation": db.stats()["generation"]})


def role_compaction_reader(path: str, stop_file: str) -> None:
    """Read consistently while another process compacts."""
    iters = 0
    errors: list[str] = []
    checked: dict[int, int] = {}
    gens = set()
    with Mnemos.open(path, readonly=True) as db:
        while not os.path.exists(stop_file) or iters < 3:
            iters += 1
            try:
                checked.clear()  # slots move between generations
                _check_snapshot(db, checked)
                hits = db.ask("the plan item", top_k=50, namespaces=["churn"])
                for h in hits[:5]:
                    try:  # (a separate snapshot: the compactor may have forgotten it since)
                        v = db.namespace("churn").get_vector(h.id)
                    except MemoryNotFoundError:
                        continue
                    assert np.array_equal(v, expected_vector(h.text))
                gens.add(db.stats()["generation"])
                rep = db.verify()
                assert rep.ok, str(rep)
            except Exception as exc:  # noqa: BLE001 - report everything
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(errors) > 5:
                    break
    emit({"iters": iters, "errors": errors, "generations": sorted(gens)})


def role_opener(path: str, stop_file: str) -> None:
    """Open and close the store (read-write, then read-only) until told to stop."""
    n = 0
    errors: list[str] = []
    while not os.path.exists(stop_file) or n < 3:
        n += 1
        try:
            with Mnemos.open(path, readonly=n % 2 == 0) as db:
                db.namespace("churn").count()
        except Exception as exc:  # noqa: BLE001 - report everything
            errors.append(f"{type(exc).__name__}: {exc}")
            if len(errors) > 5:
                break
    emit({"opens": n, "errors": errors})


def role_remember_n(path: str, n: str, sync: str = "0") -> None:
    """Remember n memories and exit without closing (a clean process exit, no close);
    ``sync`` "1": then ``sync()`` (the log file holds them; ``pending`` is emptied)."""
    db = Mnemos.open(path)
    ids = [db.remember(f"child memory {k}") for k in range(int(n))]
    if sync == "1":
        db.sync()
    emit({"done": ids})
    os._exit(0)


def role_update_one(path: str, ns: str, mid: str, text: str, meta_json: str) -> None:
    """Update memory ``mid`` of namespace ``ns`` to ``text`` and ``meta_json`` (a JSON
    object), close, and exit (tests/test_ask_memo.py: another process's write)."""
    with Mnemos.open(path) as db:
        m = db.namespace(ns).update(int(mid), text=text, metadata=json.loads(meta_json))
    emit({"done": m.id})


def role_update_reader(path: str, stop_file: str, mid: str) -> None:
    """While another process updates memory ``mid`` back and forth: every snapshot shows
    one whole version (text, metadata and vector agree, one live slot), never a mix."""
    m = int(mid)
    iters, errors, seen = 0, [], set()
    with Mnemos.open(path, readonly=True) as db:
        eng = db._engine
        while not os.path.exists(stop_file) or iters < 3:
            iters += 1
            try:
                with eng.snapshot() as snap:
                    rec = eng.record(snap.txn, m)
                    live = snap.live_mask()
                    n_live = int((snap.slots["id"][live] == m).sum())
                    ok = (rec is not None and rec.metadata.get("text") == rec.text and n_live == 1
                          and bool(live[rec.slot])
                          and np.array_equal(snap.matrix[rec.slot], expected_vector(rec.text)))
                    if not ok:
                        errors.append(f"mixed version: {rec!r} live slots {n_live}")
                    else:
                        seen.add(rec.text)
                hits = db.ask("version of the shared fact", top_k=5)
                if [h.id for h in hits].count(m) != 1:
                    errors.append("ask returned the memory twice or not at all")
            except Exception as exc:  # noqa: BLE001 - report everything
                errors.append(f"{type(exc).__name__}: {exc}")
            if len(errors) > 5:
                break
    emit({"iters": iters, "errors": errors, "versions": sorted(seen)})


def role_updater(path: str, mid: str, n: str) -> None:
    """Update memory ``mid`` n times, alternating two versions (text and metadata)."""
    texts = ["alpha version of the shared fact", "beta version of the shared fact"]
    with Mnemos.open(path) as db:
        for k in range(int(n)):
            t = texts[(k + 1) % 2]
            db.update(int(mid), text=t, metadata={"text": t})
    emit({"updates": int(n)})


def role_upserter(path: str, idx: str, n: str) -> None:
    """Upsert n times over the keys key0..key4 of namespace 'keys' (racing other upserters)."""
    i = int(idx)
    ids: dict[str, int] = {}
    last: dict[str, str] = {}
    with Mnemos.open(path) as db:
        ns = db.namespace("keys")
        for k in range(int(n)):
            key, text = f"key{k % 5}", f"upserter {i} round {k}: the value of key {k % 5}"
            ids[key] = ns.upsert(key, text)
            last[key] = text
    emit({"ids": ids, "last": last})


def role_capacity_writer(path: str, idx: str, n: str) -> None:
    """Remember n memories one call each (alternating a private namespace and 'shared',
    timestamps out of order) into a store with capacity limits; after each call, one
    snapshot must show every limit kept."""
    i, n_ = int(idx), int(n)
    rng = random.Random(i)
    over = []
    with Mnemos.open(path) as db:
        mine, shared = db.namespace(f"agent_{i}"), db.namespace("shared")
        out = []
        for k in range(n_):
            ns = mine if k % 2 == 0 else shared
            text = writer_text(i, k)
            ts = 1_767_225_600 + rng.randrange(60) * 86_400 + i
            out.append([ns.remember(text, timestamp=ts,
                                    type=("episodic", "semantic", "procedural")[k % 3]), ns.name])
            st = db.stats()  # one snapshot
            cap = st["capacity"]
            if st["total"] > cap["limit"]["max_entries"] or \
                    st["namespaces"]["shared"]["count"] > cap["namespaces"]["shared"]["limit"]["max_entries"]:
                over.append(st["seq"])
    emit({"done": out, "over": over})


ROLES = {name[5:]: fn for name, fn in globals().items() if name.startswith("role_")}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
