"""The run as its user lives it: progress events, --json output against its documented schema,
`runform status`, `show PLANFILE`, spend, signals, and the spec file not counting as code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import REPO, run_cli

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

SCHEMAS = REPO / "docs" / "schemas"

SPEC = """\
# a two-stage pipeline on the local provider
run: lived
compute:
  provider: local
code:
  path: .
  exclude: [out/]
stages:
  first:
    run: python first.py
    outputs: [out/first.txt]
  second:
    run: python -c "print('second ran')"
    deps: [first.py]
    env: {WHO: "me"}
"""

FIRST = """\
import os, pathlib, sys, time
os.makedirs("out", exist_ok=True)
print("first: hello from the stage", flush=True)
gate = os.environ.get("RUNFORM_TEST_GATE")
while gate and not os.path.exists(gate):  # held until the test lets it go
    time.sleep(0.05)
pathlib.Path("out/first.txt").write_text("ok\\n")
print("first: done", flush=True)
"""


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def check(name: str, doc: Any) -> None:
    jsonschema.validate(doc, schema(name), format_checker=jsonschema.FormatChecker())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "lived"
    p.mkdir()
    (p / "runform.yaml").write_text(SPEC)
    (p / "first.py").write_text(FIRST)
    return p


def _changed(project: Path) -> dict[str, str]:
    r = run_cli("plan", "--json", cwd=project)
    assert r.returncode == 0, r.stderr
    return {c["address"]: c["action"] for c in json.loads(r.stdout)["resource_changes"] if c["action"] != "no-op"}


def test_schemas_are_valid_json_schemas() -> None:
    for f in SCHEMAS.glob("*.schema.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(f.read_text()))


def test_apply_json_streams_events_and_spec_comments_change_nothing(project: Path) -> None:
    a = run_cli("apply", "--auto-approve", "--json", cwd=project)
    assert a.returncode == 0, a.stderr + a.stdout
    events = [json.loads(line) for line in a.stdout.splitlines()]
    for e in events:
        check("event", e)
    types = [e["type"] for e in events]
    assert types[0] == "planned" and "apply_finished" in types
    logs = [e for e in events if e["type"] == "log" and e["stage"] == "first"]
    assert [e["line"] for e in logs] == ["first: hello from the stage", "first: done"]
    assert any(e["type"] == "log" and e["stage"] == "second" and e["line"] == "second ran" for e in events)
    assert "stage.first: first: hello from the stage" in [e["@message"] for e in logs]
    finished = [e for e in events if e["type"] == "action_finished"]
    assert {e["address"] for e in finished} >= {"instance.main", "code.workdir", "stage.first", "stage.second"}
    assert all(e["status"] == "done" for e in finished)
    assert _changed(project) == {}

    # the spec is not code: a comment, and a key only `second` uses, leave `first` alone
    spec = project / "runform.yaml"
    spec.write_text("# a comment\n" + spec.read_text().replace('WHO: "me"', 'WHO: "you"'))
    assert _changed(project) == {"code.workdir": "update", "stage.second": "replace"}
    # ... while its code does count
    (project / "first.py").write_text(FIRST + "# edited\n")
    assert set(_changed(project)) == {"code.workdir", "stage.first", "stage.second"}

    d = run_cli("destroy", "--auto-approve", "--json", cwd=project)
    assert d.returncode == 0, d.stderr
    devents = [json.loads(line) for line in d.stdout.splitlines()]
    for e in devents:
        check("event", e)
    assert devents[-1]["type"] == "apply_finished" and devents[-1]["ok"]
    again = run_cli("destroy", "--auto-approve", cwd=project)
    assert again.returncode == 0
    assert "Nothing to destroy" in again.stdout and "matches the configuration" not in again.stdout


def test_python_api_events_show_elapsed_time_while_a_stage_runs(project: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import runform

    gate = tmp_path / "gate"
    monkeypatch.setenv("RUNFORM_TEST_GATE", str(gate))
    spec = runform.load(project / "runform.yaml")
    seen: list[dict[str, Any]] = []

    def on_event(e: dict[str, Any]) -> None:
        seen.append(e)
        if e["type"] == "action_progress" and e["address"] == "stage.first":
            gate.write_text("go")  # the stage was reported as still running: let it finish

    result = runform.apply(spec, on_event=on_event, progress_every=0.2)
    assert result is not None and result.ok
    progress = [e for e in seen if e["type"] == "action_progress" and e["address"] == "stage.first"]
    assert progress and progress[0]["elapsed"] > 0
    assert progress[0]["@message"].startswith("stage.first: Still creating... [")
    assert "elapsed]" in progress[0]["@message"]
    for e in seen:
        check("event", e)
    assert runform.plan(spec).has_changes is False


def test_show_status_validate_json_match_their_schemas(project: Path) -> None:
    v = run_cli("validate", "--json", cwd=project)
    assert v.returncode == 0, v.stderr
    check("validate", json.loads(v.stdout))
    assert json.loads(v.stdout)["stages"] == ["first", "second"]
    (project / "bad.yaml").write_text("run: x\ncompute: {provider: local}\nstages: {a: {command: true}}\n")
    bad = run_cli("validate", "bad.yaml", "--json", cwd=project)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    check("validate", doc)
    assert not doc["valid"] and "bad.yaml" in doc["diagnostics"][0]["summary"]

    empty = run_cli("show", "--json", cwd=project)
    assert empty.returncode == 0
    check("show", json.loads(empty.stdout))

    assert run_cli("apply", "--auto-approve", cwd=project).returncode == 0
    s = run_cli("show", "--json", cwd=project)
    doc = json.loads(s.stdout)
    check("show", doc)
    assert doc["machine"]["id"] and doc["machine"]["uptime"] >= 0

    st = run_cli("status", "--json", cwd=project)
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    check("status", doc)
    row = next(r for r in doc["runs"] if r["run"] == "lived")
    assert row["provider"] == "local" and row["phase"] == "idle" and row["instance"]
    assert row["spec"] == str((project / "runform.yaml").resolve())
    text = run_cli("status", cwd=project).stdout
    assert "lived" in text and "idle" in text

    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0
    assert run_cli("destroy", "--auto-approve", cwd=project).returncode == 0
    gone = json.loads(run_cli("status", "--json", cwd=project).stdout)
    row = next(r for r in gone["runs"] if r["run"] == "lived")
    assert row["instance"] is None and row["phase"] == "destroyed" and not row["billing"]


def test_show_renders_a_saved_plan(project: Path) -> None:
    assert run_cli("plan", "--out", "next.plan", cwd=project).returncode == 0
    shown = run_cli("show", "next.plan", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "+ stage.first" in shown.stdout and "Plan: " in shown.stdout
    as_json = run_cli("show", "next.plan", "--json", cwd=project)
    assert {c["address"] for c in json.loads(as_json.stdout)["resource_changes"]} >= {"stage.first"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_behave_like_ctrl_c(project: Path, tmp_path: Path, sig: int) -> None:
    gate = tmp_path / "gate"
    env = {**os.environ, "RUNFORM_TEST_GATE": str(gate)}
    env.pop("RUNFORM_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve", "--json"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the stage's job has started and printed
            e = json.loads(line)
            if e["type"] == "log" and e["address"] == "stage.first":
                break
        proc.send_signal(sig)
        rest = [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    end = [e for e in rest if e["type"] == "apply_finished"]
    assert end and end[0]["interrupted"] and not end[0]["ok"]
    # lock released, journal intact, the machine and the still-running job listed
    show = run_cli("show", "--json", cwd=project)
    assert show.returncode == 0, show.stderr
    doc = json.loads(show.stdout)
    assert doc["machine"] is not None
    assert [r["address"] for r in doc["running"]] == ["stage.first"]
    gate.write_text("go")
    # the next apply attaches to the job that went on, and converges
    a = run_cli("apply", "--auto-approve", cwd=project, env={"RUNFORM_TEST_GATE": str(gate)})
    assert a.returncode == 0, a.stderr
    assert "stage.first: Reading..." in a.stderr or "stage.first: Attaching..." in a.stderr
    assert "(the job ran " in a.stderr  # the job's own duration, not the wait
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0


def test_ssh_and_pull_reach_the_run_folder(project: Path, tmp_path: Path) -> None:
    from runform.testing.sshd import SSHD

    if not SSHD.available():
        pytest.skip("openssh-server is not installed")
    import yaml

    with SSHD(tmp_path / "sshd") as server:
        root = tmp_path / "remote" / "lived"
        spec = yaml.safe_load((project / "runform.yaml").read_text())
        spec["compute"] = {**server.compute, "root": str(root)}
        (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        a = run_cli("apply", "--auto-approve", cwd=project)
        assert a.returncode == 0, a.stderr
        assert "instance.main: bootstrap (" in a.stderr  # the provider's readiness phase

        # a command in the run's folder, over the pinned host key and the run's key
        r = run_cli("ssh", "--", "cat", "out/first.txt", cwd=project)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "ok\n"
        assert run_cli("ssh", "--", "pwd", cwd=project).stdout.strip() == str(root)
        # an interactive shell in the run's folder, with a port forwarded (TensorBoard)
        import runform
        from runform.cli.remote import ssh_argv

        argv = ssh_argv(runform.load(project / "runform.yaml"), (), ("6006", "8888:8889"))
        assert argv[argv.index("-L") + 1] == "6006:localhost:6006" and "8888:localhost:8889" in argv
        assert "-t" in argv and argv[-1].startswith(f"cd {root} && exec")
        assert "StrictHostKeyChecking=yes" in argv
        bad = run_cli("ssh", "-L", "tensorboard", "--", "true", cwd=project)
        assert bad.returncode == 1 and "-L tensorboard" in bad.stderr
        # a changed host key is refused: only the pinned one is accepted
        server.regenerate_host_key()
        refused = run_cli("ssh", "--", "true", cwd=project)
        assert refused.returncode != 0
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr or "verification failed" in refused.stderr


def test_pull_is_incremental(project: Path, tmp_path: Path, sshd: Any) -> None:
    import yaml

    root = tmp_path / "remote" / "lived"
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert run_cli("apply", "--auto-approve", cwd=project).returncode == 0
    (root / "out" / "sub").mkdir()
    (root / "out" / "sub" / "b.bin").write_bytes(b"\0" * 1000)
    dest = tmp_path / "back"
    p = run_cli("pull", "out", str(dest), cwd=project)
    assert p.returncode == 0, p.stderr
    assert (dest / "out" / "first.txt").read_text() == "ok\n"
    assert (dest / "out" / "sub" / "b.bin").stat().st_size == 1000
    assert "Pulled 2 file(s)" in p.stdout
    (root / "out" / "first.txt").write_text("changed\n")
    again = run_cli("pull", "out", str(dest), cwd=project)
    assert "Pulled 1 file(s)" in again.stdout, again.stderr
    assert (dest / "out" / "first.txt").read_text() == "changed\n"
    bad = run_cli("pull", "../etc", cwd=project)
    assert bad.returncode == 1 and "not a path inside the run's folder" in bad.stderr
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0


VAST = {"provider": "vast", "gpus": ["RTX_4090", "rtx 3090"], "num_gpus": 1,
        "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime", "disk_gb": 40,
        "max_price_per_hour": 3.0, "max_duration": "2h", "teardown": "never"}


def test_offline_rehearsal_in_one_command(project: Path, tmp_path: Path) -> None:
    """docs/vast.md's recipe: `python -m runform.testing.rehearse`, export what it prints, apply.
    Readiness phases, offers --json, the machine in use priced in the plan, spend in show/status."""
    from runform.testing.sshd import SSHD

    if not SSHD.available():
        pytest.skip("openssh-server is not installed")
    import yaml

    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**VAST, "root": str(project.parent / "vast-root")}  # instances share this host
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "runform.testing.rehearse", "--created-s", "0.05",
                             "--loading-s", "0.2", "--dir", str(tmp_path / "rehearse")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("export "):
                k, _, v = line[len("export "):].strip().partition("=")
                env[k] = v
            if line.startswith("# ready"):
                break
        assert set(env) == {"VAST_API_URL", "VAST_API_KEY"}

        o = run_cli("offers", "--json", cwd=project, env=env)
        assert o.returncode == 0, o.stderr
        offers = json.loads(o.stdout)
        check("offers", offers)
        assert sum(1 for r in offers["offers"] if r.get("chosen")) == 1

        a = run_cli("apply", "--auto-approve", "--json", cwd=project, env=env)
        assert a.returncode == 0, a.stderr + a.stdout
        events = [json.loads(line) for line in a.stdout.splitlines()]
        for e in events:
            check("event", e)
        phases = [e["phase"] for e in events if e["type"] == "phase"]
        assert phases[0] == "created" and "ssh" in phases and "bootstrap" in phases, phases
        assert phases.index("created") < phases.index("ssh") < phases.index("bootstrap")
        spend = [e for e in events if e["type"] == "spend"]
        assert spend and spend[0]["billing"] and spend[0]["price_per_hour"] > 0

        show = json.loads(run_cli("show", "--json", cwd=project, env=env).stdout)
        check("show", show)
        m = show["machine"]
        assert m["gpu"] and m["price_per_hour"] > 0 and m["ssh"]["port"] and show["spend"]["billing"]
        assert "runform ssh" in m["ssh_command"]
        text = run_cli("show", cwd=project, env=env).stdout
        assert f"${m['price_per_hour']:.3f}/h" in text and "spent" in text

        # the plan prices the machine in use, not the market's best offer
        (project / "first.py").write_text(FIRST + "# again\n")
        p = run_cli("plan", cwd=project, env=env)
        assert f"Machine in use: {m['id']}" in p.stdout, p.stdout
        assert f"${m['price_per_hour']:.3f}/h" in p.stdout and "timed by their last run" in p.stdout, p.stdout[-800:]

        st = json.loads(run_cli("status", "--json", cwd=project).stdout)
        check("status", st)
        row = next(r for r in st["runs"] if r["run"] == "lived")
        assert row["billing"] and row["instance"] == m["id"] and row["price_per_hour"] == m["price_per_hour"]

        d = run_cli("destroy", "--auto-approve", cwd=project, env=env)
        assert d.returncode == 0, d.stderr
        assert "Spent so far on this run: $" in d.stdout
        row = next(r for r in json.loads(run_cli("status", "--json", cwd=project).stdout)["runs"]
                   if r["run"] == "lived")
        assert not row["billing"] and row["instance"] is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    assert "stopping the stand-in and sshd" in out


def test_a_folder_artifact_lands_in_the_folder_its_destination_names(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    spec = (project / "runform.yaml").read_text()
    (project / "runform.yaml").write_text(spec + f"artifacts:\n  first:\n    paths: [out/]\n    to: file://{store}/out/\n"
                                          f"  again:\n    paths: [out/]\n    to: file://{store}/runs/\n")
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stderr
    assert (store / "out" / "first.txt").read_text() == "ok\n"  # not out/out/first.txt
    assert (store / "runs" / "out" / "first.txt").exists()  # a path keeps its name under `to`
    assert not (store / "out" / "out").exists()
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0


def _load_error(tmp_path: Path, text: str, name: str = "runform.yaml") -> str:
    import runform

    (tmp_path / name).write_text(text)
    with pytest.raises(runform.SpecError) as e:
        runform.load(tmp_path / name)
    return str(e.value)


def test_validate_checks_what_it_can_offline(tmp_path: Path) -> None:
    (tmp_path / "runform.yaml").write_text("run: x\ndatasets:\n  d: {source: file://data/missing, dest: d}\n"
                                           "stages:\n  a: {run: 'true', needs: [dataset.d]}\n")
    for cmd in ("validate", "plan"):
        r = run_cli(cmd, cwd=tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "runform.yaml:3:" in r.stderr and "datasets.d.source" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / ".runform").exists() or not list((tmp_path / ".runform").glob("state*"))
    # other tools' name for `needs`
    msg = _load_error(tmp_path, "run: x\nstages:\n  a: {run: 'true'}\n  b:\n    run: 'true'\n    depends_on: [a]\n")
    assert "runform.yaml:6:5:" in msg and "did you mean 'needs'" in msg
    # the column is the key's, not the value's
    msg = _load_error(tmp_path, "run: x\ncompute: {provider: local}\nstages:\n  a: {run: 'true', timeout: soon}\n")
    assert "runform.yaml:4:" in msg
    column = int(msg.split("runform.yaml:")[1].split(":")[1])
    assert column == "  a: {run: 'true', timeout: soon}".index("timeout") + 1, msg


def test_cycle_error_and_missing_spec_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runform

    monkeypatch.chdir(tmp_path)
    msg = _load_error(tmp_path, "run: x\nstages:\n  a: {run: 'true', needs: [stage.b]}\n"
                                "  b: {run: 'true', needs: [stage.a]}\n")
    assert msg.startswith("runform.yaml:") and "dependency cycle" in msg
    with pytest.raises(runform.SpecError) as e:
        runform.load("nonexist.yaml")
    assert "nonexist.yaml" in str(e.value) and "create runform.yaml" not in str(e.value)
    assert "check the path" in str(e.value)


def test_sigterm_during_vast_readiness_leaves_nothing_billing_unlisted(project: Path, make_vast_standin: Any,
                                                                       sshd: Any) -> None:
    """`timeout 300 runform apply` during readiness: the machine still starting is given back
    (nothing bills that `show` does not list), the lock is released, exit 1."""
    import yaml

    standin = make_vast_standin(sshd=sshd)
    standin.set_lifecycle(created_s=0.05, loading_s=600)  # it would load for 10 minutes
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["compute"] = {**VAST, "root": str(project.parent / "vast-root")}  # instances share this host
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, **standin.env()}
    env.pop("RUNFORM_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve", "--json"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            e = json.loads(line)
            if e["type"] == "phase" and e["phase"] == "loading":
                break
        proc.send_signal(signal.SIGTERM)
        rest = [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=120) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    end = next(e for e in rest if e["type"] == "apply_finished")
    assert end["interrupted"] and not end["ok"]
    assert len(standin.audit().creates) == 1 and standin.audit().live == ()  # rented, then given back
    show = json.loads(run_cli("show", "--json", cwd=project, env=standin.env()).stdout)
    assert show["machine"] is None  # nothing bills, and show says so truthfully
    p = run_cli("plan", "--detailed-exitcode", cwd=project, env=standin.env())  # the lock is free
    assert p.returncode == 2, p.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_a_failed_stage_log_is_printed_once(project: Path, quiet: bool) -> None:
    spec = project / "runform.yaml"
    spec.write_text(spec.read_text().replace("python first.py", "echo the-cause-of-it; exit 3"))
    a = run_cli("apply", "--auto-approve", *(["--quiet"] if quiet else []), cwd=project)
    assert a.returncode == 1
    out = a.stdout + a.stderr
    assert out.count("the-cause-of-it") == 1, out
    assert out.count("stage.first failed (exit 3") == 1, out  # the error sentence, once
    assert "Error: stage.first failed (exit 3" in a.stderr, a.stderr  # in the summary, at the end
    assert "stage.first: Failed after " in a.stderr, a.stderr  # the progress line names no error
    assert a.stderr.index("stage.first: Failed after ") < a.stderr.index("Error: stage.first failed")
    assert ("its log is above" in out) != quiet
