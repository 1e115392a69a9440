"""A run that completed and gave its machine back rents nothing again until a stage must run:
no duplicate runs from a reflex `runform apply` (the seed pipeline's first lesson)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def _teardown_on_success(project: Path) -> None:
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"]["teardown"] = "on_success"
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _changes(project: Path) -> dict[str, dict]:
    p = run_cli("plan", "--json", cwd=project)
    assert p.returncode == 0, p.stderr
    return {c["address"]: c for c in json.loads(p.stdout)["resource_changes"]}


def _machines(project: Path) -> list[Path]:
    return [p for p in (project / ".runform" / "machines").iterdir() if not p.name.endswith(".deleting")]


def test_completed_run_plans_nothing_until_a_stage_changes(hello: Path) -> None:
    _teardown_on_success(hello)
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert "destroyed (teardown: on_success)" in a.stdout and not _machines(hello)

    p = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert p.returncode == 0, p.stdout
    assert "the run completed and its machine was given back" in p.stdout
    changes = _changes(hello)
    assert changes["stage.join"]["action"] == "no-op" and "given back" in changes["stage.join"]["reason"]
    again = run_cli("apply", "--auto-approve", cwd=hello)  # a reflex apply rents nothing
    assert again.returncode == 0 and not _machines(hello)

    # a changed stage needs a machine, and every stage runs again on it (outputs went with the old)
    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v2\n")
    changes = _changes(hello)
    assert changes["instance.main"]["action"] == "create"
    assert {changes[f"stage.{s}"]["action"] for s in ("prepare", "left", "right", "join")} == {"replace"}
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    # --replace asks for a run again
    changes = json.loads(run_cli("plan", "--json", "--replace", "stage.left", cwd=hello).stdout)["resource_changes"]
    assert next(c for c in changes if c["address"] == "instance.main")["action"] == "create"


def test_a_failed_run_torn_down_plans_a_new_machine(hello: Path) -> None:
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"]["teardown"] = "always"
    spec["stages"]["join"]["run"] = "exit 4"
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 1
    assert _changes(hello)["instance.main"]["action"] == "create"
