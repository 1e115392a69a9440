"""A random secret in the env file appears nowhere: output, state, journal, plan JSON, logs."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from conftest import machine_root, run_cli


def test_canary_never_leaks(hello: Path) -> None:
    canary = "canary-" + secrets.token_hex(12)
    (hello / "hello.env").write_text(f'HELLO_TOKEN="{canary}"\nexport OTHER=plain-{canary}\n')
    spec = (hello / "runform.yaml").read_text()
    # a stage that prints the secret: the log must show *** instead
    spec = spec.replace("run: python steps/join.py", 'run: echo "token is $HELLO_TOKEN"; python steps/join.py')
    (hello / "runform.yaml").write_text(spec)
    outputs = []
    p = run_cli("plan", "--json", "--out", "canary.plan", cwd=hello)
    outputs += [p.stdout, p.stderr]
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    outputs += [a.stdout, a.stderr]
    logs = run_cli("logs", "join", cwd=hello)
    assert "token is ***" in logs.stdout
    outputs += [logs.stdout, logs.stderr]
    show = run_cli("show", "--json", cwd=hello)
    outputs += [show.stdout, show.stderr]
    for text in outputs:
        assert canary not in text

    root = machine_root(hello)
    secret_file = root / ".runform" / "secrets.env"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    leaks = []
    for path in hello.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in (secret_file, hello / "hello.env"):
            if canary.encode() in path.read_bytes():
                leaks.append(str(path.relative_to(hello)))
    assert not leaks, leaks
    assert (hello / "canary.plan").exists()
    # nor in the process arguments of a stage (secrets travel in the environment, not argv)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                assert canary.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass
