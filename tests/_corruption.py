"""Shared by tests/test_corruption.py and scripts/corruption_sweep.py: damage one file of
a copy of a closed store (flip bits, truncate, zero a page), then check in a forked
child that open / verify / dump / ask either give the right data or raise a
MnemosError (a signal, a hang or a wrong answer is a failure), and that ``recover``
brings back every memory whose log (or base snapshot) frame is intact."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import signal
import time
from typing import Any

from mnemos_kv import Mnemos, MnemosError
from mnemos_kv._log import FILE_HEADER, iter_file_frames
from mnemos_kv import _records as R

QUERY = "fact number 7 about topic"


def dump_rows(db: Mnemos, namespaces: list[str] | None = None, vectors: bool = False) -> list[dict]:
    """``db.dump`` parsed back into its rows."""
    buf = io.StringIO()
    db.dump(buf, namespaces=namespaces, vectors=vectors)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def build(path: str, compacted: bool) -> dict[str, Any]:
    """A small closed store; returns what it must hold."""
    ticks = iter(range(1_767_225_600, 1_767_235_600, 10))
    with Mnemos.open(path, clock=lambda: float(next(ticks))) as db:
        ids = db.remember_many([{"text": f"fact number {i} about topic {i % 5}",
                                 "metadata": {"i": i, "tag": f"t{i % 3}"}} for i in range(24)])
        db.connect(ids[0], ids[1], relation="next")
        db.connect(ids[2], ids[3], relation="cites", weight=0.5)
        db.forget(ids[4])
        db.namespace("other").remember("a memory of another namespace", key="k1")
        if compacted:
            db.compact()
            db.remember_many([f"after compaction {i}" for i in range(6)])
            db.forget(ids[5])
        mems = {m["id"]: m["text"] for m in dump_rows(db) if m["kind"] == "memory"}
        vecs = {mid: db.get_vector(mid).tobytes().hex() for mid in mems if mid in db}
        vecs.update({m["id"]: base64.b64decode(m["vector_b64"]).hex()
                     for m in dump_rows(db, ["other"], vectors=True) if m["kind"] == "memory"})
        top = [m.id for m in db.ask(QUERY, top_k=3)]
    return {"memories": {str(k): v for k, v in mems.items()}, "vectors": {str(k): v for k, v in vecs.items()},
            "top": top}


def store_files(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n not in ("open.lock", "compact.lock"))


def cases(path: str, per_kind: int, seed: int = 1) -> list[tuple[str, str, int]]:
    """(file, kind, parameter) cases: ``flip`` (byte offset; bit from the seed), ``trunc``
    (new length), ``zero`` (page index). Offsets fall in the part of the file in use."""
    out = []
    for name in store_files(path):
        size = os.path.getsize(os.path.join(path, name))
        used = _used(path, name, size)
        rng = random.Random(f"{seed}-{name}")
        for _ in range(per_kind):
            out.append((name, "flip", rng.randrange(0, max(used, 1))))
        cuts = sorted({0, used // 2, max(used - 1, 0), min(4096, size - 1) if size > 1 else 0,
                       *[rng.randrange(0, max(used, 1)) for _ in range(max(per_kind - 4, 0))]})
        out += [(name, "trunc", c) for c in cuts[:per_kind] if c < size]
        pages = max(1, -(-used // 4096))
        zs = sorted({0, pages - 1, *[rng.randrange(0, pages) for _ in range(per_kind)]})
        out += [(name, "zero", p) for p in zs[:per_kind]]
    return out


def _used(path: str, name: str, size: int) -> int:
    """Bytes of the file the store uses (vector/slot files are preallocated)."""
    if name.startswith(("vectors.", "slots.")):
        with Mnemos.open(path, readonly=True) as db:
            n = db.stats()["slots"]
        row = 32 if name.startswith("slots.") else 512 * 4
        return min(size, 4096 + n * row)
    return size


def damage(path: str, case: tuple[str, str, int]) -> None:
    name, kind, arg = case
    f = os.path.join(path, name)
    if kind == "trunc":
        with open(f, "r+b") as fh:
            fh.truncate(arg)
        return
    with open(f, "r+b") as fh:
        if kind == "flip":
            fh.seek(arg)
            b = fh.read(1)
            if not b:
                return
            bit = 1 << random.Random(f"{name}-{arg}").randrange(8)
            fh.seek(arg)
            fh.write(bytes([b[0] ^ bit]))
        else:
            fh.seek(arg * 4096)
            n = len(fh.read(4096))
            fh.seek(arg * 4096)
            fh.write(bytes(n))


def _intact_ids(path: str) -> set[int]:
    """Ids of the memories whose ``mem`` frame is intact (in the log, or in an intact base
    snapshot prefix when the log can apply to it)."""
    logs = sorted(n for n in os.listdir(path) if n.startswith("log.") and n.endswith(".mlog"))
    if not logs:
        return set()
    lp = os.path.join(path, logs[-1])
    with open(lp, "rb") as fh:
        head = fh.read(FILE_HEADER)
    if len(head) < FILE_HEADER or head[:8] != b"MNMSLOG1":
        return set()
    base_seq = int.from_bytes(head[16:24], "little")
    ids: set[int] = set()
    base_ok = True
    if base_seq:
        from mnemos_kv._snapshot import snapshot_file, snapshot_frames
        last = None
        try:
            for _o, _s, p in snapshot_frames(snapshot_file(path, base_seq)):
                op = R.decode(p)
                last = op.get("op")
                if last == "mem":
                    ids.add(int(op["id"]))
        except MnemosError:
            pass
        base_ok = last == "base"
    if base_ok:
        fd = os.open(lp, os.O_RDONLY)
        try:
            for _o, seq, p in iter_file_frames(fd, FILE_HEADER, os.fstat(fd).st_size):
                op = R.decode(p)
                if op.get("op") == "mem":
                    ids.add(int(op["id"]))
        except MnemosError:
            pass
        finally:
            os.close(fd)
    return ids


def check(path: str, expect: dict[str, Any], work: str, damaged: str = "") -> dict[str, Any]:
    """Run in the child: the outcome of one damaged copy (raises AssertionError when wrong).

    When verify reports the damage, dump and ask still run (they must return or raise a
    MnemosError) unless the damaged file is data.mdb: reads of a damaged LMDB page are
    what verify's page walk exists to warn about (docs/durability.md).
    """
    mems = {int(k): v for k, v in expect["memories"].items()}
    out: dict[str, Any] = {}
    try:
        with Mnemos.open(path, readonly=True) as db:
            rep = db.verify()
            if not rep.ok:
                out["open"] = "detected"
                if damaged != "data.mdb":
                    for read in (lambda: dump_rows(db, vectors=True),
                                 lambda: db.ask(QUERY, top_k=3)):
                        try:
                            read()
                        except MnemosError:
                            pass
            else:
                got = {m["id"]: m["text"] for m in dump_rows(db) if m["kind"] == "memory"}
                assert got == mems, f"dump differs from the store's content: {sorted(set(got) ^ set(mems))}"
                for mid, hexv in expect["vectors"].items():
                    v = db.get_vector(int(mid)) if int(mid) in db else \
                        db.namespace("other").get_vector(int(mid))
                    assert v.tobytes().hex() == hexv, f"memory {mid}: wrong vector"
                top = [m.id for m in db.ask(QUERY, top_k=3)]
                assert top == expect["top"], f"ask gives {top}, expected {expect['top']}"
                out["open"] = "correct"
    except MnemosError as exc:
        out["open"] = f"error:{type(exc).__name__}"
    # -- recover -------------------------------------------------------------------------------
    want = _intact_ids(path) & set(mems)
    new = os.path.join(work, "recovered")
    try:
        rep = Mnemos.recover(path, to=new)
    except MnemosError as exc:
        assert not want, f"recover refused ({exc}) but {len(want)} memories have intact frames"
        out["recover"] = f"refused:{type(exc).__name__}"
        return out
    with Mnemos.open(new, readonly=True) as db:
        assert db.verify().ok
        got = {m["id"]: m["text"] for m in dump_rows(db) if m["kind"] == "memory"}
    missing = sorted(want - set(got))
    assert not missing, f"recover lost memories with intact frames: {missing[:10]}"
    for mid in want:
        assert got[mid] == mems[mid], f"memory {mid}: recovered text differs"
    out["recover"] = "complete" if rep.complete else "partial"
    out["restored"] = len(want)
    return out


def run_case(src: str, expect: dict[str, Any], case: tuple[str, str, int], work: str,
             timeout: float = 120.0) -> dict[str, Any]:
    """Copy ``src``, damage it, check it in a forked child; a signal or hang is a failure."""
    copy = os.path.join(work, "store")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, copy)
    damage(copy, case)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            try:
                res = check(copy, expect, work, case[0])
            except AssertionError as exc:
                res, code = {"failure": f"wrong: {exc}"}, 1
            except BaseException as exc:  # noqa: BLE001 - any other exception is a failure
                res, code = {"failure": f"{type(exc).__name__}: {exc}"}, 1
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:  # a hang guard, not a speed assumption
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return {"failure": f"hung for {timeout} s"}
        time.sleep(0.01)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    if os.WIFSIGNALED(status):
        return {"failure": f"killed by {signal.Signals(os.WTERMSIG(status)).name}"}
    return json.loads(data) if data else {"failure": f"no result (exit {os.WEXITSTATUS(status)})"}
