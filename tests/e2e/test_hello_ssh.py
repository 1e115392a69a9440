"""The hello example on the ssh provider against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from runform.testing.sshd import SSHD

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")]


def _use_ssh(project: Path, sshd: SSHD, root: Path) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _runs(root: Path) -> list[str]:
    p = root / "out" / "runs.log"
    return p.read_text().split("\n")[:-1] if p.exists() else []


def test_hello_over_ssh_behaves_as_local(hello: Path, sshd: SSHD, tmp_path: Path) -> None:
    root = tmp_path / "remote" / "hello"
    _use_ssh(hello, sshd, root)
    p = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert p.returncode == 2, p.stderr
    assert "Plan: 9 to add, 0 to change, 0 to destroy." in p.stdout
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert (root / "out" / "joined.txt").exists()
    assert stat.S_IMODE((root / ".runform" / "secrets.env").stat().st_mode) == 0o600
    again = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr

    (hello / "steps" / "branch.py").write_text((hello / "steps" / "branch.py").read_text() + "\n# edit\n")
    edit = run_cli("plan", "--json", cwd=hello)
    changes = {c["address"]: c for c in json.loads(edit.stdout)["resource_changes"]}
    rerun = {a for a, c in changes.items() if a.startswith("stage.") and c["action"] != "no-op"}
    assert rerun == {"stage.left", "stage.right", "stage.join"}
    assert "steps/branch.py" in changes["stage.left"]["reason"]
    before = len(_runs(root))
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert sorted(line.split()[0] for line in _runs(root)[before:]) == ["join", "left", "right"]
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    d = run_cli("destroy", "--auto-approve", cwd=hello)
    assert d.returncode == 0, d.stderr
    assert not root.exists()  # destroy cleans up the run's root, never more
    assert (tmp_path / "remote").exists()


def test_connection_cut_while_a_stage_runs(hello: Path, sshd: SSHD, tmp_path: Path) -> None:
    root = tmp_path / "remote" / "cut"
    _use_ssh(hello, sshd, root)
    spec = (hello / "runform.yaml").read_text()
    (hello / "runform.yaml").write_text(spec.replace("run: python steps/join.py",
                                                     "run: sleep 4; python steps/join.py"))
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=hello,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 120
    while "stage.join: Creating" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "stage.join: Creating" in seen, seen
    # wait until the job really runs on the machine (its supervisor wrote its pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((root / ".runform" / "jobs" / "join").glob("*/pid")):
        time.sleep(0.05)
    assert list((root / ".runform" / "jobs" / "join").glob("*/pid"))
    # cut every SSH session: the client loses its connection mid-wait
    assert sshd.kill_sessions() >= 1
    proc.kill()  # and the client dies too
    proc.wait()
    # the stage completes on the machine without the client
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (root / "out" / "joined.txt").exists():
        time.sleep(0.1)
    assert (root / "out" / "joined.txt").exists()
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert sum(1 for line in _runs(root) if line.startswith("join ")) == 1
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_changed_host_key_is_refused_with_the_fix(hello: Path, sshd: SSHD, tmp_path: Path) -> None:
    root = tmp_path / "remote" / "hk"
    _use_ssh(hello, sshd, root)
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    sshd.regenerate_host_key()
    refused = run_cli("apply", "--auto-approve", cwd=hello)
    assert refused.returncode == 1
    endpoint = f"{sshd.host}:{sshd.port}"
    assert endpoint in refused.stderr
    assert f"--accept-host-key {endpoint}" in refused.stderr
    assert "Traceback" not in refused.stderr
    accepted = run_cli("apply", "--auto-approve", "--accept-host-key", endpoint, cwd=hello)
    assert accepted.returncode == 0, accepted.stderr
    # the accepted key is pinned at once: a second change is refused again, never taken silently
    state = json.loads(run_cli("show", "--json", cwd=hello).stdout)
    pins = next(r for r in state["resources"] if r["address"] == "instance.main")["attrs"]["pins"]
    assert set(pins) == {endpoint}
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
    sshd.regenerate_host_key()
    again = run_cli("apply", "--auto-approve", cwd=hello)
    assert again.returncode == 1 and f"--accept-host-key {endpoint}" in again.stderr


def test_canary_not_in_remote_ps(hello: Path, sshd: SSHD, tmp_path: Path) -> None:
    import secrets

    canary = "canary-" + secrets.token_hex(10)
    (hello / "hello.env").write_text(f"HELLO_TOKEN={canary}\n")
    root = tmp_path / "remote" / "ps"
    _use_ssh(hello, sshd, root)
    spec = (hello / "runform.yaml").read_text()
    (hello / "runform.yaml").write_text(spec.replace("run: python steps/join.py",
                                                     "run: ps -ef > out/ps.txt; python steps/join.py"))
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    ps = (root / "out" / "ps.txt").read_text()
    assert "steps/join.py" in ps or "ps -ef" in ps
    assert canary not in ps
    assert canary not in a.stdout + a.stderr
    assert stat.S_IMODE((root / ".runform" / "secrets.env").stat().st_mode) == 0o600
