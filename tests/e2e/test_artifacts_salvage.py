"""A failed stage under `teardown: always`: what exists of the artifacts is pushed before the
machine goes, recorded as partial, and pushed again in full once the stages succeed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def _spec(project: Path, store: Path, join_run: str) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"]["teardown"] = "always"
    spec["stages"]["join"]["run"] = join_run
    spec["artifacts"] = {"results": {"paths": ["out/"], "to": f"file://{store}/"}}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _events(project: Path) -> list[dict]:
    files = sorted((project / ".runform").glob("**/*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def test_failed_stage_still_pushes_what_exists_before_teardown(hello: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _spec(hello, store, "exit 3")
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 1
    assert "artifact.results: pushed what exists before teardown" in a.stdout + a.stderr
    assert "partial because stage.join did not complete" in a.stdout + a.stderr
    assert "destroyed (teardown: always)" in a.stdout
    # the outputs of the stages that ran survived the machine
    pushed = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    assert {"out/prepared.txt", "out/left.txt", "out/right.txt"} <= pushed
    assert "out/joined.txt" not in pushed
    state = json.loads(run_cli("show", "--json", cwd=hello).stdout)
    art = next(r for r in state["resources"] if r["address"] == "artifact.results")
    assert art["status"] == "partial" and "stage.join" in art["attrs"]["salvaged"]

    # the fix lands: everything re-runs on a new machine and the push is whole again
    _spec(hello, store, "python steps/join.py")
    p = run_cli("plan", "--json", cwd=hello)
    change = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "artifact.results")
    assert change["action"] == "update"
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert (store / "out" / "joined.txt").exists()
    state = json.loads(run_cli("show", "--json", cwd=hello).stdout)
    assert next(r for r in state["resources"] if r["address"] == "artifact.results")["status"] == "ok"
    # (the machine went with `teardown: always`, so the next plan rents again; the push stands)
    p = run_cli("plan", "--json", cwd=hello)
    change = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "artifact.results")
    assert change["action"] == "no-op"


def test_action_events_carry_duration_and_cost(hello: Path) -> None:
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    events = _events(hello)
    finished = [e for e in events if e.get("type") == "action_finished"]
    assert finished and all("duration" in e and "cost" in e for e in finished)
    # the local provider states no price: the cost is unknown (null), never a made-up 0
    assert all(e["cost"] is None for e in finished)
    summary = next(e for e in events if e.get("type") == "apply_finished")
    assert summary["ok"] is True and "duration" in summary and "cost" in summary
