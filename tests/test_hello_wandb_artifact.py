"""An artifact pushed to wandb:// through apply: one typed version holding every path, grouped
with the pipeline's run (the W&B server faked at runform's interface, wandb itself offline)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import run_cli

from runform.storage_backends.wandb_api import DirArtifactStore


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
