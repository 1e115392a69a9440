"""burgers1d: rehearse runform.vast.yaml offline at tiny CPU sizes, through to the eval table.

The spec runs on provider: vast against runform's Vast API stand-in, whose instances are this
host reached through a real OpenSSH sshd (runform's pytest fixtures ``sshd``,
``make_vast_standin``, ``s3_server_b2``). Its stages run exactly as written (the setup stage,
every command, deps and needs, torchrun's launcher with gloo, the b2:// dataset and artifacts).
What the rehearsal sets: ``--var python=`` this test's interpreter (the login shell's Python on
this host has no torch; the setup stage's ``envcheck --pins`` finds every pin installed there, so
pip never runs, never reaches the network and never touches a system Python), ``--var
device=cpu``, ``compute.root`` (instances share this host's filesystem), the tracker (jsonl
instead of W&B), the bucket (moto's S3 server in B2 mode) and the sizes: ``configs/pdebench/*``
in the copy are overwritten with tiny ones that keep PDEBench's file name, row split (test
first), strides, given frames and nu convention.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_cli
from runform.testing.sshd import SSHD

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.dataset import write_pdebench
from burgers1d.envcheck import missing_pins
from burgers1d.solver import Grid, coarsen, random_initial_conditions, solve
from burgers1d.tiny import TINY

FILE = "1D_Burgers_Sols_Nu0.001.hdf5"
PREFIX = "pdebench/raw/1D/Burgers/Nu0.001/"


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed"),
    pytest.mark.skipif(
        bool(missing_pins(EXAMPLE / "requirements.txt")),
        reason="requirements.txt pins differ from this environment (installing needs the network)",
    ),
]


def _pdebench_file(path: Path) -> None:
    """24 trajectories x 21 frames x 64 cells in PDEBench's raw layout, nu only in the name,
    solved with viscosity nu/pi as PDEBench's solver does."""
    fine = Grid(128)
    u0 = random_initial_conditions(np.random.default_rng(5), 24, fine)
    t = np.linspace(0.0, 0.4, 21)
    u = coarsen(solve(u0, fine, 0.001 / np.pi, t), 2)
    write_pdebench(path, u, Grid(64).x, np.append(t, t[-1] + t[1]), nu=0.0)
    import h5py

    with h5py.File(path, "r+") as f:
        del f.attrs["nu"]  # PDEBench's files carry nu in the name only


def _tiny_presets(configs: Path) -> None:
    base = {
        "include": "../base.yaml",
        "data": {
            "root": "data/burgers1d",
            "splits": {
                "test": {"path": FILE, "start": 0, "stop": 4},
                "val": {"path": FILE, "start": 4, "stop": 8},
                "train": {"path": FILE, "start": 8, "stop": 24},
            },
            "t_stride": 2,
            "x_stride": 2,
            "given_frames": 2,
            "nu_convention": "pdebench",
        },
        "runtime": {"device": "cpu", "num_threads": 1},
        "train_seeds": 2,
    }
    (configs / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    for name, body in TINY.items():
        if name in ("base", "data"):
            continue
        body = {**body, "include": [f"../{name}.yaml", "base.yaml"]}
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")


def test_the_vast_spec_runs_offline_at_tiny_sizes(  # type: ignore[no-untyped-def]
    tmp_path: Path, s3_server_b2, sshd, make_vast_standin
) -> None:
    server = s3_server_b2
    bucket = server.make_bucket()
    standin = make_vast_standin(sshd=sshd)
    project = tmp_path / "burgers1d"
    ignore = shutil.ignore_patterns(".runform", "data", "checkpoints", "reports", "__pycache__")
    shutil.copytree(EXAMPLE, project, ignore=ignore)
    _tiny_presets(project / "configs" / "pdebench")
    _pdebench_file(tmp_path / FILE)
    server.runform_client().upload_file(str(tmp_path / FILE), bucket, PREFIX + FILE)
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in server.env("b2").items()))

    spec = yaml.safe_load((project / "runform.vast.yaml").read_text(encoding="utf-8"))
    written = json.dumps(spec["stages"], sort_keys=True)
    compute = dict(spec["compute"])
    assert compute["provider"] == "vast"
    spec["compute"]["root"] = str(tmp_path / "vast-root")  # instances share this host's disk
    # the spec gives the machine back after a successful apply (on_success); here it stays up
    # so that `runform logs` can read the table from it, and `destroy` gives it back
    assert compute["teardown"] == "on_success"
    spec["compute"]["teardown"] = "never"
    if os.geteuid() != 0:  # Vast logs in as root; a non-root test sshd as its own user
        spec["compute"]["options"] = {"ssh_user": getpass.getuser()}
    spec["tracker"] = {"kind": "jsonl"}
    spec["variables"].pop("wandb_entity")
    (dataset,) = spec["datasets"].values()
    assert dataset["source"].endswith(PREFIX)
    dataset["source"] = f"b2://{bucket}/{PREFIX}"
    spec["artifacts"]["checkpoints"]["to"] = f"b2://{bucket}/runs/${{run}}/"
    assert json.dumps(spec["stages"], sort_keys=True) == written  # the stages as written
    # torchrun's default --nproc_per_node is the GPU count (none here: 1 process, no process
    # group); two processes on one stage make DDP over gloo run for real
    spec["stages"]["operator"]["nproc"] = 2
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    env = standin.env()
    args = ("--var", "device=cpu", "--var", f"python={sys.executable}")
    a = run_cli("apply", "--auto-approve", *args, cwd=project, env=env, timeout=900)
    assert a.returncode == 0, a.stdout[-3000:] + a.stderr[-3000:]
    assert len(standin.audit().creates) == 1 and len(standin.audit().live) == 1  # one machine
    assert run_cli("plan", "--detailed-exitcode", *args, cwd=project, env=env).returncode == 0

    root = tmp_path / "vast-root"
    setup_log = run_cli("logs", "setup", cwd=project, env=env)
    assert "every pin is installed; nothing to install" in setup_log.stdout, setup_log.stdout
    versions = (root / "reports" / "setup_versions.txt").read_text()
    assert "h5py==3.16.0" in versions and "matplotlib==3.11.2" in versions
    report = json.loads((root / "reports" / "eval.json").read_text())
    assert report["test_trajectories"] == 4 and report["train_seeds"] == 2
    assert 0 < report["test_nrmse_fno"] < 10 and 0 < report["test_nrmse_ttc"] < 10
    request = json.loads(
        next((root / ".runform" / "jobs" / "operator").glob("*/request.json")).read_text()
    )
    assert request["command"].startswith(f"{sys.executable} -m torch.distributed.run --standalone")
    operator_log = run_cli("logs", "operator", cwd=project, env=env).stdout
    assert "[operator] device cpu, world size 2" in operator_log, operator_log[-2000:]
    logs = run_cli("logs", "eval", cwd=project, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "| FNO baseline |" in logs.stdout and "| TTC |" in logs.stdout
    assert logs.stdout.rstrip().endswith("summary: reports/summary.md")
    listed = server.runform_client().list_objects_v2(Bucket=bucket, Prefix="runs/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert any(k.endswith("reports/summary.md") for k in keys), sorted(keys)[:20]

    d = run_cli("destroy", "--auto-approve", *args, cwd=project, env=env)
    assert d.returncode == 0, d.stderr
    assert standin.audit().live == () and len(standin.audit().creates) == 1
