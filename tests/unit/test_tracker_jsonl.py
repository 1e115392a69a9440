"""The jsonl tracker (local default) and the none tracker."""

from __future__ import annotations

import json
from pathlib import Path

from runform.interfaces import Manifest, ManifestEntry
from runform.redact import Redactor
from runform.interfaces import TrackerContext, deterministic_run_id
from runform.trackers.jsonl import JsonlTracker
from runform.trackers.none import NoneTracker

CANARY = "CANARY-b2-app-key-5f0c1e"


def _ctx(tmp_path: Path) -> TrackerContext:
    return TrackerContext("burgers/v2", "lineage-1", tmp_path / ".runform", tmp_path,
                          redactor=Redactor.from_env({"B2_APP_KEY": CANARY}))


def test_events_file(tmp_path: Path):
    ctx = _ctx(tmp_path)
    t = JsonlTracker({}, ctx)
    run_id = deterministic_run_id(ctx.run, ctx.lineage)
    env = t.start(run_id=run_id, name=ctx.run, config={"lr": 1e-3, "cmd": f"--key {CANARY}"})
    assert env["RUNFORM_RUN_ID"] == run_id and env["RUNFORM_TRACKER"] == "jsonl"
    t.log_metrics({"loss": 0.5, "acc": 1}, stage="operator", step=3)
    t.log_metrics({"mse": 0.01}, stage="eval_ttc")
    t.log_event({"type": "action_finished", "address": "stage.operator", "status": "ok",
                 "log": f"echo {CANARY}"})
    t.log_event({"message": "untyped"})
    m = Manifest("b2://b/ckpt/", (ManifestEntry("a.pt", 10, "sha256:00"),), version="listing:1")
    t.link_artifact("artifact.checkpoints", "b2://b/ckpt/", m)
    t.finish()

    path = tmp_path / ".runform" / "runs" / "burgers_v2" / "events.jsonl"
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["start", "metrics", "metrics", "action_finished",
                                          "event", "artifact", "finish"]
    assert all(isinstance(e["ts"], float) for e in events)
    assert events[0]["config"]["cmd"] == "--key ***" and events[0]["resumed"] is False
    assert events[1] == {"ts": events[1]["ts"], "type": "metrics", "stage": "operator", "step": 3,
                         "metrics": {"loss": 0.5, "acc": 1}}
    assert events[2]["step"] is None
    assert events[5]["digest"] == m.digest and events[5]["bytes"] == 10
    assert CANARY not in path.read_text()

    t2 = JsonlTracker({}, ctx)  # a re-apply resumes the same run
    t2.start(run_id=run_id, name=ctx.run, config={})
    assert list(t2.events())[-1]["resumed"] is True


def test_none_tracker(tmp_path: Path):
    t = NoneTracker({}, _ctx(tmp_path))
    assert t.start(run_id="x", name="n", config={}) == {"RUNFORM_RUN_ID": "x"}
    t.log_metrics({"a": 1.0}, stage="s", step=1)
    t.log_event({"type": "x"})
    t.link_artifact("n", "s3://b/", Manifest("s3://b/"))
    t.finish()
    assert not (tmp_path / ".runform").exists()
