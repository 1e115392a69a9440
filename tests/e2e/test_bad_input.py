"""The bad-input contract, data-driven: one generic test over the cases in tests/bad_input/.

"Bad input gets a clear error naming the file, the line or field, and the fix; exit code 1;
no traceback; nothing changed, locally or remotely."

Each case (see tests/bad_input/README.md) edits a fresh copy of examples/hello, runs the real CLI
in a subprocess and checks every clause of that sentence. Secret values never reach the output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

HERE = Path(__file__).resolve().parents[1]  # tests/
CASES_DIR = HERE / "bad_input"
HELLO = HERE.parent / "examples" / "hello"
# runform.yaml and hello.env of examples/hello, pinned here so that the cases' line numbers do not
# move when the example changes; steps/ and data/ come from the example itself.
BASE = CASES_DIR / "base"
# The value in examples/hello/hello.env: never printed, whatever the case.
HELLO_SECRET = "not-a-real-secret-0000"
CASE_KEYS = {"about", "edit", "files", "remove", "env", "args", "expect", "forbid"}


def _load_cases() -> list[Any]:
    cases = []
    for path in sorted(CASES_DIR.glob("*/*.yaml")):
        if path.parent == BASE:
            continue
        case = yaml.safe_load(path.read_text(encoding="utf-8"))
        case_id = f"{path.parent.name}/{path.stem}"
        cases.append(pytest.param(case, id=case_id))
    return cases


CASES = _load_cases()


def _tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (folders as 'dir')."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _outside(tmp_path: Path, project: Path) -> dict[str, str]:
    """Every file beside the project (the case's tmp folder, the project left out), as _tree."""
    return {rel: h for rel, h in _tree(tmp_path).items()
            if rel != project.name and not rel.startswith(project.name + "/")}


def _make_project(tmp_path: Path, case: dict[str, Any]) -> Path:
    project = tmp_path / "hello"
    shutil.copytree(HELLO, project, ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
    for name in ("runform.yaml", "hello.env"):
        shutil.copyfile(BASE / name, project / name)
    spec = project / "runform.yaml"
    text = spec.read_text(encoding="utf-8")
    for old, new in case.get("edit") or []:
        assert text.count(old) == 1, f"edit target must occur exactly once in runform.yaml: {old!r}"
        text = text.replace(old, new)
    spec.write_text(text, encoding="utf-8")
    for rel in case.get("remove") or []:
        (project / rel).unlink()
    for rel, content in (case.get("files") or {}).items():
        dest = project / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content, encoding="utf-8")
    return project


def _run(project: Path, case: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("RUNFORM_DEBUG", None)
    for k, v in (case.get("env") or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return subprocess.run(
        [sys.executable, "-m", "runform.cli.main", *map(str, case["args"])],
        cwd=project, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )


def test_the_base_project_is_valid(tmp_path: Path) -> None:
    """Every case breaks one thing in a project that is otherwise valid."""
    project = _make_project(tmp_path, {})
    proc = _run(project, {"args": ["validate"]})
    assert proc.returncode == 0, proc.stderr
    assert not (project / ".runform").exists()


def test_there_are_enough_cases() -> None:
    groups: dict[str, int] = {}
    for p in CASES:
        group = p.id.split("/")[0]
        groups[group] = groups.get(group, 0) + 1
    assert groups.get("spec", 0) >= 45
    assert groups.get("envfile", 0) >= 6
    assert groups.get("planfile", 0) >= 4
    assert groups.get("state", 0) >= 5
    assert sum(groups.values()) >= 80


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: dict[str, Any], tmp_path: Path) -> None:
    assert set(case) <= CASE_KEYS, f"unknown keys in the case file: {set(case) - CASE_KEYS}"
    assert case.get("expect"), "a case names what the error must contain"
    project = _make_project(tmp_path, case)
    state_dir = project / ".runform"
    # a file beside the project, where an escaping path (../victim.txt, a label ../../x) would land
    (tmp_path / "victim.txt").write_text("untouched\n")
    before = _tree(state_dir)
    project_before = _tree(project)
    outside_before = _outside(tmp_path, project)

    proc = _run(project, case)
    out, err = proc.stdout, proc.stderr
    shown = f"--- exit {proc.returncode}\n--- stdout:\n{out}\n--- stderr:\n{err}"

    # exit code 1, no traceback
    assert proc.returncode == 1, shown
    assert "Traceback" not in err and "Traceback" not in out, shown
    # one clear error: `Error: FILE[:LINE[:COL]]: [FIELD: ]what` and the fix
    assert err.startswith("Error: "), shown
    assert "fix:" in err, shown
    for want in case["expect"]:
        assert want in err, f"expected {want!r} in stderr\n{shown}"
    # no secret value, anywhere
    for secret in [HELLO_SECRET, *(case.get("forbid") or [])]:
        assert secret not in out and secret not in err, f"leaked {secret!r}\n{shown}"
    # nothing changed, locally or remotely
    after = _tree(state_dir)
    assert after == before, f".runform/ changed: {before} -> {after}\n{shown}"
    assert not (state_dir / "machines").exists(), "a machine folder was created"
    assert _tree(project) == project_before, "files in the project changed"
    assert _outside(tmp_path, project) == outside_before, "files outside the run root changed"
