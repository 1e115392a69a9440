"""burgers1d: the operator stage on two CPU nodes (local node folders) under torchrun's c10d
rendezvous and gloo, at tiny size: world size 2 across the nodes, one checkpoint per seed, a
second plan empty."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import yaml
from helpers import EXAMPLES, run_cli

pytestmark = pytest.mark.slow  # end to end: simulate, precompute, then two nodes train (tens of seconds)

EXAMPLE = EXAMPLES / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d import precompute, simulate
from burgers1d.tiny import make_run_root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_operator_stage_on_two_cpu_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_run_root(tmp_path / "project")
    monkeypatch.chdir(project)
    # the data and latent cache the operator reads, made here once; the code sync carries them
    # to both nodes (at this size they are small)
    assert simulate.main(["--config", "configs/tiny/data.yaml"]) == 0
    assert precompute.main(["--config", "configs/tiny/encoder.yaml"]) == 0
    spec = {
        "run": "burgers1d-two-nodes",
        "compute": {"provider": "local", "nodes": 2, "rdzv_port": _free_port()},
        "code": {"path": ".", "exclude": ["checkpoints/operator/", "reports/", ".runform/", "**/__pycache__/"]},
        "stages": {"operator": {
            "run": f"{sys.executable} -m burgers1d.train_operator --config configs/tiny/operator.yaml --device cpu",
            "launcher": "torchrun", "env": {"OMP_NUM_THREADS": "1"},
            "outputs": ["checkpoints/operator"], "metrics": "reports/operator.json", "timeout": "10m"}},
        "tracker": {"kind": "none"},
    }
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    a = run_cli("apply", "--auto-approve", cwd=project, timeout=600)
    assert a.returncode == 0, a.stdout + a.stderr[-5000:]
    roots = [p for p in (project / ".runform" / "machines").iterdir() if p.is_dir()]
    assert len(roots) == 2
    reports = [r / "reports" / "operator.json" for r in roots if (r / "reports" / "operator.json").exists()]
    assert len(reports) == 1  # rank 0 wrote it, on its node
    assert json.loads(reports[0].read_text())["world_size"] == 2
    node = reports[0].parent.parent
    for seed in ("seed0", "seed1"):
        assert len(list((node / "checkpoints" / "operator" / seed).glob("operator-*.pt"))) == 1
    show = json.loads(run_cli("show", "--json", cwd=project).stdout)
    stage = next(r for r in show["resources"] if r["address"] == "stage.operator")
    assert stage["attrs"]["metrics"]["world_size"] == 2
    again = run_cli("plan", "--detailed-exitcode", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_cli("destroy", "--auto-approve", cwd=project).returncode == 0
