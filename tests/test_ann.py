"""The ANN candidate stage: determinism, MVCC, forgetting, damage, filters, compaction."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnemos_kv import InvalidInputError, Mnemos
from mnemos_kv import _ann
from mnemos_kv import _retrieval as RT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 6000          # above _ann.TRAIN_BASE: the store has an index with ann=True
DIM = 24


class ClusterEmbedder:
    """Text ``"m-<i>"`` -> row ``i`` of a seeded clustered matrix; other texts -> a hash row."""

    name = "test-clusters"
    dim = DIM

    def __init__(self, n: int = N + 200, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((40, DIM)).astype(np.float32)
        self.rows = centers[rng.integers(0, 40, n)] + \
            rng.standard_normal((n, DIM)).astype(np.float32) * 0.6

    def embed(self, texts):
        out = []
        for t in texts:
            word = t.split()[0]
            if word.startswith("m-") and word[2:].isdigit():
                out.append(self.rows[int(word[2:])])
            else:
                out.append(np.random.default_rng(len(t)).standard_normal(DIM).astype(np.float32))
        return np.stack(out)


def _items(lo: int, hi: int) -> list[dict]:
    return [{"text": f"m-{i} note {'alpha' if i % 7 == 0 else 'beta'} {i % 13}",
             "timestamp": 1_700_000_000 + (i * 7919) % 100_000,
             "type": "semantic" if i % 50 == 0 else "episodic"} for i in range(lo, hi)]


def _open(path, ann=_ann.APPROXIMATE, **kw) -> Mnemos:
    return Mnemos.open(str(path), embedder=ClusterEmbedder(), ann=ann, durability="fast", **kw)


QUERIES = ["m-5 alpha", "m-777", "m-1234 beta 3", "m-4000 note", "m-5999 alpha 1"]


def _answers(db, **kw) -> list[list[tuple[int, float]]]:
    return [[(m.id, m.score) for m in db.ask(q, top_k=10, **kw)] for q in QUERIES]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("ann") / "big.mem"
    with _open(path) as db:
        db.remember_many(_items(0, N))
    return path


def test_option_is_validated(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="ann"):
        Mnemos.open(str(tmp_path / "x.mem"), ann="yes")
    with pytest.raises(InvalidInputError, match="ann"):
        Mnemos.open(str(tmp_path / "x.mem"), ann=1)


def test_small_store_never_uses_the_index(tmp_path) -> None:
    with _open(tmp_path / "s.mem") as db:
        db.remember_many(_items(0, 100))
        db.ask("m-5")
    assert not [f for f in os.listdir(tmp_path / "s.mem") if f.startswith("ann.")]
    assert not _ann.wanted(True, _ann.TRAIN_BASE - 1) and _ann.wanted(True, _ann.TRAIN_BASE)
    assert not _ann.wanted(None, _ann.THRESHOLD - 1) and _ann.wanted(None, _ann.THRESHOLD)
    assert not _ann.wanted(False, 10 * _ann.THRESHOLD)


def test_index_answers_close_to_exact_and_file_written(big) -> None:
    with _open(big, ann=False) as db:
        exact = _answers(db)
    with _open(big) as db:
        approx = _answers(db)
    files = [f for f in os.listdir(big) if f.startswith("ann.")]
    assert files == [os.path.basename(_ann.index_file(str(big), 1, _ann.train_size(N)))]
    same = sum(len({i for i, _ in a} & {i for i, _ in e}) for a, e in zip(approx, exact))
    assert same / (10 * len(QUERIES)) >= 0.9
    for a, e in zip(approx, exact):
        assert a[0][0] == e[0][0]  # the query's own memory is found
        # scores differ slightly: the normalisation's cosine minimum comes from a sample
        assert a[0][1] == pytest.approx(e[0][1], rel=0.05)


def test_same_ops_same_index_bytes_and_answers(tmp_path) -> None:
    outs, blobs = [], []
    for name in ("a.mem", "b.mem"):
        with _open(tmp_path / name) as db:
            db.remember_many(_items(0, 3000))
            db.remember_many(_items(3000, 5000))
            outs.append(_answers(db))
            db.remember_many(_items(5000, N))
            outs.append(_answers(db))
        f = _ann.index_file(str(tmp_path / name), 1, _ann.train_size(N))
        blobs.append(open(f, "rb").read())
    assert outs[0] == outs[2] and outs[1] == outs[3]
    assert blobs[0] == blobs[1]
    assert len(blobs[0]) > 0


def test_index_built_in_one_go_equals_grown_index(tmp_path) -> None:
    """Coverage grows in chunks as the store grows; the file equals one built at the end."""
    with _open(tmp_path / "grown.mem") as db:
        for lo in range(0, N, 700):
            db.remember_many(_items(lo, min(N, lo + 700)))
            if lo + 700 >= _ann.TRAIN_BASE:
                db.ask("m-1")
    with _open(tmp_path / "once.mem") as db:
        db.remember_many(_items(0, N))
        db.ask("m-1")
    t = _ann.train_size(N)
    a = open(_ann.index_file(str(tmp_path / "grown.mem"), 1, t), "rb").read()
    b = open(_ann.index_file(str(tmp_path / "once.mem"), 1, t), "rb").read()
    assert a == b


def test_forgotten_never_come_back_and_snapshot_isolation(tmp_path) -> None:
    with _open(tmp_path / "f.mem") as db:
        ids = db.remember_many(_items(0, N))
        first = db.ask("m-777", top_k=5)
        assert first[0].id == ids[777]
        eng = db._engine
        qvec = ClusterEmbedder().embed(["m-777"])[0]
        qvec = qvec / np.linalg.norm(qvec)
        plan = RT.Query(text="m-777", vector=qvec, ns_ids=(0,), top_k=5, vector_weight=0.5)
        with eng.snapshot() as old:
            db.forget(ids[777])
            new_id = db.remember("m-777 again")  # same vector, after the snapshot
            in_old = [h.id for h in RT.run(eng, old, plan)]
        assert ids[777] in in_old and new_id not in in_old
        now = [m.id for m in db.ask("m-777", top_k=5)]
        assert ids[777] not in now and now[0] == new_id  # the tail is scanned exactly
        # forgetting every memory of the probed lists keeps them out
        gone = set(now)
        db.forget_many(list(gone))
        assert not gone & {m.id for m in db.ask("m-777", top_k=10)}


def test_other_process_writes_are_picked_up(big, tmp_path) -> None:
    path = tmp_path / "copy.mem"
    with _open(path) as db:
        db.remember_many(_items(0, N))
        db.ask("m-1")  # index built and covering
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {ROOT!r})
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from test_ann import _open
            with _open({str(path)!r}) as db:
                print(db.remember("m-{N + 50} fresh"))
        """)
        new_id = int(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, check=True).stdout)
        assert db.ask(f"m-{N + 50}", top_k=3)[0].id == new_id


def test_filters_keep_recall(big) -> None:
    # a filter keeping 2% of the store: too few ANN candidates pass -> exact over the filter
    with _open(big, ann=False) as db:
        exact = [[m.id for m in db.ask(q, top_k=10, types="semantic")] for q in QUERIES]
        exact_ns = [[m.id for m in db.ask(q, top_k=10, since=1_700_000_000,
                                          until=1_700_002_000)] for q in QUERIES]
    with _open(big) as db:
        approx = [[m.id for m in db.ask(q, top_k=10, types="semantic")] for q in QUERIES]
        approx_ns = [[m.id for m in db.ask(q, top_k=10, since=1_700_000_000,
                                           until=1_700_002_000)] for q in QUERIES]
    assert approx == exact and approx_ns == exact_ns
    assert all(len(a) == 10 for a in approx)


def test_metadata_filter_falls_back_when_candidates_run_out(tmp_path) -> None:
    with _open(tmp_path / "m.mem") as db:
        items = _items(0, N)
        for i, it in enumerate(items):
            it["metadata"] = {"rare": i % 500 == 0}
        db.remember_many(items)
        got = db.ask("m-5", top_k=10, filter={"rare": True})
        assert len(got) == 10 and all(m.metadata["rare"] for m in got)


def _copy_of_big(big, path):
    """A copy of the ``big`` store at ``path``: (path, its answers, its index file)."""
    import shutil
    shutil.copytree(big, path)
    with _open(path) as db:
        good = _answers(db)
    return path, good, _ann.index_file(str(path), 1, _ann.train_size(N))


def test_damaged_or_missing_index_is_rebuilt(big, tmp_path, caplog) -> None:
    path, good, f = _copy_of_big(big, tmp_path / "dmg.mem")
    size = os.path.getsize(f)
    with open(f, "r+b") as fh:  # flip a byte in the middle of the slot lists
        fh.seek(size - 3 * 1024)
        b = fh.read(1)
        fh.seek(size - 3 * 1024)
        fh.write(bytes([b[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="mnemos_kv"):
        with _open(path) as db:
            assert _answers(db) == good
    assert "damaged" in caplog.text
    with open(f, "r+b") as fh:  # a damaged header (centroids)
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with _open(path) as db:
        assert _answers(db) == good
    os.unlink(f)
    with _open(path) as db:
        assert _answers(db) == good
    assert os.path.exists(f)
    # a read-only process computes in memory and writes nothing
    os.unlink(f)
    with _open(path, readonly=True) as db:
        assert _answers(db) == good
    assert not os.path.exists(f)


def test_compaction_starts_a_new_index(tmp_path) -> None:
    path = tmp_path / "c.mem"
    with _open(path) as db:
        ids = db.remember_many(_items(0, N))
        db.ask("m-1")
        db.forget_many(ids[:200])
        before = _answers(db)
        db.compact()
        after = _answers(db)
        names = sorted(f for f in os.listdir(path) if f.startswith("ann."))
    assert names == [os.path.basename(_ann.index_file(str(path), 2, _ann.train_size(N - 200)))]
    assert [[i for i, _ in a][:1] for a in after] == [[i for i, _ in b][:1] for b in before]
    assert not {i for a in after for i, _ in a} & set(ids[:200])


def test_replay_in_new_process_gives_identical_answers_with_the_index(tmp_path) -> None:
    src = tmp_path / "src.mem"
    with _open(src) as db:
        ids = db.remember_many(_items(0, N))
        db.forget_many(ids[100:150])
        db.connect(ids[5], ids[900])
        answers = _answers(db) + [[(m.id, m.score) for m in db.ask("m-5", top_k=10,
                                                                  use_graph=True,
                                                                  recency_bias="30d")]]
        db.export_replay(str(tmp_path / "run.log"))
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {ROOT!r})
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_ann import _open, _answers
        with _open({str(tmp_path / 'dst.mem')!r}) as db:
            db.replay({str(tmp_path / 'run.log')!r})
            out = _answers(db) + [[(m.id, m.score) for m in db.ask("m-5", top_k=10,
                                                                  use_graph=True,
                                                                  recency_bias="30d")]]
        print(json.dumps(out))
    """)
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, check=True).stdout)
    assert [[tuple(x) for x in a] for a in out] == answers
    assert any(f.startswith("ann.") for f in os.listdir(tmp_path / "dst.mem"))


def test_explain_parts_add_up_on_the_ann_path(big) -> None:
    with _open(big) as db:
        for m in db.ask("m-42 alpha", top_k=5, explain=True, recency_bias=True):
            p = m.explain
            total = sum(p[k] for k in RT.EXPLAIN_PARTS)
            assert total == pytest.approx(m.score, rel=1e-4, abs=1e-5)


def test_vector_mode_uses_the_index_with_exact_cosines(big) -> None:
    rng = np.random.default_rng(11)
    emb = ClusterEmbedder()
    queries = [emb.rows[i] + rng.standard_normal(DIM).astype(np.float32) * 0.3
               for i in rng.integers(0, N, 20)]
    with _open(big, ann=False) as db:
        exact = [[(m.id, m.score) for m in db.ask(vector=v, mode="vector", top_k=10)]
                 for v in queries]
    with _open(big) as db:
        approx = [[(m.id, m.score) for m in db.ask(vector=v, mode="vector", top_k=10)]
                  for v in queries]
    found = sum(len({i for i, _ in a} & {i for i, _ in e}) for a, e in zip(approx, exact))
    assert found / (10 * len(queries)) >= 0.95
    for a, e in zip(approx, exact):
        ex = dict(e)
        for mid, score in a:
            if mid in ex:
                assert score == pytest.approx(ex[mid], abs=1e-5)  # re-ranked by the true cosine


def test_updates_move_memories_to_fresh_slots_without_ghosts(tmp_path) -> None:
    """An update appends a fresh slot (the id column is then unsorted): the ANN path finds
    the new version by its new vector and never the old one."""
    with _open(tmp_path / "u.mem") as db:
        ids = db.remember_many(_items(0, N))
        db.ask("m-1")
        db.update(ids[10], text=f"m-{N + 60} moved")
        got = db.ask(f"m-{N + 60}", top_k=3)
        assert got[0].id == ids[10] and got[0].text == f"m-{N + 60} moved"
        old = [m.id for m in db.ask("m-10", top_k=10, mode="vector")]
        assert ids[10] not in old
        assert len(set(old)) == len(old)


def _vector_answers(db, queries, **kw) -> list[list[tuple[int, float]]]:
    return [[(m.id, m.score) for m in db.ask(vector=v, mode="vector", top_k=10, **kw)]
            for v in queries]


def _same(got, want) -> None:
    """Same ids in the same order, the same cosines (up to the float rounding of a gathered
    vs a whole-matrix product)."""
    for a, e in zip(got, want, strict=True):
        assert [i for i, _ in a] == [i for i, _ in e]
        assert [s for _, s in a] == pytest.approx([s for _, s in e], abs=1e-6)


class _Given:
    """An embedder for stores whose vectors are all given."""

    name = "given"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed(self, texts):
        raise AssertionError("the test gives every vector")


class _Outcomes:
    """Wraps RT._ann_candidates: how often the index answered (True) or gave up (False)."""

    def __init__(self, monkeypatch) -> None:
        self.seen: list[bool] = []
        real = RT._ann_candidates

        def spy(*a, **kw):
            got = real(*a, **kw)
            self.seen.append(got is not None)
            return got
        monkeypatch.setattr(RT, "_ann_candidates", spy)


def test_automatic_exact_mode_is_the_default(tmp_path, monkeypatch, caplog) -> None:
    """Opened without ``ann=``, a store above the (lowered) threshold builds and uses the
    index for vector asks (the build announced once by a WARNING), and every answer
    equals the exact scan's (hybrid asks: the exact planner itself, no index)."""
    import inspect
    assert inspect.signature(Mnemos.open).parameters["ann"].default is None
    monkeypatch.setattr(_ann, "THRESHOLD", _ann.TRAIN_BASE)
    rng = np.random.default_rng(5)
    emb = ClusterEmbedder()
    queries = [emb.rows[i] + rng.standard_normal(DIM).astype(np.float32) * 0.2
               for i in rng.integers(0, N, 20)]
    path = tmp_path / "d.mem"
    with Mnemos.open(str(path), embedder=ClusterEmbedder(), durability="fast") as db:
        db.remember_many(_items(0, N))
        hybrid = _answers(db)
        assert not [f for f in os.listdir(path) if f.startswith("ann.")]
        spy = _Outcomes(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="mnemos_kv"):
            got = _vector_answers(db, queries)
    builds = [r for r in caplog.records if "building the ANN index" in r.getMessage()]
    assert len(builds) == 1 and builds[0].levelno == logging.WARNING
    assert [f for f in os.listdir(path) if f.startswith("ann.")]
    assert any(spy.seen)  # the bound closed: the index answered these itself
    with Mnemos.open(str(path), embedder=ClusterEmbedder(), ann=False) as db:
        _same(got, _vector_answers(db, queries))
        assert hybrid == _answers(db)


def test_read_only_automatic_mode_does_not_build_the_index(tmp_path, monkeypatch) -> None:
    """A read-only process in the default (automatic) mode with no index file answers by
    the exact scan instead of training the index in memory (a minute at 1M, in every
    such process); once a writer's vector ask wrote the file, it loads and uses it."""
    monkeypatch.setattr(_ann, "THRESHOLD", _ann.TRAIN_BASE)
    rng = np.random.default_rng(11)
    emb = ClusterEmbedder()
    queries = [emb.rows[i] + rng.standard_normal(DIM).astype(np.float32) * 0.2
               for i in rng.integers(0, N, 10)]
    path = str(tmp_path / "ro.mem")
    with Mnemos.open(path, embedder=ClusterEmbedder(), durability="fast", ann=False) as db:
        db.remember_many(_items(0, N))
        exact = _vector_answers(db, queries)
    trained: list[int] = []
    real_train = _ann.train
    monkeypatch.setattr(_ann, "train", lambda m, t: trained.append(t) or real_train(m, t))
    spy = _Outcomes(monkeypatch)
    with Mnemos.open(path, embedder=ClusterEmbedder(), readonly=True) as ro:
        _same(_vector_answers(ro, queries), exact)
    assert trained == [] and spy.seen == []  # no build, the index path never ran
    with Mnemos.open(path, embedder=ClusterEmbedder()) as rw:  # a writer builds it
        _same(_vector_answers(rw, queries), exact)
    assert len(trained) == 1 and [f for f in os.listdir(path) if f.startswith("ann.")]
    spy.seen.clear()
    with Mnemos.open(path, embedder=ClusterEmbedder(), readonly=True) as ro:
        _same(_vector_answers(ro, queries), exact)
    assert len(trained) == 1 and any(spy.seen)  # loaded from the file, and used
    with Mnemos.open(path, embedder=ClusterEmbedder(), readonly=True, ann=True) as ro:
        for f in os.listdir(path):
            if f.startswith("ann."):
                os.unlink(os.path.join(path, f))
        _same(_vector_answers(ro, queries), exact)
    assert len(trained) == 2  # ann=True asked for the index: built in memory


def test_exact_mode_equals_the_exact_scan_with_forgets_namespaces_and_filters(tmp_path,
                                                                           monkeypatch) -> None:
    """ann=True (exact-or-nothing) on clustered vectors, after forgetting a third of the
    store, with a second namespace, type / time / metadata filters and a tail the index
    does not cover: every vector answer equals ann=False's, and the index answered some."""
    rng = np.random.default_rng(17)
    emb = ClusterEmbedder()
    queries = [emb.rows[i] + rng.standard_normal(DIM).astype(np.float32) * s
               for i, s in zip(rng.integers(0, N, 12), [0.05, 0.3, 1.0] * 4)]
    path = tmp_path / "x.mem"
    with _open(path, ann=False) as db:
        items = _items(0, N)
        for i, it in enumerate(items):
            it["metadata"] = {"odd": i % 2 == 1}
        ids = db.remember_many(items[:N - 700])
        db.namespace("other").remember_many(items[N - 700:N - 300])
        db.remember_many(items[N - 300:])
        db.forget_many(ids[::3])
    kinds = [{}, {"types": "episodic"}, {"filter": {"odd": True}},
             {"since": 1_700_020_000, "until": 1_700_090_000}]

    def answers(db):
        return [_vector_answers(db, queries, **kw) for kw in kinds] + \
            [_vector_answers(db.namespace("other"), queries)]
    with _open(path, ann=False) as db:
        exact = answers(db)
    spy = _Outcomes(monkeypatch)
    with _open(path, ann=True) as db:
        got = answers(db)
    for g, e in zip(got, exact, strict=True):
        _same(g, e)
    assert any(spy.seen)


def test_unclustered_vectors_get_the_exact_answers(tmp_path, monkeypatch) -> None:
    """Random (unclustered) vectors: the bound does not close within NPROBE lists, so the
    default (and ann=True) fall back to the exact scan, with or without filters, while
    ``ann="approximate"`` returns the capped candidates' best (a different answer)."""
    monkeypatch.setattr(_ann, "THRESHOLD", _ann.TRAIN_BASE)
    dim, n = 96, N
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    queries = list(rng.standard_normal((12, dim)).astype(np.float32)) + [x[7], x[4321]]
    path = str(tmp_path / "r.mem")
    items = [{"text": f"r{i}", "vector": x[i], "timestamp": 1_700_000_000 + i,
              "type": "semantic" if i % 3 == 0 else "episodic"} for i in range(n)]
    with Mnemos.open(path, embedder=_Given(dim), durability="fast", ann=False) as db:
        db.remember_many(items)
        exact = _vector_answers(db, queries)
        exact_f = _vector_answers(db, queries, types=["semantic"])
    for mode in (None, True):
        with Mnemos.open(path, embedder=_Given(dim), ann=mode) as db:
            spy = _Outcomes(monkeypatch)
            _same(_vector_answers(db, queries), exact)
            _same(_vector_answers(db, queries, types=["semantic"]), exact_f)
            assert spy.seen and not all(spy.seen)  # the index was asked, and gave up
    with Mnemos.open(path, embedder=_Given(dim), ann=_ann.APPROXIMATE) as db:
        approx = _vector_answers(db, queries)
    assert [[i for i, _ in a] for a in approx] != [[i for i, _ in e] for e in exact]


def test_probe_without_and_with_inverted_lists_agree() -> None:
    """The first probes scan the list column, later ones use the inverted lists: the
    same slots."""
    rng = np.random.default_rng(5)
    lists = rng.integers(0, 64, 4096).astype(np.uint16)
    cen = rng.standard_normal((64, DIM)).astype(np.float32)
    st = _ann._with_lists(4096, cen, lists)
    queries = rng.standard_normal((2 * _ann.LAZY_PROBES + 4, DIM)).astype(np.float32)
    got = [st.probe(v, 4096, 7) for v in queries]
    assert st.inverted  # built along the way
    fresh = _ann._with_lists(4096, cen, lists)
    fresh.members(np.arange(3))  # spend the lazy probes of a fresh state
    fresh.probe(queries[0], 4096, 1)
    fresh.probe(queries[0], 4096, 1)
    for v, g in zip(queries, got):
        want = np.flatnonzero(np.isin(lists, np.argsort(-(cen @ v), kind="stable")[:7]))
        assert g.tolist() == want.tolist() == fresh.probe(v, 4096, 7).tolist()


def test_id_to_slot_guess_equals_binary_search() -> None:
    """ids -> slots on the ANN path try ``id - first id`` before bisecting: the same
    positions as a binary search, with and without missing ids (forgotten, compacted)."""
    from mnemos_kv import _idslots
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(0, 3000))
        ids = np.cumsum(rng.integers(1, 3 if trial % 2 else 2, n)) + int(rng.integers(0, 5))
        rows = np.zeros(n, dtype=[("id", "<i8"), ("x", "<i8")])
        rows["id"] = ids
        x = rng.integers(-2, (int(ids[-1]) + 3) if n else 5, int(rng.integers(0, 50)))
        got = _idslots._guess_then_bisect(rows["id"], x)
        assert got.tolist() == np.searchsorted(rows["id"], x).tolist()


def test_time_index_neighbours_walk(tmp_path) -> None:
    """index_neighbours (the ANN path's time neighbours) against the sorted keys, for
    several widths, at both ends of the table and across namespaces."""
    import lmdb

    from mnemos_kv import _timeorder
    rng = np.random.default_rng(9)
    env = lmdb.open(str(tmp_path / "t"), max_dbs=2)
    db = env.open_db(b"time")
    keys = sorted({int(ns).to_bytes(4, "big") + int(ts).to_bytes(8, "big") + int(i).to_bytes(8, "big")
                   for ns, ts, i in zip(rng.integers(0, 3, 300), rng.integers(0, 50, 300),
                                        rng.integers(1, 10 ** 6, 300))})
    with env.begin(write=True) as txn:
        for k in keys:
            txn.put(k, b"", db=db)
    pick = [keys[j] for j in rng.integers(0, len(keys), 80)] + [keys[0], keys[-1]]
    with env.begin() as txn:
        for width in (1, 2, 4):
            before, after = _timeorder.index_neighbours(txn, db, pick, width)
            for r, k in enumerate(pick):
                at = keys.index(k)
                same = [x for x in keys if x[:4] == k[:4]]
                pos = same.index(k)
                want_b = [int.from_bytes(x[12:20], "big") for x in same[:pos][::-1][:width]]
                want_a = [int.from_bytes(x[12:20], "big") for x in same[pos + 1:][:width]]
                assert before[r].tolist() == want_b + [-1] * (width - len(want_b)), (at, width)
                assert after[r].tolist() == want_a + [-1] * (width - len(want_a)), (at, width)
    env.close()


def test_list_bounds_hold_and_prune_without_changing_answers(big, monkeypatch) -> None:
    """Each list's bound is at least the query's cosine with every slot of the list, so
    with the probe cap lifted (only the bound stops probing) vector answers are exact."""
    rng = np.random.default_rng(21)
    emb = ClusterEmbedder()
    queries = [emb.rows[i] + rng.standard_normal(DIM).astype(np.float32) * s
               for i, s in zip(rng.integers(0, N, 30), [0.1, 0.5, 3.0] * 10)]
    queries = [v / np.linalg.norm(v) for v in queries]
    with _open(big) as db:
        db.ask("m-1")
        eng = db._engine
        with eng.snapshot() as snap:
            n = snap.state.n_slots
            st = _ann.for_engine(eng).state(snap.state.gen, snap.matrix, n)
            c = _ann.covered(n)
            lists = st.lists[:c].astype(np.int64)
            for v in queries:
                ub = st.bounds(st.scores(v), c)
                cos = snap.matrix[:c] @ v
                best = np.full(ub.size, -np.inf)
                np.maximum.at(best, lists, cos)
                assert (best <= ub).all()
                assert np.isneginf(ub[np.bincount(lists, minlength=ub.size) == 0]).all()
        monkeypatch.setattr(_ann, "NPROBE", 10 ** 6)
        approx = [[(m.id, m.score) for m in db.ask(vector=v, mode="vector", top_k=10)]
                  for v in queries]
    with _open(big, ann=False) as db:
        exact = [[(m.id, m.score) for m in db.ask(vector=v, mode="vector", top_k=10)]
                 for v in queries]
    for a, e in zip(approx, exact):
        assert [i for i, _ in a] == [i for i, _ in e]
        assert [s for _, s in a] == pytest.approx([s for _, s in e], abs=1e-5)


@pytest.mark.parametrize("steps", [1, 8])
def test_time_order_neighbours_equal_the_time_index_walk(tmp_path, monkeypatch, steps) -> None:
    """The ANN path's time neighbours, walked on the per-generation time order (forgotten
    and newer slots stepped over, the rest from the time index), equal the time index
    walk, with and without filters, across namespaces, forgets and updates."""
    monkeypatch.setattr(RT, "ANN_WALK_STEPS", steps)
    monkeypatch.setattr(RT, "ANN_LAZY_ORDER", 0)  # the time order from the first call
    with _open(tmp_path / "t.mem") as db:
        ids = db.remember_many(_items(0, 3000))
        other = db.namespace("other")
        other.remember_many(_items(3000, 3400))
        db.forget_many(ids[100:130] + ids[500:1000:3])
        db.update(ids[7], text="m-3 moved", timestamp=1_700_050_000)
        eng = db._engine
        with eng.snapshot() as snap:
            n = snap.state.n_slots
            dead = snap.slots["dead"][:n]
            live = np.flatnonzero((dead == 0) | (dead > snap.state.seq))
            v = np.ones(DIM, np.float32) / np.sqrt(DIM)
            plans = [RT.Query(text="", vector=v, ns_ids=(0,), top_k=5, vector_weight=0.5),
                     RT.Query(text="", vector=v, ns_ids=(0,), top_k=5, vector_weight=0.5,
                              type_codes=(0,)),
                     RT.Query(text="", vector=v, ns_ids=(0,), top_k=5, vector_weight=0.5,
                              since_us=1_700_010_000 * 10 ** 6, until_us=1_700_080_000 * 10 ** 6)]
            for plan in plans:
                slots = live[RT._rows_ok(snap, plan, live)]
                got = RT._true_neighbours(eng, snap, plan, slots)
                want = RT._lookup_neighbours(eng, snap, plan, slots)
                assert got.tolist() == want.tolist()
                assert (got >= 0).sum() > slots.size  # most have both neighbours


def test_index_of_an_older_format_is_rebuilt(big, tmp_path, caplog) -> None:
    path, good, f = _copy_of_big(big, tmp_path / "v1.mem")
    with open(f, "r+b") as fh:  # the version field of the header
        fh.seek(8)
        fh.write((1).to_bytes(4, "little"))
    with caplog.at_level(logging.WARNING, logger="mnemos_kv"):
        with _open(path) as db:
            assert _answers(db) == good
    assert "format version 1" in caplog.text
    with open(f, "rb") as fh:
        assert int.from_bytes(fh.read(12)[8:12], "little") == _ann.VERSION


def test_time_order_fast_path_equals_the_full_sort() -> None:
    """_timeorder's order of the slots (one stable sort by namespace when every namespace
    is already in time order) is the (namespace, ts, id, slot) sort, in order or not."""
    from mnemos_kv import _timeorder
    rng = np.random.default_rng(4)
    for trial in range(60):
        n = int(rng.integers(0, 400))
        ns = rng.integers(0, 3 if trial % 3 else 70_000, n).astype(np.int32)
        ts = np.sort(rng.integers(0, 50, n)).astype(np.int64)  # written in time order
        ids = np.arange(n, dtype=np.int64) + 1
        if trial % 2:  # out of order: a shuffled stretch, repeated ids (updates)
            k = int(rng.integers(0, n + 1))
            ts[:k] = rng.permutation(ts[:k])
            ids[: k // 3] = ids[k // 3: 2 * (k // 3)]
        want = np.lexsort((np.arange(n), ids, ts, ns))
        assert _timeorder._time_sorted(ns, ts, ids).tolist() == want.tolist()
