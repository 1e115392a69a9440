"""The wandb tracker with the real wandb library, offline; the run file is read back with
wandb's own protobuf records."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import offline_wandb_context
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry
from runform.trackers.base import TrackerContext
from runform.trackers.wandb import WandbTracker
from runform.trackers.wandb_records import RunFile, run_files

CANARY = "CANARY-wandb-secret-9d27a4"


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackerContext:
    return offline_wandb_context(tmp_path, monkeypatch, CANARY)


def _one_apply(ctx: TrackerContext, steps: range) -> dict[str, str]:
    t = WandbTracker({"tags": ["seed"]}, ctx)
    env = t.start(run_id=ctx.run_id, name=ctx.run, config={"lr": 0.001, "token": CANARY})
    for step in steps:
        t.log_metrics({"loss": 1.0 / (step + 1)}, stage="operator", step=step)
    t.log_event({"type": "action_finished", "address": "stage.operator",
                 "detail": f"ran with {CANARY}"})
    m = Manifest("s3://bucket/runs/ckpt/", (ManifestEntry("operator.pt", 123, "sha256:ab"),),
                 version="listing:1")
    t.link_artifact("artifact.checkpoints", f"s3://bucket/runs/ckpt/?k={CANARY}", m)
    t.link_artifact("dataset.burgers1d", "s3://bucket/data/", m)
    t.finish()
    return dict(env)


def test_offline_run_resumes_same_id_and_holds_no_secret(ctx: TrackerContext):
    env = _one_apply(ctx, range(3))
    assert env["WANDB_RUN_ID"] == ctx.run_id and env["WANDB_RESUME"] == "allow"
    assert env["WANDB_MODE"] == "offline" and env["WANDB_PROJECT"] == "runform-tests"
    assert "WANDB_API_KEY" not in env and "WANDB_ENTITY" not in env
    assert env["WANDB_RUN_GROUP"] == ctx.run_id  # pushes of wandb:// artifacts join this group

    wandb_dir = ctx.state_dir / "wandb"
    (first,) = run_files(wandb_dir, ctx.run_id)
    run = RunFile.read(first)
    assert run.run_id == ctx.run_id and run.group == ctx.run_id
    rows = [r for r in run.history if "operator/loss" in r]
    assert [r["operator/step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["operator/loss"] == pytest.approx(1 / 3)
    assert run.summary["operator/loss"] == pytest.approx(1 / 3)
    assert run.summary["runform/events/action_finished"] == 1
    assert run.config["lr"] == 0.001 and run.config["token"] == "***"
    arts = {a["name"]: a for a in run.artifacts}
    ckpt = arts["burgers1d-quality-v2-artifact.checkpoints"]
    assert ckpt["type"] == "model" and "runform-manifest.json" in ckpt["paths"]
    assert ckpt["metadata"]["digest"] == Manifest(
        "x", (ManifestEntry("operator.pt", 123, "sha256:ab"),)).digest
    assert f"run-{ctx.run_id}" in ckpt["aliases"]
    assert arts["burgers1d-quality-v2-dataset.burgers1d"]["type"] == "dataset"
    assert "wandb_artifact" not in ckpt["metadata"]  # only a wandb:// push names a W&B version

    # A re-apply continues the same run id.
    _one_apply(ctx, range(3, 5))
    files = run_files(wandb_dir, ctx.run_id)  # one run file per process that joined the run
    assert len(files) == 2 and all(RunFile.read(f).run_id == ctx.run_id for f in files)
    later = [r for f in files for r in RunFile.read(f).history if "operator/step" in r]
    assert sorted(r["operator/step"] for r in later) == [0, 1, 2, 3, 4]

    for path in ctx.state_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_online_without_key_is_refused(ctx: TrackerContext, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    import attrs

    online = attrs.evolve(ctx, env={"WANDB_MODE": "online"})
    with pytest.raises(RunformError, match="WANDB_API_KEY"):
        WandbTracker({}, online).start(run_id="x", name="x", config={})


def test_disabled_mode_records_nothing(ctx: TrackerContext):
    import attrs

    t = WandbTracker({"mode": "disabled"}, attrs.evolve(ctx, env={}))
    assert t.start(run_id="x", name="x", config={})["WANDB_MODE"] == "disabled"
    t.log_metrics({"a": 1.0}, stage="s", step=1)
    t.finish()
    assert not list((ctx.state_dir / "wandb").glob("*run-*"))


def test_use_before_start(ctx: TrackerContext):
    with pytest.raises(RunformError, match="before start"):
        WandbTracker({}, ctx).log_metrics({"a": 1.0}, stage="s")
