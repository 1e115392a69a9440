"""burgers1d: one tiny epoch of every stage, in order, plus cache keying and checkpoint rules."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d import (
    check_splits,
    distill,
    evaluate,
    precompute,
    simulate,
    train_fno,
    train_operator,
    train_residual,
    train_steady_prior,
)
from burgers1d.checkpoints import StaleCheckpointError, read_pointer
from burgers1d.config import load_config
from burgers1d.latent_cache import StaleCacheError
from burgers1d.latents import load_latents
from burgers1d.metrics import METRICS_ENV
from burgers1d.runtime import DeviceError
from burgers1d.tiny import make_run_root

TRAINED = ("encoder", "operator", "diff_residual", "consistency_distill", "steady_prior", "fno")
SEEDED = TRAINED[1:]  # one checkpoint per training seed (tiny: 2)
STAGES = [
    (simulate.main, "data"),
    (check_splits.main, "base"),
    (precompute.main, "encoder"),
    (train_operator.main, "operator"),
    (train_residual.main, "diff_residual"),
    (distill.main, "consistency_distill"),
    (train_steady_prior.main, "steady_prior"),
    (train_fno.main, "fno"),
    (evaluate.main, "eval"),
]


@contextlib.contextmanager
def inside(root: Path, metrics_file: Path | None = None) -> Iterator[io.StringIO]:
    """cwd = the run root (as runform runs stages), stdout captured."""
    old_cwd, old_env = os.getcwd(), os.environ.get(METRICS_ENV)
    os.chdir(root)
    if metrics_file is not None:
        os.environ[METRICS_ENV] = str(metrics_file)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield out
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop(METRICS_ENV, None)
        else:
            os.environ[METRICS_ENV] = old_env


def run(main, config: str, *extra: str) -> None:
    assert main(["--config", f"configs/tiny/{config}.yaml", *extra]) == 0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_run_root(tmp_path_factory.mktemp("burgers1d") / "run")
    with inside(root, root / "runform-metrics.jsonl") as out:
        for main, config in STAGES:
            run(main, config)
    (root / "pipeline.log").write_text(out.getvalue())
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_pointer(root: Path) -> dict:
    return json.loads((root / "data/latent_cache/current.json").read_text())


def _precompute_again(root: Path, *settings: str) -> tuple[dict, dict, str]:
    """Re-run precompute in ``root`` with ``--set`` ``settings``: the latent cache pointer before
    and after, and what the stage printed."""
    old = _cache_pointer(root)
    with inside(root) as out:
        run(precompute.main, "encoder", *(a for s in settings for a in ("--set", s)))
    return old, _cache_pointer(root), out.getvalue()


def _mtimes(root: Path) -> dict[Path, int]:
    """Modification times of the run root's files but the reports and the digest memo."""
    return {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and "reports" not in p.parts and p.name != ".digest_memo.json"
    }


def _folders(root: Path, stage: str) -> list[Path]:
    base = root / "checkpoints" / stage
    return [base / "seed0", base / "seed1"] if stage in SEEDED else [base]


def test_every_stage_publishes_an_immutable_addressed_checkpoint(pipeline: Path) -> None:
    for stage, folder in ((s, f) for s in TRAINED for f in _folders(pipeline, s)):
        pointer = json.loads((folder / "latest.json").read_text())
        ckpt = folder / pointer["file"]
        assert ckpt.name == f"{stage}-{pointer['sha256'][:12]}.pt"
        assert _sha(ckpt) == pointer["sha256"]
        resolved = (ckpt.parent / pointer["config"]).read_text()
        assert f"{stage}:" in resolved  # its own section, includes resolved
        assert "include" not in load_config(ckpt.parent / pointer["config"])
        report = json.loads(
            (
                pipeline / "reports" / f"{'precompute' if stage == 'encoder' else stage}.json"
            ).read_text()
        )
        assert report and all(isinstance(v, (int, float)) for v in report.values())


def test_distillation_writes_its_own_file_and_records_lineage(pipeline: Path) -> None:
    ckpts = pipeline / "checkpoints"
    shas = set()
    for seed in ("seed0", "seed1"):
        teacher = read_pointer(ckpts, "diff_residual", seed)
        student = read_pointer(ckpts, "consistency_distill", seed)
        operator = read_pointer(ckpts, "operator", seed)
        assert teacher.path.parent != student.path.parent and teacher.path.is_file()
        assert _sha(teacher.path) == teacher.sha256  # never overwritten
        assert student.lineage["diff_residual"] == teacher.sha256
        assert student.lineage["operator"] == operator.sha256 == teacher.lineage["operator"]
        shas.add(operator.sha256)
    assert len(shas) == 2  # the training seeds train different models


def test_training_streams_json_lines_for_runform(pipeline: Path) -> None:
    lines = [json.loads(x) for x in (pipeline / "runform-metrics.jsonl").read_text().splitlines()]
    losses = [x for x in lines if "loss" in x]
    assert losses and all(isinstance(x["step"], int) for x in losses)


METHODS = ("autoencoder", "fno", "operator", "no_ttc", "teacher", "mean_k", "random_pick",
           "greedy", "ttc", "ttc_no_prior")  # fmt: skip


def test_eval_reports_both_metrics_with_intervals_and_the_controls(pipeline: Path) -> None:
    report = json.loads((pipeline / "reports" / "eval.json").read_text())
    for split in ("val", "test"):
        for method in METHODS:
            for metric in ("nrmse", "rel_l2"):
                mean = report[f"{split}_{metric}_{method}"]
                assert 0.0 < mean < 10.0
                assert report[f"{split}_{metric}_{method}_lo"] <= mean
                assert mean <= report[f"{split}_{metric}_{method}_hi"]
            if method != "ttc":
                assert f"{split}_delta_{method}_minus_ttc_lo" in report
        assert report[f"{split}_trajectories"] == 4
        picks = [report[f"{split}_ttc_pick_frac_{c}"] for c in range(3)]
        assert sum(picks) == pytest.approx(1.0)
    assert report["train_seeds"] == 2 and report["sampling_seeds"] == 2
    log = (pipeline / "pipeline.log").read_text()
    assert "| method | nRMSE (PDEBench) [95% CI] | relative L2 [95% CI]" in log
    assert "| control: greedy best-of |" in log and "| FNO baseline |" in log
    assert log.rstrip().endswith("summary: reports/summary.md")


def test_eval_saves_per_trajectory_errors_curves_and_pictures(pipeline: Path) -> None:
    reports = pipeline / "reports"
    arrays = np.load(reports / "eval_errors.npz")
    assert arrays["test/nrmse/ttc"].shape == (2, 2, 4)  # training x sampling seeds x trajectories
    assert arrays["test/nrmse/operator"].shape == (2, 2, 4)
    assert np.isfinite(arrays["test/rel_l2/greedy"]).all()
    assert arrays["test/curve/ttc"].shape == (8,)  # 9 frames, 1 given
    assert "test,ttc,1," in (reports / "error_curves.csv").read_text()
    summary = (reports / "summary.md").read_text()
    pngs = sorted(reports.glob("*.png"))
    assert {p.name for p in pngs} >= {"error_curves_test.png", "ttc_picks_test.png",
                                      "reward_vs_error_test.png", "rollouts_test.png",
                                      "xt_test_ttc.png"}  # fmt: skip
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in summary


def test_corrector_reports_its_mean_correction(pipeline: Path) -> None:
    report = json.loads((pipeline / "reports" / "diff_residual.json").read_text())
    for seed in ("seed0_", "seed1_", ""):
        assert report[f"{seed}val_mean_correction_rms"] > 0.0
        assert report[f"{seed}val_residual_mse_teacher_mean"] >= 0.0


def test_same_cache_key_is_a_noop(pipeline: Path) -> None:
    before = _mtimes(pipeline)
    with inside(pipeline) as out:
        run(precompute.main, "encoder")
    text = out.getvalue()
    assert "skipping fit" in text and "skipping encode" in text
    assert _mtimes(pipeline) == before  # nothing written, nothing new


@pytest.fixture()
def scratch(pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the finished pipeline that a test may change."""
    return Path(shutil.copytree(pipeline, tmp_path / "run"))


def test_changed_encoder_config_recomputes_under_a_new_key(scratch: Path) -> None:
    old, new, log = _precompute_again(scratch, "encoder.model.width=12")
    assert "fitting encoder" in log and "encoding latent cache" in log
    assert new["key"] != old["key"] and new["encoder_sha256"] != old["encoder_sha256"]
    assert (scratch / "data/latent_cache" / old["file"]).is_file()  # old entry kept, not reused
    # the operator was trained on the old latents: eval refuses it
    with inside(scratch), pytest.raises(StaleCheckpointError, match="re-run operator"):
        run(evaluate.main, "eval")


def test_changed_cache_dtype_reuses_the_encoder(scratch: Path) -> None:
    old, new, log = _precompute_again(scratch, "encoder.cache_dtype=float16")
    assert "skipping fit" in log and "encoding latent cache" in log
    assert new["encoder_sha256"] == old["encoder_sha256"] and new["key"] != old["key"]
    with h5py.File(scratch / "data/latent_cache" / new["file"], "r") as f:
        assert f["train"].dtype.name == "float16"


def test_changed_data_makes_the_cache_stale(scratch: Path) -> None:
    with h5py.File(scratch / "data/burgers1d/burgers1d_train.h5", "r+") as f:
        f["tensor"][0, 0, 0] += 1.0
    with inside(scratch):
        cfg = load_config("configs/tiny/operator.yaml")
        with pytest.raises(StaleCacheError, match="train changed"):
            load_latents(cfg, torch.device("cpu"))


def test_training_is_seeded(scratch: Path) -> None:
    before = read_pointer(scratch / "checkpoints", "operator", "seed1").sha256
    with inside(scratch):
        run(train_operator.main, "operator")
    assert read_pointer(scratch / "checkpoints", "operator", "seed1").sha256 == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_fails_without_cuda(pipeline: Path) -> None:
    with inside(pipeline), pytest.raises(DeviceError, match="CUDA is not available"):
        run(evaluate.main, "eval", "--device", "cuda")


def test_ttc_candidates_are_the_operator_step_plus_noisy_corrections(pipeline: Path) -> None:
    from burgers1d.ttc import Proposer, TTCConfig

    with inside(pipeline):
        cfg = load_config("configs/tiny/eval.yaml")
        data = load_latents(cfg, torch.device("cpu"), ("val",))
        models = evaluate.Models(evaluate.seed_config(cfg, 0), data, torch.device("cpu"))
    proposer = Proposer(
        models.operator,
        models.student,
        models.mcfg,
        models.r_std,
        models.sample_sigmas,
        torch.Generator().manual_seed(0),
    )
    z = data.splits["val"][:, 0]
    cands = proposer.propose(z, TTCConfig(candidates=3))
    assert cands.shape == (4, 3, *z.shape[1:])
    torch.testing.assert_close(cands[:, 0], models.operator(z))
    assert not torch.allclose(cands[:, 1], cands[:, 2])  # different noise, different samples
    assert models.decode(z).shape == (4, 32)  # decoded to physical space for the reward


def test_changed_encoder_code_refits(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precompute, "source_digest", lambda *modules: "edited")
    old, new, log = _precompute_again(scratch)
    assert "fitting encoder" in log
    assert new["key"] != old["key"] and new["code_digest"] == "edited"
