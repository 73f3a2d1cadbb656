"""The README is a test: its quick tour runs, and every CLI command is documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from mnemos_kv.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    cmds = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(cmds) == 2
    assert "mnemos-kv demo" in cmds[0]
    assert "pytest" in cmds[1]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert cmds[1] in ci  # CI runs the README's test command


def test_quick_tour_runs(tmp_path) -> None:
    code = re.search(r"## Quick tour\n\n```python\n(.*?)```", README, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout
    assert out.startswith("We chose Stripe for payments ")


def test_every_cli_command_is_documented_with_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"mnemos-kv {name}" in README, f"README does not document 'mnemos-kv {name}'"
        helps = [a.help for a in sub._choices_actions if a.dest == name]
        assert helps and helps[0], f"command {name} has no help"
