"""A long fuzzing run of every parser of on-disk bytes (the properties of
tests/test_parsers_fuzz.py with a big budget).

    python scripts/fuzz_parsers.py [EXAMPLES_PER_PARSER]   (default 5000)

Hypothesis (derandomized, like the suite, but with a far larger budget) mutates valid files (bytes
flipped, cut, spliced) and raw random bytes; any exception other than a MnemosError, a
hang or a crash fails the run. Prints the inputs tried per parser.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> int:
    n = sys.argv[1] if len(sys.argv) > 1 else "5000"
    env = dict(os.environ, MNEMOS_FUZZ_EXAMPLES=n)
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            "tests/test_parsers_fuzz.py"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
