"""burgers1d: a training stage under torchrun, 2 processes, gloo on CPU (DDP)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d import precompute, simulate
from burgers1d.checkpoints import read_pointer
from burgers1d.tiny import make_run_root


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_operator_stage_under_torchrun_with_two_gloo_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_run_root(tmp_path / "run")
    monkeypatch.chdir(root)
    assert simulate.main(["--config", "configs/tiny/data.yaml"]) == 0
    assert precompute.main(["--config", "configs/tiny/encoder.yaml"]) == 0
    metrics_file = root / "runform-metrics.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "RUNFORM_METRICS_FILE": str(metrics_file),
        "OMP_NUM_THREADS": "1",
    }
    # what runform runs for `launcher: torchrun`
    cmd = [
        "torchrun",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "burgers1d.train_operator",
        "--config",
        "configs/tiny/operator.yaml",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world size 2" in proc.stdout

    report = json.loads((root / "reports" / "operator.json").read_text())
    assert report["world_size"] == 2
    for seed in ("seed0", "seed1"):  # tiny: two training seeds, one checkpoint each
        files = sorted((root / "checkpoints" / "operator" / seed).glob("operator-*.pt"))
        pointer = read_pointer(root / "checkpoints", "operator", seed)
        assert len(files) == 1 and pointer.path == files[0]
    steps = [
        json.loads(x)["step"]
        for x in metrics_file.read_text().splitlines()
        if "loss" in json.loads(x)
    ]
    assert steps and len(steps) == len(set(steps))  # only rank 0 wrote
