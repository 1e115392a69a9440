"""A random secret in the env file appears nowhere but the machine's 0600 secrets file: not in
the output, state, journal, plan JSON, logs, metrics, artifacts, nor in any spelling a program
may print it in (URL-quoted, JSON-escaped, base64), nor split across the supervisor's reads.

Run on the local, ssh (a real sshd on 127.0.0.1) and vast (runform's Vast API stand-in over that
sshd) providers: every file of the project, of the machine and of the artifact store is scanned."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from helpers import machine_root, run_cli

from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

# A stage that prints the secret every way a program might: raw, split across the 64 KiB read
# of the supervisor, URL-quoted, JSON-escaped, base64 (on its own and inside a Basic auth
# header), and in a metric name (its metrics.jsonl on the machine: the stage's own file, which
# runform reads and masks, but does not rewrite).
LEAK = r'''
import base64, json, os, sys, urllib.parse
s = os.environ["HELLO_TOKEN"]
out = sys.stdout.buffer
half = len(s) // 2
out.write(b"x" * (65536 - half) + s.encode() + b"\n")  # straddles the supervisor's 64 KiB read
out.write(("raw " + s + "\n").encode())
out.write(("url " + urllib.parse.quote(s, safe="") + "\n").encode())
out.write(("json " + json.dumps({"token": s}) + "\n").encode())
out.write(("b64 " + base64.b64encode(s.encode()).decode() + "\n").encode())
out.write(("auth Basic " + base64.b64encode(("user:" + s).encode()).decode() + "\n").encode())
out.flush()
with open(os.environ["RUNFORM_METRICS_FILE"], "a") as f:
    f.write(json.dumps({"step": 1, "acc_" + s: 0.5, "ok": 2.0}) + "\n")
os.makedirs("out", exist_ok=True)
with open("out/leak.txt", "w") as f:
    f.write("nothing secret\n")
print("done")
'''


def _spellings(canary: str) -> list[bytes]:
    return [s.encode() for s in (
        canary, quote(canary, safe=""), json.dumps(canary)[1:-1],
        base64.b64encode(canary.encode()).decode(),
        base64.b64encode(("user:" + canary).encode()).decode(),
    )]


def _scan(roots: list[Path], allowed: set[Path], forms: list[bytes]) -> list[str]:
    leaks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path not in allowed:
                data = path.read_bytes()
                leaks += [f"{path} ({form[:12]!r}...)" for form in forms if form in data]
    return leaks


VAST = {"provider": "vast", "gpus": ["RTX_4090"], "num_gpus": 1, "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
        "disk_gb": 40, "max_price_per_hour": 3.0, "max_duration": "2h", "teardown": "never"}


@pytest.mark.parametrize("provider", ["local", "ssh", "vast"])
def test_canary_never_leaks(provider: str, hello: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # '/', '+', '&', '=', '?' and 'é' make the URL-quoted and JSON-escaped spellings differ from the raw one
    canary = "canary-" + secrets.token_hex(12) + "/+&=?é"
    (hello / "hello.env").write_text(f'HELLO_TOKEN="{canary}"\nexport OTHER=plain-{canary}\n')
    (hello / "steps" / "leak.py").write_text(LEAK)
    store = tmp_path / "store"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["stages"]["join"]["run"] = 'echo "token is $HELLO_TOKEN"; python steps/join.py'
    spec["stages"]["leak"] = {"run": "python steps/leak.py", "deps": ["steps/leak.py"],
                              "outputs": ["out/leak.txt"]}
    # an artifact of the whole root: it must take neither .runform/ nor the env file
    spec["artifacts"] = {"all": {"paths": ["."], "to": store.as_uri()}}
    machine_roots = []
    env: dict[str, str] = {}
    standin = None
    if provider in ("ssh", "vast"):
        if not SSHD.available():
            pytest.skip("openssh-server is not installed")
        sshd: SSHD = request.getfixturevalue("sshd")
    if provider == "ssh":
        remote = tmp_path / "remote" / "hello"
        spec["compute"] = {**sshd.compute, "root": str(remote)}
        machine_roots.append(remote)
    if provider == "vast":
        standin = request.getfixturevalue("make_vast_standin")(sshd=sshd)
        standin.set_lifecycle(created_s=0.05, loading_s=0.1, destroy_s=0.05)
        env = standin.env()
        # its own machine folder: every stand-in instance shares this host's filesystem
        spec["compute"] = {**VAST, "root": str(tmp_path / "vast-root")}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=hello, env=env)

    outputs = []
    p = cli("plan", "--json", "--out", "canary.plan")
    assert p.returncode == 0, p.stderr
    outputs += [p.stdout, p.stderr]
    a = cli("apply", "--auto-approve")
    assert a.returncode == 0, a.stderr
    outputs += [a.stdout, a.stderr]
    if standin is not None:
        state = json.loads((hello / ".runform" / "state.json").read_text())
        inst = next(r for r in state["resources"] if r["address"] == "instance.main")
        machine_roots.append(standin.instance_root(inst["attrs"]["instance"]["id"]))
    logs = cli("logs", "join")
    assert "token is ***" in logs.stdout
    leak_log = cli("logs", "leak")
    assert leak_log.returncode == 0, leak_log.stderr
    assert leak_log.stdout.count("***") >= 6 and "done" in leak_log.stdout, leak_log.stdout[-800:]
    show = cli("show", "--json")
    assert "acc_***" in show.stdout
    outputs += [logs.stdout, logs.stderr, leak_log.stdout, leak_log.stderr, show.stdout, show.stderr]
    second = cli("plan", "--detailed-exitcode")
    assert second.returncode == 0, second.stdout + second.stderr
    outputs += [second.stdout, second.stderr]
    forms = _spellings(canary)
    for text in outputs:
        for form in forms:
            assert form.decode() not in text

    if machine_roots:
        found = [p for p in machine_roots[0].rglob("secrets.env") if p.parent.name == ".runform"]
        assert len(found) == 1, found
        root = found[0].parent.parent
    else:
        root = machine_root(hello)
    secret_file = root / ".runform" / "secrets.env"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert not (store / ".runform").exists() and not (store / "hello.env").exists()
    assert (store / "out" / "leak.txt").is_file()
    # the stage's own metrics.jsonl holds what the stage wrote (runform masks what it reads from it)
    own = set((root / ".runform" / "jobs" / "leak").rglob("metrics.jsonl"))
    assert own
    leaks = _scan([hello, store, *machine_roots], {secret_file, hello / "hello.env", *own}, forms)
    assert not leaks, leaks
    assert (hello / "canary.plan").exists()
    # nor in the process arguments of a stage (secrets travel in the environment, not argv)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                assert canary.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass
