"""Damaged files: on copies of small closed stores, flip bits, truncate and zero pages in
every file the store has; open, verify, dump and ask must give the right data or raise a
MnemosError (each case runs in a forked child: a signal or hang is a failure, not a dead
test run), and ``recover`` must bring back every memory whose log frame is intact.

The CI budget is a few cases per file and kind; ``scripts/corruption_sweep.py`` runs
many more. The counts per file are printed (``pytest -s``).
"""

from __future__ import annotations

import collections
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _corruption as C  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PER_KIND = int(os.environ.get("MNEMOS_CORRUPTION_PER_KIND", "2"))


@pytest.mark.parametrize("compacted", [False, True], ids=["plain", "compacted"])
def test_damaged_copies_never_crash_lie_or_lose_intact_frames(tmp_path, compacted: bool) -> None:
    src = str(tmp_path / "src")
    expect = C.build(src, compacted)
    cases = C.cases(src, PER_KIND)
    files = {c[0] for c in cases}
    assert {"data.mdb", "lock.mdb"} <= files and any(f.startswith("vectors.") for f in files) \
        and any(f.startswith("slots.") for f in files) and any(f.startswith("log.") for f in files)
    if compacted:
        assert any(f.startswith("base.") for f in files)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for i, case in enumerate(cases):
        res = C.run_case(src, expect, case, str(tmp_path / f"w{i % 2}"))
        if "failure" in res:
            failures.append(f"{case}: {res['failure']}")
            counts[case[0]]["FAILED"] += 1
            continue
        counts[case[0]][f"{case[1]}"] += 1
        counts[case[0]][f"open {res['open'].split(':')[0]}"] += 1
    print(f"\ncorruption cases ({'compacted' if compacted else 'plain'} store): {len(cases)}")
    for name in sorted(counts):
        print(f"  {name:<24} " + ", ".join(f"{k} {v}" for k, v in sorted(counts[name].items())))
    assert not failures, "\n".join(failures[:20])
