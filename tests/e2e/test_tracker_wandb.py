"""The wandb tracker with the real wandb library, offline; the run file is read back with
wandb's own protobuf records."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import offline_wandb_context
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry
from runform.interfaces import TrackerContext
from runform.trackers.wandb import WandbTracker
from runform.trackers.wandb_records import RunFile, run_files

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

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
    # the pipeline's run is the client's alone: its id is never handed on (stages: stage_env)
    assert "WANDB_RUN_ID" not in env and "WANDB_RESUME" not in env
    assert env["RUNFORM_RUN_ID"] == ctx.run_id
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


def test_online_without_login_is_wandbs_own_error_made_clear(ctx: TrackerContext,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import attrs

    online = attrs.evolve(ctx, env={"WANDB_MODE": "online"})
    with pytest.raises(RunformError) as exc:
        WandbTracker({}, online).start(run_id="x", name="x", config={})
    assert "could not start its run" in str(exc.value) and "wandb login" in str(exc.value)


def test_credentials_are_left_to_wandb(ctx: TrackerContext, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path):
    """`wandb login` (0.31) saves the key for api.forge.coreweave.com: runform never reads the
    netrc itself, so it never tells a logged-in user they are not."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.forge.coreweave.com\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    import attrs

    online = WandbTracker({}, attrs.evolve(ctx, env={"WANDB_MODE": "online"}))
    s = online._settings()  # no key in the env: no error, and none invented
    assert s.mode == "online" and not s.api_key
    keyed = WandbTracker({}, attrs.evolve(ctx, env={"WANDB_MODE": "online", "WANDB_API_KEY": CANARY}))
    assert keyed._settings().api_key == CANARY
    import runform.trackers.wandb as module

    assert "netrc" not in module.__dict__


_STAGE = """
import wandb
run = wandb.init()  # everything from the env runform gives the stage
run.log({"stage/loss": 0.5})
print(run.id, run.group, run.job_type)
run.finish()
"""


def test_stages_get_their_own_runs_in_the_pipelines_group(ctx: TrackerContext, tmp_path: Path):
    import os
    import subprocess
    import sys

    t = WandbTracker({}, ctx)
    env = dict(t.start(run_id=ctx.run_id, name=ctx.run, config={}))
    stage = {**env, **t.stage_env("operator")}
    again = WandbTracker({}, ctx).stage_env("operator")
    assert stage["WANDB_RUN_ID"] == again["WANDB_RUN_ID"] != ctx.run_id  # deterministic, its own
    assert stage["WANDB_RESUME"] == "allow" and stage["WANDB_RUN_GROUP"] == ctx.run_id
    assert t.stage_env("eval")["WANDB_RUN_ID"] != stage["WANDB_RUN_ID"]
    # the stage process joins W&B while the client holds the pipeline's run open; twice (a re-run)
    work = tmp_path / "machine"
    work.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc_env = {**base, **stage, "WANDB_DIR": str(work), "WANDB_SILENT": "true",
                "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _STAGE], env=proc_env, capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[:3] == [stage["WANDB_RUN_ID"], ctx.run_id, "operator"]
    t.finish()
    files = run_files(work / "wandb", stage["WANDB_RUN_ID"])
    assert len(files) == 2 and {RunFile.read(f).group for f in files} == {ctx.run_id}
    (pipeline_file,) = run_files(ctx.state_dir / "wandb", ctx.run_id)
    assert not [r for r in RunFile.read(pipeline_file).history if "stage/loss" in r]


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
