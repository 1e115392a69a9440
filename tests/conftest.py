"""Shared fixtures for runform's own tests (the stand-ins come from runform.testing's plugin)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``runform`` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RUNFORM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "runform.cli.main", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, input=input, timeout=timeout)


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A fresh copy of examples/hello (without any state)."""
    dest = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", dest, ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
    return dest


def machine_root(project: Path) -> Path:
    roots = [p for p in (project / ".runform" / "machines").iterdir() if p.is_dir()
             and not p.name.endswith(".deleting")]
    assert len(roots) == 1, roots
    return roots[0]


def runs_log(project: Path) -> list[str]:
    path = machine_root(project) / "out" / "runs.log"
    return path.read_text().split("\n")[:-1] if path.exists() else []
