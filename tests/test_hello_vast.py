"""The hello example on provider: vast, against runform's Vast API stand-in and a real sshd."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from runform.testing.sshd import SSHD

pytestmark = pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")

COMPUTE = {"provider": "vast", "gpus": ["RTX_4090", "rtx 3090"], "num_gpus": 1,
           "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime", "disk_gb": 40,
           "max_price_per_hour": 3.0, "max_duration": "2h", "teardown": "never"}


def _use_vast(project: Path, **compute: object) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**COMPUTE, **compute}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _label(project: Path) -> str:
    lineage = json.loads((project / ".runform" / "state.json").read_text())["lineage"]
    return f"runform-hello-{lineage[:8]}"


@pytest.fixture
def standin(make_vast_standin, sshd):  # type: ignore[no-untyped-def]
    s = make_vast_standin(sshd=sshd)
    s.set_lifecycle(created_s=0.05, loading_s=0.1, destroy_s=0.05)
    return s


def test_rent_run_teardown(hello: Path, standin, sshd) -> None:  # type: ignore[no-untyped-def]
    env = standin.env()
    _use_vast(hello)
    p = run_cli("plan", cwd=hello, env=env)
    assert p.returncode == 0, p.stderr
    assert "Chosen offer:" in p.stdout and "RTX 4090" in p.stdout and "Estimated cost: $" in p.stdout
    offers = run_cli("offers", cwd=hello, env=env)
    assert offers.returncode == 0, offers.stderr
    assert "RTX 4090" in offers.stdout and "chosen" in offers.stdout.lower()
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    label = _label(hello)
    assert len(standin.audit().creates_for(label)) == 1
    assert len(standin.audit().live_for(label)) == 1
    # teardown: never: the instance lives and the second plan is empty
    assert run_cli("plan", "--detailed-exitcode", cwd=hello, env=env).returncode == 0
    # its host key is pinned in state under its SSH endpoint, and its price is known for costs
    inst = next(r for r in json.loads(run_cli("show", "--json", cwd=hello, env=env).stdout)["resources"]
                if r["address"] == "instance.main")
    assert inst["attrs"]["pins"] == {f"{sshd.host}:{sshd.port}": sshd.host_key}
    assert inst["attrs"]["instance"]["attrs"]["price_per_hour"] > 0

    # a reboot is waited for, never answered with a second rental
    standin.set_lifecycle(loading_s=1.5)
    standin.reboot(standin.audit().live_for(label)[0])
    p = run_cli("plan", "--json", cwd=hello, env=env)
    inst_change = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "instance.main")
    assert inst_change["action"] == "read" and "is loading" in inst_change["reason"], inst_change
    assert all(c["action"] == "no-op" for c in json.loads(p.stdout)["resource_changes"]
               if c["address"].startswith("stage."))
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    assert len(standin.audit().creates_for(label)) == 1 and len(standin.audit().live_for(label)) == 1
    assert run_cli("plan", "--detailed-exitcode", cwd=hello, env=env).returncode == 0
    standin.set_lifecycle(loading_s=0.1)

    # teardown: on_success gives the machine back after a successful apply
    _use_vast(hello, teardown="on_success")
    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v2\n")
    t = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert t.returncode == 0, t.stderr
    assert "destroyed (teardown: on_success)" in t.stdout
    assert standin.audit().live_for(label) == []
    # the run completed: nothing to rent until a stage must run again
    assert run_cli("plan", "--detailed-exitcode", cwd=hello, env=env).returncode == 0
    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v3\n")
    after = run_cli("plan", "--json", cwd=hello, env=env)
    inst = next(c for c in json.loads(after.stdout)["resource_changes"] if c["address"] == "instance.main")
    assert inst["action"] == "create"


def test_no_feasible_offer_names_the_filters(hello: Path, standin) -> None:  # type: ignore[no-untyped-def]
    _use_vast(hello, max_price_per_hour=0.001)
    p = run_cli("plan", cwd=hello, env=standin.env())
    assert p.returncode == 1
    assert "no feasible offer" in p.stderr and "max_price_per_hour" in p.stderr
    assert "Traceback" not in p.stderr


def test_sigkill_during_provisioning_never_duplicates(hello: Path, standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, **standin.env()}
    rng = random.Random(7)
    trials = int(os.environ.get("RUNFORM_VAST_KILL_TRIALS", "10"))
    for trial in range(trials):
        project = tmp_path / f"k{trial}"
        shutil.copytree(hello, project)
        _use_vast(project)
        spec = yaml.safe_load((project / "runform.yaml").read_text())
        spec["stages"] = {"only": {"run": "echo ok > out.txt", "deps": [], "outputs": ["out.txt"]}}
        spec.pop("datasets", None)
        (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"],
                                cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.3, 4.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done = run_cli("apply", "--auto-approve", cwd=project, env=standin.env())
        assert done.returncode == 0, f"trial {trial}: {done.stderr}"
        label = _label(project)
        assert len(standin.audit().creates_for(label)) == 1, f"trial {trial}: a duplicate was rented"
        assert run_cli("plan", "--detailed-exitcode", cwd=project, env=standin.env()).returncode == 0
        gone = run_cli("destroy", "--auto-approve", cwd=project, env=standin.env())
        assert gone.returncode == 0, gone.stderr
        assert standin.audit().live_for(label) == [], f"trial {trial}: an orphan is left"
