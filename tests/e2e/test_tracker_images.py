"""Images a stage names in its metrics file reach the tracker (jsonl and offline W&B); a bad one
is a warning that names it, never a failed stage, and nothing outside the run root is read."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from runform.trackers.wandb_records import RunFile, run_files

pytestmark = pytest.mark.slow

# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

STAGE = (
    "mkdir -p reports && python -c \"import base64,sys; open('reports/curve.png','wb')"
    f".write(base64.b64decode('{base64.b64encode(PNG).decode()}'))\" && "
    "echo '{\"images\": {\"curve\": \"reports/curve.png\", \"escape\": \"../outside.png\", "
    "\"missing\": \"reports/none.png\"}}' >> \"$RUNFORM_METRICS_FILE\""
)


def _spec(project: Path, tracker: dict) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["tracker"] = tracker
    spec["stages"]["join"]["run"] = STAGE + " && python steps/join.py"
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_jsonl_tracker_records_the_image(hello: Path) -> None:
    _spec(hello, {"kind": "jsonl"})
    (hello.parent / "outside.png").write_bytes(PNG)  # beside the project: never read
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    out = a.stdout + a.stderr
    assert "image 'escape' not logged" in out and "image 'missing' not logged" in out, out
    events_file = next((hello / ".runform" / "runs").rglob("events.jsonl"))
    images = [json.loads(x) for x in events_file.read_text().splitlines() if '"type": "image"' in x]
    assert [(e["stage"], e["name"], e["source"]) for e in images] == [("join", "curve", "reports/curve.png")]
    assert images[0]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert (hello / ".runform" / "media" / "join" / "curve.png").read_bytes() == PNG
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_wandb_offline_logs_the_image(hello: Path) -> None:
    _spec(hello, {"kind": "wandb", "project": "hello"})
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stderr
    state = json.loads((hello / ".runform" / "state.json").read_text())
    run_id = next(r for r in state["resources"] if r["address"] == "tracker.run")["attrs"]["run_id"]
    [run_file] = run_files(hello / ".runform" / "wandb", run_id)
    rows = [row for row in RunFile.read(run_file).history if "join/curve/_type" in row]
    assert [row["join/curve/_type"] for row in rows] == ["image-file"], RunFile.read(run_file).history
    assert run_cli("plan", "--detailed-exitcode", cwd=hello, env=env).returncode == 0
    media = list(run_file.parent.rglob("media/images/join/curve*.png"))
    assert media and media[0].read_bytes() == PNG, list(run_file.parent.rglob("*"))
