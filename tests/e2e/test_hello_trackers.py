"""Trackers on the hello example: wandb offline (one run, resumed) and jsonl; no secret in them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from runform.trackers.wandb_records import RunFile, run_files

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

CANARY = "canary-tracker-7f3a9c"


def _tracker(project: Path, tracker: dict) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["tracker"] = tracker
    # the stage prints the secret and reports it as a metric name; neither may reach a tracker
    spec["stages"]["join"]["run"] = 'echo "$HELLO_TOKEN"; python steps/join.py'
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (project / "hello.env").write_text(f"HELLO_TOKEN={CANARY}\n")


def test_wandb_offline_one_run_resumed(hello: Path) -> None:
    _tracker(hello, {"kind": "wandb", "project": "hello"})
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    state = json.loads((hello / ".runform" / "state.json").read_text())
    run_id = next(r for r in state["resources"] if r["address"] == "tracker.run")["attrs"]["run_id"]
    files = run_files(hello / ".runform" / "wandb", run_id)
    assert len(files) == 1
    run = RunFile.read(files[0])
    assert run.run_id == run_id
    keys = {k for row in run.history for k in row}
    assert any(k.startswith("join/") and "lines" in k for k in keys), keys
    assert any("apply" in str(k) for k in list(run.summary) + [str(r) for r in run.history]), run.summary

    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v2\n")
    b = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert b.returncode == 0, b.stderr
    files = run_files(hello / ".runform" / "wandb", run_id)
    assert files and all(RunFile.read(f).run_id == run_id for f in files)  # same run id, not a new run
    for f in (hello / ".runform").rglob("*"):
        if f.is_file() and f.name != "secrets.env":  # the machine's 0600 env file must hold it
            assert CANARY.encode() not in f.read_bytes(), f


def test_jsonl_records_the_same_events(hello: Path) -> None:
    _tracker(hello, {"kind": "jsonl"})
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    events_file = next((hello / ".runform" / "runs").rglob("events.jsonl"))
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    types = {e.get("type") for e in events}
    assert {"plan", "action_started", "action_finished", "apply_finished", "metrics"} <= types, types
    finished = [e for e in events if e.get("type") == "action_finished"]
    assert all("duration" in e for e in finished)
    assert any(e.get("stage") == "join" for e in events if e.get("type") == "metrics")
    assert CANARY not in events_file.read_text()
    show = run_cli("show", cwd=hello)
    assert "metrics: lines=6" in show.stdout
