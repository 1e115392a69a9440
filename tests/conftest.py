"""Shared fixtures for runform's own tests (the stand-ins come from runform.testing's plugin)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


# pyenv (in this image's ~/.bashrc) takes a lock file at every shell start-up; a shell killed in
# that moment leaves it behind and every later shell (ssh sessions, stages' `bash -lc`) waits 60 s
# on it. A rehash takes well under a second, so a lock older than this is stale.
_PYENV_LOCK = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims" / ".pyenv-shim"
_PYENV_LOCK_STALE_S = 30.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    try:
        age = time.time() - _PYENV_LOCK.stat().st_mtime
    except OSError:
        return
    if age > _PYENV_LOCK_STALE_S:
        _PYENV_LOCK.unlink(missing_ok=True)
        warnings.warn(f"removed a stale pyenv rehash lock ({age:.0f} s old) before {item.nodeid}",
                      stacklevel=1)


@pytest.fixture(autouse=True)
def _own_run_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's applies record their runs (``runform status``) in a folder of its own, never
    in the user's ``~/.local/state``; subprocesses inherit it through the environment."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


def offline_wandb_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str) -> Any:
    """A TrackerContext for the real wandb library offline, its folders under ``tmp_path`` and
    no W&B variable of the caller's environment leaking in; ``api_key`` is the secret to hide."""
    from runform.redact import Redactor
    from runform.interfaces import TrackerContext

    for var in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY",
                "WANDB_RUN_GROUP", "WANDB_JOB_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("config", "cache", "data"):
        monkeypatch.setenv(f"WANDB_{name.upper()}_DIR", str(tmp_path / f"wandb-{name}"))
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
