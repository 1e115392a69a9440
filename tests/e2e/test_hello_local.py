"""The hello example on the local provider: plan, apply, empty re-plan, one-file edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import machine_root, run_cli, runs_log

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def test_plan_apply_replan_and_one_file_edit(hello: Path) -> None:
    p = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert p.returncode == 2, p.stderr
    for addr in ("instance.main", "secrets.env", "code.workdir", "dataset.greetings",
                 "stage.prepare", "stage.left", "stage.right", "stage.join", "tracker.run"):
        assert f"+ {addr}" in p.stdout
    assert "Plan: 9 to add, 0 to change, 0 to destroy." in p.stdout

    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr + a.stdout
    assert "Apply complete! Resources: 9 added, 0 changed, 0 destroyed." in a.stdout
    root = machine_root(hello)
    assert (root / "out" / "joined.txt").read_text().count("\n") == 6
    assert (root / "data" / "names.txt").is_symlink()

    again = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout
    assert "up to date" in again.stdout  # every no-op says why

    # one file that `left` and `right` list in deps: exactly those and `join` re-run
    (hello / "steps" / "branch.py").write_text((hello / "steps" / "branch.py").read_text() + "\n# edit\n")
    edit = run_cli("plan", "--detailed-exitcode", "--json", cwd=hello)
    assert edit.returncode == 2
    changes = {c["address"]: c for c in json.loads(edit.stdout)["resource_changes"]}
    rerun = {a for a, c in changes.items() if a.startswith("stage.") and c["action"] != "no-op"}
    assert rerun == {"stage.left", "stage.right", "stage.join"}
    assert "steps/branch.py" in changes["stage.left"]["reason"]
    assert changes["code.workdir"]["action"] == "update"
    assert "steps/branch.py" in changes["code.workdir"]["reason"]

    before = runs_log(hello)
    a2 = run_cli("apply", "--auto-approve", cwd=hello)
    assert a2.returncode == 0, a2.stderr
    ran = [line.split()[0] for line in runs_log(hello)[len(before):]]
    assert sorted(ran) == ["join", "left", "right"]
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    d = run_cli("destroy", "--auto-approve", cwd=hello)
    assert d.returncode == 0, d.stderr
    assert "Destroy complete!" in d.stdout
    assert not [p for p in (hello / ".runform" / "machines").iterdir()]
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 2


def test_saved_plan_applies_and_stale_plan_is_refused(hello: Path) -> None:
    assert run_cli("plan", "--out", "p.plan", cwd=hello).returncode == 0
    applied = run_cli("apply", "p.plan", cwd=hello)
    assert applied.returncode == 0, applied.stderr
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v2\n")
    assert run_cli("plan", "--out", "p2.plan", cwd=hello).returncode == 0
    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# v3\n")
    stale = run_cli("apply", "p2.plan", cwd=hello)
    assert stale.returncode == 1
    assert "stale" in stale.stderr and "stage.join" in stale.stderr
    assert "Traceback" not in stale.stderr


def test_target_and_replace(hello: Path) -> None:
    t = run_cli("apply", "--auto-approve", "--target", "stage.left", cwd=hello)
    assert t.returncode == 0, t.stderr
    assert "targeting" in t.stdout
    ran = {line.split()[0] for line in runs_log(hello)}
    assert ran == {"prepare", "left"}
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    r = run_cli("plan", "--json", "--replace", "stage.right", cwd=hello)
    changes = {c["address"]: c["action"] for c in json.loads(r.stdout)["resource_changes"]}
    assert changes["stage.right"] == "replace"
    assert changes["stage.left"] == "no-op"
    # --refresh=false plans against the state alone
    nr = run_cli("plan", "--refresh=false", "--detailed-exitcode", cwd=hello)
    assert nr.returncode == 0, nr.stdout


def test_failed_stage_skips_dependents_and_independent_branch_finishes(hello: Path) -> None:
    spec = (hello / "runform.yaml").read_text()
    spec = spec.replace("run: python steps/branch.py left", "run: python steps/branch.py left && exit 3")
    (hello / "runform.yaml").write_text(spec)
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 1
    assert "stage.left failed (exit 3" in a.stderr
    assert "Skipped: stage.join" in a.stderr
    assert "Apply failed:" in a.stdout
    ran = {line.split()[0] for line in runs_log(hello)}
    assert {"prepare", "left", "right"} <= ran and "join" not in ran
    p = run_cli("plan", "--json", cwd=hello)
    changes = {c["address"]: c for c in json.loads(p.stdout)["resource_changes"]}
    assert changes["stage.left"]["action"] == "replace"
    assert "failed (exit 3)" in changes["stage.left"]["reason"]
    assert changes["stage.right"]["action"] == "no-op"


def test_logs_command(hello: Path) -> None:
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    out = run_cli("logs", "prepare", cwd=hello)
    assert out.returncode == 0, out.stderr
    assert "prepared 3 greetings" in out.stdout


def test_machine_gone_outside_runform_is_a_replacement_with_the_reason(hello: Path) -> None:
    import shutil

    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    shutil.rmtree(machine_root(hello))  # the machine vanished (preempted, deleted by hand)
    p = run_cli("plan", "--json", cwd=hello)
    changes = {c["address"]: c for c in json.loads(p.stdout)["resource_changes"]}
    assert changes["instance.main"]["action"] == "replace"
    assert "is gone" in changes["instance.main"]["reason"]
    assert changes["stage.join"]["action"] == "replace"
    assert changes["stage.join"]["reason"] == "instance.main will be replaced"
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
