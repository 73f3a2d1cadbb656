"""Build the format fixtures under tests/fixtures/ (run with the code of the format to freeze).

    python scripts/make_fixtures.py [OUTDIR]

Each fixture is a small closed store packed as ``<name>.tar.gz``; tests/test_format.py
opens, verifies and queries it with hard-coded expected answers. The v1 fixtures were
made with main at commit fc7385f (format version 1), before the format-2 bump; the v2
fixtures at commit dcd1b7b (format version 2), before the format-3 bump; the v5
fixtures at commit cecb6fa (format version 5: CRC-16 vector rows), before the format-6
bump; the v6 fixtures at commit 5639a40 (format version 6), before the format-7 bump.
The ``unflushed`` fixture (v6 on) is a store whose writing process ended without
closing it, right after a few small writes: its ``pending``, ``vrows`` and ``lexstage``
tables hold what that format writes between flushes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mnemos_kv import Mnemos  # noqa: E402
from mnemos_kv._records import FORMAT_VERSION  # noqa: E402

FACTS = [
    ("We chose Stripe for payments; PayPal was too expensive.", {"topic": "billing"}, "semantic"),
    ("The office moves to Berlin in March.", {"topic": "office", "month": 3}, "episodic"),
    ("Our main database is PostgreSQL 16.", {"topic": "infra"}, "semantic"),
    ("Alice leads the mobile app; Bob owns the backend APIs.", {"topic": "team"}, "semantic"),
    ("We deploy on Tuesdays and Thursdays, never on Fridays.", {"topic": "process"}, "procedural"),
    ("The team lunch is on Wednesday at the Thai place.", {"topic": "social"}, "episodic"),
    ("A temporary note that will be forgotten.", {}, "episodic"),
]


UNFLUSHED = [
    ("The backup runs nightly at two.", {"topic": "infra"}),
    ("Carol reviews every payments change.", {"topic": "billing"}),
    ("Is the vault key rotated yearly?", {}),
]


def _unflushed_writes(root: str) -> None:
    """Remember UNFLUSHED one by one (each write stages its postings) and end the
    process without closing the store (nothing flushes them)."""
    ticks = itertools.count(1_767_300_000, 60)
    db = Mnemos.open(root, clock=lambda: float(next(ticks)))
    for text, meta in UNFLUSHED:
        db.remember(text, meta)
    os._exit(0)


def build(root: str, compacted: bool, unflushed: bool = False) -> None:
    ticks = itertools.count(1_767_225_600, 60)
    with Mnemos.open(root, clock=lambda: float(next(ticks))) as db:
        ids = [db.remember(t, m, type=ty) for t, m, ty in FACTS]
        db.remember("The payments key is kept in the vault.", {"topic": "billing"}, key="vault")
        db.connect(ids[0], ids[2], relation="depends_on", weight=0.5)
        db.connect(ids[3], ids[2], relation="owns")
        db.forget(ids[6])
        crit = db.namespace("critic")
        crit.remember("The Berlin move plan lacks a budget.", {"severity": 2})
        if compacted:
            db.compact()
            db.remember("After compaction: the audit starts on June 2nd.", {"topic": "audit"})
    if unflushed:  # a few small writes after the last flush, then no close
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=_unflushed_writes, args=(root,))
        proc.start()
        proc.join()
        assert proc.exitcode == 0, proc.exitcode
    # keep the fixture small: drop the preallocated (zero) rows beyond the used slots?
    # No: the files stay exactly as the library wrote them; tar.gz squeezes the zeros.


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    os.makedirs(out, exist_ok=True)
    for name, compacted, unflushed in (("plain", False, False), ("compacted", True, False),
                                       ("unflushed", False, True)):
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "store")
            build(root, compacted, unflushed)
            dest = os.path.join(out, f"v{FORMAT_VERSION}_{name}.tar.gz")
            with tarfile.open(dest, "w:gz") as tar:
                for fn in sorted(os.listdir(root)):
                    if fn.endswith(".lock") or fn == "lock.mdb":
                        continue
                    tar.add(os.path.join(root, fn), arcname=fn)
            print(dest, os.path.getsize(dest))


if __name__ == "__main__":
    main()
