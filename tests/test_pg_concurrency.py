"""Several processes write to one PostgreSQL store at once: every acknowledged write is
there exactly once, the counts are exact, ids are unique (docs/postgres.md, concurrency)."""

from __future__ import annotations

import numpy as np
import pytest

from mnemos_kv import Mnemos

from _eviction import check_evictions_follow_the_formula, replay_ops  # noqa: E402
from _mp_workers import expected_vector, result, spawn, writer_text  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUT = 180
WRITERS, EACH = 4, 50


def test_writer_processes_lose_no_acknowledged_write(pg_store_url: str, tmp_path) -> None:
    url = pg_store_url
    Mnemos.open(url).close()  # the schema exists before the writers race
    writers = [spawn("writer", url, str(i), str(EACH)) for i in range(WRITERS)]
    upserters = [spawn("upserter", url, str(i), "20") for i in range(2)]
    done = [result(w, TIMEOUT) for w in writers]
    ups = [result(u, TIMEOUT) for u in upserters]

    acked = [tuple(row) for d in done for row in d["done"]]
    ids = [row[0] for row in acked]
    assert len(ids) == WRITERS * EACH and len(set(ids)) == len(ids)  # no id given twice
    with Mnemos.open(url, readonly=True) as db:
        counts = {n: db.namespace(n).count() for n in db.namespaces()}
        assert counts == {"default": 0, "shared": WRITERS * EACH // 2, "keys": 5,
                          **{f"agent_{i}": EACH // 2 for i in range(WRITERS)}}
        for i, d in enumerate(done):
            for k, (mid, ns, text) in enumerate(d["done"]):
                assert text == writer_text(i, k)
                m = db.namespace(ns).get(mid)  # every acknowledged write is there, whole
                assert (m.text, m.metadata) == (text, {"w": i, "k": k})
                assert np.array_equal(db.namespace(ns).get_vector(mid), expected_vector(text))
        every = [m.id for n in db.namespaces() for m in db.namespace(n).memories()]
        assert len(every) == len(set(every)) == WRITERS * EACH + 5
        # concurrent upserts of the same 5 keys: one memory per key, holding the text of
        # the last acknowledged upsert of one of the two processes, with a stable id
        keyed = {m.key: m for m in db.namespace("keys").memories()}
        assert sorted(keyed) == [f"key{j}" for j in range(5)]
        for j in range(5):
            assert {u["ids"][f"key{j}"] for u in ups} == {keyed[f"key{j}"].id}
            assert keyed[f"key{j}"].text in {u["last"][f"key{j}"] for u in ups}
        digest = db.state_digest()
        info = db.export_replay(str(tmp_path / "all.replay"))
    # the history the server serialised replays to the same state on the embedded engine
    with Mnemos.open(str(tmp_path / "copy.mem")) as copy:
        res = copy.replay(info.path)
        assert res.digest_matches and res.digest == digest


def test_writer_processes_under_capacity_limits(pg_store_url: str, tmp_path) -> None:
    """Writers racing on a store with a store-wide and a namespace limit: every commit
    keeps both limits, each eviction is the one the formula picks from the state the
    previous commit left (evictions run in the writer's transaction, under the counter
    row lock), and the history replays to the same state on the embedded engine."""
    url = pg_store_url
    with Mnemos.open(url) as db:
        db.set_capacity(25)
        db.namespace("shared").set_capacity(8)
    writers = [spawn("capacity_writer", url, str(i), "30") for i in range(3)]
    done = [result(w) for w in writers]
    assert all(d["over"] == [] for d in done)
    acked = [row[0] for d in done for row in d["done"]]
    assert len(acked) == len(set(acked)) == 90
    with Mnemos.open(url, readonly=True) as db:
        st = db.stats()
        assert st["total"] == 25 and st["namespaces"]["shared"]["count"] == 8
        assert st["evicted"] == 90 - 25
        live = {m.id for n in db.namespaces() for m in db.namespace(n).memories()}
        for mid in acked:  # every acknowledged write is live or was evicted (with a note)
            assert mid in live or db.explain_eviction(mid)["status"] == "evicted"
        digest = db.state_digest()
        info = db.export_replay(str(tmp_path / "all.replay"))
    assert check_evictions_follow_the_formula(replay_ops(info.path)) == 65
    with Mnemos.open(str(tmp_path / "copy.mem")) as copy:
        res = copy.replay(info.path)
        assert res.digest_matches and res.digest == digest
        assert copy.stats()["evicted"] == 65
