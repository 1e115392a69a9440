"""An artifact pushed to wandb:// through apply: one typed version holding every path, grouped
with the pipeline's run (the W&B server faked at runform's interface, wandb itself offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from runform.testing.fakes import DirArtifactStore

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def test_apply_pushes_one_typed_version_with_the_runs_lineage(hello: Path, tmp_path: Path) -> None:
    store = tmp_path / "wandb-server"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["tracker"] = {"kind": "wandb", "project": "proj", "entity": "ent"}
    spec["artifacts"] = {"outputs": {"paths": ["out/joined.txt", "out/left.txt"], "type": "checkpoint",
                                     "to": "wandb://ent/proj/hello-outputs"}}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "RUNFORM_WANDB_FAKE_DIR": str(store)}
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    fake = DirArtifactStore(store)
    found = fake.resolve("ent", "proj", "hello-outputs", "latest")
    assert found.version == "v0"
    assert {p for p, _s, _d in found.files} == {"out/joined.txt", "out/left.txt"}
    state = json.loads(run_cli("show", "--json", cwd=hello, env=env).stdout)
    run_id = next(r for r in state["resources"] if r["address"] == "tracker.run")["attrs"]["run_id"]
    info = fake.info("ent", "proj", "hello-outputs", "v0")
    assert info["type"] == "checkpoint" and info["run"]["group"] == run_id
    assert info["metadata"]["runform_run_id"] == run_id
    assert run_cli("plan", "--detailed-exitcode", cwd=hello, env=env).returncode == 0


def test_an_offline_tracker_makes_an_offline_push_that_show_reports(hello: Path, tmp_path: Path) -> None:
    """No fake server: the real wandb library pushes, offline because the tracker is (even with
    WANDB_MODE=online in the environment); the push never waits, the state records where the
    version waits for `wandb sync`, and `runform show` says so."""
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["tracker"] = {"kind": "wandb", "project": "proj", "entity": "ent", "mode": "offline"}
    spec["artifacts"] = {"outputs": {"paths": ["out/joined.txt"], "to": "wandb://ent/proj/hello-outputs:best"}}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"WANDB_MODE": "online", "WANDB_SILENT": "true", "WANDB_API_KEY": "k" * 40,
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    assert "pending sync" in a.stdout + a.stderr
    state = json.loads(run_cli("show", "--json", cwd=hello, env=env).stdout)
    art = next(r for r in state["resources"] if r["address"] == "artifact.outputs")["attrs"]
    (where,) = art["pending_sync"].values()
    assert Path(where).is_dir() and list(Path(where).glob("run-*.wandb"))
    show = run_cli("show", cwd=hello, env=env)
    assert f"pending sync (logged offline): run `wandb sync {where}`" in show.stdout
    plan = run_cli("plan", "--detailed-exitcode", cwd=hello, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
