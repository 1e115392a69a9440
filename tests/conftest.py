"""Shared fixtures for runform's own tests (the stand-ins come from runform.testing's plugin)."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
from helpers import EXAMPLES, REPO, machine_root, offline_wandb_context, poll, run_cli, runs_log  # noqa: F401

# The helpers live in tests/helpers.py (``from helpers import poll, run_cli``); this file keeps the
# fixtures, and re-exports the helpers for a test still written ``from conftest import ...``.


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


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A fresh copy of examples/hello (without any state)."""
    dest = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", dest, ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
    return dest
