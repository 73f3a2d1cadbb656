"""Crash safety: a writer killed with SIGKILL at random moments loses no returned write.

A child process writes in a loop (remember, remember_many, batches with connect and
forget, forget, connect, compact) and reports each call on a pipe once it returns.
The parent kills it at a random moment (fixed seed), then checks that the store
opens, ``mnemos-kv verify`` passes, and every reported write is there with its vector.
Marked ``slow``: CI runs it (``pytest -q`` runs every test).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mp_workers import expected_vector, spawn  # noqa: E402

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.slow

KILLS = 32
#: Before most kills, the child must have reported this many returned calls (drawn per
#: kill from the seeded rng): the test then kills at the same points of the workload on
#: a fast or a loaded machine, and never depends on how many writes fit in some seconds.
MAX_REPORTS_BEFORE_KILL = 24
#: Only a guard against a hung child (a failure), never a pacing assumption.
HANG_S = 300.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class _Child:
    """A crash_child worker whose reports are drained by a thread (the pipe never fills)."""

    def __init__(self, path: str, seed: int, base: int, durability: str) -> None:
        self.proc = spawn("crash_child", path, str(seed), str(base), durability)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith('{"ready"'):
                self.ready.set()
            with self.cond:
                self.cond.notify_all()

    def wait_reports(self, n: int) -> None:
        """Block until the child has reported ``n`` returned calls (or has ended)."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(ln.startswith('{"R"') for ln in self.lines) >= n
                or self.proc.poll() is not None, HANG_S)
        assert ok, f"child reported fewer than {n} calls in {HANG_S} s: hung?"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.thread.join(30)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.proc.stderr.close()  # type: ignore[union-attr]
        # a SIGKILL is the only way this child may end
        assert self.proc.returncode == -signal.SIGKILL, f"child ended on its own:\n{err[-3000:]}"

    def reports(self) -> list[dict]:
        # only whole lines: a report cut by the kill never counted as returned
        return [json.loads(ln) for ln in self.lines if ln.endswith("\n")]


def test_sigkill_at_random_moments_loses_no_returned_write(tmp_path, capsys) -> None:
    rng = random.Random(int(os.environ.get("MNEMOS_CRASH_SEED", "20240605")))
    check_rng = random.Random(1)  # samples of what to check (how many exist varies by run)
    path = str(tmp_path / "crash.mem")
    Mnemos.open(path).close()
    present: dict[int, str] = {}  # returned remembers not (returned-)forgotten: id -> text
    gone: set[int] = set()        # returned forgets
    unknown: set[int] = set()     # ids whose fate the kill decided (a call in flight)
    checked_upto = 0
    kills = writes = machine_crashes = 0
    sim_rng = random.Random(7)  # which kills also lose the page cache (own stream)
    while kills < KILLS:
        durability = "fast" if kills % 3 == 2 else "full"  # SIGKILL loses nothing in either
        child = _Child(path, rng.randrange(1 << 30), 1_000_000 * (kills + 1), durability)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.6))  # maybe while it imports, opens or recovers
        else:
            assert child.ready.wait(HANG_S), "child never opened the store"
            child.wait_reports(rng.randrange(1, MAX_REPORTS_BEFORE_KILL))
            time.sleep(rng.uniform(0.0, 0.05))  # then somewhere inside the next call
        child.kill()
        kills += 1
        trying: set[int] = set()
        for rep in child.reports():
            for mid, text in rep.get("R", []):
                present[mid] = text
                writes += 1
            trying.update(rep.get("try_F", []))
            for mid in rep.get("F", []):
                present.pop(mid, None)
                gone.add(mid)
                trying.discard(mid)
        for mid in trying:  # a forget in flight at the kill: either outcome is right
            present.pop(mid, None)
            unknown.add(mid)
        last_reported = max([*present, *gone, *unknown, 0])
        # -- the store after the kill ----------------------------------------------------
        if durability == "full" and sim_rng.random() < 0.5:
            # and a machine crash with it: what was not fdatasync'ed is lost (format 3:
            # the log after log_sync, the rows and dead marks since the last flush)
            _lose_unsynced(path, sim_rng.choice(["sync", "middle", "zeros"]))
            machine_crashes += 1
        else:
            assert cli_main(["verify", path]) == 0, capsys.readouterr().out  # read-only, before repair
        with Mnemos.open(path) as db:  # a writer open: drops a torn tail, redoes lost rows
            rep = db.verify()
            assert rep.ok, f"after kill {kills}:\n{rep}"
            in_store = {m.id: m.text for m in db.memories()}
            assert db.stats()["total"] == len(in_store)
            missing = set(present) - set(in_store)
            assert not missing, f"after kill {kills}: returned writes lost: {sorted(missing)[:10]}"
            assert not gone & set(in_store), "a returned forget was undone"
            # besides those, only the call in flight at the kill may have left memories
            extra = set(in_store) - set(present) - unknown
            assert len(extra) <= 4 and all(m > last_reported for m in extra), sorted(extra)
            for mid in extra:
                assert np.array_equal(db.get_vector(mid), expected_vector(in_store[mid]))
            unknown |= extra
            ids = sorted(present)
            new = [m for m in ids if m > checked_upto]
            sample = new + check_rng.sample(ids, min(40, len(ids)))
            for mid in sample:
                m = db.get(mid)
                assert m.text == present[mid]
                assert np.array_equal(db.get_vector(mid), expected_vector(m.text)), mid
            for mid in check_rng.sample(sorted(gone), min(40, len(gone))):
                assert mid not in db
            checked_upto = max(ids, default=0)
    capsys.readouterr()
    # every child that was not killed early reported at least one remember
    assert writes >= KILLS // 2, f"the children returned only {writes} writes"
    with Mnemos.open(path) as db:  # a final full check of every returned write
        # killed readers' LMDB slots were freed (they would pin old pages forever)
        pids = [int(ln.split()[0]) for ln in db._engine.env.env.readers().splitlines()[1:]
                if ln.strip() and ln.split()[0].isdigit()]
        assert all(_alive(pid) for pid in pids), pids
        for mid, text in present.items():
            assert db.get(mid).text == text
            assert np.array_equal(db.get_vector(mid), expected_vector(text))
        assert all(mid not in db for mid in gone)
    assert machine_crashes >= KILLS // 8, machine_crashes
    print(f"{kills} kills ({machine_crashes} with a simulated machine crash), {writes} "
          f"returned writes checked, {len(gone)} forgets")


def _lose_unsynced(path: str, how: str) -> None:
    """Simulate a machine crash on top of the kill: LMDB as it committed (durable in
    "full" mode), the log cut at log_sync (or mid-way, or zeroed after it), the vector and
    slot rows written since the last flush zeroed, dead marks set since then cleared."""
    from mnemos_kv import _lmdbcheck
    from mnemos_kv import _records as R
    from mnemos_kv._log import log_file
    from mnemos_kv._vectors import HEADER, SLOT_DTYPE, slot_file, vector_file
    st = R.decode(_lmdbcheck.read_table(os.path.join(path, "data.mdb"), b"meta")[b"state"])
    lp = log_file(path, st["log_seg"])
    sync_at = st.get("log_sync", st["log_end"])
    size = os.path.getsize(lp)
    if how == "sync":
        os.truncate(lp, sync_at)
    elif how == "middle":
        os.truncate(lp, (sync_at + max(size, st["log_end"])) // 2)
    else:
        with open(lp, "r+b") as f:
            f.seek(sync_at)
            f.write(b"\0" * max(0, size - sync_at))
    cols = np.memmap(slot_file(path, st["gen"]), dtype=SLOT_DTYPE, mode="r+", offset=HEADER)
    dim = (os.path.getsize(vector_file(path, st["gen"])) - HEADER) // 4 // len(cols)
    vec = np.memmap(vector_file(path, st["gen"]), dtype="<f4", mode="r+", offset=HEADER,
                    shape=(len(cols), dim))
    vec[st["vsync_slots"]:] = 0
    cols[st["vsync_slots"]:] = np.zeros(1, SLOT_DTYPE)
    cols["dead"][cols["dead"] > st["vsync_seq"]] = 0
    vec.flush()
    cols.flush()
    del vec, cols
