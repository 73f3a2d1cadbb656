"""Multi-hop: the named person's specifics (issue 15; see docs/retrieval.md).

A question about one person's several events ("What pets does Nate have?", "Which
cities has Jon visited?") is answered by the turns in which that person names the
things ("this is Max!", "a short trip to Rome"). Among the person's turns that match
the question about as well, most are generic remarks on the topic ("Pets make life
better!"); BM25 scores both alike, since the words they share with the question are
the same few. What sets the answers apart is that they name something specific, a
word that is rare in the conversation. So, when the query names a speaker and the
speaker prior is in force::

    targets   the named speakers' memories among the best SPECIFIC_DEPTH candidates
              (by the score so far, speaker prior included)
    spec(r)   sum of idf(t) over the stems t of r that the query does not hold and that
              are rare in the asked namespaces (BM25 idf > RARE_IDF: fewer than about
              one memory in 12 holds them)
    lift(r)   = SPECIFIC_WEIGHT * max(score) * spec(r) / max over the targets of spec

Only the named speakers' best memories move, by at most SPECIFIC_WEIGHT of the best
score: it reorders memories of comparable relevance, never a weak one over a clear
match. A memory's stems are read once per engine for each (generation, slot) of a
committed state (a slot's text never changes within a generation) and the document
frequencies once per committed state, so the caches change no answer, only the cost
of the next ask.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from . import _lexical, _lexical_index
from ._percache import PerOwner

#: Share of the best score that the target naming the most rare words gains (0 = off).
SPECIFIC_WEIGHT: float = 0.15
#: The candidates that take part: the best this many (as the episode context's depth).
SPECIFIC_DEPTH: int = 30
#: A stem is specific when its BM25 idf over the asked namespaces is above this:
#: ln(1 + (N - df + 0.5) / (df + 0.5)) > 2.5, fewer than about one memory in 12.
RARE_IDF: float = 2.5
#: Slots whose stems each engine keeps (cleared when full).
CACHE_SLOTS: int = 200_000

__all__ = ["lift", "SPECIFIC_WEIGHT", "SPECIFIC_DEPTH", "RARE_IDF"]


class _Stems:
    """Per engine: the stems of the slots read so far (ids into one vocabulary), and the
    idf of the stems looked up in the last committed state."""

    def __init__(self) -> None:
        self.vocab: dict[bytes, int] = {}
        self.names: list[bytes] = []  # stem id -> posting term
        self.slots: dict[int, tuple[int, int, np.ndarray]] = {}  # slot -> (gen, id, stem ids)
        self.state: Any = None
        self.idf = np.empty(0, np.float64)  # by stem id, for ``state``; NaN: not read yet
        self.lock = threading.Lock()

    def of(self, snap: Any, slots: np.ndarray, keep: bool) -> list[np.ndarray]:
        """The distinct stem ids of each slot's memory; ``keep``: ``snap`` is a committed
        state, whose slots may be kept."""
        gen = int(snap.state.gen)
        out: list[np.ndarray] = []
        cache = self.slots
        for slot, mid in zip(slots.tolist(), snap.slots["id"][slots].tolist()):
            got = cache.get(slot) if keep else None
            if got is not None and got[0] == gen and got[1] == mid:
                out.append(got[2])
                continue
            stems = self._read(snap, mid)
            if keep:
                with self.lock:
                    if len(cache) >= CACHE_SLOTS:
                        cache.clear()
                    cache[slot] = (gen, mid, stems)
            out.append(stems)
        return out

    def _read(self, snap: Any, mid: int) -> np.ndarray:
        rec = snap.record(mid)
        if rec is None:
            return np.empty(0, np.int64)
        terms = {_lexical_index._term_bytes(t) for t in _lexical.index_fields(rec.text)[0]}
        with self.lock:
            ids = [self._id(t) for t in sorted(terms)]
        return np.asarray(ids, np.int64)

    def _id(self, term: bytes) -> int:
        got = self.vocab.get(term)
        if got is None:
            got = self.vocab[term] = len(self.names)
            self.names.append(term)
        return got

    def idf_of(self, snap: Any, ns_ids: Sequence[int], stems: np.ndarray, keep: bool
               ) -> np.ndarray:
        """BM25 idf of each stem over ``ns_ids`` (kept per committed state)."""
        def read(which: np.ndarray) -> np.ndarray:
            df = np.asarray(snap.term_counts(ns_ids, [self.names[t] for t in which.tolist()]),
                            np.float64)
            n = float(snap.lexical_documents(ns_ids))
            return np.asarray(np.log1p((n - df + 0.5) / (df + 0.5)), np.float64)

        if not keep:
            uniq, inv = np.unique(stems, return_inverse=True)
            return read(uniq)[inv]
        st = snap.state
        key = (st.gen, st.n_slots, st.seq, tuple(sorted(set(ns_ids))))
        with self.lock:
            if key != self.state:
                self.state, self.idf = key, np.full(len(self.names), np.nan)
            elif self.idf.size < len(self.names):
                self.idf = np.concatenate([self.idf, np.full(len(self.names) - self.idf.size,
                                                             np.nan)])
            table = self.idf
        out = table[stems]
        missing = np.isnan(out)
        if missing.any():
            need = np.unique(stems[missing])
            got = read(need)
            with self.lock:
                if self.state == key and self.idf is table:
                    table[need] = got
            out[missing] = got[np.searchsorted(need, stems[missing])]
        return out


_stems: PerOwner[_Stems] = PerOwner(lambda _engine: _Stems())


def lift(engine: Any, snap: Any, ns_ids: Sequence[int], query_text: str, scores: np.ndarray,
         named: np.ndarray, rows: np.ndarray | None, valid: np.ndarray | None,
         top: Callable[[np.ndarray, int], np.ndarray], weight: float = SPECIFIC_WEIGHT,
         keep: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions, lifts) of the named speakers' best memories that name rare things;
    None when fewer than two of them are among the best or none names one.

    ``scores``: the scores so far, over the candidate positions (``rows``: their slots,
    None when the position is the slot; ``valid``: which positions are candidates, None
    for all); ``named``: boolean, the positions a speaker the query names said;
    ``top(scores, k)``: the planner's deterministic top k; ``keep``: ``snap`` is a
    committed state of ``engine`` (what is read may be kept for the next ask).
    """
    if weight <= 0:
        return None
    ranked = scores if valid is None else np.where(valid, scores, np.float32(-np.inf))
    best = top(ranked, SPECIFIC_DEPTH)
    best = best[np.isfinite(ranked[best])]
    targets = best[named[best]]
    if targets.size < 2:
        return None
    cache = _stems.get(engine)
    stems = cache.of(snap, targets if rows is None else rows[targets], keep)
    flat = np.concatenate(stems)
    if not flat.size:
        return None
    idf = cache.idf_of(snap, ns_ids, flat, keep)
    spec = np.where(idf > RARE_IDF, idf, 0.0)
    with cache.lock:
        asked = [cache.vocab.get(t) for t in _lexical_index.query_terms(query_text, surface=False)]
    for t in asked:
        if t is not None:
            spec[flat == t] = 0.0
    owner = np.repeat(np.arange(targets.size), [s.size for s in stems])
    total = np.bincount(owner, weights=spec, minlength=targets.size)
    hi = float(total.max())
    if hi <= 0:
        return None
    return targets, (total * (weight * float(ranked[best[0]]) / hi)).astype(np.float32)
