"""A teardown that fails: the apply exits 1 and says so once, with the fix; the machine stays in
state (it may still bill), so ``show`` lists it and ``destroy`` gives it back later."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import runform
from runform.errors import RunformError
from runform.providers.local import LocalProvider

REFUSAL = "the provider refused to destroy runform-teardown (HTTP 403)"


class _Refusing(LocalProvider):
    """The local provider, whose destroy fails while ``refuse`` exists in the state folder."""

    name = "refusing"

    def destroy(self, instance: Any, ctx: Any) -> None:
        if (ctx.state_dir / "refuse").exists():
            raise RunformError(REFUSAL, hint="check the provider's console, then run `runform destroy`")
        super().destroy(instance, ctx)


class _Plugin:
    @runform.hookimpl
    def runform_register_providers(self, register: Any) -> None:
        register("refusing", _Refusing)


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from runform.plugins import get_plugin_manager

    project = tmp_path / "project"
    project.mkdir()
    (project / "step.py").write_text("print('step ran')\n")
    (project / "runform.yaml").write_text(yaml.safe_dump({
        "run": "teardown", "compute": {"provider": "refusing", "teardown": "always"},
        "code": {"path": "."}, "stages": {"step": {"run": f"{sys.executable} step.py"}},
        "tracker": {"kind": "none"}}, sort_keys=False))
    monkeypatch.chdir(project)
    pm = get_plugin_manager()
    pm.register(_Plugin(), name="refusing-provider")
    try:
        yield project
    finally:
        pm.unregister(name="refusing-provider")


def _cli(*args: str) -> Any:
    from runform.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_failed_teardown_exits_1_says_it_once_and_keeps_the_machine_in_state(refusing: Path) -> None:
    (refusing / ".runform").mkdir(exist_ok=True)
    (refusing / ".runform" / "refuse").write_text("")
    r = _cli("apply", "--auto-approve")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert r.output.count(REFUSAL) == 1, r.output  # the error once (the summary's), with its fix
    assert "teardown failed: the machine may still bill" in r.output, r.output
    assert "run `runform destroy`" in r.output, r.output
    show = json.loads(_cli("show", "--json").output)
    assert [x["address"] for x in show["resources"] if x["address"] == "instance.main"] == ["instance.main"]
    (refusing / ".runform" / "refuse").unlink()
    d = _cli("destroy", "--auto-approve")
    assert d.exit_code == 0, d.output
    assert not [p for p in (refusing / ".runform" / "machines").iterdir() if not p.name.endswith(".deleting")]
    p = _cli("plan", "--detailed-exitcode")
    assert p.exit_code == 2 and "instance.main" in p.output, p.output  # nothing is left: all to create
