"""Two applies at once: exactly one proceeds; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli

from runform.state.lock import FileLock

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def _slow(project: Path) -> None:
    spec = (project / "runform.yaml").read_text()
    (project / "runform.yaml").write_text(spec.replace("run: python steps/join.py", "run: sleep 30; python steps/join.py"))


def _wait_for_lock(project: Path, deadline: float = 30) -> dict:
    end = time.monotonic() + deadline
    path = project / ".runform" / "lock.json"
    while time.monotonic() < end:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.02)
    raise AssertionError("the first apply never took the lock")


def test_second_apply_fails_fast_naming_the_holder_then_takes_over(hello: Path) -> None:
    _slow(hello)
    first = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=hello,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        info = _wait_for_lock(hello)
        t0 = time.monotonic()
        second = run_cli("apply", "--auto-approve", cwd=hello)
        took = time.monotonic() - t0
        assert second.returncode == 1
        assert took < 2.0 + 1.5  # the CLI's own start-up included
        assert "Error acquiring the state lock" in second.stderr
        assert info["ID"] in second.stderr and info["Who"] in second.stderr
        assert f"pid {info['pid']}" in second.stderr
        assert "force-unlock" in second.stderr and "Traceback" not in second.stderr
        # the holder dies: its lock is taken over (same host, pid gone) without force-unlock
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        third = run_cli("plan", "--lock-timeout", "5s", cwd=hello)
        assert third.returncode == 0, third.stderr
    finally:
        if first.poll() is None:
            first.kill()


def test_lease_lapses_for_a_holder_on_another_host(tmp_path: Path) -> None:
    lock = FileLock(tmp_path, lease=30)
    # a holder on another host whose lease ends in 1 s
    (tmp_path / "lock.json").write_text(json.dumps({
        "ID": "other", "Operation": "apply", "Who": "bob@elsewhere", "Version": "0", "Created": "now",
        "Path": str(tmp_path), "pid": 1, "host": socket.gethostname() + "-other", "expires": time.time() + 1.0,
    }))
    try:
        lock.acquire("apply", timeout=0)
        raise AssertionError("a live lease must not be taken")
    except Exception as exc:  # noqa: BLE001
        assert "bob@elsewhere" in str(exc)
    info = lock.acquire("apply", timeout=10)  # waits until the lease lapsed
    assert info.who != "bob@elsewhere"
    lock.release()
    assert not (tmp_path / "lock.json").exists()


def test_force_unlock_needs_the_right_id(hello: Path) -> None:
    (hello / ".runform").mkdir()
    (hello / ".runform" / "lock.json").write_text(json.dumps({
        "ID": "abc-123", "Operation": "apply", "Who": "bob@elsewhere", "Version": "0", "Created": "now",
        "Path": "x", "pid": 1, "host": "elsewhere", "expires": time.time() + 3600,
    }))
    wrong = run_cli("force-unlock", "nope", cwd=hello)
    assert wrong.returncode == 1 and "abc-123" in wrong.stderr
    ok = run_cli("force-unlock", "abc-123", cwd=hello)
    assert ok.returncode == 0 and "successfully unlocked" in ok.stdout
    assert run_cli("plan", cwd=hello).returncode == 0
