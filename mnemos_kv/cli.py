"""The ``mnemos-kv`` command: a thin client of the public API.

    mnemos-kv demo [DIR]                      remember a short agent conversation, ask, print
    mnemos-kv ask PATH "question" [--top-k K] [--namespace NS] [--filter JSON] [--json]
    mnemos-kv get PATH ID [--namespace NS] [--json]    one memory
    mnemos-kv forget PATH ID... [--namespace NS]       delete memories (and their edges)
    mnemos-kv namespaces PATH [--json]        namespaces and their counts
    mnemos-kv dump PATH [--namespace NS] [--vectors]   JSON Lines of the store's state
    mnemos-kv load PATH FILE.jsonl            load a dump into a new store (same state digest)
    mnemos-kv stats PATH [--json]             counts per namespace, file sizes, format
    mnemos-kv verify PATH [--quick]           check records, vectors, columns and log; exit 1 on problems
    mnemos-kv compact PATH [--merge-similar T] [--json] [--no-progress]   recover space
    mnemos-kv export-replay PATH OUT [--namespace NS] [--since-seq N]
    mnemos-kv replay PATH FILE [--resume] [--lenient]
    mnemos-kv migrate SRC DST [--namespace NS] [--no-progress]   copy (or sync) a store's history
    mnemos-kv recover PATH [--to NEW]          rebuild LMDB and vector files from the log
    mnemos-kv mcp PATH [--namespace NS] [--read NS] [--readonly] [--http HOST:PORT]   MCP memory server
    mnemos-kv mcp-import PATH memory.jsonl [--namespace NS]   import a reference memory server's graph
    mnemos-kv mcp-export PATH memory.jsonl [--namespace NS]   write the graph in that format
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from typing import Any, Sequence

from . import __version__
from ._dump import to_json
from ._model import Memory
from ._progress import Reporter
from .errors import InvalidInputError, MemoryNotFoundError, MnemosError
from .store import Mnemos


def _reporter(args: argparse.Namespace) -> Reporter:
    return Reporter(enabled=not getattr(args, "no_progress", False))


def _memory_json(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "namespace": m.namespace, "text": m.text, "metadata": to_json(m.metadata),
            "type": m.type, "created_at": m.created_at, "updated_at": m.updated_at,
            "key": m.key, "score": m.score}


def _print_memory(m: Memory) -> None:
    score = f"{m.score:.3f}  " if m.score is not None else ""
    key = f"  (key {m.key})" if m.key is not None else ""
    print(f"{score}#{m.id}  [{m.namespace}]  {m.text}{key}")


def cmd_dump(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path, readonly=True) as db, _reporter(args) as prog:
        db.dump(sys.stdout, namespaces=[args.namespace] if args.namespace else None,
                vectors=args.vectors, progress=prog)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path) as db, _reporter(args) as prog:
        if args.file == "-":
            n = db.load(sys.stdin, progress=prog)
        else:
            n = db.load(args.file, progress=prog)
        digest = db.state_digest()
    print(f"loaded {n} memories into {args.path}; digest {digest}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    flt = None
    if args.filter is not None:
        try:
            flt = json.loads(args.filter)
        except ValueError as exc:
            raise InvalidInputError(f"--filter is not valid JSON: {exc}") from None
    with Mnemos.open(args.path, readonly=True) as db:
        handle = db.namespace(args.namespace) if args.namespace else db
        hits = handle.ask(args.question, top_k=args.top_k, filter=flt)
    if args.json:
        print(json.dumps([_memory_json(m) for m in hits], ensure_ascii=False, indent=2))
    else:
        for m in hits:
            _print_memory(m)
    return 0


def _find(db: Mnemos, mid: int, namespace: str | None) -> Memory:
    """The memory ``mid`` of ``namespace`` (None: whichever namespace holds it)."""
    names = [namespace] if namespace else db.namespaces()
    for name in names:
        try:
            return db.namespace(name).get(mid)
        except MemoryNotFoundError:
            continue
    where = f"namespace {namespace!r}" if namespace else "any namespace"
    raise MemoryNotFoundError(f"no memory with id {mid} in {where}")


def cmd_get(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path, readonly=True) as db:
        m = _find(db, args.id, args.namespace)
    if args.json:
        print(json.dumps(_memory_json(m), ensure_ascii=False, indent=2))
    else:
        _print_memory(m)
        if m.metadata:
            print(f"  metadata: {json.dumps(to_json(m.metadata), ensure_ascii=False, sort_keys=True)}")
        print(f"  type {m.type}, created {m.created.isoformat()}, updated_at {m.updated_at}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path) as db:
        by_ns: dict[str, list[int]] = {}
        for mid in dict.fromkeys(args.ids):  # every id is found before anything is deleted
            by_ns.setdefault(_find(db, mid, args.namespace).namespace, []).append(mid)
        for name, ids in sorted(by_ns.items()):
            db.namespace(name).forget_many(ids)
    n = sum(len(v) for v in by_ns.values())
    print(f"forgot {n} memor{'y' if n == 1 else 'ies'}")
    return 0


def cmd_namespaces(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path, readonly=True) as db:
        counts = {n: info["count"] for n, info in db.stats()["namespaces"].items()}
    if args.json:
        print(json.dumps(counts, indent=2, sort_keys=True))
    else:
        for name, n in counts.items():
            print(f"{name}\t{n}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ns = args.namespace or None
    with Mnemos.open(args.path, readonly=True) as db, _reporter(args) as prog:
        info = db.export_replay(args.out, namespaces=ns, since_seq=args.since_seq, progress=prog)
    print(f"wrote {info.path}: {info.frames} frames ({info.base_frames} from the base snapshot), "
          f"{info.bytes} bytes, last seq {info.last_seq}, digest {info.digest}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path) as db, _reporter(args) as prog:
        res = db.replay(args.file, strict=not args.lenient, resume=args.resume, progress=prog)
    state = "complete" if res.complete else f"stopped at byte {res.stopped_at} (frame {res.stopped_frame}): {res.error}"
    match = "matches the source" if res.digest_matches else "source digest unknown"
    print(f"applied {res.applied} frames, {state}; digest {res.digest} ({match})")
    return 0 if res.complete else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from ._migrate import migrate
    with _reporter(args) as prog:
        res = migrate(args.src, args.dst, namespaces=args.namespace, progress=prog,
                      workdir=args.workdir)
    if args.json:
        print(json.dumps(dataclasses.asdict(res), indent=2, sort_keys=True))
    elif res.mode == "up-to-date":
        print(f"{res.dst} is up to date with {res.src} (seq {res.seq}); digest {res.digest}")
    else:
        how = "copied" if res.mode == "full" else f"synced from seq {res.since_seq}"
        print(f"{how} {res.src} -> {res.dst}: {res.applied} operations applied, now at seq "
              f"{res.seq}; digest {res.digest} (matches the source)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path, readonly=True) as db, _reporter(args) as prog:
        report = db.verify(deep=not args.quick, progress=prog)
    print(report)
    return 0 if report.ok else 1


def cmd_recover(args: argparse.Namespace) -> int:
    emb = None
    if args.embedder_name or args.dim:
        if not (args.embedder_name and args.dim):
            raise InvalidInputError("--embedder-name and --dim go together")
        from .embedders import resolve
        if args.embedder_name == resolve(None).name and args.dim == resolve(None).dim:
            emb = resolve(None)
        else:
            from ._recover import _StandIn
            emb = _StandIn(args.embedder_name, args.dim)
    rep = Mnemos.recover(args.path, to=args.to, embedder=emb)
    print(rep)
    return 0 if rep.complete else 1


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _limit(lim: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((lim or {}).items()) if v is not None)


def cmd_stats(args: argparse.Namespace) -> int:
    with Mnemos.open(args.path, readonly=True) as db:
        st = db.stats()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print(f"store           {st['path']}")
    print(f"format version  {st['format_version']}")
    print(f"embedder        {st['embedder']['name']} (dim {st['embedder']['dim']})")
    if "slots" in st:
        print(f"memories        {st['total']} live, {st['slots']} slots, generation {st['generation']}")
        print(f"log             segment {st['log']['segment']}, {st['log']['bytes']} bytes, seq {st['seq']}")
    else:  # PostgreSQL: no slots, generations or log files (docs/postgres.md)
        print(f"memories        {st['total']} live")
        print(f"log             seq {st['seq']} (schema {st.get('schema')!r})")
    cap = st["capacity"]
    print(f"evicted         {st['evicted']} by capacity limits"
          + (f"; store limit {_limit(cap['limit'])}" if cap["limit"] else ""))
    print("namespaces      (live, evicted, limit)")
    for name, info in st["namespaces"].items():
        c = cap["namespaces"].get(name, {})
        lim = _limit(c.get("limit")) if c.get("limit") else "-"
        print(f"  {name:<24} {info['count']:>10} {c.get('evicted', 0):>8}  {lim}")
    print("files")
    for name, info in st.get("files", {}).items():
        print(f"  {name:<24} {_human(info['bytes']):>10}  ({_human(info['disk_bytes'])} on disk)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    prog = Reporter(not args.no_progress and not args.json, min_total=0)
    try:
        with Mnemos.open(args.path) as db:
            rep = db.compact(merge_similar=args.merge_similar, progress=prog)
    finally:
        prog.close()
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0
    print(f"compacted {args.path} in {rep['seconds']:.2f} s: {rep['slots_before']} -> "
          f"{rep['slots_after']} slots, merged {rep['merged']}, generation {rep['generation']}")
    print(rep["lmdb_note"])
    before, after = rep["files_before"], rep["files_after"]
    print(f"  {'file':<28} {'before':>12} {'after':>12}   (on disk)")
    for name in sorted(set(before) | set(after)):
        b = _human(before[name]["disk_bytes"]) if name in before else "-"
        a = _human(after[name]["disk_bytes"]) if name in after else "-"
        print(f"  {name:<28} {b:>12} {a:>12}")
    tb = sum(v["disk_bytes"] for v in before.values())
    ta = sum(v["disk_bytes"] for v in after.values())
    print(f"  {'total':<28} {_human(tb):>12} {_human(ta):>12}")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from .mcp import run_args  # lazily: only this command needs the mcp extra
    return run_args(args)


def cmd_mcp_import(args: argparse.Namespace) -> int:
    from ._kgraph import KnowledgeGraph
    with Mnemos.open(args.path) as db:
        rep = KnowledgeGraph(db.namespace(args.namespace)).import_jsonl(args.file)
    print(f"imported {args.file} into {args.path} (namespace {args.namespace}): {rep.entities} "
          f"entities, {rep.observations} observations, {rep.relations} relations created")
    for reason in rep.skipped_lines:
        print(f"  skipped {reason}", file=sys.stderr)
    for r in rep.dangling_relations:
        print(f"  skipped relation {r['from']} -{r['relationType']}-> {r['to']}: an end is not an entity",
              file=sys.stderr)
    return 0


def cmd_mcp_export(args: argparse.Namespace) -> int:
    from ._kgraph import KnowledgeGraph
    with Mnemos.open(args.path, readonly=True) as db:
        lines = KnowledgeGraph(db.namespace(args.namespace)).export_jsonl(args.file)
    print(f"wrote {args.file}: {lines} lines (namespace {args.namespace})")
    return 0


DEMO_CONVERSATION = [
    ("user", "Let's settle billing: we chose Stripe for payments, PayPal was too expensive."),
    ("agent", "Noted. The invoices will be sent on the first of every month."),
    ("user", "The office moves to Berlin in March; book movers for the 14th."),
    ("agent", "Movers are booked with UmzugsProfi for March 14th."),
    ("user", "Our main database is PostgreSQL 16, hosted on a single VM."),
    ("user", "Alice leads the mobile app; Bob owns the backend APIs."),
    ("agent", "Reminder: the SOC 2 audit starts on June 2nd."),
    ("user", "We deploy on Tuesdays and Thursdays, never on Fridays."),
    ("user", "The team lunch is on Wednesday at the Thai place downstairs."),
    ("agent", "The customer churn rate last quarter was 3.2 percent."),
]

DEMO_QUESTIONS = [
    "What payment provider did we choose?",
    "When is the office move?",
    "Who is responsible for the backend?",
    "Which days do we deploy?",
]


def cmd_demo(args: argparse.Namespace) -> int:
    root = args.dir or tempfile.mkdtemp(prefix="mnemos-demo-")
    path = os.path.join(root, "agent.mem")
    ticks = iter(range(1_767_225_600, 1_767_225_600 + 10_000, 60))  # a fixed, injectable clock
    with Mnemos.open(path, clock=lambda: float(next(ticks))) as db:
        if db.count() == 0:
            ids = db.remember_many([{"text": f"{who}: {text}", "metadata": {"speaker": who}}
                                    for who, text in DEMO_CONVERSATION])
            db.connect(ids[2], ids[3], relation="follow-up")
            db.namespace("critic").remember("critic: the Berlin move plan lacks a budget")
        print(f"store: {path}  ({db.count()} memories)\n")
        for q in DEMO_QUESTIONS:
            print(f"Q: {q}")
            for m in db.ask(q, top_k=2):
                print(f"   {m.score:.3f}  #{m.id}  {m.text}")
            print()
        critic = db.namespace("critic", read=["default"])
        print("critic asks its own and the shared memories: 'Berlin move'")
        for m in critic.ask("Berlin move", top_k=2, namespaces=["critic", "default"]):
            print(f"   {m.score:.3f}  #{m.id}  [{m.namespace}]  {m.text}")
        replay = os.path.join(root, "run.replay")
        info = db.export_replay(replay)
        digest = db.state_digest()
    copy_path = os.path.join(root, "copy.mem")
    if not os.path.exists(copy_path):
        with Mnemos.open(copy_path) as copy:
            result = copy.replay(replay)
        same = "same state" if result.digest_matches and result.digest == digest else "DIFFERENT"
        print(f"\nexported {info.frames} operations to {replay}; replayed into {copy_path}: "
              f"{same} (digest {digest[:16]}...)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnemos-kv", description="Admin tool for mnemos-kv stores.")
    p.add_argument("--version", action="version", version=f"mnemos-kv {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("ask", help="the memories most relevant to a question")
    a.add_argument("path", help="store directory")
    a.add_argument("question", help="the question (text)")
    a.add_argument("--top-k", type=int, default=5, help="how many (default 5)")
    a.add_argument("--namespace", help="ask this namespace (default: default)")
    a.add_argument("--filter", help='a metadata filter as JSON, e.g. \'{"n": {"$gt": 1}}\'')
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=cmd_ask)

    g = sub.add_parser("get", help="print one memory")
    g.add_argument("path", help="store directory")
    g.add_argument("id", type=int, help="memory id")
    g.add_argument("--namespace", help="its namespace (default: whichever holds it)")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.set_defaults(func=cmd_get)

    f = sub.add_parser("forget", help="delete memories and their edges")
    f.add_argument("path", help="store directory")
    f.add_argument("ids", type=int, nargs="+", metavar="ID", help="memory ids")
    f.add_argument("--namespace", help="their namespace (default: whichever holds each)")
    f.set_defaults(func=cmd_forget)

    n = sub.add_parser("namespaces", help="list namespaces and their counts")
    n.add_argument("path", help="store directory")
    n.add_argument("--json", action="store_true", help="machine-readable output")
    n.set_defaults(func=cmd_namespaces)

    d = sub.add_parser("dump", help="print the store's state as JSON Lines (see load)")
    d.add_argument("path", help="store directory")
    d.add_argument("--namespace", help="only this namespace")
    d.add_argument("--vectors", action="store_true", help="include each memory's vector")
    d.add_argument("--no-progress", action="store_true", help="no progress output")
    d.set_defaults(func=cmd_dump)

    lo = sub.add_parser("load", help="load a dump into a new, empty store")
    lo.add_argument("path", help="store directory (created if missing; must be empty)")
    lo.add_argument("file", help="a dump (JSON Lines) from `mnemos-kv dump`; - for stdin")
    lo.add_argument("--no-progress", action="store_true", help="no progress output")
    lo.set_defaults(func=cmd_load)

    s = sub.add_parser("stats", help="counts per namespace, file sizes, format version")
    s.add_argument("path", help="store directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_stats)

    e = sub.add_parser("export-replay", help="write a replay file of the store's history")
    e.add_argument("path", help="store directory")
    e.add_argument("out", help="replay file to write")
    e.add_argument("--namespace", action="append", help="only this namespace (repeatable)")
    e.add_argument("--since-seq", type=int, default=None, help="only operations after this seq")
    e.add_argument("--no-progress", action="store_true", help="no progress output")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("replay", help="apply a replay file to a (new) store")
    r.add_argument("path", help="store directory (created if missing; must be empty unless --resume)")
    r.add_argument("file", help="replay file")
    r.add_argument("--resume", action="store_true", help="continue a store from an incremental export")
    r.add_argument("--lenient", action="store_true",
                   help="apply the intact prefix of a damaged file instead of refusing it")
    r.add_argument("--no-progress", action="store_true", help="no progress output")
    r.set_defaults(func=cmd_replay)

    mg = sub.add_parser("migrate", help="copy a store's history into another store, or bring "
                        "an earlier copy up to date (paths or postgresql:// URLs)")
    mg.add_argument("src", help="source store: a directory or a postgresql:// URL")
    mg.add_argument("dst", help="destination store (created if missing): empty, or an earlier "
                    "copy of SRC, which gets only the operations it lacks")
    mg.add_argument("--namespace", action="append",
                    help="only this namespace (repeatable; into an empty DST only)")
    mg.add_argument("--workdir", default=None,
                    help="directory for the temporary replay file (default: next to a local "
                    "store, else the temp dir)")
    mg.add_argument("--json", action="store_true", help="machine-readable report")
    mg.add_argument("--no-progress", action="store_true", help="no progress output")
    mg.set_defaults(func=cmd_migrate)

    v = sub.add_parser("verify", help="check records, vectors, slot columns and log against each other")
    v.add_argument("path", help="store directory")
    v.add_argument("--quick", action="store_true", help="skip comparing logged vectors with stored ones")
    v.add_argument("--no-progress", action="store_true", help="no progress output")
    v.set_defaults(func=cmd_verify)

    rc = sub.add_parser("recover", help="rebuild a damaged store from its base snapshot and log")
    rc.add_argument("path", help="store directory")
    rc.add_argument("--to", default=None, metavar="NEW",
                    help="write the rebuilt store to NEW and leave PATH untouched")
    rc.add_argument("--embedder-name", default=None,
                    help="the store's embedder name (only when data.mdb cannot say)")
    rc.add_argument("--dim", type=int, default=None, help="the store's vector dimension (with --embedder-name)")
    rc.set_defaults(func=cmd_recover)

    c = sub.add_parser("compact", help="recover the space of forgotten and evicted memories")
    c.add_argument("path", help="store directory")
    c.add_argument("--merge-similar", type=float, default=None, metavar="T",
                   help="first merge near-duplicates with cosine similarity >= T (0 < T <= 1)")
    c.add_argument("--json", action="store_true", help="machine-readable report")
    c.add_argument("--no-progress", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_compact)

    q = sub.add_parser("mcp", help="serve the store to MCP clients (needs mnemos-kv[mcp])")
    _mcp_arguments(q)
    q.set_defaults(func=cmd_mcp)

    i = sub.add_parser("mcp-import", help="import a reference MCP memory server's memory.jsonl")
    i.add_argument("path", help="store directory (created if missing)")
    i.add_argument("file", help="the reference server's memory.jsonl")
    i.add_argument("--namespace", default="default", help="namespace to import into (default: default)")
    i.set_defaults(func=cmd_mcp_import)

    x = sub.add_parser("mcp-export", help="write the knowledge graph as a reference memory.jsonl")
    x.add_argument("path", help="store directory")
    x.add_argument("file", help="the memory.jsonl to write")
    x.add_argument("--namespace", default="default", help="namespace to export (default: default)")
    x.set_defaults(func=cmd_mcp_export)

    m = sub.add_parser("demo", help="create a store, remember a short conversation, ask questions")
    m.add_argument("dir", nargs="?", help="folder for the demo store (default: a new temp folder)")
    m.set_defaults(func=cmd_demo)
    return p


def _mcp_arguments(p: argparse.ArgumentParser) -> None:
    """``mnemos-kv mcp``'s options (defined without importing the mcp SDK)."""
    from .mcp import add_arguments
    add_arguments(p)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except MnemosError as exc:
        print(f"mnemos-kv: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # (an OSError: before the clause below)
        return 0
    except OSError as exc:  # a file the user named: missing, unreadable, a full disk
        print(f"mnemos-kv: error: {exc}", file=sys.stderr)
        return 1


#: Commands that read every page of a store that may be damaged: run in a child process,
#: so that even a crash inside LMDB (a signal) becomes an error report.
GUARDED = frozenset({"verify", "dump"})


def _run_guarded(args: argparse.Namespace) -> int:
    """Run the command in a forked child; its output is copied through, a signal reported."""
    import signal
    import threading
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    er, ew = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into the caller
        code = 1
        try:
            os.close(r)
            os.close(er)
            sys.stdout = os.fdopen(w, "w", encoding="utf-8")
            sys.stderr = os.fdopen(ew, "w", encoding="utf-8")
            code = _run(args)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001 - report anything, then leave
            try:
                import traceback
                traceback.print_exc()
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(w)
    os.close(ew)
    err: list[bytes] = []
    t = threading.Thread(target=lambda: err.append(_read_all(er)), daemon=True)
    t.start()
    broken = False
    with os.fdopen(r, "rb") as child_out:
        for chunk in iter(lambda: child_out.read1(1 << 16), b""):
            if broken:
                continue
            try:
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
            except BrokenPipeError:
                broken = True
    t.join()
    _, status = os.waitpid(pid, 0)
    sys.stderr.write(b"".join(err).decode("utf-8", errors="replace"))
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        print(f"mnemos-kv: error: {args.command} of {args.path} died of {sig} while reading the "
              f"store: a file of it is damaged in a way the checks did not catch. Rebuild the "
              f"store with `mnemos-kv recover {args.path}` (or --to NEW to keep this copy)",
              file=sys.stderr)
        return 1
    return 0 if broken else os.WEXITSTATUS(status)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in GUARDED and hasattr(os, "fork"):
        return _run_guarded(args)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
