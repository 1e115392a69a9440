"""An apply killed while it installs runform's agent on the machine: the next apply converges.

The installer (sdk/agent/installer.py) waits at a named point while a marker file
exists when ``RUNFORM_TEST_BOOTSTRAP_PAUSE`` names that point, so each case stops exactly there:

- ``venv``: the new venv's python is in place, its pip, scripts and packages are not;
- ``install``: the dependencies are installed into the new venv, runform is not.

Then either the machine's installer is killed too (``machine``: a half-built venv is left), or
only the client is (``client``: the installer goes on, orphaned, alongside the next apply).
``RUNFORM_TRIALS=N`` repeats every case N times (default 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import yaml
from helpers import poll, run_cli

from runform.agent.install import PAUSE_ENV
from runform.testing.sshd import SSHD

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")]

TRIALS = int(os.environ.get("RUNFORM_TRIALS", "1"))


def _use_ssh(project: Path, sshd: SSHD, root: Path) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


_until = partial(poll, timeout=120.0, step=0.02)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("kill", ["machine", "client"])
@pytest.mark.parametrize("point", ["venv", "install"])
def test_killed_bootstrap_is_repaired_by_the_next_apply(
    hello: Path, sshd: SSHD, tmp_path: Path, point: str, kill: str, trial: int
) -> None:
    root = tmp_path / "remote" / "hello"
    meta = root / ".runform"
    _use_ssh(hello, sshd, root)
    env = {k: v for k, v in os.environ.items() if k != "RUNFORM_DEBUG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"],
        cwd=hello, env={**env, PAUSE_ENV: point},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    marker = meta / "bootstrap.paused"
    try:
        _until(lambda: marker.exists() or proc.poll() is not None, f"the pause at {point}")
        assert marker.exists(), proc.communicate()[0]
        paused = json.loads(marker.read_text())
        assert paused["point"] == point
        # where it stands: one venv being built aside, nothing points to it, no sentinel
        builds = [p for p in meta.iterdir() if p.name.startswith("venv.")]
        assert len(builds) == 1 and (builds[0] / "bin" / "python").exists(), builds
        assert not (meta / "venv").exists() and not (meta / "ready").exists()
        site = next((builds[0] / "lib").glob("python3*/site-packages"))
        assert not list(site.glob("runform-*.dist-info"))
        if point == "install":
            assert list(site.glob("*.dist-info")), "the dependencies are installed first"
    finally:
        proc.kill()
        proc.wait()
    if kill == "machine":
        os.kill(paused["pid"], signal.SIGKILL)
        _until(lambda: not _alive(paused["pid"]), "the installer to die")
    else:
        marker.unlink()  # the orphaned installer goes on while the next apply starts

    done = run_cli("apply", "--auto-approve", cwd=hello)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "out" / "joined.txt").exists()
    again = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    _until(lambda: not _alive(paused["pid"]), "the orphaned installer to finish")

    # the machine: the venv the sentinel names, complete; no half-built one left over
    ready = json.loads((meta / "ready").read_text())
    assert (meta / "venv").is_symlink() and str((meta / "venv").readlink()) == ready["venv"]
    venvs = sorted(p.name for p in meta.iterdir() if p.name.startswith("venv."))
    assert venvs == [ready["venv"]], venvs
    probe = subprocess.run(
        [str(meta / "venv" / "bin" / "python"), "-c",
         "import importlib.metadata as m, runform.agent; print(m.version('runform'))"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode == 0 and probe.stdout.strip() == ready["version"], probe.stderr
    assert not marker.exists() and os.listdir(meta / "wheels") == []
