"""A stage asked to run again runs again: `--replace`, and outputs gone from the machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import machine_root, run_cli, runs_log

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def _count(project: Path, stage: str) -> int:
    return sum(1 for line in runs_log(project) if line.split(" ", 1)[0] == stage)


def test_replace_reruns_a_stage_that_succeeded(hello: Path) -> None:
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert _count(hello, "prepare") == 1
    a = run_cli("apply", "--auto-approve", "--replace", "stage.prepare", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert _count(hello, "prepare") == 2
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_missing_output_is_made_again_and_the_plan_converges(hello: Path) -> None:
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    left = machine_root(hello) / "out" / "left.txt"
    left.unlink()
    p = run_cli("plan", cwd=hello)
    assert "stage.left: output(s) missing on the machine: out/left.txt" in p.stdout
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert left.exists()
    assert _count(hello, "left") == 2
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
