"""Semantic compaction: merging near-duplicates and summarizing old memories.

Both are deterministic and logged: the decisions are made inside (merge) or before
(summaries: the summarizer may be slow, e.g. an LLM) one write transaction, and every
change is an ordinary op — ``meta`` (replace a memory's metadata), ``link``,
``forget``, ``mem`` — so replay reproduces the result without re-deciding anything and
without calling the summarizer.

Merging (``compact(merge_similar=t)``), per namespace and memory type, memories in id
order: each memory not yet merged keeps every later one whose cosine similarity with
it is ``>= t`` (pinned or keyed memories are never merged away; they can keep others).
The kept memory (the oldest id of its group) gets the union of the metadata (its own
values win, then the merged ones' in id order) plus ``merged_from`` (the merged ids,
sorted), and the edges between the merged memories and memories outside the group
(same relation and weight, unless it already has such an edge); the merged memories
are forgotten. Cost: O(n^2 · dim) per namespace and type (blocked matrix products).

Summaries (``summarize_older``): see ``Namespace.summarize_older``. The replaced
memories cannot keep edges to the summary (they are forgotten); the summary records
them in ``metadata["summary_of"]`` and takes over their outside edges instead.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import _records as R
from . import _storage as S
from ._capacity import pinned_ids
from ._model import Memory
from ._timeutil import from_us, to_us
from .errors import InvalidInputError

if TYPE_CHECKING:
    from ._engine import Engine, _Ctx

Progress = Callable[[str, int, int], Any]
_BLOCK = 1024


def check_threshold(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or \
            not math.isfinite(float(t)) or not 0.0 < float(t) <= 1.0:
        raise InvalidInputError(f"merge_similar must be a cosine threshold in (0, 1], got {t!r}")
    return float(t)


# -- shared: moving edges and forgetting ------------------------------------------------------

class LmdbWriter:
    """What a ``("apply", fn, n)`` request's ``fn`` may do inside an embedded write
    (the PostgreSQL engine's twin is ``_pg.write.PgWriter``): read records and edges of
    the transaction, resolve requests, apply ops."""

    def __init__(self, engine: "Engine", ctx: "_Ctx") -> None:
        self.engine, self.ctx = engine, ctx

    def record(self, mid: int) -> R.Record | None:
        return self.engine.record(self.ctx.txn, mid)

    def edges(self, mid: int, direction: str) -> list[tuple[int, int, str, float]]:
        """Edges of ``mid`` (``"out"``: by dst, relation; ``"in"``: by src, relation)."""
        return self.engine.edges(self.ctx.txn, mid, direction)

    def has_edge(self, src: int, dst: int, rel: str) -> bool:
        return self.ctx.txn.get(S.u64(src) + S.u64(dst) + rel.encode(),
                                db=self.engine.env.db("edges_out")) is not None

    def resolve(self, req: tuple[Any, ...]) -> Any:
        return self.engine._resolve(self.ctx, req)

    def apply(self, op: dict[str, Any]) -> Any:
        return self.engine.apply_op(self.ctx, op)


def _absorb(engine: "Engine", ctx: "_Ctx", keeper: int, gone: Sequence[int]) -> None:
    absorb(LmdbWriter(engine, ctx), keeper, gone)


def absorb(w: Any, keeper: int, gone: Sequence[int]) -> None:
    """Give ``keeper`` the edges between ``gone`` and memories outside the group, then
    forget ``gone``; all as logged ops (``w``: an engine's writer, see LmdbWriter)."""
    group = set(gone) | {keeper}
    for mid in gone:
        for _s, dst, rel, wt in w.edges(mid, "out"):
            if dst in group:
                continue
            if not w.has_edge(keeper, dst, rel):
                w.apply({"op": "link", "src": keeper, "dst": dst, "rel": rel, "w": wt})
        for src, _d, rel, wt in w.edges(mid, "in"):
            if src in group:
                continue
            if not w.has_edge(src, keeper, rel):
                w.apply({"op": "link", "src": src, "dst": keeper, "rel": rel, "w": wt})
    for mid in gone:
        w.apply({"op": "forget", "id": mid})


def _keyed_ids(engine: "Engine", txn: Any, nid: int) -> set[int]:
    prefix = S.u32(nid)
    out = set()
    with txn.cursor(db=engine.env.db("keys")) as cur:
        if cur.set_range(prefix):
            for k, v in cur:
                if not k.startswith(prefix):
                    break
                out.add(S.from_u64(v))
    return out


# -- merging ------------------------------------------------------------------------------------

def _merged_meta(keeper: R.Record, dups: list[R.Record]) -> dict[str, Any]:
    meta = dict(keeper.metadata)
    prov = meta.get("merged_from")
    ids = set(prov) if isinstance(prov, list) and all(isinstance(i, int) for i in prov) else set()
    for d in dups:
        ids.add(d.id)
        dp = d.metadata.get("merged_from")
        if isinstance(dp, list):
            ids.update(i for i in dp if isinstance(i, int))
    base = dict(meta)
    base["merged_from"] = sorted(ids)
    if len(R.encode(base)) > R.MAX_METADATA_BYTES:
        return meta  # provenance alone would not fit: leave the metadata as it is
    out = base
    for d in dups:
        for k in sorted(d.metadata):
            if k in out or k == "merged_from":
                continue
            trial = dict(out)
            trial[k] = d.metadata[k]
            if len(R.encode(trial)) <= R.MAX_METADATA_BYTES:
                out = trial
    return out


def _merge_groups(engine: "Engine", ctx: "_Ctx", t: float, progress: Progress | None
                  ) -> list[tuple[int, list[int]]]:
    """(keeper id, merged ids) for every group, in (namespace, type, keeper id) order."""
    st = ctx.state
    sl = ctx.slots[: st.n_slots]
    alive = sl["dead"] == 0
    pinned = set(pinned_ids(engine, ctx.txn, None).tolist())
    pairs = sorted({(int(a), int(b)) for a, b in zip(sl["ns"][alive].tolist(), sl["type"][alive].tolist())})
    total = int(alive.sum())
    done = 0
    groups: list[tuple[int, list[int]]] = []
    for nid, tcode in pairs:
        rows = np.flatnonzero(alive & (sl["ns"] == nid) & (sl["type"] == tcode))
        rows = rows[np.argsort(sl["id"][rows], kind="stable")]  # id order (updates append slots)
        m = int(rows.size)
        done += m
        if m < 2:
            continue
        ids = sl["id"][rows]
        keyed = _keyed_ids(engine, ctx.txn, nid)
        mergeable = np.array([i not in pinned and i not in keyed for i in ids.tolist()], dtype=bool)
        vecs = np.ascontiguousarray(ctx.matrix[rows], dtype=np.float32)
        assigned = np.zeros(m, dtype=bool)
        for lo in range(0, m, _BLOCK):
            hi = min(lo + _BLOCK, m)
            sims = vecs[lo:hi] @ vecs.T
            hits = sims >= np.float32(t)
            hits &= np.arange(m)[None, :] > np.arange(lo, hi)[:, None]  # only later ids
            hits &= mergeable[None, :]
            for r in np.flatnonzero(hits.any(axis=1)).tolist():
                i = lo + r
                if assigned[i]:
                    continue
                cand = np.flatnonzero(hits[r] & ~assigned)
                if cand.size:
                    assigned[cand] = True
                    groups.append((int(ids[i]), [int(x) for x in ids[cand].tolist()]))
            if progress is not None:
                progress("merge", done - m + hi, total)
    return groups


def merge_similar(engine: "Engine", t: float, progress: Progress | None = None) -> int:
    """Merge near-duplicates (cosine >= ``t``) in one write transaction; returns how
    many memories were merged away."""
    def call(eng: "Engine", ctx: "_Ctx") -> int:
        n = 0
        for keeper, dups in _merge_groups(eng, ctx, t, progress):
            krec = eng.record(ctx.txn, keeper)
            drecs = [eng.record(ctx.txn, d) for d in dups]
            assert krec is not None and all(r is not None for r in drecs)
            meta = _merged_meta(krec, drecs)  # type: ignore[arg-type]
            if meta != krec.metadata:
                eng.apply_op(ctx, {"op": "meta", "id": keeper, "meta": meta})
            _absorb(eng, ctx, keeper, dups)
            n += len(dups)
        return n
    return int(engine.write([("call", call, 0)])[0])


# -- summaries ----------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset("""a an and are as at be but by for from has have i in is it its of on or our
that the their this to was we were will with you your they he she them his her not no""".split())


def extractive_summary(memories: Sequence[Memory], max_sentences: int = 3) -> str:
    """The default summarizer: deterministic and extractive (no model).

    Splits the memories into sentences, scores each sentence by how frequent its words
    (lower-cased, stop words dropped) are across the whole group, divided by the square
    root of its length, keeps the ``max_sentences`` best (ties: earlier first), and
    joins them in their original order after a header naming the span, e.g.
    ``"Summary of 4 memories (2026-01-01 to 2026-01-03): ..."``.
    """
    if not memories:
        raise InvalidInputError("extractive_summary needs at least one memory")
    sents: list[tuple[int, str, list[str]]] = []
    seen: set[str] = set()
    for m in memories:
        for s in _SENT.split(m.text.strip()):
            s = " ".join(s.split())
            if not s or s.lower() in seen:
                continue
            seen.add(s.lower())
            words = [w for w in _WORD.findall(s.lower()) if w not in _STOP and len(w) > 1]
            sents.append((len(sents), s, words))
    freq = Counter(w for _i, _s, ws in sents for w in set(ws))
    scored = sorted(sents, key=lambda t: (-(sum(freq[w] for w in set(t[2])) / math.sqrt(1 + len(t[2]))),
                                          t[0]))
    keep = sorted(scored[:max(1, max_sentences)], key=lambda t: t[0])
    days = sorted({_dt.datetime.fromtimestamp(m.created_at, _dt.timezone.utc).date().isoformat()
                   for m in memories})
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    return f"Summary of {len(memories)} memories ({span}): " + " ".join(s for _i, s, _w in keep)


def _fields(rec: R.Record) -> tuple[Any, ...]:
    return (rec.ns, rec.text, rec.metadata, rec.type, rec.ts, rec.key)


def _cutoff(engine: "Engine", than: Any) -> int:
    if isinstance(than, (_dt.datetime, _dt.date)):
        return to_us(than, "than")
    if isinstance(than, str):  # an ISO-8601 cutoff, or an age like "30 days"
        from ._timeutil import looks_like_iso, parse_duration
        if looks_like_iso(than):
            return to_us(than, "than")
        return to_us(engine.clock(), "clock()") - int(round(parse_duration(than, "than") * 1e6))
    if isinstance(than, _dt.timedelta):
        secs = than.total_seconds()
    elif isinstance(than, (int, float)) and not isinstance(than, bool):
        secs = float(than)
    else:
        raise InvalidInputError(f"than must be an age (seconds or timedelta) or a cutoff datetime, "
                                f"got {type(than).__name__}")
    if not math.isfinite(secs) or secs < 0:
        raise InvalidInputError(f"than must be a non-negative age, got {than!r}")
    return to_us(engine.clock(), "clock()") - int(round(secs * 1_000_000))


def summarize_older(handle: Any, than: Any, *, summarizer: Callable[[list[Memory]], str] | None,
                    window: float, min_group: int, types: Sequence[str]) -> list[dict[str, Any]]:
    """See ``Namespace.summarize_older``."""
    eng = handle._engine
    eng.check_writable()
    if summarizer is not None and not callable(summarizer):
        raise InvalidInputError(f"summarizer must be callable, got {type(summarizer).__name__}")
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not math.isfinite(window) \
            or window <= 0:
        raise InvalidInputError(f"window must be a positive number of seconds, got {window!r}")
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 2:
        raise InvalidInputError(f"min_group must be an int >= 2, got {min_group!r}")
    if isinstance(types, str):
        types = [types]
    type_set = {R.check_type(t) for t in types}
    cutoff = _cutoff(eng, than)
    embedder = eng.require_embedder()
    window_us = max(1, int(round(window * 1_000_000)))
    summarize = summarizer or extractive_summary
    # 1. choose the groups in one snapshot
    groups: list[tuple[int, list[R.Record], list[Memory]]] = []
    with eng.snapshot() as snap:
        nid = handle._nid(snap)
        if nid is None:
            return []
        pinned = set(snap.pinned_ids(nid))
        by_window: dict[int, list[R.Record]] = {}
        for rec in snap.memories(nid, None, cutoff - 1, None):  # (ts, id) order, ts < cutoff
            if rec.type not in type_set or rec.key is not None or rec.id in pinned:
                continue
            by_window.setdefault(rec.ts // window_us, []).append(rec)
        for w in sorted(by_window):
            recs = by_window[w]
            if len(recs) >= min_group:
                groups.append((w, recs, [handle._memory(snap, r) for r in recs]))
    if not groups:
        return []
    # 2. summarize and embed outside any lock (the summarizer may be slow)
    texts = []
    for _w, _recs, mems in groups:
        text = summarize(list(mems))
        texts.append(R.check_text(text, "summary returned by the summarizer"))
    from .embedders import embed_checked
    vecs = embed_checked(embedder, texts)

    # 3. one write: check each group is unchanged, add its summary, move edges, forget
    def call(wr: Any) -> list[dict[str, Any]]:  # wr: the engine's writer (LmdbWriter)
        out = []
        for (w, recs, _m), text, vec in zip(groups, texts, vecs):
            now = [wr.record(r.id) for r in recs]
            if any(n is None or _fields(n) != _fields(r) for n, r in zip(now, recs)):
                continue  # changed since the snapshot: leave this group alone
            ids = [r.id for r in recs]
            meta = {"summary_of": ids,
                    "summary_window": [from_us(w * window_us), from_us((w + 1) * window_us)]}
            sid = wr.resolve(("remember", handle.name, text, meta, "semantic",
                              max(r.ts for r in recs), None, vec))
            absorb(wr, sid, ids)
            out.append({"id": sid, "replaced": ids, "window": meta["summary_window"]})
        return out

    return eng.write([("apply", call, len(groups))])[0]
