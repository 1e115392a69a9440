"""burgers1d: rehearse runform.vast.yaml offline at tiny CPU sizes, through to the eval table.

The spec's stages run exactly as written (the setup stage's pinned install, every command, deps
and needs, the b2:// dataset and artifacts). What the rehearsal replaces: ``compute`` (the local
provider instead of a rented machine: the Vast stand-in's machine is this host's login shell,
whose Python has no torch, and a setup stage must not pip-install into it), the tracker (jsonl
instead of W&B), the bucket (moto's S3 server in B2 mode), ``--var device=cpu``, and the sizes:
``configs/pdebench/*.yaml`` in the copy are overwritten with tiny ones that keep PDEBench's file
name, row split (test first), strides, given frames and nu convention.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import machine_root, run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.dataset import write_pdebench
from burgers1d.solver import Grid, coarsen, random_initial_conditions, solve
from burgers1d.tiny import TINY

FILE = "1D_Burgers_Sols_Nu0.001.hdf5"
PREFIX = "pdebench/raw/1D/Burgers/Nu0.001/"


def _pins_are_installed() -> bool:
    for line in (EXAMPLE / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            try:
                if importlib.metadata.version(name) != version:
                    return False
            except importlib.metadata.PackageNotFoundError:
                return False
    return True


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not _pins_are_installed(), reason="requirements.txt pins differ from this environment (offline)"
)]


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


def test_the_vast_spec_runs_offline_at_tiny_sizes(tmp_path: Path, s3_server_b2) -> None:  # type: ignore[no-untyped-def]
    server = s3_server_b2
    bucket = server.make_bucket()
    project = tmp_path / "burgers1d"
    ignore = shutil.ignore_patterns(".runform", "data", "checkpoints", "reports", "__pycache__")
    shutil.copytree(EXAMPLE, project, ignore=ignore)
    _tiny_presets(project / "configs" / "pdebench")
    _pdebench_file(tmp_path / FILE)
    server.runform_client().upload_file(str(tmp_path / FILE), bucket, PREFIX + FILE)
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in server.env("b2").items()))

    spec = yaml.safe_load((project / "runform.vast.yaml").read_text(encoding="utf-8"))
    written = json.dumps(spec["stages"], sort_keys=True)
    spec["compute"] = {"provider": "local"}
    spec["tracker"] = {"kind": "jsonl"}
    spec["variables"].pop("wandb_entity")
    (dataset,) = spec["datasets"].values()
    assert dataset["source"].endswith(PREFIX)
    dataset["source"] = f"b2://{bucket}/{PREFIX}"
    spec["artifacts"]["checkpoints"]["to"] = f"b2://{bucket}/runs/${{run}}/"
    assert json.dumps(spec["stages"], sort_keys=True) == written  # the stages as written
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    a = run_cli("apply", "--auto-approve", "--var", "device=cpu", cwd=project, timeout=900)
    assert a.returncode == 0, a.stdout[-3000:] + a.stderr[-3000:]
    assert (
        run_cli("plan", "--detailed-exitcode", "--var", "device=cpu", cwd=project).returncode == 0
    )

    root = machine_root(project)
    versions = (root / "reports" / "setup_versions.txt").read_text()
    assert "h5py==" in versions and "matplotlib==" in versions
    report = json.loads((root / "reports" / "eval.json").read_text())
    assert report["test_trajectories"] == 4 and report["train_seeds"] == 2
    assert 0 < report["test_nrmse_fno"] < 10 and 0 < report["test_nrmse_ttc"] < 10
    logs = run_cli("logs", "eval", cwd=project)
    assert logs.returncode == 0, logs.stderr
    assert "| FNO baseline |" in logs.stdout and "| TTC |" in logs.stdout
    assert logs.stdout.rstrip().endswith("summary: reports/summary.md")
    listed = server.runform_client().list_objects_v2(Bucket=bucket, Prefix="runs/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert any(k.endswith("reports/summary.md") for k in keys), sorted(keys)[:20]
