"""Several MCP clients, each with its own stdio server process, on one store.

Four server subprocesses (``python -m mnemos_kv.mcp PATH``), a real MCP client
session over pipes each, create entities, observations and relations at once (all of
them also race to create the same shared entity and add to it); one server is killed
with SIGKILL while a large write is in flight: once that write's log frame is being
written, i.e. inside its transaction (or, at the latest, just after its commit). Then: every acknowledged write is in the
store, the killed server's in-flight write is all there or not at all, ``verify()``
passes, and ``read_graph`` from a fresh server shows the union.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP server tests need the optional 'mcp' package "
                                  "(pip install 'mnemos-kv[mcp]')")

import anyio  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv._kgraph import OBSERVATION_RELATION  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 3          # servers that run to the end
ROUNDS = 12          # rounds of (create_entities, add_observations, create_relations) each
VICTIM_ROUNDS = 4    # rounds the victim completes before its large write
BIG = 150            # entities in the victim's in-flight write (3 observations each)
HANG_GUARD_S = 120   # only guards against a hang; never reached in a passing run
BIG_ROWS = BIG * 4    # memories of the victim's in-flight write (an entity + 3 observations)


def written_slots(path: str) -> int:
    """Slot rows holding a memory id in the store's slot files (4 KiB header, 32-byte rows,
    id first). A write fills its rows inside its transaction, before the commit, so the
    count rises while a large write is in flight (its log frames, since format 3, reach
    the log file only at a later flush, so the log's size no longer says so)."""
    import numpy as np
    n = 0
    for f in os.listdir(path):
        if f.startswith("slots.") and f.endswith(".bin"):
            with open(os.path.join(path, f), "rb") as fh:
                fh.seek(4096)
                ids = np.frombuffer(fh.read(), dtype="<i8")
            n += int(np.count_nonzero(ids[: ids.size - ids.size % 4].reshape(-1, 4)[:, 0]))
    return n


def server(path: str, marker: str) -> StdioServerParameters:
    env = {"PYTHONPATH": ROOT, "MNEMOS_MCP_TEST_MARKER": marker, "OPENBLAS_NUM_THREADS": "1"}
    return StdioServerParameters(command=sys.executable, args=["-m", "mnemos_kv.mcp", path],
                                 env=env, cwd=ROOT)


def pid_with_marker(marker: str) -> int:
    """The pid of the server process started with this environment marker."""
    needle = f"MNEMOS_MCP_TEST_MARKER={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    return int(entry)
        except OSError:
            continue
    raise AssertionError(f"no server process with marker {marker}")


class Acked:
    """Writes whose tool call returned without error."""

    def __init__(self) -> None:
        self.entities: set[str] = set()
        self.observations: set[tuple[str, str]] = set()
        self.relations: set[tuple[str, str, str]] = set()


def ok(r: Any) -> Any:
    assert not r.is_error, r.content[0].text
    return r.structured_content


async def one_round(c: Any, who: str, r: int, acked: Acked) -> None:
    names = [f"{who}-r{r}-{k}" for k in range(2)]
    ents = [{"name": n, "entityType": "item", "observations": [f"{n} fact {j}" for j in range(2)]}
            for n in names] + [{"name": "hub", "entityType": "shared", "observations": ["the hub"]}]
    ok(await c.call_tool("create_entities", {"entities": ents}))
    for e in ents:
        acked.entities.add(e["name"])
        acked.observations.update((e["name"], o) for o in e["observations"])
    obs = [{"entityName": "hub", "contents": [f"{who} visited in round {r}"]},
           {"entityName": names[0], "contents": [f"{names[0]} extra", f"{names[0]} fact 0"]}]
    ok(await c.call_tool("add_observations", {"observations": obs}))
    acked.observations.update((o["entityName"], t) for o in obs for t in o["contents"])
    rels = [(names[0], "hub", "member_of"), (names[1], names[0], "follows")]
    if r:
        rels.append((names[0], f"{who}-r{r - 1}-0", "after"))
    ok(await c.call_tool("create_relations",
                         {"relations": [{"from": a, "to": b, "relationType": t} for a, b, t in rels]}))
    acked.relations.update(rels)


def test_four_stdio_servers_one_store_with_sigkill(tmp_path) -> None:
    path = str(tmp_path / "shared.mem")
    acked = Acked()
    big_names = [f"victim-big-{k}" for k in range(BIG)]
    killed: dict[str, Any] = {}

    async def worker(i: int) -> None:
        async with Client(server(path, f"w{i}-{uuid.uuid4().hex}")) as c:
            for r in range(ROUNDS):
                await one_round(c, f"w{i}", r, acked)

    async def victim() -> None:
        marker = f"victim-{uuid.uuid4().hex}"
        async with Client(server(path, marker), mode="legacy") as c:
            for r in range(VICTIM_ROUNDS):
                await one_round(c, "victim", r, acked)
            pid = pid_with_marker(marker)
            big = [{"name": n, "entityType": "bulk", "observations": [f"{n} note {j}" for j in range(3)]}
                   for n in big_names]

            async def big_write() -> None:
                try:
                    killed["result"] = await c.call_tool("create_entities", {"entities": big})
                except Exception as exc:  # the connection dies with the server
                    killed["error"] = exc

            base = written_slots(path)
            async with anyio.create_task_group() as tg:
                tg.start_soon(big_write)
                # Kill once about half of the large write's rows are written (the workers'
                # writes are a few rows each): inside its transaction, or, if it is fast,
                # just after its commit. Either outcome is checked below; the deadline only
                # guards a hang.
                deadline = time.monotonic() + HANG_GUARD_S / 4
                while written_slots(path) - base < BIG_ROWS // 2 and time.monotonic() < deadline:
                    await anyio.sleep(0.0005)
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                killed["rows_written"] = written_slots(path) - base

    async def main() -> None:
        with anyio.fail_after(HANG_GUARD_S):
            async with anyio.create_task_group() as tg:
                for i in range(WORKERS):
                    tg.start_soon(worker, i)
                tg.start_soon(victim)

    try:
        anyio.run(main)
    except BaseException as exc:  # the victim's client may report the dead pipe on exit
        if "pid" not in killed or any(not isinstance(e, (OSError, anyio.BrokenResourceError,
                                                          anyio.ClosedResourceError))
                                       for e in getattr(exc, "exceptions", [exc])):
            raise
    assert "pid" in killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)

    expected_entities = WORKERS * ROUNDS * 2 + VICTIM_ROUNDS * 2 + 1
    assert len(acked.entities) == expected_entities

    with Mnemos.open(path) as db:
        report = db.verify()
        assert report.ok, report
        for name in acked.entities:
            m = db.get_by_key(name)
            assert m.metadata["kind"] == "entity"
        for name, text in acked.observations:
            ent = db.get_by_key(name).id
            texts = {db.get(e.dst).text for e in db.neighbors(ent, relation=OBSERVATION_RELATION,
                                                              direction="out")}
            assert text in texts, (name, text)
        for a, b, t in acked.relations:
            dst = db.get_by_key(b).id
            assert any(e.dst == dst for e in db.neighbors(db.get_by_key(a).id, relation=t,
                                                          direction="out")), (a, b, t)
        present = sum(1 for n in big_names if _has_key(db, n))
        assert present in (0, BIG), f"the killed write is half there: {present} of {BIG} entities"
        print(f"killed server {killed['pid']}; its in-flight write of {BIG} entities: "
              f"{'committed' if present else 'not committed'}; {killed['rows_written']} new rows "
              f"(the write has {BIG_ROWS}) before the kill; client saw {sorted(killed)}")
        hub_obs = {db.get(e.dst).text for e in db.neighbors(db.get_by_key("hub").id,
                                                            relation=OBSERVATION_RELATION,
                                                            direction="out")}
        assert len(hub_obs) == 1 + WORKERS * ROUNDS + VICTIM_ROUNDS  # one hub, no duplicates

    async def fresh_read() -> dict[str, Any]:
        async with Client(server(path, f"reader-{uuid.uuid4().hex}")) as c:
            return ok(await c.call_tool("read_graph", {"limit": 5000}))  # type: ignore[no-any-return]

    graph = anyio.run(fresh_read)
    names = {e["name"] for e in graph["entities"]}
    assert names == acked.entities | (set(big_names) if present else set())
    assert graph["total"] == len(names) and "nextOffset" not in graph
    obs = {(e["name"], o) for e in graph["entities"] for o in e["observations"]}
    assert acked.observations <= obs
    assert [e for e in graph["entities"] if e["name"] == "hub"][0]["observations"].count("the hub") == 1
    rels = {(r["from"], r["to"], r["relationType"]) for r in graph["relations"]}
    assert rels == acked.relations


def _has_key(db: Mnemos, key: str) -> bool:
    try:
        db.get_by_key(key)
        return True
    except KeyError:
        return False


def test_streamable_http_transport(tmp_path) -> None:
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = str(tmp_path / "http.mem")
    proc = subprocess.Popen([sys.executable, "-m", "mnemos_kv.mcp", path, "--http", f"127.0.0.1:{port}",
                             "--namespace", "web"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + HANG_GUARD_S  # waits for the server to listen; not a speed check
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server never started listening"
                time.sleep(0.1)

        async def talk() -> tuple[Any, Any]:
            async with Client(f"http://127.0.0.1:{port}/mcp") as c:
                created = ok(await c.call_tool("create_entities", {"entities": [
                    {"name": "Web", "entityType": "site", "observations": ["served over HTTP"]}]}))
                bad = await c.call_tool("create_relations", {"relations": [
                    {"from": "Web", "to": "Nowhere", "relationType": "links"}]})
                assert bad.is_error and "Entity with name Nowhere not found" in bad.content[0].text
                return created, ok(await c.call_tool("read_graph", {}))

        created, graph = anyio.run(talk)
        assert created["entities"][0]["name"] == "Web"
        assert graph["entities"] == [{"name": "Web", "entityType": "site", "observations": ["served over HTTP"]}]
    finally:
        proc.terminate()
        proc.wait(timeout=HANG_GUARD_S)
    with Mnemos.open(path, readonly=True) as db:
        assert db.namespace("web").get_by_key("Web").metadata["entityType"] == "site"
        assert db.verify().ok
