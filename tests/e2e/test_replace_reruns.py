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


def test_inputs_changed_back_run_again(hello: Path) -> None:
    """A → B → A: the job of A finished once, but B's job rewrote the outputs since, so A runs
    again (its old record on the machine is not the stage's latest)."""
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    spec = hello / "runform.yaml"
    a_text = spec.read_text()
    spec.write_text(a_text.replace('SHOUT: "1"', 'SHOUT: ""'))
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert _count(hello, "right") == 2
    b_output = (machine_root(hello) / "out" / "right.txt").read_text()
    spec.write_text(a_text)
    p = run_cli("plan", cwd=hello)
    assert "-/+ stage.right: env SHOUT changed" in p.stdout, p.stdout
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert _count(hello, "right") == 3
    assert (machine_root(hello) / "out" / "right.txt").read_text() != b_output
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
