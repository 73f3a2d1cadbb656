"""A longer corruption sweep than the test suite's (see tests/test_corruption.py).

    python scripts/corruption_sweep.py [PER_KIND] [SEED]

For a plain and a compacted store: PER_KIND bit flips, truncations and zeroed pages of
every file, each checked in a forked child. Prints counts per file and every failure;
exits 1 on a failure.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import _corruption as C  # noqa: E402


def main() -> int:
    per_kind = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    failures = 0
    for compacted in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            expect = C.build(src, compacted)
            cases = C.cases(src, per_kind, seed)
            counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            for i, case in enumerate(cases):
                res = C.run_case(src, expect, case, os.path.join(tmp, "w"))
                if "failure" in res:
                    failures += 1
                    counts[case[0]]["FAILED"] += 1
                    print(f"FAILED {case}: {res['failure']}", flush=True)
                    continue
                counts[case[0]][case[1]] += 1
                counts[case[0]]["open " + res["open"].split(":")[0]] += 1
                counts[case[0]]["recover " + res["recover"].split(":")[0]] += 1
            print(f"{'compacted' if compacted else 'plain'} store: {len(cases)} cases")
            for name in sorted(counts):
                print(f"  {name:<28} " + ", ".join(f"{k} {v}" for k, v in sorted(counts[name].items())))
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
