"""Start-up cost: ``runform --help`` and ``runform plugins`` import no heavy library, and the agent
answers ``version`` on a bare interpreter.

Each check runs in a fresh interpreter, so whatever this test process imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import runform

HEAVY = ("wandb", "boto3", "botocore", "torch", "paramiko", "httpx")

# Runs the click command in-process, then reports which top-level modules got imported.
PROBE = r"""
import json, sys
args, out = json.loads(sys.argv[1]), sys.argv[2]
from runform.cli.main import cli
try:
    cli.main(args=args, prog_name="runform", standalone_mode=True)
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RUNFORM_BLOCK_PLUGINS", "PYTHONHOME")}


def _imports_of(args: list[str], tmp_path: Path) -> tuple[int, str, set[str]]:
    out = tmp_path / "probe.json"
    p = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=tmp_path,
    )
    assert out.exists(), p.stderr
    report = json.loads(out.read_text())
    return report["code"], p.stdout, set(report["modules"])


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["apply", "--help"]])
def test_help_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    code, out, modules = _imports_of(args, tmp_path)
    assert code == 0
    assert "Usage:" in out
    assert not modules & set(HEAVY), (
        f"`runform {' '.join(args)}` imported {sorted(modules & set(HEAVY))}"
    )


def test_plugins_imports_nothing_heavy(tmp_path: Path) -> None:
    code, out, modules = _imports_of(["plugins"], tmp_path)
    assert code == 0
    assert "provider:local" in out  # the entry points were really loaded
    assert not modules & set(HEAVY), (
        f"`runform plugins` imported {sorted(modules & set(HEAVY))}: "
        "plugin entry modules must import their heavy dependencies inside the factories"
    )


def _traced(tmp_path: Path, *args: str, stdin: str | None = None, timeout: float = 120) -> tuple[Any, set[str]]:
    """``python -X importtime -m ARGS``: the finished process and the top-level packages it
    imported (from importtime's "self | cumulative | imported package" lines)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", *args], check=False, input=stdin,
                       capture_output=True, text=True, timeout=timeout, env=_env(), cwd=tmp_path)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in p.stderr.splitlines() if line.startswith("import time:")}
    return p, imported


def test_help_as_a_process(tmp_path: Path) -> None:
    p, imported = _traced(tmp_path, "runform.cli.main", "--help")
    assert p.returncode == 0, p.stderr
    assert "Usage: runform" in p.stdout and "plugins" in p.stdout
    assert "runform" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_agent_answers_version(tmp_path: Path) -> None:
    p, imported = _traced(tmp_path, "runform.agent", stdin='{"op": "version"}', timeout=60)
    assert p.returncode == 0, p.stderr
    reply = json.loads(p.stdout)
    assert reply["ok"] is True and reply["version"] == runform.__version__
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
