"""ask(): lexical + vector fusion, neighbours, graph, recency, types, time range, explain."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from mnemos_kv import InvalidInputError, Mnemos
from mnemos_kv import _lexical_index, _retrieval, _timeorder

from conftest import on_postgres


# this module's store tests run on lmdb and postgres (conftest.py)
from _engines import opener, store_path  # noqa: E402,F401


DAY = 86_400.0
T0 = 1_700_000_000.0


class FlatEmbedder:
    """Every text gets the same vector: only the lexical part can rank."""

    name, dim = "flat-4", 4

    def embed(self, texts):
        return np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (len(texts), 1))


def _ids(hits):
    return [h.id for h in hits]


def test_lexical_finds_exact_rare_words_the_vectors_miss(opener) -> None:
    s = opener(embedder=FlatEmbedder())
    ids = s.remember_many([f"routine status update number {i}" for i in range(30)])
    target = s.remember("The vault code is XJ-4471")
    s.remember_many(["another routine status update", "lunch order for the team"])
    hits = s.ask("what is the XJ-4471 code?", top_k=3)
    assert hits[0].id == target
    assert target not in ids


@pytest.mark.embedded_only("reads the LMDB postings directly")
def test_forgotten_memory_is_never_a_lexical_hit(db: Mnemos) -> None:
    keep = db.remember("zebra quartz keeps this one")
    gone = db.remember("zebra quartz forgotten one")
    db.remember_many([f"filler memory {i}" for i in range(10)])
    db.forget(gone)
    with db._engine.snapshot() as snap:
        nid = db._engine.ns_id("default", snap.txn)
        ids, _ = _lexical_index.bm25_postings(snap.txn, db._engine.env, [nid],
                                              _lexical_index.query_terms("zebra quartz"))
        assert sorted(set(ids.tolist())) == [keep]
        assert _lexical_index.stats(snap.txn, db._engine.env, [nid])[0] == 11
    assert gone not in _ids(db.ask("zebra quartz forgotten", top_k=20))
    db.forget(keep)
    with db._engine.snapshot() as snap:
        ids, _ = _lexical_index.bm25_postings(snap.txn, db._engine.env, [nid],
                                              _lexical_index.query_terms("zebra quartz"))
        assert ids.size == 0


def test_query_without_indexed_terms_ranks_by_vector(db: Mnemos) -> None:
    a, b = db.remember_many(["the and of", "payments invoice"])
    hits = db.ask("the of and", top_k=2, explain=True)
    assert len(hits) == 2 and all(h.explain["lexical"] == 0.0 for h in hits)


def test_bm25_statistics_span_the_asked_namespaces(db: Mnemos) -> None:
    a = db.namespace("a", read=["b"])
    b = db.namespace("b")
    ia = a.remember("kiwi smoothie recipe")
    ib = b.remember("kiwi orchard visit")
    b.remember_many([f"orchard note {i}" for i in range(5)])
    assert _ids(a.ask("kiwi", top_k=1)) == [ia]
    both = a.ask("kiwi orchard", top_k=2, namespaces=["a", "b"])
    assert set(_ids(both)) == {ia, ib} and both[0].id == ib


def test_neighbour_expansion_lifts_the_reply_to_a_matching_question(opener) -> None:
    s = opener()
    s.remember_many([{"text": f"unrelated chat line {i}", "timestamp": T0 + i} for i in range(20)])
    q = s.remember("Mel: what did you name your new puppy?", timestamp=T0 + 100)
    ans = s.remember("Caroline: Biscuit, after my favourite snack", timestamp=T0 + 101)
    s.remember_many([{"text": f"more unrelated chat {i}", "timestamp": T0 + 200 + i} for i in range(20)])
    hits = s.ask("What is the name of Caroline's puppy?", top_k=3, explain=True)
    # the reply borrows the question's score; Caroline, whom the query names, says it,
    # and the question is discounted: the answer comes first
    assert _ids(hits)[:2] == [ans, q]
    assert hits[0].explain["neighbour"] > 0


def test_neighbours_stay_inside_their_namespace(opener) -> None:
    s = opener()
    other = s.namespace("other")
    hit = s.remember("the launch date is fixed", timestamp=T0)
    other.remember("unrelated", timestamp=T0 + 1)
    s.remember("something else entirely", timestamp=T0 + 2)
    hits = s.ask("launch date", top_k=2, explain=True)
    assert hits[0].id == hit and hits[1].explain["neighbour"] > 0  # its own next memory


def test_graph_surfaces_a_memory_reachable_only_through_an_edge(opener) -> None:
    s = opener()
    a = s.remember("We chose Stripe for payments", timestamp=T0)
    s.remember_many([{"text": f"payments reminder {i} for the gym", "timestamp": T0 + 10 + i}
                     for i in range(8)])
    c = s.remember("Card fees are negotiated every January", timestamp=T0 + 50)
    s.connect(a, c, relation="detail")
    plain = _ids(s.ask("Stripe payments", top_k=3))
    assert plain[0] == a and c not in plain
    hits = s.ask("Stripe payments", top_k=3, use_graph=True, explain=True)
    assert hits[0].id == a and c in _ids(hits)
    got = next(h for h in hits if h.id == c)
    assert got.explain["graph"] > 0 and got.explain["lexical"] == 0.0


@pytest.mark.embedded_only("reads the LMDB edge tables directly")
def test_graph_spread_is_two_hops_weighted_by_distance_and_edge_weight(db: Mnemos) -> None:
    from mnemos_kv import _graph
    a, b, c, d, e = db.remember_many(["seed", "one hop", "two hops", "three hops", "heavy"])
    db.connect(a, b)
    db.connect(b, c)
    db.connect(c, d)
    db.connect(e, a, weight=3.0)  # direction does not matter; weight does
    with db._engine.snapshot() as snap:
        ids, got = _graph.spread(snap.txn, db._engine.env, [a], [1.0])
    amount = dict(zip(ids.tolist(), got.tolist()))
    assert amount[e] == pytest.approx(0.5 * 3 / 4) and amount[b] == pytest.approx(0.5 * 1 / 4)
    assert amount[c] == pytest.approx(0.25 * 1 / 4 * 1 / 2)  # via b, which splits two ways
    assert d not in amount  # three hops away
    assert amount[a] > 0  # activation flowing back after two steps


def test_recency_bias_prefers_the_newer_of_two_equal_memories(db: Mnemos) -> None:
    old = db.remember("standup moved to 10am", timestamp=T0)
    new = db.remember("standup moved to 10am", timestamp=T0 + 20 * DAY)
    assert _ids(db.ask("standup", top_k=2)) == [old, new]  # tie: insertion order
    assert _ids(db.ask("standup", top_k=2, recency_bias=True)) == [new, old]
    assert _ids(db.ask("standup", top_k=2, recency_bias="7d")) == [new, old]
    assert _ids(db.ask("standup", top_k=2, recency_bias=dt.timedelta(hours=1))) == [new, old]
    hits = db.ask("standup", top_k=2, recency_bias="20d", explain=True)
    assert hits[0].explain["recency"] == 0.0  # the newest is the reference: no decay
    assert hits[1].score == pytest.approx(hits[0].score * 0.75, rel=1e-5)  # one half-life


def test_recency_does_not_beat_a_clearly_better_match(db: Mnemos) -> None:
    best = db.remember("the database password rotates monthly", timestamp=T0)
    db.remember_many([{"text": f"coffee note {i}", "timestamp": T0 + 30 * DAY + i} for i in range(5)])
    assert db.ask("database password rotation", top_k=1, recency_bias="1d")[0].id == best


def test_since_and_until_filter_by_timestamp(db: Mnemos) -> None:
    ids = [db.remember(f"budget review {i}", timestamp=T0 + i * DAY) for i in range(6)]
    got = _ids(db.ask("budget review", top_k=10, since=T0 + 2 * DAY))
    assert set(got) == set(ids[2:])
    got = _ids(db.ask("budget review", top_k=10, until=T0 + 2 * DAY))
    assert set(got) == set(ids[:3])
    got = _ids(db.ask("budget review", top_k=10, since=T0 + DAY, until=dt.datetime.fromtimestamp(
        T0 + 3 * DAY, tz=dt.timezone.utc)))
    assert set(got) == set(ids[1:4])
    assert db.ask("budget", since=T0 + 100 * DAY) == []
    with pytest.raises(InvalidInputError, match="after until"):
        db.ask("budget", since=T0 + DAY, until=T0)


def test_wide_time_windows_use_the_slot_column_with_the_same_answer(db: Mnemos, monkeypatch) -> None:
    for i in range(40):
        db.remember(f"report {i} on sales", timestamp=T0 + (i * 7919 % 40) * 3600)
    kw = dict(top_k=40, since=T0 + 5 * 3600, until=T0 + 30 * 3600)
    narrow = [(h.id, h.score) for h in db.ask("sales report", **kw)]
    monkeypatch.setattr(_retrieval, "TIME_INDEX_BUDGET", 3)
    assert [(h.id, h.score) for h in db.ask("sales report", **kw)] == narrow
    assert len(narrow) == 26


def test_types_filter_and_weights(db: Mnemos) -> None:
    e = db.remember("deploy with make release", type="episodic")
    sem = db.remember("deploy with make release", type="semantic")
    p = db.remember("deploy with make release", type="procedural")
    assert _ids(db.ask("deploy release", top_k=3)) == [sem, p, e]  # default weights 1.1, 1.05, 1.0
    assert _ids(db.ask("deploy release", top_k=3, types=["procedural"])) == [p]
    assert _ids(db.ask("deploy release", top_k=3, types="episodic")) == [e]
    assert set(_ids(db.ask("deploy release", top_k=3, types=["episodic", "semantic"]))) == {e, sem}
    got = db.ask("deploy release", top_k=3, types={"episodic": 2.0, "semantic": 1.0}, explain=True)
    assert _ids(got) == [e, sem]
    assert got[0].explain["type"] == pytest.approx(got[1].score)  # base * (2 - 1)
    for bad in (["opinion"], [], {"semantic": -1.0}, {"semantic": float("nan")}, 5):
        with pytest.raises(InvalidInputError):
            db.ask("deploy", types=bad)


def test_explain_parts_add_up_to_the_score(opener) -> None:
    s = opener()
    ids = s.remember_many([{"text": t, "timestamp": T0 + i * DAY, "type": ty} for i, (t, ty) in enumerate([
        ("We chose Stripe for payments", "semantic"), ("Stripe webhooks need a secret", "procedural"),
        ("The team lunch was pizza", "episodic"), ("Payments fail on expired cards", "episodic"),
        ("Refunds take five days", "semantic")])])
    s.connect(ids[0], ids[4])
    hits = s.ask("Stripe payments", top_k=5, use_graph=True, recency_bias="2d", explain=True)
    assert len(hits) == 5
    for h in hits:
        assert set(_retrieval.EXPLAIN_PARTS) <= set(h.explain)
        assert sum(h.explain[p] for p in _retrieval.EXPLAIN_PARTS) == pytest.approx(h.score, abs=1e-5)
    assert all(h.explain is None for h in s.ask("Stripe payments"))


def test_same_operations_give_same_answers_and_scores(tmp_path) -> None:
    from conftest import Clock

    def run(name: str) -> list:
        with Mnemos.open(str(tmp_path / name), clock=Clock()) as s:
            ids = s.remember_many([f"note {i} about {w}" for i, w in enumerate(
                ["payments", "pizza", "stripe", "berlin", "invoices", "cards"] * 5)])
            s.connect(ids[2], ids[9])
            s.forget(ids[4])
            s.compact()
            s.remember("stripe payments again", timestamp=T0)
            out = []
            for kw in ({}, {"use_graph": True}, {"recency_bias": "3d"}, {"types": ["episodic"]},
                       {"since": 0}, {"filter": {"x": 1}}):
                out.append([(h.id, h.score) for h in s.ask("stripe payments note", top_k=7, **kw)])
            return out
    assert run("a.mem") == run("b.mem")


def test_metadata_filter_combines_with_ranking(db: Mnemos) -> None:
    ids = db.remember_many([{"text": f"invoice {i} paid", "metadata": {"team": "ab"[i % 2]}}
                            for i in range(200)])
    hits = db.ask("invoice paid", top_k=60, filter={"team": "b"})
    assert len(hits) == 60 and all(h.metadata["team"] == "b" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert ids[0] not in _ids(hits)


def test_bad_flag_values_are_rejected(db: Mnemos) -> None:
    db.remember("x marks the spot")
    for kw in ({"use_graph": "yes"}, {"explain": 1}, {"recency_bias": "7 parsecs"},
               {"recency_bias": -5}, {"recency_bias": "0d"}, {"recency_bias": [1]},
               {"since": "yesterday"}):
        with pytest.raises(InvalidInputError) as err:
            db.ask("spot", **kw)
        assert str(next(iter(kw.values())))[:5] in str(err.value) or "must" in str(err.value)


def test_graph_returns_networkx_view(db: Mnemos) -> None:
    import networkx as nx
    a, b, c = db.remember_many(["alpha", "beta", "gamma"])
    db.connect(a, b, relation="cites", weight=2.0)
    db.connect(a, b)
    other = db.namespace("other").remember("elsewhere")
    g = db.graph()
    assert isinstance(g, nx.MultiDiGraph)
    assert sorted(g.nodes) == [a, b, c] and other not in g
    assert g.nodes[a]["text"] == "alpha" and g.nodes[a]["type"] == "episodic"
    assert sorted((u, v, k, d["weight"]) for u, v, k, d in g.edges(keys=True, data=True)) == [
        (a, b, "cites", 2.0), (a, b, "related", 1.0)]
    assert list(db.graph("other").nodes) == [other]
    with pytest.raises(InvalidInputError):
        db.namespace("x").graph("other")


@pytest.mark.embedded_only("the LMDB engine's time-order cache")
def test_time_order_cache_grows_like_a_rebuild(opener) -> None:
    s = opener()
    rng = np.random.default_rng(3)
    cache = _timeorder.TimeOrder()
    for round_ in range(4):
        s.remember_many([{"text": f"m {round_} {i}", "timestamp": float(T0 + rng.integers(0, 50))}
                         for i in range(int(rng.integers(1, 30)))])
        s.namespace("n2").remember("other ns", timestamp=T0 + 5)
        with s._engine.snapshot() as snap:
            view = cache.view(snap)
            fresh = _timeorder.TimeOrder()
            fresh._rebuild(snap.slots, snap.state.gen, snap.state.n_slots)
            ref = fresh.state
            assert view.n == ref.n == snap.state.n_slots
            assert view.blocks.keys() == ref.blocks.keys()
            for k in view.blocks:
                assert np.array_equal(view.blocks[k], ref.blocks[k])
            for col in ("prev", "next", "types", "type_counts", "single_type"):
                assert np.array_equal(getattr(view, col), getattr(ref, col)), col


@pytest.mark.embedded_only("the LMDB postings and their rebuild on open")
def test_store_without_postings_is_reindexed_on_open(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        a = s.remember("the quokka is a marsupial")
        s.remember_many([f"filler {i}" for i in range(5)])
        env = s._engine.env

        def wipe(txn):
            txn.drop(env.db("postings"), delete=False)
            txn.drop(env.db("lexstats"), delete=False)
            txn.drop(env.db("lexstage"), delete=False)  # (the staged postings too)
            txn.delete(b"lexwin", db=env.db("meta"))  # (format 7: the staged ids)
        env.write(wipe)
        assert s.ask("quokka", explain=True)[0].explain["bm25"] == 0.0
    with Mnemos.open(store_path) as s:
        hit = s.ask("quokka", explain=True)[0]
        assert hit.id == a and hit.explain["bm25"] > 0


def _reference(s: Mnemos, query: str, names: list[str], k: int, types=None, since=None,
               until=None) -> list[tuple[int, float]]:
    """ask() recomputed from scratch with the building blocks (_lexical, _fusion)."""
    from mnemos_kv import _fusion, _lexical
    from mnemos_kv.embedders import embed_checked
    mems = [m for nm in names for m in s.namespace(nm).memories()]
    mems.sort(key=lambda m: m.id)
    def field_bm25(fi: int) -> np.ndarray:
        """BM25 of one field of the index (0: Porter stems, 1: exact surface words)."""
        toks = {m.id: _lexical.index_fields(m.text)[fi] for m in mems}
        qterms = _lexical.index_fields(query)[fi]
        lengths = np.array([len(toks[m.id]) for m in mems], np.float32)
        post = {}
        for r, m in enumerate(mems):
            for t, tf in _lexical.term_frequencies(toks[m.id]).items():
                post.setdefault(t, ([], []))
                post[t][0].append(r)
                post[t][1].append(float(tf))
        post = {t: (np.array(a), np.array(b, np.float32)) for t, (a, b) in post.items()}
        return _lexical.bm25_scores(qterms, post, lengths, len(mems), float(lengths.mean()))

    bm_all = field_bm25(0) + np.float32(_retrieval.SURFACE_WEIGHT) * field_bm25(1)
    assert not any(_lexical.is_question(m.text) for m in mems)  # no reply lift to model
    keep = [i for i, m in enumerate(mems)
            if (types is None or m.type in types)
            and (since is None or m.created_at >= since) and (until is None or m.created_at <= until)]
    if not keep:
        return []
    cand = [mems[i] for i in keep]
    qv = embed_checked(s.embedder, [query])[0]
    cos = np.array([float(s.namespace(m.namespace).get_vector(m.id) @ qv) for m in cand], np.float32)
    bm = bm_all[keep]
    norm = lambda x: _retrieval._normalise(x.astype(np.float32), None)  # noqa: E731
    w = _retrieval.vector_weight_for(s.embedder, s.embedder.name)
    rel = norm(cos) * np.float32(w) + (norm(bm) * np.float32(1 - w) if bm.max() > 0 else 0)
    prev = np.full(len(cand), -1)
    nxt = np.full(len(cand), -1)
    for nm in names:
        idx = sorted((i for i, m in enumerate(cand) if m.namespace == nm),
                     key=lambda i: (cand[i].created_at, cand[i].id))
        for a, b in zip(idx, idx[1:]):
            nxt[a], prev[b] = b, a
    final = _fusion.neighbour_expand(rel, prev, nxt, _retrieval.NEIGHBOUR_WEIGHT)
    tw = np.array([_retrieval.TYPE_WEIGHTS[m.type] for m in cand], np.float32)
    final = final * tw
    if _retrieval.EPISODE_WEIGHT > 0:  # the episode context, written out
        depth, gap = _retrieval.EPISODE_DEPTH, _retrieval.EPISODE_GAP_S
        floor = sorted(final.tolist())[len(cand) - depth] if len(cand) > depth else 0.0
        top = [i for i in range(len(cand)) if final[i] > 0 and final[i] >= floor]
        same = np.array([[cand[i].namespace == cand[j].namespace
                          and abs(cand[i].created_at - cand[j].created_at) <= gap for j in top]
                         for i in top], dtype=bool)
        if len(top) >= 2 and not same.all():
            sc = final[top].astype(np.float64)
            total = same @ sc
            lift = _retrieval.EPISODE_WEIGHT * sc.max() / total.max() * (total - sc)
            final = final.copy()
            final[top] += lift.astype(np.float32)
    order = sorted(range(len(cand)), key=lambda i: (-float(final[i]), cand[i].id))[:k]
    return [(cand[i].id, float(final[i])) for i in order]


@pytest.mark.parametrize("seed", range(6))
def test_ask_matches_a_from_scratch_reference(opener, seed) -> None:
    rng = np.random.default_rng(seed)
    s = opener(f"ref{seed}.mem")
    vocab = ["stripe", "payment", "berlin", "office", "pizza", "deploy", "friday", "invoice",
             "card", "team", "launch", "march", "dog", "biscuit", "coffee", "been", "doing"]
    names = ["default", "a", "b"][: 1 + seed % 3]
    ids, home = [], {}
    for i in range(int(rng.integers(20, 120))):
        nm = names[int(rng.integers(0, len(names)))]
        text = " ".join(rng.choice(vocab, size=int(rng.integers(1, 7))))
        ids.append(s.namespace(nm).remember(
            text, timestamp=T0 + float(rng.integers(0, 40)) * 3600,
            type=["episodic", "semantic", "procedural"][int(rng.integers(0, 3 if seed % 2 else 1))]))
        home[ids[-1]] = nm
    for mid in rng.choice(ids, size=len(ids) // 6, replace=False).tolist() if seed >= 2 else []:
        s.namespace(home[mid]).forget(mid)
    if seed == 5 and not on_postgres(s):  # (compact is embedded-only: docs/postgres.md)
        s.compact()
    handle = s.namespace(names[0], read=names)
    for query in ("stripe payment", "berlin office march", "dog", "the of", "been doing coffee"):
        for kw in ({}, {"since": T0 + 10 * 3600}, {"until": T0 + 5 * 3600},
                   {"types": ["episodic", "semantic"]}):
            got = [(h.id, h.score) for h in handle.ask(query, top_k=8, namespaces=names, **kw)]
            want = _reference(s, query, names, 8, **kw)
            assert [g[0] for g in got] == [w_[0] for w_ in want], (query, kw)
            assert np.allclose([g[1] for g in got], [w_[1] for w_ in want], atol=1e-5)


def test_explain_across_namespaces_single_term(db: Mnemos) -> None:
    a, b = db.namespace("a", read=["b"]), db.namespace("b")
    b.remember("filler one")
    x = a.remember("walrus facts")
    y = b.remember("walrus habitat")
    a.remember("walrus diet and walrus size")
    hits = a.ask("walrus", top_k=4, namespaces=["a", "b"], explain=True)
    assert all(h.explain["bm25"] > 0 for h in hits[:3]) and {x, y} <= {h.id for h in hits}
    for h in hits:
        assert sum(h.explain[p] for p in _retrieval.EXPLAIN_PARTS) == pytest.approx(h.score, abs=1e-6)


def test_query_words_typos_and_function_phrases_on_every_engine(opener, monkeypatch) -> None:
    """The lexical query rules (docs/retrieval.md, "Query words") read the postings
    through the snapshot, so both engines must apply them alike."""
    s = opener(embedder=FlatEmbedder())
    s.remember_many([f"routine status update number {i}" for i in range(10)])
    fund = s.remember("The fundraiser raised money for the shelter.")
    kind = s.remember("Such kind words about the music.")
    jazz = s.remember("My music is jazz.")
    hits = s.ask("How did the funraiser go?", top_k=1, explain=True)
    assert hits[0].id == fund and hits[0].explain["typo"] > 0
    assert s.ask("What kind of music?", top_k=1)[0].id == jazz
    assert s.ask("The funraiser?", top_k=1, mode="lexical")[0].id == fund
    monkeypatch.setattr(_retrieval, "TYPO_WEIGHT", 0.0)
    monkeypatch.setattr(_retrieval, "FUNCTION_WEIGHT", 1.0)
    assert s.ask("The funraiser?", top_k=1, mode="lexical") == []
    assert s.ask("What kind of music?", top_k=1)[0].id == kind


@pytest.mark.parametrize("n_rows", [0, 5, _retrieval.TOUCH_MIN, 1000])
def test_gather_dot_is_the_gathered_product_bit_for_bit(n_rows: int) -> None:
    """``gather_dot`` (the rows' first floats read before the copy) gives exactly
    ``matrix[rows] @ query``: answers and ties do not depend on it."""
    rng = np.random.default_rng(n_rows)
    m = rng.standard_normal((5000, 48)).astype(np.float32)
    q = rng.standard_normal(48).astype(np.float32)
    rows = np.sort(rng.choice(5000, n_rows, replace=False))
    got = _retrieval.gather_dot(m, rows, q)
    assert got.dtype == np.float32 and got.tobytes() == (m[rows] @ q).tobytes()
    assert _retrieval.dot_rows(m, rows, q).shape == (n_rows,)
