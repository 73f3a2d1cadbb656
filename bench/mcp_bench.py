"""MCP server benchmark: tool-call latency over stdio, 1 and 4 concurrent clients.

A store of ~10k memories is built from LoCoMo (``/work/shared/data/locomo``): each dialog
turn becomes an entity (``"<conversation>/<dia_id>"``, type = speaker) with two
observations (the utterance and its session/date), through the knowledge-graph tools'
own code, until three quarters of the target; plain ``remember``-style memories of the
turns fill the rest. Then C = 1 and 4 clients each start their own stdio server
(``python -m mnemos_kv.mcp PATH``, a real MCP session over pipes) and, all at once, call
``ask`` (top_k 5, LoCoMo questions), ``search_nodes`` (limit 10) and ``create_entities``
(one new entity with two observations, durable) ``--calls`` times each, and ``stats``
(almost no work: the floor of a round trip). Reported:
per-call latency p50/p99 seen by the client, and the same operation run in-process
(``MemoryServer.call``, no protocol, no pipes) as the reference for the overhead. The calls are split into interleaved rounds
(each tool in turn, the in-process reference in the same rounds), so a change of machine
load hits every row alike.

Run from the repository root: ``python bench/mcp_bench.py [--memories 10000] [--calls 100]``;
writes bench/results/mcp_bench.md.
"""

from __future__ import annotations

import os

# One BLAS thread in the bench process and in every server (set before numpy loads): with
# several processes on 2 CPUs this is the deployment docs/mcp.md recommends.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import pct, table  # noqa: E402

import anyio  # noqa: E402  (mcp extra)
from mcp import Client, StdioServerParameters  # noqa: E402

from locomo_bench import load_locomo  # noqa: E402
from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv._kgraph import KnowledgeGraph  # noqa: E402
from mnemos_kv.mcp import MemoryServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCOMO = Path(os.environ.get("LOCOMO", "/work/shared/data/locomo/locomo_dev.json"))
TOOLS = ("ask", "search_nodes", "create_entities", "stats")  # stats: the round-trip floor


def build_store(path: str, target: int) -> tuple[int, list[str]]:
    """~``target`` memories from LoCoMo; returns (memories, questions)."""
    convs = load_locomo(LOCOMO)
    turns = [(c.sample_id, t) for c in convs for t in c.turns]
    questions = [q for c in convs for q in c.questions]
    with Mnemos.open(path) as db:
        kg = KnowledgeGraph(db.namespace("default"))
        entities, k = [], 0
        while 3 * len(entities) < target * 3 // 4:
            sample, t = turns[k % len(turns)]
            rnd = k // len(turns)
            speaker, _, said = t["text"].partition(": ")
            name = f"{sample}/{t['metadata']['dia_id']}" + (f"#{rnd}" if rnd else "")
            entities.append({"name": name, "entityType": speaker,
                             "observations": [said or t["text"],
                                              f"said in session {t['metadata']['session']} on "
                                              f"{t['metadata']['date']}" + (f" (copy {rnd})" if rnd else "")]})
            k += 1
        for i in range(0, len(entities), 500):
            kg.create_entities(entities[i:i + 500])
        rest = target - 3 * len(entities)
        plain = [{"text": turns[j % len(turns)][1]["text"] + (f" (copy {j // len(turns)})" if j >= len(turns) else ""),
                  "metadata": {"conversation": turns[j % len(turns)][0]}} for j in range(rest)]
        for i in range(0, len(plain), 1000):
            db.remember_many(plain[i:i + 1000])
        return db.count(), questions


def args_for(tool: str, client: int, i: int, questions: list[str]) -> dict[str, Any]:
    if tool == "ask":
        return {"query": questions[(client * 997 + i) % len(questions)], "top_k": 5}
    if tool == "stats":
        return {}
    if tool == "search_nodes":
        return {"query": questions[(client * 991 + i * 7) % len(questions)], "limit": 10}
    name = f"bench-c{client}-{i}-{time.monotonic_ns()}"
    return {"entities": [{"name": name, "entityType": "bench",
                          "observations": [f"{name} was created by the benchmark", "it has two facts"]}]}


def timed_in_process(srv: MemoryServer, tool: str, calls: int, start: int, questions: list[str],
                     out: list[float]) -> None:
    for i in range(start, start + calls):
        a = args_for(tool, 98, i, questions)
        t0 = time.perf_counter()
        srv.call(tool, a)
        out.append(time.perf_counter() - t0)


async def over_stdio(path: str, n_clients: int, calls: int, rounds: int, questions: list[str],
                     srv: MemoryServer, ref: dict[str, list[float]]) -> dict[str, list[float]]:
    """``calls`` per tool per client, in ``rounds`` interleaved rounds; each round also
    times ``calls / rounds`` in-process calls per tool (into ``ref``), so the reference
    sees the same machine load as the stdio calls."""
    out: dict[str, list[float]] = {t: [] for t in TOOLS}
    params = StdioServerParameters(command=sys.executable, args=["-m", "mnemos_kv.mcp", path],
                                   env={"PYTHONPATH": str(ROOT),
                                        "OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"]},
                                   cwd=str(ROOT))
    clients = [Client(params) for _ in range(n_clients)]
    for c in clients:
        await c.__aenter__()
    try:
        for c in clients:  # warm-up: first calls load the lexical index, numpy paths
            for tool in TOOLS:
                for i in range(3):
                    r = await c.call_tool(tool, args_for(tool, 50, i, questions))
                    assert not r.is_error, r.content[0].text
        per = calls // rounds
        for rnd in range(rounds):
            for tool in TOOLS:
                timed_in_process(srv, tool, per, (n_clients * rounds + rnd) * per, questions, ref[tool])

                async def run(ci: int, c: Client, tool: str = tool) -> None:
                    for i in range(rnd * per, (rnd + 1) * per):
                        a = args_for(tool, ci, i, questions)
                        t0 = time.perf_counter()
                        r = await c.call_tool(tool, a)
                        out[tool].append(time.perf_counter() - t0)
                        assert not r.is_error, r.content[0].text
                async with anyio.create_task_group() as tg:
                    for ci, c in enumerate(clients):
                        tg.start_soon(run, ci, c)
    finally:
        for c in reversed(clients):
            await c.__aexit__(None, None, None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--memories", type=int, default=10_000)
    p.add_argument("--calls", type=int, default=100, help="calls per tool per client")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls are split into")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "mcp_bench.md"))
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="mnemos-mcpbench-", dir=os.environ.get("BENCH_DIR"))
    try:
        path = os.path.join(root, "mcp.mem")
        t0 = time.perf_counter()
        n, questions = build_store(path, a.memories)
        build_s = time.perf_counter() - t0
        ref: dict[str, list[float]] = {t: [] for t in TOOLS}
        with Mnemos.open(path) as db:
            srv = MemoryServer(db)
            for tool in TOOLS:  # warm-up, as the servers get
                timed_in_process(srv, tool, 3, 10_000, questions, [])
            runs = {c: anyio.run(over_stdio, path, c, a.calls, a.rounds, questions, srv, ref)
                    for c in (1, 4)}
        with Mnemos.open(path, readonly=True) as db:
            final = db.count()
            assert db.verify(deep=False).ok
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = 1000.0
    rows = []
    for tool in TOOLS:
        r50, r99 = pct(ref[tool], 50) * ms, pct(ref[tool], 99) * ms
        rows.append([tool, "in-process (reference)", len(ref[tool]), f"{r50:.2f}", f"{r99:.2f}", "1.00x"])
        for c, res in runs.items():
            p50, p99 = pct(res[tool], 50) * ms, pct(res[tool], 99) * ms
            rows.append([tool, f"stdio, {c} client{'s' if c > 1 else ''}", len(res[tool]),
                         f"{p50:.2f}", f"{p99:.2f}", f"{p50 / r50:.2f}x"])
    headers = ["tool", "how", "calls", "p50 ms", "p99 ms", "p50 / in-process p50"]
    load = os.getloadavg()[0]
    note = (f"Store: {n:,} memories from LoCoMo ({LOCOMO.name}: entities with two observations each, "
            f"plus plain memories), built in {build_s:.1f} s; {final:,} after the run. Default "
            f"(hashing) embedder, durability full. Each client has its own stdio server process; "
            f"with 4 clients all four call the same tool at once. {a.calls} calls per tool per client "
            f"after 3 warm-up calls, in {a.rounds} interleaved rounds (in-process reference: "
            f"{a.calls // a.rounds} calls per tool per round, pooled over both runs). OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} in every "
            f"process. {os.cpu_count()} CPUs; load average at the end: {load:.2f}.")
    print(table(headers, rows))
    print("\n" + note)
    with open(a.out, "w") as f:
        f.write("# mcp_bench\n\n`python bench/mcp_bench.py` "
                f"(`--memories {a.memories} --calls {a.calls} --rounds {a.rounds}`), on {time.strftime('%Y-%m-%d')}, "
                "on a shared 2-vCPU machine (other engineers' jobs running: treat single figures "
                "as +-20%, compare ratios).\n\n"
                "Tool-call latency seen by an MCP client over stdio (JSON-RPC over pipes to a "
                "`python -m mnemos_kv.mcp` process), against the same call made in-process "
                "(`MemoryServer.call`: argument validation + the store, no protocol).\n\n")
        f.write(table(headers, rows) + "\n\n" + note + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
