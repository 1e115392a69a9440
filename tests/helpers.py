"""Helpers shared by runform's tests: paths, the CLI in a subprocess, polling with a deadline,
the local machine's folders, an offline W&B tracker context.

Import them as ``from helpers import poll, run_cli`` (tests/ is on ``sys.path``: pytest puts the
root conftest's folder there). Fixtures stay in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EXAMPLES = REPO / "examples"

T = TypeVar("T")


def poll(fn: Callable[[], T], what: str = "the condition", *, timeout: float = 10.0, step: float = 0.01) -> T:
    """``fn()`` until it returns something truthy (returned), or fail once ``timeout`` seconds
    have passed: the tests wait for things this way, never with a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(step)
    return got


def isolate_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real wandb library with its folders under ``tmp_path``, silent, and no W&B variable of
    the caller's environment leaking in."""
    for var in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY",
                "WANDB_RUN_GROUP", "WANDB_JOB_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("config", "cache", "data"):
        monkeypatch.setenv(f"WANDB_{name.upper()}_DIR", str(tmp_path / f"wandb-{name}"))


def offline_wandb_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str) -> Any:
    """A TrackerContext for the real wandb library offline, its folders under ``tmp_path`` and
    no W&B variable of the caller's environment leaking in; ``api_key`` is the secret to hide."""
    from runform.redact import Redactor

    from runform.interfaces import TrackerContext

    isolate_wandb(tmp_path, monkeypatch)
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": api_key, "WANDB_PROJECT": "runform-tests"}
    return TrackerContext("burgers1d-quality-v2", "lineage-7", tmp_path / ".runform", tmp_path,
                          redactor=Redactor.from_env({"WANDB_API_KEY": api_key}), env=env)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``runform`` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RUNFORM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "runform.cli.main", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, input=input, timeout=timeout)


def interrupt_cli(*args: str, cwd: Path, when: Callable[[], object], what: str,
                  sig: int = signal.SIGINT, timeout: float = 240.0) -> tuple[int, str]:
    """Start the real CLI, wait (polling) until ``when()`` holds, send it ``sig`` (the user's
    Ctrl-C by default) and return its exit code and output (stdout and stderr together)."""
    env = {k: v for k, v in os.environ.items() if k != "RUNFORM_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        poll(when, what, timeout=timeout, step=0.05)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def machine_root(project: Path) -> Path:
    roots = [p for p in (project / ".runform" / "machines").iterdir() if p.is_dir()
             and not p.name.endswith(".deleting")]
    assert len(roots) == 1, roots
    return roots[0]


def runs_log(project: Path) -> list[str]:
    path = machine_root(project) / "out" / "runs.log"
    return path.read_text().split("\n")[:-1] if path.exists() else []
