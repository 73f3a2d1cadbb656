"""BM25 postings in LMDB: maintained in the write transaction of each record, read as numpy.

Two named sub-databases (see ``_storage.DB_NAMES``):

* ``postings`` (dupsort + dupfixed): key ``ns u32 BE + term (UTF-8, at most
  MAX_TERM_BYTES)``; one 12-byte duplicate per memory holding the term:
  ``id u48 BE, tf u24 BE, doc length u24 BE`` (version 4; versions 1-3 stored 16 bytes,
  ``id u64, tf u32, length u32``, and a read-only open of such a store still reads
  them: the width is the stored values'). A text is at most 1 MiB, so a frequency or
  length fits 24 bits; ids come from a counter and stay far below 2^48. Duplicates
  sort by id, and a term's whole list is read with one ``Cursor.getmulti`` into a
  numpy structured array (no per-posting Python loop). Two fields share the table
  (version 2): Porter stems (key = the stem) and exact surface words (key =
  ``SURFACE_PREFIX`` + the word; doc length = the memory's surface word count), plus
  one marker term, ``QUESTION_TERM``, listing the memories that ask a question;
  version 3 adds ``SPEAKER_PREFIX`` + each word of a memory's speaker label
  (:func:`_lexical.speaker_words`) and Porter2's adverb rule in the stem field;
  version 5 adds each hyphenated compound written as one word to both fields
  (:func:`_lexical.compounds`).
* ``lexstats``: ``ns u32 BE`` -> ``docs u64 BE, stem length u64 BE, surface length
  u64 BE`` (the BM25 collection statistics of the namespace); ``b"version"`` ->
  ``u32 BE`` (the tokeniser version the postings were built with).

Postings are keyed by memory id, not slot, so compaction never rewrites them. They
are derived state (rebuilt from the records, never logged): ``Engine.apply_op``
calls :func:`add` for ``mem`` ops and :func:`remove` for ``forget``/``evict`` ops, so
live writes, replay and eviction all keep them in step with the records.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
import operator
import struct
from typing import Any, Iterable, Iterator, Sequence

import lmdb
import numpy as np

from . import _batchmemo, _lexical, _lexstage
from ._batchwords import batch_vocab
from ._rawmemo import RawMemo, owned
from . import _records as R
from .errors import StoreError

log = logging.getLogger("mnemos_kv")

__all__ = ["VERSION", "POSTING_DTYPE", "SURFACE_PREFIX", "QUESTION_TERM", "SPEAKER_PREFIX",
           "SURFACE_WEIGHT", "SPEAKER_SCAN_MAX", "speaker_ids",
           "add", "add_many", "stage_many", "doc_terms_many", "BatchTerms", "bump", "remove",
           "drop_namespace", "stats", "bm25_postings", "fetch", "fetch_parts", "doc_terms",
           "query_terms", "question_ids", "term_counts", "surface_prefixed", "ensure_built"]

#: Version of the tokeniser/posting layout; a store built with another is reindexed.
#: 1: Porter stems only. 2: stems + surface words + the question marker, 3-field stats.
#: 3: speaker terms; "calmly" stems to "calm" (_lexical.field_stem). 4: 12-byte postings
#: (id u48, tf u24, length u24; 16 bytes before), a quarter less space. 5: hyphenated
#: compounds also indexed as one word ("de-stress" -> "destress", _lexical.compounds).
VERSION = 5
#: Key prefix of surface-field terms (a byte no word contains, so no stem collides).
SURFACE_PREFIX = b"\x01"
#: The marker term whose postings are the memories that ask a question (_lexical.is_question).
QUESTION_TERM = b"\x00?"
#: Key prefix of speaker terms: ``SPEAKER_PREFIX`` + a word of the memory's speaker label
#: (tf 1, length 1; not part of BM25, read by the planner's speaker prior).
SPEAKER_PREFIX = b"\x02"
#: Weight of the surface field's BM25 next to the stem field's (1.0): an exact word
#: match scores 1 + SURFACE_WEIGHT times a stem-only match of the same rarity.
SURFACE_WEIGHT: float = 0.5
#: Terms longer than this (in UTF-8 bytes) are cut at a character boundary: LMDB keys
#: are at most 511 bytes, and such "words" are URLs or base64, not vocabulary.
MAX_TERM_BYTES = 240
#: Bytes of one stored posting (version 4); versions 1-3: POSTING_BYTES_V3.
POSTING_BYTES = 12
POSTING_BYTES_V3 = 16
#: A decoded posting (and the stored layout of versions 1-3).
POSTING_DTYPE = np.dtype([("id", ">u8"), ("tf", ">u4"), ("dl", ">u4")])
#: The largest id, term frequency and length a stored posting holds.
MAX_POSTING_ID = (1 << 48) - 1
MAX_POSTING_COUNT = (1 << 24) - 1
_STATS = struct.Struct(">QQQ")
_STATS_V1 = struct.Struct(">QQ")  # version 1 (read-only opens of a store not yet reindexed)
_U32 = struct.Struct(">I")
_VERSION_KEY = b"version"


@functools.lru_cache(maxsize=65536)
def _term_bytes(term: str) -> bytes:
    """UTF-8 bytes of ``term``, cut to MAX_TERM_BYTES on a character boundary."""
    raw = term.encode("utf-8")
    if len(raw) <= MAX_TERM_BYTES:
        return raw
    return raw[:MAX_TERM_BYTES].decode("utf-8", "ignore").encode("utf-8")


def doc_terms(text: str) -> tuple[dict[bytes, tuple[int, int]], int, int]:
    """The posting terms of ``text``: (term bytes -> (tf, field length), sorted), the
    stem-field length and the surface-field length in terms."""
    stems, surface = _lexical.index_fields(text)
    counts: dict[bytes, int] = {}
    for tok in stems:
        key = _term_bytes(tok)
        counts[key] = counts.get(key, 0) + 1
    scounts: dict[bytes, int] = {}
    for tok in surface:
        key = SURFACE_PREFIX + _term_bytes(tok)
        scounts[key] = scounts.get(key, 0) + 1
    out = {t: (c, len(stems)) for t, c in counts.items()}
    out.update({t: (c, len(surface)) for t, c in scounts.items()})
    if _lexical.is_question(text):
        out[QUESTION_TERM] = (1, 1)
    for word in _lexical.speaker_words(text):
        out[SPEAKER_PREFIX + _term_bytes(word)] = (1, 1)
    return {t: out[t] for t in sorted(out)}, len(stems), len(surface)


def query_terms(text: str, surface: bool = True) -> list[bytes]:
    """Distinct posting terms of a query, sorted (each counts once in BM25): its stems
    and, with ``surface``, its surface words (``SURFACE_PREFIX`` + word)."""
    stems, words = _lexical.index_fields(text)
    out = {_term_bytes(t) for t in stems}
    if surface:
        out.update(SURFACE_PREFIX + _term_bytes(t) for t in words)
    return sorted(out)


def _bump(txn: lmdb.Transaction, sdb: Any, ns: int, docs: int, length: int, slength: int) -> None:
    """Add ``docs`` documents and ``length`` / ``slength`` stem / surface terms to the
    statistics of namespace ``ns``."""
    key = _U32.pack(ns)
    raw = txn.get(key, db=sdb)
    n, total, stotal = _STATS.unpack(raw) if raw is not None else (0, 0, 0)
    n, total, stotal = n + docs, total + length, stotal + slength
    if n <= 0:
        txn.delete(key, db=sdb)
    else:
        txn.put(key, _STATS.pack(n, max(total, 0), max(stotal, 0)), db=sdb)


def bump(txn: lmdb.Transaction, env: Any, ns: int, docs: int, length: int, slength: int) -> None:
    """:func:`_bump` for bulk paths: change the statistics of namespace ``ns`` once."""
    _bump(txn, env.db("lexstats"), ns, docs, length, slength)


def posting(mid: int, tf: int, dl: int) -> bytes:
    """One stored posting: ``id u48 BE, tf u24 BE, doc length u24 BE``."""
    if not (0 <= mid <= MAX_POSTING_ID and 0 <= tf <= MAX_POSTING_COUNT
            and 0 <= dl <= MAX_POSTING_COUNT):
        raise StoreError(f"posting of memory {mid} (tf {tf}, length {dl}) is out of the "
                         f"index's range (id < 2^48, counts < 2^24)")
    return mid.to_bytes(6, "big") + tf.to_bytes(3, "big") + dl.to_bytes(3, "big")


def encode_postings(ids: np.ndarray, tf: np.ndarray, dl: np.ndarray) -> bytes:
    """The stored postings of equal-length arrays, concatenated (:func:`posting` of each)."""
    n = int(ids.size)
    if n and (int(ids.max()) > MAX_POSTING_ID or int(ids.min()) < 0
              or max(int(tf.max()), int(dl.max())) > MAX_POSTING_COUNT):
        raise StoreError("postings out of the index's range (id < 2^48, counts < 2^24)")
    out = np.empty((n, POSTING_BYTES), np.uint8)
    out[:, 0:6] = ids.astype(">u8").view(np.uint8).reshape(n, 8)[:, 2:]
    out[:, 6:9] = tf.astype(">u4").view(np.uint8).reshape(n, 4)[:, 1:]
    out[:, 9:12] = dl.astype(">u4").view(np.uint8).reshape(n, 4)[:, 1:]
    return out.tobytes()


def posting_values(ids: np.ndarray, tf: np.ndarray, dl: np.ndarray) -> list[bytes]:
    """:func:`encode_postings`, one ``bytes`` per posting (for cursor puts and deletes)."""
    blob, w = encode_postings(ids, tf, dl), POSTING_BYTES
    return [blob[i:i + w] for i in range(0, len(blob), w)]


#: What :func:`fetch` returns (native byte order: the scoring converts no further).
DECODED_DTYPE = np.dtype([("id", "<u8"), ("tf", "<u4"), ("dl", "<u4")])


@functools.lru_cache(maxsize=1024)
def _row_dtype(key_len: int) -> np.dtype:
    """The layout of one ``getmulti(keyfixed=True)`` row of a 16-byte (index version
    1-3) table: the key, then one posting."""
    return np.dtype([("k", f"V{key_len}"), ("id", ">u8"), ("tf", ">u4"), ("dl", ">u4")])


def _decode12(raw: np.ndarray) -> np.ndarray:
    """12-byte postings (an ``(n, 12)`` uint8 array: id u48, tf u24, length u24, big
    endian) as DECODED_DTYPE: each field's bytes copied, reversed, into a 16-byte
    little-endian row (three slice copies: cheaper than shifting and masking fields for
    the short lists most terms have, and an ask reads a list per query term)."""
    wide = np.zeros((raw.shape[0], 16), np.uint8)
    wide[:, 0:6] = raw[:, 5::-1]
    wide[:, 8:11] = raw[:, 8:5:-1]
    wide[:, 12:15] = raw[:, 11:8:-1]
    return wide.view(DECODED_DTYPE).reshape(-1)


def decode_postings(rows: np.ndarray, width: int) -> np.ndarray:
    """Stored postings (a ``uint8`` array of ``width``-byte rows) with ``id``, ``tf`` and
    ``dl`` fields."""
    flat = np.ascontiguousarray(rows)
    if width == POSTING_BYTES_V3:
        return flat.view(POSTING_DTYPE).reshape(-1)
    return _decode12(flat.reshape(-1, width))


def add(txn: lmdb.Transaction, env: Any, ns: int, mid: int, text: str) -> None:
    """Index memory ``mid`` of namespace ``ns`` (in the caller's write transaction)."""
    terms, length, slength = doc_terms(text)
    pdb = env.db("postings")
    prefix = _U32.pack(ns)
    for term, (tf, dl) in terms.items():
        txn.put(prefix + term, posting(mid, tf, dl), db=pdb, dupdata=True)
    _bump(txn, env.db("lexstats"), ns, 1, length, slength)


#: Below this many memories, :func:`add_many` indexes them one by one.
BULK_MIN = 16


def add_many(txn: lmdb.Transaction, env: Any, items: Sequence[tuple[int, int, str, Any]]) -> None:
    """:func:`add` of every ``(ns, id, text, _)`` (ids ascending), at once: one tokeniser
    pass, the postings put in key order, one statistics update per namespace."""
    if len(items) < BULK_MIN:
        for ns, mid, text, _meta in items:
            add(txn, env, ns, mid, text)
        return
    pdb = env.db("postings")
    nss = set(map(_NS_OF, items))
    for ns in sorted(nss):
        sel = items if len(nss) == 1 else [it for it in items if it[0] == ns]
        bt = doc_terms_many(list(map(_TEXT_OF, sel)))
        if bt.key.size:
            _put_postings(txn, pdb, ns, np.fromiter(map(_ID_OF, sel), np.int64, len(sel)), bt)
        _bump(txn, env.db("lexstats"), ns, len(sel), int(bt.stem_len.sum()),
              int(bt.surface_len.sum()))


_NS_OF, _ID_OF, _TEXT_OF = (operator.itemgetter(i) for i in range(3))


def _put_postings(txn: lmdb.Transaction, pdb: Any, ns: int, ids: np.ndarray,
                  bt: "BatchTerms") -> None:
    """Put the postings ``bt`` of memories ``ids`` of namespace ``ns`` in (key, id) order."""
    dids = ids[bt.doc]
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        key = bt.key  # (key, text) order is (key, id) order
        blob = encode_postings(dids, bt.tf, bt.dl)
    else:
        order = np.lexsort((dids, bt.key))  # (key, id): the table's order
        key = bt.key[order]
        blob = encode_postings(dids[order], bt.tf[order], bt.dl[order])
    keys = bt.full_keys(_U32.pack(ns), key)
    values = np.frombuffer(blob, f"V{POSTING_BYTES}").tolist()  # (bytes objects)

    def pairs() -> Iterator[tuple[bytes, bytes]]:
        return zip(keys, values)
    with txn.cursor(db=pdb) as cur:
        # new ids are larger than every stored one: each posting goes at the end of its
        # term's list (MDB_APPENDDUP); if one did not (not expected), all are put again
        # in place (putting a stored pair again changes nothing)
        if cur.putmulti(pairs(), dupdata=True, append=True)[1] != len(keys):
            cur.putmulti(pairs(), dupdata=True)


def stage_many(txn: lmdb.Transaction, env: Any, items: Sequence[tuple[int, int, str, Any]]) -> None:
    """:func:`add` of every ``(ns, id, text, _)`` of a small write (new memories, ids
    consecutive and ascending), through the staging window (``_lexstage``): the ids
    alone, no posting and no statistics yet (readers derive and add the staged
    memories' share, see :func:`stats`). The text is not tokenised here."""
    mids = [it[1] for it in items]
    if not mids:
        return
    if mids != list(range(mids[0], mids[0] + len(mids))):
        add_many(txn, env, items)  # (not a run of new ids: indexed as they are)
        return
    for ns, mid, text, _meta in items:
        if mid > MAX_POSTING_ID or len(text) > MAX_POSTING_COUNT:
            # (a text of at most 2^24 - 1 characters has fewer terms; longer texts are
            # refused by validation long before: this checks what the index holds)
            _terms, length, slength = doc_terms(text)
            posting(mid, 0, max(length, slength))  # raises, naming the memory (tf <= length)
    _lexstage.stage(txn, env, mids[0], mids[-1] + 1)


def remove(txn: lmdb.Transaction, env: Any, ns: int, mid: int, text: str) -> None:
    """Remove memory ``mid`` from the postings and statistics of namespace ``ns``."""
    _lexstage.merge_for(txn, env, mid)  # (staged postings are removed from ``postings``)
    terms, length, slength = doc_terms(text)
    prefix = _U32.pack(ns)
    idb = mid.to_bytes(6, "big")
    with txn.cursor(db=env.db("postings")) as cur:
        for term in terms:
            # the duplicate is found by id alone (tf and length need not be recomputed)
            if cur.set_range_dup(prefix + term, idb) and cur.value()[:6] == idb:
                cur.delete()
    _bump(txn, env.db("lexstats"), ns, -1, -length, -slength)


def stats(txn: lmdb.Transaction, env: Any, ns_ids: Iterable[int],
          staged: "_lexstage.View | None" = None) -> tuple[int, int, int]:
    """BM25 collection statistics over ``ns_ids``: (documents, total stem-field length,
    total surface-field length) in terms, the staged memories' share included
    (``staged``: the snapshot's view; None: read from ``txn``)."""
    sdb = env.db("lexstats")
    n = total = stotal = 0
    if staged is None:
        staged = _lexstage.view(txn, env)
    for ns in ns_ids:
        if staged is not None:
            a, b, c = staged.stats(ns)
            n, total, stotal = n + a, total + b, stotal + c
        raw = txn.get(_U32.pack(ns), db=sdb)
        if raw is not None:
            if len(raw) == _STATS_V1.size:
                a, b = _STATS_V1.unpack(raw)
                c = b
            else:
                a, b, c = _STATS.unpack(raw)
            n, total, stotal = n + a, total + b, stotal + c
    return n, total, stotal


_NO_POSTINGS = np.empty(0, DECODED_DTYPE)


def fetch(cur: lmdb.Cursor, ns: int, term: bytes, staged: "_lexstage.View | None" = None
          ) -> np.ndarray:
    """The postings of ``term`` in namespace ``ns``: a structured array with ``id``, ``tf``,
    ``dl`` fields (sorted by id), read with one ``getmulti`` (the stored width is the
    first value's: 12 bytes, or 16 in a store of index version 1-3 opened read-only),
    merged by id with the snapshot's ``staged`` postings of the term (``_lexstage``): the
    very array the table would hold with them merged."""
    parts = fetch_parts(cur, ns, term, staged)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def fetch_parts(cur: lmdb.Cursor, ns: int, term: bytes, staged: "_lexstage.View | None"
                ) -> list[np.ndarray]:
    """:func:`fetch` in consecutive parts whose concatenation is its array: the stored
    postings, then the staged ones when every staged id comes after the stored ids (the
    usual case: staged memories are the newest), so a caller that concatenates lists
    anyway (:func:`bm25_of`) copies a long list once."""
    stored = _fetch_stored(cur, ns, term)
    extra = staged.get(ns, term, DECODED_DTYPE) if staged is not None else None
    if extra is None:
        return [stored]
    if not stored.size:
        return [extra]
    if stored.dtype != DECODED_DTYPE:
        wide = np.empty(stored.size, DECODED_DTYPE)
        for f in ("id", "tf", "dl"):
            wide[f] = stored[f]
        stored = wide
    if int(stored["id"][-1]) < int(extra["id"][0]):
        return [stored, extra]
    out = np.concatenate([stored, extra])  # (bulk-indexed ids after staged ones)
    return [out[np.argsort(out["id"], kind="stable")]]


#: Decoded posting lists by the bytes read (``_rawmemo``): the lists of an ask's query
#: terms, speakers and question marker are decoded once, not once per ask.
_DECODED: RawMemo[np.ndarray] = RawMemo(max_bytes=16 << 20, max_item=1 << 20)


def _fetch_stored(cur: lmdb.Cursor, ns: int, term: bytes) -> np.ndarray:
    """:func:`fetch` from the ``postings`` table alone (read-only: the array may be shared)."""
    key = _U32.pack(ns) + term
    if not cur.set_key(key):
        return _NO_POSTINGS
    width = len(cur.value())
    buf = cur.getmulti([key], dupdata=True, dupfixed_bytes=width, keyfixed=True)
    if width == POSTING_BYTES_V3:
        return np.frombuffer(buf, dtype=_row_dtype(len(key)))
    # the decoding is a function of the bytes read (and the row layout): kept by them
    raw = owned(buf)
    memo_key = (len(key), width, raw)
    got = _DECODED.get(memo_key) if raw is not None else None
    if got is None:
        got = _decode12(np.frombuffer(buf, np.uint8).reshape(-1, len(key) + width)[:, len(key):])
        if raw is not None:
            got.flags.writeable = False  # shared by every reader that reads these bytes
            _DECODED.put(memo_key, got, len(buf) + got.nbytes)
    return got


def bm25_postings(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int], terms: Sequence[bytes],
                  k1: float = _lexical.DEFAULT_K1, b: float = _lexical.DEFAULT_B,
                  surface_weight: float = SURFACE_WEIGHT, weights: Sequence[float] | None = None,
                  staged: "_lexstage.View | None" = None, found: set[bytes] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-posting BM25 contributions of the query ``terms`` over ``ns_ids``: (ids, scores).

    The same formula as :func:`_lexical.bm25_scores` (Lucene idf, ``k1``, ``b``), with
    the collection statistics of the asked namespaces, per field (each field has its
    own average length); surface-field terms (``SURFACE_PREFIX``) count
    ``surface_weight`` times. ``ids`` may repeat (one entry per matching term, terms in
    the given order); summing by id gives the BM25 score. Empty when no term is indexed.
    ``weights`` (one per term) scale each term's contribution (a weighted query).
    ``staged``: the snapshot's staged postings (``_lexstage.view``; None: read from ``txn``).
    ``found``: when given, the terms that have postings are added to it.
    """
    empty = (np.empty(0, np.uint64), np.empty(0, np.float32))
    if not terms or not ns_ids or not env.has_db("postings"):
        return empty
    if staged is None:
        staged = _lexstage.view(txn, env)
    n_docs, total, stotal = stats(txn, env, ns_ids, staged)
    with txn.cursor(db=env.db("postings")) as cur:
        return bm25_of(n_docs, total, stotal, ns_ids, terms,
                       lambda ns, term: fetch_parts(cur, ns, term, staged),
                       k1=k1, b=b, surface_weight=surface_weight, weights=weights, found=found)


def bm25_of(n_docs: int, total: int, stotal: int, ns_ids: Sequence[int], terms: Sequence[bytes],
            fetch_fn: Any, k1: float = _lexical.DEFAULT_K1, b: float = _lexical.DEFAULT_B,
            surface_weight: float = SURFACE_WEIGHT, weights: Sequence[float] | None = None,
            found: set[bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bm25_postings` over any postings source (shared by every engine).

    ``n_docs``/``total``/``stotal``: the collection statistics of ``ns_ids``;
    ``fetch_fn(ns, term)``: that term's postings in namespace ``ns`` as an array with
    ``id``, ``tf``, ``dl`` fields, sorted by id (or a list of consecutive parts of it).
    The same inputs in the same order give bit-identical scores.
    """
    empty = (np.empty(0, np.uint64), np.empty(0, np.float32))
    if not terms or not ns_ids or n_docs <= 0:
        return empty
    lists: list[np.ndarray] = []
    idfs: list[float] = []
    sizes: list[int] = []
    coefs: list[float] = []  # k1 * b / avgdl of the term's field
    for ti, term in enumerate(terms):
        surface = term.startswith(SURFACE_PREFIX)
        if surface and surface_weight <= 0:
            continue
        per_ns = [p for ns in ns_ids for p in _parts(fetch_fn(ns, term)) if p.size]
        df = sum(p.size for p in per_ns)
        if not df:
            continue
        if found is not None:
            found.add(term)
        idf = math.log1p((n_docs - df + 0.5) / (df + 0.5)) * (surface_weight if surface else 1.0)
        if weights is not None:
            idf *= weights[ti]
        field_total = stotal if surface else total
        avgdl = field_total / n_docs if field_total > 0 else 1.0
        for p in per_ns:
            lists.append(p)
            idfs.append(idf)
            sizes.append(p.size)
            coefs.append(k1 * b / avgdl)
    if not lists:
        return empty
    if len(lists) == 1:
        ids, tf, dl = lists[0]["id"], lists[0]["tf"], lists[0]["dl"]
        idf_arr: Any = np.float32(idfs[0])
        coef: Any = np.float32(coefs[0])
    else:
        ids = np.concatenate([p["id"] for p in lists])
        tf = np.concatenate([p["tf"] for p in lists])
        dl = np.concatenate([p["dl"] for p in lists])
        idf_arr = np.repeat(np.asarray(idfs, np.float32), sizes)
        coef = np.repeat(np.asarray(coefs, np.float32), sizes)
    tf32 = tf.astype(np.float32)
    norm = np.float32(k1 * (1.0 - b)) + coef * dl.astype(np.float32)
    scores = idf_arr * tf32 * np.float32(k1 + 1.0) / (tf32 + norm)
    return ids.astype(np.uint64), scores.astype(np.float32, copy=False)


def _parts(got: Any) -> list[np.ndarray]:
    return got if isinstance(got, list) else [got]


def term_counts(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int], terms: Sequence[bytes],
                staged: "_lexstage.View | None" = None) -> np.ndarray:
    """Document frequency of each of ``terms`` over ``ns_ids`` (float64: the number of
    memories whose postings hold it, staged ones included), one cursor count per term
    and namespace."""
    out = np.zeros(len(terms), np.float64)
    if not terms or not ns_ids or not env.has_db("postings"):
        return out
    if staged is None:
        staged = _lexstage.view(txn, env)
    with txn.cursor(db=env.db("postings")) as cur:
        for ns in ns_ids:
            prefix = _U32.pack(ns)
            out += [cur.count() if cur.set_key(prefix + t) else 0 for t in terms]
            if staged is not None:
                out += [0 if (got := staged.get(ns, t, DECODED_DTYPE)) is None else got.size
                        for t in terms]
    return out


def surface_prefixed(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int], prefix: str,
                     limit: int, staged: "_lexstage.View | None" = None) -> list[str] | None:
    """The indexed surface words of ``ns_ids`` that start with ``prefix`` (sorted, distinct;
    staged ones included): one cursor walk over their keys (no postings read); None when
    there are more than ``limit`` of them in a namespace."""
    if not ns_ids or not env.has_db("postings"):
        return []
    if staged is None:
        staged = _lexstage.view(txn, env)
    out: set[str] = set()
    with txn.cursor(db=env.db("postings")) as cur:
        for ns in ns_ids:
            head = _U32.pack(ns) + SURFACE_PREFIX
            start = head + _term_bytes(prefix)
            keys: set[bytes] = set()
            if cur.set_range(start):
                for key in cur.iternext_nodup(keys=True, values=False):
                    if not key.startswith(start):
                        break
                    keys.add(key)
                    if len(keys) > limit:
                        return None
            if staged is not None:
                keys.update(start[:4] + t for t in staged.prefixed(ns, start[4:]))
                if len(keys) > limit:
                    return None
            out.update(key[len(head):].decode("utf-8", "replace") for key in keys)
    return sorted(out)


def question_ids(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int],
                 staged: "_lexstage.View | None" = None) -> np.ndarray:
    """Ids (uint64, ascending per namespace) of the memories of ``ns_ids`` that ask a question."""
    if not ns_ids or not env.has_db("postings"):
        return np.empty(0, np.uint64)
    if staged is None:
        staged = _lexstage.view(txn, env)
    with txn.cursor(db=env.db("postings")) as cur:
        parts = [fetch(cur, ns, QUESTION_TERM, staged)["id"] for ns in ns_ids]
    parts = [p for p in parts if p.size]
    if not parts:
        return np.empty(0, np.uint64)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.uint64)


#: Speaker words listed per namespace before the query's words are looked up one by one.
SPEAKER_SCAN_MAX = 64


def speaker_words(text: str) -> set[bytes]:
    """The words of a query that can name a speaker (as stored after ``SPEAKER_PREFIX``)."""
    return {_term_bytes(t) for t in map(_lexical.surface_term, _lexical.words(text)) if t}


def speaker_ids(txn: lmdb.Transaction, env: Any, ns_ids: Sequence[int], text: str,
                staged: "_lexstage.View | None" = None) -> tuple[np.ndarray, int]:
    """Memories of ``ns_ids`` spoken by someone the query ``text`` names: (ids, how many
    query words name a speaker). A query word names a speaker when it is a word of a
    memory's speaker label (``SPEAKER_PREFIX`` postings); ids are sorted and distinct.

    A namespace has few speakers: their words are listed with one cursor walk over the
    keys (no postings read) and only the words the query holds are fetched; past
    ``SPEAKER_SCAN_MAX`` distinct words, each query word is looked up instead.
    """
    if not ns_ids or not env.has_db("postings"):
        return np.empty(0, np.int64), 0
    qwords = speaker_words(text)
    if not qwords:
        return np.empty(0, np.int64), 0
    parts: list[np.ndarray] = []
    named: set[bytes] = set()
    if staged is None:
        staged = _lexstage.view(txn, env)
    with txn.cursor(db=env.db("postings")) as cur:
        for ns in ns_ids:
            prefix = _U32.pack(ns) + SPEAKER_PREFIX
            found: list[bytes] = []
            seen = 0
            ok = cur.set_range(prefix)
            while ok and seen <= SPEAKER_SCAN_MAX:
                key = cur.key()
                if not key.startswith(prefix):
                    break
                seen += 1
                if key[len(prefix):] in qwords:
                    found.append(key[len(prefix):])
                ok = cur.next_nodup()
            if seen > SPEAKER_SCAN_MAX:  # many labels: ask for the query's words directly
                found = sorted(qwords)
            elif staged is not None:  # and the query's words staged speakers have
                found = sorted(set(found).union(
                    w for w in qwords if staged.get(ns, SPEAKER_PREFIX + w, DECODED_DTYPE)
                    is not None))
            for w in found:
                got = fetch(cur, ns, SPEAKER_PREFIX + w, staged)
                if got.size:
                    named.add(w)
                    parts.append(got["id"])
    if not parts:
        return np.empty(0, np.int64), 0
    if len(parts) == 1:  # one term's postings: sorted by id and distinct already
        return parts[0].astype(np.int64), len(named)
    return np.unique(np.concatenate(parts).astype(np.int64)), len(named)


def ensure_built(env: Any) -> None:
    """Index every record of a store whose postings are missing or of another version.

    Stores written before the lexical index existed (or by another tokeniser version)
    are reindexed once, in one write transaction, on their first read-write open.
    """
    if not env.has_db("lexstats"):
        return
    with env.read() as txn:
        raw = txn.get(_VERSION_KEY, db=env.db("lexstats"))
    if raw is not None and _U32.unpack(raw)[0] == VERSION:
        return

    def body(txn: lmdb.Transaction) -> None:
        """Drop and rebuild the postings and statistics from the records."""
        sdb = env.db("lexstats")
        raw2 = txn.get(_VERSION_KEY, db=sdb)
        if raw2 is not None and _U32.unpack(raw2)[0] == VERSION:
            return  # another process did it
        txn.drop(env.db("postings"), delete=False)
        if env.has_db(_lexstage.DB):  # (staged postings are rebuilt with the rest)
            txn.drop(env.db(_lexstage.DB), delete=False)
        txn.delete(_lexstage.WINDOW_KEY, db=env.db("meta"))
        txn.drop(sdb, delete=False)
        n = int(txn.stat(env.db("records"))["entries"])
        log.log(logging.INFO if n else logging.DEBUG,
                "%s: building the BM25 index over %d memories (postings missing or of "
                "another version)", getattr(env, "path", "?"), n)
        batch: list[tuple[int, int, str, Any]] = []
        with txn.cursor(db=env.db("records")) as cur:
            for _k, v in cur:  # id order: what add_many wants
                rec = R.Record.from_bytes(v)
                batch.append((rec.ns, rec.id, rec.text, None))
                if len(batch) >= 20_000:
                    add_many(txn, env, batch)
                    batch = []
        add_many(txn, env, batch)
        txn.put(_VERSION_KEY, _U32.pack(VERSION), db=sdb)
    env.write(body)


def drop_namespace(txn: lmdb.Transaction, env: Any, ns: int) -> None:
    """Remove every posting and the statistics of namespace ``ns`` (one prefix sweep)."""
    _lexstage.merge(txn, env)
    prefix = _U32.pack(ns)
    with txn.cursor(db=env.db("postings")) as cur:
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                if not cur.delete(dupdata=True):  # every duplicate of the key; moves on
                    break
                if not cur.key():  # past the last key
                    break
    txn.delete(prefix, db=env.db("lexstats"))


class BatchTerms:
    """The posting terms of a batch of texts (what :func:`doc_terms` gives each, at once).

    ``keys``: the distinct term keys, sorted; ``key``, ``doc``, ``tf``, ``dl``: one
    entry per (term, text) pair, sorted by (key, doc); ``stem_len`` / ``surface_len``:
    per text, its stem- and surface-field lengths.
    """

    __slots__ = ("keys", "key", "doc", "tf", "dl", "stem_len", "surface_len")

    def __init__(self, keys: list[bytes], key: np.ndarray, doc: np.ndarray, tf: np.ndarray,
                 dl: np.ndarray, stem_len: np.ndarray, surface_len: np.ndarray) -> None:
        self.keys, self.key, self.doc, self.tf, self.dl = keys, key, doc, tf, dl
        self.stem_len, self.surface_len = stem_len, surface_len

    def full_keys(self, prefix: bytes, codes: np.ndarray) -> list[bytes]:
        """``prefix`` + the key of each code in ``codes`` (one gather of an object array)."""
        full = np.empty(len(self.keys), object)
        full[:] = list(map(prefix.__add__, self.keys))
        return full[codes].tolist()  # type: ignore[no-any-return]


def _key_bytes(term: str, prefix: bytes) -> bytes:
    """``prefix`` + :func:`_term_bytes` of ``term`` (b"" for a dropped term), uncached
    (the per-term reference the bulk keys below are checked against)."""
    if not term:
        return b""
    raw = term.encode("utf-8")
    return prefix + (raw if len(raw) <= MAX_TERM_BYTES else _term_bytes(term))


#: The key prefixes as ``str`` (the bulk path builds its keys as text and encodes them
#: all at once, see :func:`doc_terms_many`).
_SURFACE_STR = SURFACE_PREFIX.decode()
_SPEAKER_STR = SPEAKER_PREFIX.decode()
_QUESTION_STR = QUESTION_TERM.decode()
#: A term of at most this many characters is at most MAX_TERM_BYTES in UTF-8 (never cut).
_SHORT_CHARS = MAX_TERM_BYTES // 4


def _cut(term: str) -> str:
    """``term`` cut as :func:`_term_bytes` cuts its UTF-8 (its key, as text)."""
    if len(term) <= _SHORT_CHARS:
        return term
    return _term_bytes(term).decode("utf-8")


def _key_str(term: str, prefix: str) -> str:
    """:func:`_key_bytes` as text: ``prefix`` + the cut term ("" for a dropped term).
    UTF-8 keeps the order of code points, so text keys sort as their bytes do."""
    return prefix + _cut(term) if term else ""


def _speaker_keys(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(text index, ``SPEAKER_PREFIX`` key as text) of every distinct speaker word of each
    text, as an int64 array of indices and a list of keys. A label ends at the text's
    first ``:`` (no label character is one), so the words depend only on the text up to
    the character after it: computed once per such head (a conversation has few
    speakers); the rest are C passes."""
    colon = np.fromiter(map(str.find, texts, itertools.repeat(":"), itertools.repeat(0),
                            itertools.repeat(64)), np.int64, len(texts))
    at = np.flatnonzero(colon >= 0)
    if not at.size:
        return np.empty(0, np.int64), []
    ends = np.minimum(colon[at] + 2, 64).tolist()
    heads: list[str] = list(map(operator.getitem, map(texts.__getitem__, at.tolist()),
                                map(slice, ends)))
    memo: dict[str, tuple[str, ...]] = {}
    for head in set(heads):
        memo[head] = tuple(_key_str(w, _SPEAKER_STR)
                           for w in dict.fromkeys(_lexical.speaker_words(head)))
    per = list(map(memo.__getitem__, heads))
    counts = np.fromiter(map(len, per), np.int64, len(per))
    return np.repeat(at, counts), list(itertools.chain.from_iterable(per))


class _StemMemo(dict):  # type: ignore[type-arg]
    """``word -> stem-field key as text`` (:func:`_key_str` of :func:`_lexical.field_stem`;
    "" for a dropped word), kept across batches: the vocabulary recurs, the stemmer is
    Python (see :func:`stem_keys`)."""

    def cache_clear(self) -> None:
        """Forget every entry (as ``functools.lru_cache`` offers; benchmarks use it)."""
        self.clear()


#: Whether every stopword is ASCII letters only (then no other word is one).
_STOP_LETTERS = all(w.isascii() and w.isalpha() for w in _lexical.STOPWORDS)
#: Words whose stem keys the memo keeps before it starts over.
KEY_MEMO_MAX = 1 << 18
_STEM_KEYS = _StemMemo()
#: Words the surface field drops, each mapped to "" (its key: none).
_SURFACE_DROP = dict.fromkeys(
    [w for w in _lexical.SURFACE_STOPWORDS if _lexical.surface_term(w) == ""]
    + [chr(c) for c in range(128) if chr(c).isalpha() and not _lexical.surface_term(chr(c))], "")


def stem_keys(words: list[str]) -> list[str]:
    """The stem-field key (as text; "" when dropped) of each of ``words``, memoised:
    the memo's words in one C pass; of the others, a word that is not ASCII letters
    only (a number, "w123", "café") is its own term (the stemmer leaves it as it is),
    found by C passes, and the rest are stemmed. A memo that would overflow starts
    over (a stream of new numbers costs the vocabulary a re-stem per KEY_MEMO_MAX
    words)."""
    return _batchmemo.lookup(_STEM_KEYS, words, _stem_keys_of, KEY_MEMO_MAX)


def _stem_keys_of(missed: list[str]) -> list[str]:
    """:func:`stem_keys` of words the memo does not hold (distinct)."""
    # a word that is not ASCII letters only is its own stem (Porter stems [a-z]+ words;
    # the "-ly" rule needs such a stem): short (never cut) and not a stopword, its key
    # is the word
    keys = list(missed)
    if _STOP_LETTERS and max(map(len, missed)) <= _SHORT_CHARS:  # (the common case)
        todo: Iterable[int] = itertools.compress(range(len(missed)), map(
            operator.and_, map(str.isascii, missed), map(str.isalpha, missed)))
    else:
        todo = [j for j, w in enumerate(missed) if (w.isascii() and w.isalpha())
                or len(w) > _SHORT_CHARS or w in _lexical.STOPWORDS]
    term = _lexical.field_stem
    for j in todo:
        keys[j] = _key_str(term(missed[j]), "")
    return keys


def surface_keys(words: list[str]) -> list[str]:
    """The surface-field key (as text; "" when dropped) of each of ``words``:
    :func:`_key_str` of :func:`_lexical.surface_term`, in C passes (the field drops a
    fixed set of words and keeps every other as it is)."""
    keys = list(map(_SURFACE_STR.__add__, words))
    if words and max(map(len, words)) > _SHORT_CHARS:
        keys = [_key_str(w, _SURFACE_STR) for w in words]
    return list(map(_SURFACE_DROP.get, words, keys))


def encode_keys(keys: list[str]) -> list[bytes]:
    """The UTF-8 of each text key, in one encode (no key holds a newline)."""
    if not keys:
        return []
    return "\n".join(keys).encode("utf-8").split(b"\n")


def _sorted_codes(keys: list[str]) -> tuple[list[bytes], np.ndarray]:
    """(the distinct non-empty ``keys`` as bytes, sorted; the index of each of ``keys``
    in them, -1 for ""), by one ``np.unique`` of their UTF-8 (a fixed-width bytes array
    sorts as ``bytes`` do: no key ends with a NUL byte)."""
    if not keys:
        return [], np.empty(0, np.int64)
    arr = np.array(encode_keys(keys), dtype=np.bytes_)
    uniq, inv = np.unique(arr, return_inverse=True)
    out: list[bytes] = uniq.tolist()
    inv = inv.reshape(-1).astype(np.int64, copy=False)
    if out[0] == b"":
        del out[0]
        inv = inv - 1
    return out, inv


def doc_terms_many(texts: Sequence[str]) -> BatchTerms:
    """:func:`doc_terms` of every text of a batch, vectorised (one tokeniser pass, term
    counting with numpy): the same keys, frequencies and lengths."""
    n = len(texts)
    distinct, wi, doc = batch_vocab(texts)  # (first-seen order; only codes depend on it)
    comp = _lexical.compounds_many(texts)
    if comp:  # each text's compounds after its words, as _lexical.index_fields has them
        at = dict(zip(distinct, range(len(distinct))))
        distinct = list(distinct)  # (a copy: the vocabulary is shared with the embedder)
        extra = []
        for _i, w in comp:
            j = at.get(w)
            if j is None:
                j = at[w] = len(distinct)
                distinct.append(w)
            extra.append(j)
        wi = np.concatenate([wi, np.asarray(extra, wi.dtype)])
        doc = np.concatenate([doc, np.fromiter((i for i, _ in comp), doc.dtype, len(comp))])
    # every word's key in each field (as text; "" for a dropped word), then the
    # question marker and the speaker words: encoded at once, sorted and numbered by
    # one np.unique of their bytes (no Python sort or dict over the keys)
    sk = stem_keys(distinct)
    uk = surface_keys(distinct)
    asks = _lexical.questions_many(texts)
    spk_doc, spk_keys = _speaker_keys(texts)
    nq = int(asks.any())
    allk = sk + uk
    if nq:
        allk.append(_QUESTION_STR)
    allk.extend(spk_keys)
    keys, codes = _sorted_codes(allk)
    nw = len(sk)
    w_stem, w_surf = codes[:nw], codes[nw:2 * nw]
    sc, uc = w_stem[wi], w_surf[wi]
    s_ok, u_ok = sc >= 0, uc >= 0
    stem_len = np.bincount(doc[s_ok], minlength=n).astype(np.int64)
    surface_len = np.bincount(doc[u_ok], minlength=n).astype(np.int64)
    width = max(n, 1)
    # one sort of every (term code, text) pair: the fields' keys never meet (prefixes)
    combs = [sc[s_ok] * width + doc[s_ok], uc[u_ok] * width + doc[u_ok]]
    qd = np.flatnonzero(asks).astype(np.int64)
    if qd.size:
        combs.append(codes[2 * nw] * width + qd)
    if spk_keys:  # (a text's speaker words are distinct: tf 1)
        combs.append(codes[2 * nw + nq:] * width
                     + spk_doc)
    allc = np.concatenate(combs)
    if len(keys) * width < 1 << 31:  # (a 32-bit sort is faster; the same order)
        allc = allc.astype(np.int32)
    comb, tf = np.unique(allc, return_counts=True)
    comb = comb.astype(np.int64, copy=False)
    key, dc = comb // width, comb % width
    # field of each key code (keys are sorted: each prefix is one range of codes)
    lo = bisect.bisect_left(keys, SURFACE_PREFIX)
    hi = bisect.bisect_left(keys, SPEAKER_PREFIX)
    top = bisect.bisect_left(keys, SPEAKER_PREFIX[:-1] + bytes((SPEAKER_PREFIX[-1] + 1,)))
    dl = stem_len[dc]
    surf = (key >= lo) & (key < hi)
    dl[surf] = surface_len[dc[surf]]
    dl[(key < lo) | ((key >= hi) & (key < top))] = 1  # question marker, speaker words
    return BatchTerms(keys, key, dc, tf.astype(np.int64), dl, stem_len, surface_len)
