"""Compaction: recovers space in every file, is safe under crash, and under other processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mnemos_kv import Mnemos
from mnemos_kv import _lmdb_rewrite
from mnemos_kv.cli import main

from conftest import Clock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EMBEDDER_SRC = textwrap.dedent("""
    import zlib
    import numpy as np

    class Emb:
        name, dim = "test-vec-32", 32

        def embed(self, texts):
            out = np.empty((len(texts), 32), np.float32)
            for i, t in enumerate(texts):
                out[i] = np.random.default_rng(zlib.crc32(t.encode())).standard_normal(32)
            return out
""")
exec(EMBEDDER_SRC)  # defines Emb here exactly as in the child processes


def text_of(i: int) -> str:
    return f"memory {i} " + "lorem ipsum " * (i % 7)


def build_store(path: str, n: int = 3000) -> list[int]:
    """A store with forgotten memories, edges, two namespaces and evictions."""
    with Mnemos.open(path, embedder=Emb(), clock=Clock()) as db:  # noqa: F821
        ids = db.remember_many([{"text": text_of(i), "metadata": {"i": i}} for i in range(n)])
        db.forget_many(ids[::2])
        for i in range(1, min(400, n - 2), 2):
            db.connect(ids[i], ids[i + 2], relation="next")
        other = db.namespace("other")
        other.set_capacity(50)
        other.remember_many([f"other note {i}" for i in range(80)])
        return ids


def _child(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


# -- what compaction recovers --------------------------------------------------------------------

def test_compact_recovers_space_in_every_file(tmp_path) -> None:
    p = str(tmp_path / "s.mem")
    ids = build_store(p)
    with Mnemos.open(p, embedder=Emb()) as db:  # noqa: F821
        answers = [(m.id, m.score) for m in db.ask("memory 7 lorem", top_k=10)]
        live = db.count()
        out = db.compact()
        assert out["lmdb_compacted"], out["lmdb_note"]
        before, after = out["files_before"], out["files_after"]
        assert after["data.mdb"]["bytes"] < before["data.mdb"]["bytes"] * 0.6
        assert after["vectors.000002.f32"]["bytes"] < before["vectors.000001.f32"]["bytes"]
        assert "log.000001.mlog" not in after and after["log.000002.mlog"]["bytes"] == 32
        assert out["slots_before"] == 3080 and out["slots_after"] == live + 50
        assert [(m.id, m.score) for m in db.ask("memory 7 lorem", top_k=10)] == answers
        assert db.get(ids[1]).metadata == {"i": 1} and db.neighbors(ids[1])[0].dst == ids[3]
        assert db.verify().ok
        db.remember("after compaction")
    with Mnemos.open(p) as db:
        assert db.count() == live + 1 and db.verify().ok


def test_compact_leaves_lmdb_file_when_another_process_has_the_store_open(tmp_path) -> None:
    p = str(tmp_path / "s.mem")
    build_store(p, n=300)
    holder = _child(textwrap.dedent(f"""
        import time
        from mnemos_kv import Mnemos
        db = Mnemos.open({p!r}, readonly=True)
        print("open", flush=True)
        time.sleep(120)
    """))
    try:
        assert holder.stdout.readline().strip() == "open"
        with Mnemos.open(p) as db:
            out = db.compact()
            assert not out["lmdb_compacted"] and "other processes" in out["lmdb_note"]
            assert out["slots_after"] < out["slots_before"]  # vectors and log still compacted
            assert db.verify().ok
    finally:
        holder.kill()
        holder.wait()
    with Mnemos.open(p) as db:  # alone now
        out = db.compact()
        assert out["lmdb_compacted"], out["lmdb_note"]


def test_open_snapshot_in_this_process_defers_the_lmdb_rewrite(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_lmdb_rewrite, "QUIESCE_TIMEOUT", 0.2)
    with Mnemos.open(str(tmp_path / "s.mem"), clock=Clock()) as db:
        db.remember_many([f"note {i}" for i in range(20)])
        it = db.memories()
        first = next(it)  # a read transaction stays open while the generator is alive
        out = db.compact()
        assert not out["lmdb_compacted"] and "read transactions" in out["lmdb_note"]
        assert [m.id for m in it][0] == first.id + 1
        del it
        assert db.compact()["lmdb_compacted"]


def test_lmdb_rewrite_with_several_handles_and_threads_in_one_process(tmp_path) -> None:
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p, clock=Clock()) as a, Mnemos.open(p, clock=Clock()) as b:
        ids = a.remember_many([f"note {i} about payments" for i in range(300)])
        a.forget_many(ids[:200])
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    assert b.get(ids[250]).text == "note 250 about payments"
                    assert len(b.ask("payments", top_k=3)) == 3
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        try:
            for _ in range(3):
                out = a.compact()
                assert out["lmdb_compacted"], out["lmdb_note"]
                a.remember("written between compactions")
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        assert b.count() == 103 and b.verify().ok


# -- other processes keep working ----------------------------------------------------------------

READER = EMBEDDER_SRC + textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from mnemos_kv import Mnemos

    path, stop_file, stable = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    emb = Emb()

    def text_of(i):
        return f"memory {i} " + "lorem ipsum " * (i % 7)

    errors, gens, it, written = [], set(), 0, []
    db = Mnemos.open(path, embedder=emb)
    print("ready", flush=True)
    while not os.path.exists(stop_file) or it < 20:
        it += 1
        try:
            for mid, i in stable[it % len(stable):][:5]:
                m = db.get(mid)
                if m.text != text_of(i):
                    errors.append(f"get {mid}: {m.text!r}")
                want = emb.embed([text_of(i)])[0]
                want /= np.linalg.norm(want)
                if not np.allclose(db.get_vector(mid), want, atol=1e-6):
                    errors.append(f"vector of {mid} differs")
            q = text_of(stable[it % len(stable)][1])
            qv = emb.embed([q])[0]
            qv /= np.linalg.norm(qv)
            for h in db.ask(q, top_k=5, explain=True):  # one snapshot: text and cosine agree
                hv = emb.embed([h.text])[0]
                hv /= np.linalg.norm(hv)
                if abs(float(np.dot(hv, qv)) - h.explain["cosine"]) > 1e-4:
                    errors.append(f"score of {h.id} does not match its text's vector")
            written.append(db.remember(f"reader note {it}"))
            if db.get(written[-1]).text != f"reader note {it}":
                errors.append("own write not readable")
            if it % 10 == 0:
                rep = db.verify(deep=False)
                if not rep.ok:
                    errors.append(str(rep))
            gens.add(db.stats()["generation"])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    missing = [w for w in written if w not in db]
    db.close()
    print(json.dumps({"iterations": it, "errors": errors[:20], "generations": sorted(gens),
                      "written": len(written), "missing": missing}), flush=True)
""")


def test_compaction_under_a_concurrent_reader_and_writer_process(tmp_path) -> None:
    p = str(tmp_path / "s.mem")
    ids = build_store(p, n=2000)
    stable = [[ids[i], i] for i in range(1, 2000, 2)][:300]
    stop = str(tmp_path / "stop")
    child = _child(READER, p, stop, json.dumps(stable))
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        with Mnemos.open(p, embedder=Emb()) as db:  # noqa: F821
            doomed = [ids[i] for i in range(601, 2000, 2)]
            for round_ in range(4):
                db.forget_many(doomed[round_ * 100:(round_ + 1) * 100])
                out = db.compact()
                assert not out["lmdb_compacted"] and "other processes" in out["lmdb_note"], out
                time.sleep(0.15)
            open(stop, "w").close()
            res, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            report = json.loads(res.strip().splitlines()[-1])
            assert report["errors"] == [] and report["missing"] == [], (report, err)
            assert len(report["generations"]) >= 2, report  # it moved to new generations
            assert db.verify().ok
            out = db.compact()  # the other process is gone: the LMDB file is rewritten too
            assert out["lmdb_compacted"], out["lmdb_note"]
            assert db.stats()["total"] == 1000 - 400 + 50 + report["written"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- crash safety --------------------------------------------------------------------------------

COMPACTOR = textwrap.dedent("""
    import os, signal, sys, time
    from mnemos_kv import Mnemos

    path, phase, at = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def progress(name, done, total):
        if name == phase and done >= at * total:
            os.kill(os.getpid(), signal.SIGKILL)

    db = Mnemos.open(path)
    print("ready", flush=True)
    t = time.perf_counter()
    db.compact(progress=progress if phase != "-" else None)
    print("done %.6f" % (time.perf_counter() - t), flush=True)
""")


def _run_compactor(path: str, phase: str = "-", at: float = 0.0,
                   kill_after: float | None = None) -> tuple[int, str]:
    child = _child(COMPACTOR, path, phase, str(at))
    line = child.stdout.readline().strip()
    assert line == "ready", child.stderr.read()
    if kill_after is not None:
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=60)
    return child.returncode, out


@pytest.fixture(scope="module")
def crash_template(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("crash")
    tpl = str(base / "template.mem")
    build_store(tpl)
    with Mnemos.open(tpl) as db:
        before = db.state_digest()
    done = str(base / "done.mem")
    shutil.copytree(tpl, done)
    code, out = _run_compactor(done)
    assert code == 0 and out.startswith("done")
    seconds = float(out.split()[1])
    with Mnemos.open(done) as db:
        after = db.state_digest()
        assert db.verify().ok
    return {"template": tpl, "before": before, "after": after, "seconds": seconds, "base": base}


def _check_after_kill(path: str, tpl: dict) -> str:
    with Mnemos.open(path, embedder=Emb()) as db:  # noqa: F821
        report = db.verify()
        assert report.ok, str(report)
        digest = db.state_digest()
        assert digest in (tpl["before"], tpl["after"])
        db.remember("the store takes writes after the crash")  # and works on
        assert db.verify().ok
    return "old" if digest == tpl["before"] else "new"


def test_sigkill_at_random_moments_of_compaction(crash_template) -> None:
    """SIGKILL a compacting process 24 times at random moments (fixed seed): every time
    the store opens, verifies, and holds exactly the old or the new state."""
    rng = random.Random(20260107)
    outcomes = []
    for i in range(24):
        path = str(crash_template["base"] / f"kill{i}.mem")
        shutil.copytree(crash_template["template"], path)
        # from before compaction starts to a little after it ends
        delay = rng.uniform(0.0, crash_template["seconds"] * 1.3 + 0.01)
        code, _out = _run_compactor(path, kill_after=delay)
        outcomes.append(_check_after_kill(path, crash_template))
        shutil.rmtree(path)
    print("outcomes", outcomes)
    assert len(outcomes) == 24


@pytest.mark.parametrize("phase,at", [
    ("vectors", 0.5), ("records", 0.5), ("snapshot", 0.0), ("snapshot", 1.0), ("committed", 1.0),
    ("lmdb", 0.5), ("swap", 0.0), ("swap", 1.0)])
def test_sigkill_at_each_phase_of_compaction(crash_template, phase, at) -> None:
    path = str(crash_template["base"] / f"phase-{phase}-{at}.mem")
    shutil.copytree(crash_template["template"], path)
    code, _out = _run_compactor(path, phase, at)
    assert code == -signal.SIGKILL
    state = _check_after_kill(path, crash_template)
    assert state == ("old" if phase in ("vectors", "records", "snapshot") else "new")
    with Mnemos.open(path) as db:  # the next compaction clears the strays and completes
        out = db.compact()
        assert out["lmdb_compacted"] and db.verify().ok
        names = set(os.listdir(path))
        assert not any(n.endswith(".tmp") for n in names), names
        assert sum(n.startswith("vectors.") for n in names) == 1
        assert sum(n.startswith("log.") for n in names) == 1
        assert sum(n.startswith("base.") for n in names) == 1
    shutil.rmtree(path)


# -- command line --------------------------------------------------------------------------------

def test_cli_compact(tmp_path, capsys) -> None:
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p, clock=Clock()) as db:
        ids = db.remember_many([f"note {i} about invoices" for i in range(50)])
        db.remember_many(["We chose Stripe for payments", "We chose Stripe for payments!"])
        db.forget_many(ids[:25])
    assert main(["compact", p, "--merge-similar", "0.95", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "merged 1" in out and "LMDB file rewritten" in out and "data.mdb" in out
    assert main(["compact", p, "--json", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["merged"] == 0 and rep["slots_after"] == 26
    assert main(["compact", p, "--merge-similar", "1.5"]) == 1
    assert "merge_similar" in capsys.readouterr().err


def test_failed_lmdb_copy_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    """A storage error while copying (a full disk) leaves data.mdb as it was; the vector
    and log compaction that came before stays done."""
    p = str(tmp_path / "s.mem")
    with Mnemos.open(p, clock=Clock()) as db:
        ids = db.remember_many([f"note {i}" for i in range(200)])
        db.forget_many(ids[:150])
        before = os.stat(os.path.join(p, "data.mdb"))

        def full(*a, **k):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(_lmdb_rewrite, "_copy", full)
        out = db.compact()
        assert not out["lmdb_compacted"] and "no space left" in out["lmdb_note"].lower()
        assert out["slots_after"] == 50 and db.verify().ok
        assert os.stat(os.path.join(p, "data.mdb")).st_ino == before.st_ino
        assert not os.path.exists(os.path.join(p, _lmdb_rewrite.TMP_DIR))


@pytest.mark.parametrize("failure", ["map_full", "error"])
def test_writes_after_a_compaction_that_failed_once_reach_the_new_files(tmp_path, monkeypatch,
                                                                        failure) -> None:
    """A compaction whose first attempt fails after mapping its new generation (a full
    map makes the write run its body again; any other error ends it, and the caller
    compacts again) must leave this process writing to the new generation's files, not
    to its mapping of the removed first attempt: the writes after it were lost (the
    store then refused to open: "store says 201 slots but ... holds 200")."""
    import lmdb
    import numpy as np
    from mnemos_kv import _compaction
    path = str(tmp_path / "s.mem")
    db = Mnemos.open(path)
    ids = db.remember_many([f"memory {i} about things" for i in range(300)])
    db.forget_many(ids[::3])
    real, calls = _compaction.checkpoint, []

    def fails_once(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise lmdb.MapFullError("injected") if failure == "map_full" else RuntimeError("injected")
        return real(*args, **kw)
    monkeypatch.setattr(_compaction, "checkpoint", fails_once)
    if failure == "map_full":
        db.compact()  # (the body runs again after the map grew)
    else:
        with pytest.raises(RuntimeError, match="injected"):
            db.compact()
        db.compact()
    assert len(calls) == 2
    new = db.remember_many([f"after the compaction {j}" for j in range(20)])
    vectors = {m: db.get_vector(m) for m in new}
    db.close()
    with Mnemos.open(path) as again:
        assert again.verify().ok
        for m, v in vectors.items():
            assert np.array_equal(again.get_vector(m), v)
        assert [h.id for h in again.ask("after the compaction 7", top_k=1)] == [new[7]]


def test_a_generation_made_again_under_its_name_is_mapped_again(tmp_path) -> None:
    """A process's mapping of a generation whose files were made again under the same
    names (a failed compaction's, then its retry's) gives way to the new files on the
    next write, and on the next read that needs rows the old mapping lacks."""
    import numpy as np
    from mnemos_kv._vectors import VectorFiles
    root = str(tmp_path)
    VectorFiles.create(root, 4, 7, rows=2)
    writer = VectorFiles(root, 4, readonly=False)
    reader = VectorFiles(root, 4, readonly=True)
    mat, _ = writer.ensure(7, 2)
    mat[0] = 1.0
    assert reader.view(7, 2)[0][0].tolist() == [1.0] * 4
    VectorFiles.create(root, 4, 7, rows=3)  # made again: zeroed rows, one more
    mat, _ = writer.ensure(7, 3)
    assert not mat[:3].any()  # the new file's rows, not the old mapping's
    mat[2] = 2.0
    m, _ = reader.view(7, 3)  # (3 rows: more than the old mapping holds)
    assert m.tolist() == [[0.0] * 4, [0.0] * 4, [2.0] * 4]
    writer.close()
    reader.close()
