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
    lift(r)   = SPECIFIC_WEIGHT * (1 - w_vec) * max(score) * spec(r) / max over the targets of spec

``1 - w_vec`` is the lexical share of the fused score (0.85 with the hashing embedder,
0.5 with a sentence model): rare stems are lexical evidence, and a model's vectors
already tell a specific answer from a generic remark, so the lift is a share of the
lexical part (with MiniLM the unscaled lift cost 1.2 points of recall overall).
Only the named speakers' best memories move, by at most that share of the best
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

#: Share of the best score's lexical part (``1 - w_vec`` of it) that the target naming
#: the most rare words gains (0 = off).
SPECIFIC_WEIGHT: float = 0.18
#: The candidates that take part: the best this many (as the episode context's depth).
SPECIFIC_DEPTH: int = 20
#: A stem is specific when its BM25 idf over the asked namespaces is above this:
#: ln(1 + (N - df + 0.5) / (df + 0.5)) > 2.5, fewer than about one memory in 12.
RARE_IDF: float = 2.5
#: Slots whose stems each engine keeps (cleared when full), and the (committed state,
#: namespace set) pairs whose idf and rare stems it keeps.
CACHE_SLOTS: int = 200_000
STATES: int = 8
#: The first time a committed state's target is not kept yet, the stems of every
#: candidate are read together (one pass; a LoCoMo conversation of ~550 turns takes
#: ~10 ms), when there are at most this many candidates; else each target's alone.
PREFETCH_MAX: int = 4096

__all__ = ["lift", "SPECIFIC_WEIGHT", "SPECIFIC_DEPTH", "RARE_IDF"]


class _Stems:
    """Per engine: the stems of the slots read so far (ids into one vocabulary), and, for
    the last committed state asked, each slot's rare stems with their idf."""

    def __init__(self) -> None:
        self.vocab: dict[bytes, int] = {}
        self.names: list[bytes] = []  # stem id -> posting term
        self.by_word: dict[str, int] = {}  # word -> stem id (-1: not indexed)
        self.slots: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # slot -> (gen, id, stems)
        #: per committed state and namespace set (the last STATES of them): {stem id: idf}
        #: and {slot: (sum of idf over its rare stems, {rare stem id: idf})}
        self.states: dict[Any, tuple[dict[int, float],
                                     dict[int, tuple[float, dict[int, float]]]]] = {}
        self.lock = threading.Lock()

    def stems(self, snap: Any, slot: int, mid: int, gen: int, keep: bool) -> tuple[int, ...]:
        """The distinct stem ids of the memory ``mid`` in ``slot``; ``keep``: ``snap`` is a
        committed state, whose slots may be kept."""
        got = self.slots.get(slot) if keep else None
        if got is not None and got[0] == gen and got[1] == mid:
            return got[2]
        rec = snap.record(mid)
        words = [] if rec is None else _lexical.words(rec.text)
        with self.lock:
            by_word = self.by_word
            ids = set()
            for w in words:
                tid = by_word.get(w)
                if tid is None:
                    stem = _lexical.field_stem(w)
                    tid = by_word[w] = self._id(_lexical_index._term_bytes(stem)) if stem else -1
                ids.add(tid)
            ids.discard(-1)
            out = tuple(sorted(ids))
            if keep:
                if len(self.slots) >= CACHE_SLOTS:
                    self.slots.clear()
                self.slots[slot] = (gen, mid, out)
        return out

    def query_stems(self, text: str) -> list[int]:
        """The ids of the query's stems that some memory read so far holds."""
        by_word, vocab = self.by_word, self.vocab
        out = set()
        for w in _lexical.words(text):
            tid = by_word.get(w)
            if tid is None:
                stem = _lexical.field_stem(w)
                tid = vocab.get(_lexical_index._term_bytes(stem), -1) if stem else -1
            out.add(tid)
        out.discard(-1)
        return sorted(out)

    def _id(self, term: bytes) -> int:
        got = self.vocab.get(term)
        if got is None:
            got = self.vocab[term] = len(self.names)
            self.names.append(term)
        return got

    def known(self, slot: int, mid: int, gen: int) -> bool:
        got = self.slots.get(slot)
        return got is not None and got[0] == gen and got[1] == mid

    def rare_of(self, snap: Any, ns_ids: Sequence[int], slots: list[int], keep: bool,
                every: Callable[[], list[int] | None] | None = None
                ) -> list[tuple[float, dict[int, float]]]:
        """Per slot: (sum of idf over its rare stems, {rare stem: idf}), idf over ``ns_ids``
        (kept per committed state). ``every()``: all the candidate slots (None when there
        are more than PREFETCH_MAX), whose stems are read together the first time one of
        ``slots`` is not kept yet."""
        st = snap.state
        key = (st.gen, st.n_slots, st.seq, tuple(ns_ids))
        kept = self.states.get(key) if keep else None
        if kept is not None:
            idf, rare = kept
        else:
            idf, rare = {}, {}
            if keep:
                with self.lock:
                    if len(self.states) >= STATES:
                        self.states.pop(next(iter(self.states)))  # the oldest
                    self.states[key] = (idf, rare)
        out = [rare.get(slot) for slot in slots]  # (a slot's memory is fixed in a state)
        if None not in out:
            return [got for got in out if got is not None]
        gen = int(st.gen)
        ids = snap.slots["id"]
        todo = [slot for slot, got in zip(slots, out) if got is None]
        if keep and every is not None and any(not self.known(slot, int(ids[slot]), gen)
                                              for slot in todo):
            # the first of these candidates seen: read them all, and rate them all
            todo = [slot for slot in every() or todo if slot not in rare]
        stems = [(slot, self.stems(snap, slot, int(ids[slot]), gen, keep)) for slot in todo]
        need = sorted({t for _slot, ts in stems for t in ts if t not in idf})
        if need:
            df = np.asarray(snap.term_counts(ns_ids, [self.names[t] for t in need]), np.float64)
            n = float(snap.lexical_documents(ns_ids))
            idf.update(zip(need, np.log1p((n - df + 0.5) / (df + 0.5)).tolist()))
        for slot, ts in stems:
            spec = {t: idf[t] for t in ts if idf[t] > RARE_IDF}
            rare[slot] = (sum(spec.values()), spec)
        return [rare[slot] for slot in slots]


_stems: PerOwner[_Stems] = PerOwner(lambda _engine: _Stems())


def lift(engine: Any, snap: Any, ns_ids: Sequence[int], query_text: str, scores: np.ndarray,
         named: np.ndarray, rows: np.ndarray | None, valid: np.ndarray | None,
         weight: float = SPECIFIC_WEIGHT, keep: bool = False, prefetch: bool = False
         ) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions, lifts) of the named speakers' best memories that name rare things;
    None when fewer than two of them are among the best or none names one.

    ``scores``: the scores so far, over the candidate positions (``rows``: their slots,
    None when the position is the slot; ``valid``: which positions are candidates, None
    for all); ``named``: boolean, the positions a speaker the query names said;
    ``keep``: ``snap`` is a committed state of ``engine`` (what is read may be kept for
    the next ask); ``prefetch``: the candidates are the asked namespaces' memories (not
    an ANN stage's query-dependent rows), whose stems may be read together.
    """
    if weight <= 0:
        return None
    ranked = scores if valid is None else np.where(valid, scores, np.float32(-np.inf))
    if ranked.size > SPECIFIC_DEPTH:  # the best SPECIFIC_DEPTH and every tie at the boundary
        cut = float(np.partition(ranked, ranked.size - SPECIFIC_DEPTH)[ranked.size - SPECIFIC_DEPTH])
        targets = np.flatnonzero(named & (ranked >= cut) & (ranked > -np.inf))
    else:
        targets = np.flatnonzero(named & (ranked > -np.inf))
    if targets.size < 2:
        return None
    cache = _stems.get(engine)
    slots = (targets if rows is None else rows[targets]).tolist()

    def every() -> list[int] | None:
        cand = rows if rows is not None else np.flatnonzero(ranked > -np.inf)
        return cand.tolist() if cand.size <= PREFETCH_MAX else None

    rare = cache.rare_of(snap, ns_ids, slots, keep, every if prefetch else None)
    asked = cache.query_stems(query_text)  # (after: every stem of the targets has an id)
    if asked:
        total = np.array([s - sum([r[t] for t in asked if t in r]) if s else 0.0 for s, r in rare])
    else:
        total = np.array([s for s, _r in rare])
    hi = float(total.max())
    if hi <= 0:
        return None
    return targets, (total * (weight * float(ranked.max()) / hi)).astype(np.float32)
