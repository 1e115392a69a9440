"""SIGKILL apply at random points: the next apply converges, no completed stage runs twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_cli, runs_log

from runform.state.local import LocalStateBackend

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

TRIALS = int(os.environ.get("RUNFORM_KILL_TRIALS", "20"))


def _apply_and_kill(project: Path, after: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_at_random_points_converges(hello: Path) -> None:
    rng = random.Random(int(os.environ.get("RUNFORM_KILL_SEED", "1234")))
    base = hello
    # one reference apply measures how long a whole apply takes here
    t0 = time.monotonic()
    ref = base.parent / "ref"
    import shutil

    shutil.copytree(base, ref)
    assert run_cli("apply", "--auto-approve", cwd=ref).returncode == 0
    full = time.monotonic() - t0
    for trial in range(TRIALS):
        project = base.parent / f"trial{trial}"
        shutil.copytree(base, project)
        kills = 1 + trial % 3  # up to three kills in a row before a clean apply
        for _ in range(kills):
            _apply_and_kill(project, rng.uniform(0.05, full))
        # the state always loads after a kill
        LocalStateBackend(project / ".runform").read()
        done = run_cli("apply", "--auto-approve", cwd=project)
        assert done.returncode == 0, f"trial {trial}: {done.stderr}"
        plan = run_cli("plan", "--detailed-exitcode", cwd=project)
        assert plan.returncode == 0, f"trial {trial}: {plan.stdout}"
        counts = Counter(runs_log(project))
        assert set(counts) == set(runs_log(ref)), f"trial {trial}: {counts}"
        twice = [k for k, n in counts.items() if n > 1]
        assert not twice, f"trial {trial}: ran twice for the same fingerprint: {twice}"
        state = LocalStateBackend(project / ".runform").read()
        assert state is not None and not state.pending
        shutil.rmtree(project)


@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["terminal", "background-job"])
def test_ctrl_c_leaves_a_consistent_state_and_the_job_goes_on(hello: Path, started_ignoring_sigint: bool) -> None:
    """SIGINT stops an apply cleanly, also one started with SIGINT ignored (as a non-interactive
    shell starts a background job: Python then installs no Ctrl-C handler by itself)."""
    spec = (hello / "runform.yaml").read_text()
    (hello / "runform.yaml").write_text(spec.replace("run: python steps/join.py", "run: sleep 8; python steps/join.py"))

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=hello,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ignore_sigint if started_ignoring_sigint else None)
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline and "stage.join: Creating" not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "stage.join: Creating" in seen, seen
    from helpers import machine_root

    jobs = machine_root(hello) / ".runform" / "jobs" / "join"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(jobs.glob("*/pid")):
        time.sleep(0.05)  # poll (with a deadline) until the job really runs
    assert list(jobs.glob("*/pid"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in out
    state = LocalStateBackend(hello / ".runform").read()
    assert state is not None and "stage.join" not in state.resources
    plan = run_cli("plan", "--json", cwd=hello)
    import json

    join = next(c for c in json.loads(plan.stdout)["resource_changes"] if c["address"] == "stage.join")
    assert join["action"] in ("attach", "read")  # running still, or finished meanwhile: never started twice
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert Counter(runs_log(hello))["join" + " " + join["fingerprint"]] <= 1
    assert sum(1 for line in runs_log(hello) if line.startswith("join ")) == 1
