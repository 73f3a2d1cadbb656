"""Same ops, same bytes: run one workload with the mnemos_kv on ``sys.path`` and print
the SHA-256 of its log files, its export_replay file and its state digest.

Run it with two checkouts and compare the output (issue 13's bulk ingest/forget paths
must not change a byte of the log or the replay file):

    PYTHONPATH=/path/to/old python scripts/compare_write_bytes.py > old.txt
    PYTHONPATH=/path/to/new python scripts/compare_write_bytes.py > new.txt
    diff old.txt new.txt
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

import numpy as np

import mnemos_kv
from mnemos_kv import Mnemos
from mnemos_kv._replay import state_digest


def clock() -> float:
    clock.t += 1.0  # type: ignore[attr-defined]
    return clock.t  # type: ignore[attr-defined]


clock.t = 1_767_225_600.0  # type: ignore[attr-defined]


def main() -> None:
    root = tempfile.mkdtemp(prefix="cmp-bytes-")
    db = Mnemos.open(os.path.join(root, "s"), clock=clock)
    rng = np.random.default_rng(1)
    metas = [{}, {"cat": 1}, {"cat": 2, "user": {"tier": 3}}, {"f": 1.5, "s": "x" * 300},
             {"l": [1, "a", None]}]
    words = ["paint", "yoga", "café", "don't", "Melanie:", "what?", "42", "the", "running"]

    def text(i: int) -> str:
        return " ".join(words[j] for j in rng.integers(0, len(words), 1 + i % 7)) + f" {i}"

    ids = db.remember_many([text(i) for i in range(3000)])
    vecs = rng.standard_normal((2000, 512)).astype(np.float32)
    ids += db.remember_many([{"text": text(i), "metadata": metas[i % 5], "vector": vecs[i],
                              "key": f"k{i}" if i % 3 == 0 else None, "pinned": i % 11 == 0,
                              "type": ("episodic", "semantic", "procedural")[i % 3],
                              "timestamp": 1_700_000_000 + (i % 50) * 3600 if i % 2 else None}
                             for i in range(2000)])
    with db.batch() as b:
        b.remember_many([text(i) for i in range(40)])
        b.namespace("other").remember_many([{"text": text(i), "metadata": {"cat": i % 3}}
                                            for i in range(40)])
        b.namespace("third").remember("one")
    for i in range(20):
        db.remember(text(i), metadata={"cat": i % 2})
    db.connect(ids[0], ids[1], "r")
    db.update(ids[5], text="changed text about yoga")
    db.forget_many(ids[100:1700:2])
    db.forget_where({"cat": 2})
    db.namespace("other").forget_where({"cat": 1})
    db.forget_many(ids[10:20])
    with db._engine.snapshot() as snap:
        digest = state_digest(db._engine, snap)
    db.close()
    path = os.path.join(root, "s")
    for name in sorted(os.listdir(path)):
        if name.startswith("log."):
            with open(os.path.join(path, name), "rb") as f:
                print(name, hashlib.sha256(f.read()).hexdigest())
    db = Mnemos.open(path, clock=clock)
    db.export_replay(os.path.join(root, "x.mreplay"))
    db.close()
    with open(os.path.join(root, "x.mreplay"), "rb") as f:
        print("replay", hashlib.sha256(f.read()).hexdigest())
    print("digest", digest)
    print("library", os.path.dirname(mnemos_kv.__file__), file=sys.stderr)


if __name__ == "__main__":
    main()
