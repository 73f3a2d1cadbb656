"""Concurrency benchmark: reader latency under writer load, ingest throughput per durability mode.

Part 1 - readers under load. A store of N memories (dim 384, precomputed vectors, so
embedding costs nothing) is asked ``top_k=10`` in a loop by reader processes, while 0,
1 and 2 writer processes remember flat out (single ``remember`` calls, durability
"full", into their own namespaces), then idle again. Reports ask p50/p99 per phase.
Target (issue 5): reader p99 under load within 2x of idle.

Part 2 - ingest throughput, in a fresh store per row: single ``remember`` calls and
``db.batch()`` of 100, in each durability mode, with 1 and 2 writer processes.

Run from the bench folder: ``python concurrency_bench.py [--n 20000] [--phase-s 2.5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from _common import PrecomputedEmbedder, median, pct, table

from mnemos_kv import Mnemos

DIM = 384
HERE = os.path.dirname(os.path.abspath(__file__))
POOL = 30_000  # precomputed vectors; writers cycle through them (text "mem-<k % POOL>")


def _emb() -> PrecomputedEmbedder:
    return PrecomputedEmbedder(POOL, DIM)


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(HERE, "concurrency_bench.py"), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE,
                            env=None if env is None else {**os.environ, **env})


def _ask(proc: subprocess.Popen, line: str) -> Any:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


# -- child roles ---------------------------------------------------------------------------


def role_reader(path: str, seed: int) -> None:
    """Answer 'measure SECONDS' with the ask latencies (ms) of that window."""
    emb = _emb()
    with Mnemos.open(path, embedder=emb, readonly=True) as db:
        for i in range(50):  # warm up
            db.ask(f"query-{i % 200}", top_k=10)
        print(json.dumps({"ready": True}), flush=True)
        q = seed
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd != "measure":
                break
            lat = []
            t_end = time.perf_counter() + float(arg)
            while time.perf_counter() < t_end:
                t = time.perf_counter()
                db.ask(f"query-{q % 200}", top_k=10)
                lat.append((time.perf_counter() - t) * 1000)
                q += 1
            print(json.dumps({"lat": lat, "slots": db.stats()["slots"]}), flush=True)


def role_writer(path: str, idx: int, durability: str, mode: str, seconds: float, first: int) -> None:
    """Write flat out for ``seconds`` (or, when seconds <= 0, until stdin closes)."""
    emb = _emb()
    stop = threading.Event()
    if seconds <= 0:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with Mnemos.open(path, embedder=emb, durability=durability) as db:
        ns = db.namespace(f"ingest_{idx}")
        k, n = first, 0
        print(json.dumps({"ready": True}), flush=True)
        t0 = time.perf_counter()
        stop_at = t0 + seconds if seconds > 0 else float("inf")
        while not stop.is_set() and time.perf_counter() < stop_at:
            if mode == "batch":
                with ns.batch() as b:
                    for _ in range(100):
                        b.remember(f"mem-{k % POOL}")
                        k += 1
                n += 100
            else:
                ns.remember(f"mem-{k % POOL}")
                k += 1
                n += 1
        dt = time.perf_counter() - t0
    print(json.dumps({"n": n, "s": dt}), flush=True)


def role_control(path: str, kind: str) -> None:
    """Load without mnemos-kv, until stdin closes: ``fsync`` does a durable write's I/O
    (three 2 KiB appends, each fdatasync'ed) in a loop; ``cpu`` burns a core."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    n, t0 = 0, time.perf_counter()
    if kind == "fsync":
        fds = [os.open(f"{path}.control{i}", os.O_RDWR | os.O_CREAT, 0o644) for i in range(3)]
        off = 0
        while not stop.is_set():
            for fd in fds:
                os.pwrite(fd, b"x" * 2048, off)
                os.fdatasync(fd)
            off += 2048
            n += 1
        for fd in fds:
            os.close(fd)
    else:
        while not stop.is_set():
            n += 1
    print(json.dumps({"n": n if kind == "fsync" else 0, "s": time.perf_counter() - t0}), flush=True)


# -- the parent ----------------------------------------------------------------------------


def build_store(path: str, n: int) -> None:
    emb = _emb()
    with Mnemos.open(path, embedder=emb, clock=lambda: 1_767_225_600.0) as db:
        for start in range(0, n, 5000):
            db.remember_many([f"mem-{i}" for i in range(start, min(n, start + 5000))])


def _reset(path: str) -> None:
    """Forget what the writers added and compact: every phase sees the same store."""
    with Mnemos.open(path, embedder=_emb()) as db:
        for name in db.namespaces():
            if name.startswith("ingest_"):
                ns = db.namespace(name)
                ids = [m.id for m in ns.memories()]
                for i in range(0, len(ids), 5000):
                    ns.forget_many(ids[i:i + 5000])
        db.compact()


def _measure(rs: list[subprocess.Popen], seconds: float) -> list[dict[str, Any]]:
    for r in rs:
        r.stdin.write(f"measure {seconds}\n")  # type: ignore[union-attr]
        r.stdin.flush()  # type: ignore[union-attr]
    return [json.loads(r.stdout.readline()) for r in rs]  # type: ignore[union-attr]


#: (label, writer processes as (durability), control processes as (kind))
PHASES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("idle", (), ()),
    ("1 writer", ("full",), ()),
    ("2 writers", ("full", "full"), ()),
    ("2 writers, fast mode", ("fast", "fast"), ()),
    ("control: 1 fsync loop, no mnemos", (), ("fsync",)),
    ("control: 1 CPU burner, no mnemos", (), ("cpu",)),
)


def reader_phases(root: str, n: int, phase_s: float, readers: int, rounds: int,
                  blas_threads: int) -> list[dict[str, Any]]:
    """Rounds of the phases; latencies pooled per phase over the rounds."""
    path = os.path.join(root, "readers.mem")
    build_store(path, n)
    env = None
    if blas_threads:
        env = {v: str(blas_threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                              "MKL_NUM_THREADS")}
    rs = [_spawn("--role", "reader", "--path", path, "--seed", str(17 * i), env=env)
          for i in range(readers)]
    for r in rs:
        assert json.loads(r.stdout.readline())["ready"]  # type: ignore[union-attr]
    pooled: dict[str, dict[str, Any]] = {p: {"lat": [], "writes": 0.0, "slots": 0} for p, _, _ in PHASES}
    for _round in range(rounds):
        for label, writers, controls in PHASES:
            ws = []
            for i, durability in enumerate(writers):
                w = _spawn("--role", "writer", "--path", path, "--idx", str(i), "--durability",
                           durability, "--mode", "single", "--seconds", "0", "--first", str(n))
                assert json.loads(w.stdout.readline())["ready"]  # type: ignore[union-attr]
                ws.append(w)
            for kind in controls:
                w = _spawn("--role", "control", "--path", path, "--mode", kind)
                assert json.loads(w.stdout.readline())["ready"]  # type: ignore[union-attr]
                ws.append(w)
            if ws:
                time.sleep(0.3)  # writers at full speed
            res = _measure(rs, phase_s)
            for w in ws:
                w.stdin.close()  # type: ignore[union-attr]
                out = json.loads(w.stdout.readline())  # type: ignore[union-attr]
                pooled[label]["writes"] += out["n"] / out["s"] / rounds
                w.wait()
            pooled[label]["lat"].extend(x for r in res for x in r["lat"])
            pooled[label]["slots"] = max(pooled[label]["slots"], *(r["slots"] for r in res))
            if writers:
                _reset(path)
                _measure(rs, 0.3)  # the readers move to the compacted generation (discarded)
    for r in rs:
        r.stdin.close()  # type: ignore[union-attr]
        r.wait()
    return [{"phase": label, "asks": len(v["lat"]), "p50": median(v["lat"]), "p99": pct(v["lat"], 99),
             "writes_per_s": v["writes"], "slots": v["slots"]} for label, v in pooled.items()]


def throughput(root: str, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for durability in ("full", "fast"):
        for mode in ("single", "batch"):
            for procs in (1, 2):
                path = os.path.join(root, f"tp-{durability}-{mode}-{procs}.mem")
                Mnemos.open(path, embedder=_emb()).close()
                ws = [_spawn("--role", "writer", "--path", path, "--idx", str(i), "--durability",
                             durability, "--mode", mode, "--seconds", str(seconds),
                             "--first", str(i * 150_000)) for i in range(procs)]
                for w in ws:
                    assert json.loads(w.stdout.readline())["ready"]  # type: ignore[union-attr]
                outs = [json.loads(w.stdout.readline()) for w in ws]  # type: ignore[union-attr]
                for w in ws:
                    w.stdin.close()  # type: ignore[union-attr]
                    w.wait()
                with Mnemos.open(path, embedder=_emb(), readonly=True) as db:
                    assert db.stats()["total"] == sum(o["n"] for o in outs)
                rows.append({"durability": durability, "mode": mode, "procs": procs,
                             "per_s": sum(o["n"] / o["s"] for o in outs)})
                shutil.rmtree(path, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--idx", type=int, default=0)
    ap.add_argument("--durability", default="full")
    ap.add_argument("--mode", default="single")
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--n", type=int, default=20_000, help="memories in the readers' store")
    ap.add_argument("--readers", type=int, default=1)
    ap.add_argument("--phase-s", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="BLAS threads in reader processes (0: numpy's default)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--tp-s", type=float, default=1.5)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if args.role == "reader":
        return role_reader(args.path, args.seed)
    if args.role == "writer":
        return role_writer(args.path, args.idx, args.durability, args.mode, args.seconds, args.first)
    if args.role == "control":
        return role_control(args.path, args.mode)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]

    root = tempfile.mkdtemp(prefix="mnemos-cbench-", dir=os.environ.get("BENCH_DIR"))
    try:
        phases = reader_phases(root, args.n, args.phase_s, args.readers, args.rounds,
                               args.blas_threads)
        tput = [] if args.no_throughput else throughput(root, args.tp_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    idle = phases[0]["p99"]
    blas = f"{args.blas_threads} BLAS thread(s)" if args.blas_threads else "numpy's default BLAS threads"
    print(f"Readers under load: {args.readers} reader process(es) ({blas}) asking top-10 in a "
          f"loop over {args.n:,} memories (dim {DIM}); writers remember flat out; {args.rounds} "
          f"rounds of the phases, {args.phase_s} s each, latencies pooled; the store is reset "
          f"(forget + compact) after each phase with writers; {os.cpu_count()} CPUs; load average "
          f"before: {load0:.2f}.\n")
    print(table(["phase", "asks", "ask p50 ms", "ask p99 ms", "p99 / idle p99", "writes/s", "max slots"],
                [[p["phase"], p["asks"], f"{p['p50']:.2f}", f"{p['p99']:.2f}", f"{p['p99'] / idle:.2f}x",
                  f"{p['writes_per_s']:,.0f}", f"{p['slots']:,}"] for p in phases]))
    print("\ntarget: reader p99 under load within 2x of idle. The control rows load the machine "
          "without mnemos-kv (no shared lock, no shared file): what they cost the reader is the "
          "machine's, not the store's.\n")
    if tput:
        print(f"Ingest throughput: fresh store per row, {args.tp_s} s per writer process.\n")
        print(table(["durability", "calls", "writer procs", "memories/s (all procs)"],
                    [[t["durability"], "remember" if t["mode"] == "single" else "batch of 100",
                      t["procs"], f"{t['per_s']:,.0f}"] for t in tput]))
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"phases": phases, "throughput": tput}, f, indent=2)


if __name__ == "__main__":
    main()
