"""Write-API benchmark (issue 11): update, upsert, drop_namespace, dump/load, and ask
after updates, each next to a reference measured in the same run.

* ``update`` (new text, re-embedded; metadata only) and ``upsert`` (replace) latency,
  next to a single durable ``remember`` (the same kind of one-op write);
* ``drop_namespace`` of n memories (one op) next to ``forget_many`` of the same n;
* ``ask`` top-10 after 10% of the memories were updated (slot ids out of order: ids map
  to slots through the incremental index) next to the same store after ``compact()``
  (slot ids ascending again: a binary search);
* ``dump`` (with vectors) and ``load`` of the whole store next to ``export_replay`` /
  ``replay`` of the same store.

Figures and ratios are printed and written to bench/results/write_api_bench.md.
Run: ``python bench/write_api_bench.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import tempfile
import time

from _common import PrecomputedEmbedder, median, pct, table, timeit

from mnemos_kv import Mnemos

DIM = 384
T0 = 1_767_225_600.0


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--ops", type=int, default=200, help="single writes timed per kind")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "write_api_bench.md"))
    args = ap.parse_args()
    n, k = args.n, args.ops
    emb = PrecomputedEmbedder(n + 4 * k + 10, dim=DIM)
    root = tempfile.mkdtemp(prefix="mnemos-write-bench-")
    rows: list[list[object]] = []
    try:
        path = os.path.join(root, "s.mem")
        with Mnemos.open(path, embedder=emb, clock=lambda: T0) as db:
            db.remember_many([{"text": f"mem-{i}", "metadata": {"i": i}} for i in range(n)])
            nxt = iter(range(n, n + 4 * k))
            rem = timeit(lambda: db.remember(f"mem-{next(nxt)}"), k)
            ids = list(range(1, k + 1))
            it_text = iter(zip(ids, range(n + k, n + 2 * k)))

            def new_text() -> None:
                mid, j = next(it_text)
                db.update(mid, text=f"mem-{j}")
            upd_text = timeit(new_text, k)
            it_meta = iter(ids)
            upd_meta = timeit(lambda: db.update(next(it_meta), metadata={"changed": True}), k)
            for i in range(k):
                db.upsert(f"key-{i}", f"mem-{n + 2 * k + i}")
            it_up = iter(range(k))
            ups = timeit(lambda: db.upsert(f"key-{(j := next(it_up))}", f"mem-{n + 3 * k + j}",
                                           {"v": 2}), k)
            ref = median(rem)
            for name, xs in (("remember (reference)", rem), ("update(text=...)", upd_text),
                             ("update(metadata=...)", upd_meta), ("upsert (replace)", ups)):
                rows.append([name, ms(median(xs)), ms(pct(xs, 95)), f"{median(xs) / ref:.2f}x"])

            # ask after 10% updates (unsorted slot ids), then after compaction
            for start in range(k + 1, n // 10, 2000):
                with db.batch() as b:
                    for mid in range(start, min(start + 2000, n // 10)):
                        b.update(mid, metadata={"i": mid, "u": 1})
            qs = iter(range(10_000))
            ask_unsorted = timeit(lambda: db.ask(f"query-{next(qs) % 200}", top_k=10), 200)
            db.compact()
            ask_sorted = timeit(lambda: db.ask(f"query-{next(qs) % 200}", top_k=10), 200)
            rows.append(["ask top-10, after compact (reference)", ms(median(ask_sorted)),
                         ms(pct(ask_sorted, 95)), "1.00x"])
            rows.append(["ask top-10, 10% updated (unsorted ids)", ms(median(ask_unsorted)),
                         ms(pct(ask_unsorted, 95)), f"{median(ask_unsorted) / median(ask_sorted):.2f}x"])

            # dump/load vs export/replay of the same store
            buf = io.StringIO()
            t = time.perf_counter()
            db.dump(buf, vectors=True)
            t_dump = time.perf_counter() - t
            t = time.perf_counter()
            db.export_replay(os.path.join(root, "r.rpl"))
            t_export = time.perf_counter() - t
            digest = db.state_digest()
        with Mnemos.open(os.path.join(root, "loaded.mem"), embedder=emb) as dst:
            t = time.perf_counter()
            dst.load(buf.getvalue().splitlines())
            t_load = time.perf_counter() - t
            assert dst.state_digest() == digest, "dump -> load changed the state"
        with Mnemos.open(os.path.join(root, "replayed.mem"), embedder=emb) as dst:
            t = time.perf_counter()
            dst.replay(os.path.join(root, "r.rpl"))
            t_replay = time.perf_counter() - t
        rows.append(["export_replay (reference)", ms(t_export), "", "1.00x"])
        rows.append(["dump, with vectors", ms(t_dump), "", f"{t_dump / t_export:.2f}x"])
        rows.append(["replay (reference)", ms(t_replay), "", "1.00x"])
        rows.append(["load", ms(t_load), "", f"{t_load / t_replay:.2f}x"])

        # drop_namespace vs forget_many of the same n
        for how in ("forget_many", "drop_namespace"):
            p = os.path.join(root, f"{how}.mem")
            with Mnemos.open(p, embedder=emb, clock=lambda: T0) as db:
                ns = db.namespace("victim")
                got = ns.remember_many([{"text": f"mem-{i}", "metadata": {"i": i}} for i in range(n)])
                db.remember("mem-0")
                t = time.perf_counter()
                if how == "forget_many":
                    ns.forget_many(got)
                else:
                    db.drop_namespace("victim")
                rows.append([f"{how} of {n} memories", ms(time.perf_counter() - t), "", ""])
        fm, dn = float(rows[-2][1].split()[0]), float(rows[-1][1].split()[0])
        rows[-2][3], rows[-1][3] = "1.00x", f"{dn / fm:.2f}x"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    headers = ["what", "median", "p95", "ratio to its reference"]
    note = (f"n = {n} memories, dim {DIM}, precomputed vectors, durability full; {k} single "
            f"writes per kind. {platform.platform()}, python {platform.python_version()}. "
            "Ratios are against the reference row just above each group, measured in the "
            "same run; machine load changes the absolute figures.")
    print(table(headers, rows))
    print("\n" + note)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("# write_api_bench\n\n" + table(headers, rows) + "\n\n" + note + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
