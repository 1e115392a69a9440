"""The README's Quickstart, run as written on a copy of examples/hello: every command works, and
the plan it shows after the edit is the one the README prints (up to ids and durations)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

README = Path(__file__).resolve().parents[2] / "README.md"
# what differs from run to run: instance and tracker run ids (from the state's lineage), durations
_VARYING = [
    (re.compile(r"runform-hello-[0-9a-f]{8}\b"), "runform-hello-<lineage>"),
    (re.compile(r"\bhello-[0-9a-f]{12}\b"), "hello-<run-id>"),
    (re.compile(r"\bran \d+(\.\d+)?s\b"), "ran <t>s"),
]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(section: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block."""
    return [(m[1], m[2]) for m in re.finditer(r"```(\w*)\n(.*?)```", section, re.DOTALL)]


def _normal(text: str) -> list[str]:
    for pattern, repl in _VARYING:
        text = pattern.sub(repl, text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def test_the_quickstart_prints_what_the_readme_shows(hello: Path) -> None:
    blocks = _blocks(_section(README.read_text(), "Quickstart"))
    commands = [c.split("  #")[0].strip() for c in blocks[0][1].splitlines() if c.strip()]
    shown = blocks[1][1]
    assert commands[0] == "cd examples/hello", commands
    env = {k: v for k, v in os.environ.items() if k != "RUNFORM_DEBUG"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `runform`
    printed: list[tuple[str, str]] = []
    for command in commands[1:]:
        p = subprocess.run(["bash", "-c", command], cwd=hello, env=env, capture_output=True,
                           text=True, timeout=300, check=False)
        assert p.returncode == 0, f"{command}: {p.stdout}{p.stderr}"
        assert "Traceback" not in p.stderr
        printed.append((command, p.stdout))
    edit = next(i for i, (c, _) in enumerate(printed) if c.startswith("echo "))
    before, after = printed[edit - 1], printed[edit + 1]
    assert before[0] == after[0] == "runform plan"
    assert before[1].startswith("No changes."), before[1]
    assert _normal(after[1]) == _normal(shown)
