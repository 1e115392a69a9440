"""Plan fixes: saved plans are never code, a bad --out path is a clear error, unterminated
references are refused at load time, plan runs the policy check as apply does, and a changed
run name says so."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import runform
import yaml
from click.testing import CliRunner
from helpers import machine_root, run_cli
from runform import api
from runform.cli.main import cli
from runform.errors import PolicyError, RunformError, SpecError
from runform.planning.model import Plan
from runform.planning.planfile import is_saved_plan, save_plan, saved_plans_in
from runform.plugins import get_plugin_manager
from runform.providers.local import LocalProvider

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

# ------------------------------------------------------------------ 1. a saved plan is never code


@pytest.mark.parametrize("name", ["next.json", "plans/next"])
def test_saved_plan_in_the_project_applies_and_the_next_plan_is_empty(hello: Path, name: str) -> None:
    (hello / name).parent.mkdir(parents=True, exist_ok=True)
    p = run_cli("plan", "--out", name, cwd=hello)
    assert p.returncode == 0, p.stderr
    assert (hello / name).is_file()
    a = run_cli("apply", name, cwd=hello)
    assert a.returncode == 0, a.stderr + a.stdout
    assert "stale" not in a.stderr
    assert "Apply complete! Resources: 9 added" in a.stdout
    assert not (machine_root(hello) / name).exists()  # never synced as code

    again = run_cli("plan", "--detailed-exitcode", "--json", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    changes = {c["address"]: c for c in json.loads(again.stdout)["resource_changes"]}
    assert changes["code.workdir"]["action"] == "no-op", changes["code.workdir"]

    # a second saved plan, next to the first: still not code, and it still applies
    assert run_cli("plan", "--out", name + ".2", cwd=hello).returncode == 0
    assert run_cli("apply", name + ".2", cwd=hello).returncode == 0
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_saved_plans_are_recognised_by_content(tmp_path: Path) -> None:
    plan = Plan(run="r", lineage="l", serial=0, actions=())
    save_plan(plan, tmp_path / "any-name")
    (tmp_path / "config.json").write_text(json.dumps({"format_version": "1.0", "lr": 0.1}))
    (tmp_path / "notes.plan.txt").write_text("format_version runform_version\n")
    (tmp_path / "skip").mkdir()
    save_plan(plan, tmp_path / "skip" / "p")
    assert is_saved_plan(tmp_path / "any-name")
    assert not is_saved_plan(tmp_path / "config.json")
    assert not is_saved_plan(tmp_path / "missing")
    assert saved_plans_in(tmp_path, ["skip/"]) == ["any-name"]


# ------------------------------------------------------------------ 2. a bad --out path


def test_out_into_a_missing_folder_is_a_clear_error(hello: Path, tmp_path: Path) -> None:
    bad = tmp_path / "nonexistent" / "x.plan"
    p = run_cli("plan", "--out", str(bad), cwd=hello)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert p.stderr.startswith(f"Error: cannot save the plan to {bad}: folder {bad.parent} does not exist")
    assert f"fix: create it first (mkdir -p {bad.parent})" in p.stderr
    assert not bad.parent.exists()
    assert not (hello / ".runform").exists()  # nothing planned, nothing locked, nothing written
    # --detailed-exitcode reports the error, not "changes"
    assert run_cli("plan", "--detailed-exitcode", "--out", str(bad), cwd=hello).returncode == 1


def test_api_plan_save_to_checks_the_path_first(hello: Path, tmp_path: Path) -> None:
    spec = api.load(hello / "runform.yaml")
    with pytest.raises(RunformError, match="does not exist") as exc:
        api.plan(spec, save_to=tmp_path / "nope" / "p.plan")
    assert "fix:" in str(exc.value)
    assert not (hello / ".runform").exists()


def test_save_plan_failure_names_the_path_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    plan = Plan(run="r", lineage="l", serial=0, actions=())
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / "a-file" / "x.plan"  # its "folder" is a file
    with pytest.raises(RunformError) as exc:
        save_plan(plan, target)
    assert str(target) in str(exc.value) and "fix:" in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# ------------------------------------------------------------------ 3. unterminated references


def _spec_with_run(hello: Path, run: str) -> Path:
    spec = hello / "runform.yaml"
    text = spec.read_text()
    assert text.count("run: python steps/join.py\n") == 1
    spec.write_text(text.replace("run: python steps/join.py\n", run))
    return spec


def test_unterminated_reference_in_a_block_scalar_points_at_its_line(hello: Path) -> None:
    spec = _spec_with_run(
        hello, "run: |\n      echo ${var.greeting} start\n      python steps/join.py ${var.greeting\n")
    lines = spec.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.endswith("${var.greeting"))
    col = lines[line - 1].rindex("${") + 1
    with pytest.raises(SpecError) as exc:
        api.load(spec)
    assert f"runform.yaml:{line}:{col}: stages.join.run: unterminated reference" in str(exc.value)
    assert "fix: close it (${var.greeting})" in str(exc.value)


def test_escaped_and_closed_references_still_load(hello: Path) -> None:
    spec = _spec_with_run(hello, "run: echo $${HOME and ${var.greeting} ${run}\n")
    loaded = api.load(spec)
    assert loaded.stages["join"].run == "echo ${HOME and hello hello"


# ------------------------------------------------------------------ 4. plan runs the policy check


class PricedLocal(LocalProvider):
    """The local provider with a market of one offer, so that plans carry a cost."""

    name = "priced-fixes"

    def offers(self, compute: Mapping[str, Any], ctx: Any) -> list[dict[str, Any]]:
        return [{"id": 1, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 2.5, "chosen": True}]


class PricedPlugin:
    @runform.hookimpl
    def runform_register_providers(self, register: Any) -> None:
        register("priced-fixes", PricedLocal)


class RejectingPolicy:
    """Rejects every plan that changes something, and remembers what it was asked."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @runform.hookimpl
    def runform_check_plan(self, plan: Any) -> str | None:
        self.seen.append(plan)
        return "no new machines on Fridays" if plan.has_changes else None


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    manager = get_plugin_manager()
    manager.register(plugin, name=name)
    try:
        yield
    finally:
        manager.unregister(name)


def _priced(hello: Path, **compute: Any) -> Path:
    """examples/hello on the priced provider, 2h max: every plan is estimated at $5.00."""
    spec = hello / "runform.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["compute"] = {"provider": "priced-fixes", "max_duration": "2h", "teardown": "never", **compute}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def test_policy_hook_rejects_the_plan_through_api_plan(hello: Path) -> None:
    policy = RejectingPolicy()
    with registered(policy, "reject-under-test"):
        spec = api.load(hello / "runform.yaml")
        shown: list[Plan] = []
        with pytest.raises(PolicyError) as exc:
            api.plan(spec, on_plan=shown.append, save_to=hello / "next.plan")
        assert "the plan was rejected by a policy: no new machines on Fridays" in str(exc.value)
        assert "fix:" in str(exc.value)
        assert len(shown) == 1 and shown[0].has_changes  # the plan was seen before the rejection
        assert policy.seen == shown
        assert not (hello / "next.plan").exists()  # a rejected plan is never saved
        # apply keeps rejecting it, before anything is touched
        with pytest.raises(PolicyError):
            api.apply(spec)
        assert api.show(spec)["resources"] == []
    assert "reject-under-test" not in {i.name for i in get_plugin_manager().plugin_infos()}


def test_policy_rejection_in_the_cli_shows_the_plan_then_the_reason(hello: Path) -> None:
    out = hello / "next.plan"
    with registered(RejectingPolicy(), "reject-under-test"):
        r = CliRunner().invoke(cli, ["plan", "--detailed-exitcode", "--out", str(out),
                                     str(hello / "runform.yaml")])
    assert r.exit_code == 1, r.output  # an error, never 2 ("changes")
    assert isinstance(r.exception, SystemExit)  # handle_errors' exit 1, not a crash
    assert "Plan: 9 to add" in r.stdout
    assert r.stderr.rstrip().endswith("fix: change the spec, or remove the policy plugin")
    assert "Error: the plan was rejected by a policy: no new machines on Fridays" in r.stderr
    assert r.output.index("Plan: 9 to add") < r.output.index("Error: the plan was rejected")
    assert "Saved the plan" not in r.output and not out.exists()

    with registered(RejectingPolicy(), "reject-under-test"):
        j = CliRunner().invoke(cli, ["plan", "--json", str(hello / "runform.yaml")])
    assert j.exit_code == 1
    assert json.loads(j.stdout)["applyable"] is True  # the plan, as JSON, then the error
    assert "rejected by a policy" in j.stderr


def test_max_cost_rejects_the_plan(hello: Path) -> None:
    with registered(PricedPlugin(), "priced-fixes-under-test"):
        spec = api.load(_priced(hello, max_cost=4))
        with pytest.raises(PolicyError, match=r"estimated cost \$5.00 exceeds compute.max_cost \$4.00"):
            api.plan(spec)
        r = CliRunner().invoke(cli, ["plan", "--detailed-exitcode", str(hello / "runform.yaml")])
        assert r.exit_code == 1, r.output
        assert "Estimated cost: $5.00" in r.stdout
        assert "exceeds compute.max_cost $4.00" in r.stderr and "fix: raise max_cost" in r.stderr
        assert not (spec.state_dir / "machines").exists()

        spec = api.load(_priced(hello, max_cost=6))
        assert api.plan(spec).cost["total"] == 5.0
        r = CliRunner().invoke(cli, ["plan", "--detailed-exitcode", str(hello / "runform.yaml")])
        assert r.exit_code == 2, r.output


# ------------------------------------------------------------------ 5. a changed run name


def test_changed_run_name_says_so(hello: Path) -> None:
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    spec = hello / "runform.yaml"
    old_root = machine_root(hello)
    spec.write_text(spec.read_text().replace("run: hello\n", "run: hello2\n"))
    # without --rename-run a state of another run name is refused: it may be another project's
    refused = run_cli("plan", cwd=hello)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "the state belongs to run 'hello'" in refused.stderr and "--rename-run" in refused.stderr
    for cmd in (("apply", "--auto-approve"), ("destroy", "--auto-approve")):
        r = run_cli(*cmd, cwd=hello)
        assert r.returncode == 1 and "the state belongs to run 'hello'" in r.stderr, r.stderr
    assert old_root.is_dir()  # refused: nothing was touched
    p = run_cli("plan", "--json", "--rename-run", cwd=hello)
    assert p.returncode == 0, p.stderr
    inst = {c["address"]: c for c in json.loads(p.stdout)["resource_changes"]}["instance.main"]
    assert inst["action"] == "replace"
    assert inst["action_reason"] == "replace_because_label_changed"
    reason = inst["reason"]
    assert "is gone" not in reason
    assert reason.startswith("the run name changed from hello to hello2: the instance label changes from ")
    old_label, new_label = reason.rsplit(" from ", 1)[1].split(" to ")
    assert old_label.startswith("runform-hello-") and new_label == old_label.replace("hello", "hello2", 1)
    assert old_root.is_dir()  # the old machine is still there


def test_out_never_overwrites_a_file_that_is_not_a_saved_plan(hello: Path) -> None:
    project = hello
    source = (project / "steps" / "join.py").read_text()
    p = run_cli("plan", "--out", "steps/join.py", cwd=project)
    assert p.returncode == 1 and "is not a saved plan" in p.stderr and "Traceback" not in p.stderr
    assert (project / "steps" / "join.py").read_text() == source
    assert run_cli("plan", "--out", "next.plan", cwd=project).returncode == 0
    assert run_cli("plan", "--out", "next.plan", cwd=project).returncode == 0  # a plan over a plan is fine
