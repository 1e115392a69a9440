"""Masking secrets in streams: every split point, every spelling; the supervisor's log and the
cause of a stage that could not run at all."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from runform.agent.ops import handle
from runform.masking import ByteMasker, spellings
from runform.redact import Redactor

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

SECRET = "p@ss/w0rd+é&x=1"


@pytest.mark.parametrize("form", [
    SECRET,
    quote(SECRET, safe=""),
    quote_plus(SECRET, safe=""),
    json.dumps(SECRET)[1:-1],
    json.dumps(SECRET, ensure_ascii=False)[1:-1],
    base64.b64encode(SECRET.encode()).decode(),
    base64.b64encode(("user:" + SECRET).encode()).decode(),
    base64.b64encode(("ab" + SECRET + "tail").encode()).decode(),
    base64.urlsafe_b64encode(("a" + SECRET).encode()).decode(),
])
def test_every_spelling_is_masked(form: str) -> None:
    red = Redactor.from_env({"K": SECRET})
    text = f"before {form} after"
    assert form not in red.redact_text(text)
    assert "***" in red.redact_text(text)


def test_a_secret_split_at_every_point_is_masked() -> None:
    data = b"x" * 50 + SECRET.encode() + b" y " + base64.b64encode(SECRET.encode()) + b"\n"
    for cut in range(len(data) + 1):
        for second in (cut, min(len(data), cut + 7)):
            m = ByteMasker.of([SECRET])
            out = m.feed(data[:cut]) + m.feed(data[cut:second]) + m.feed(data[second:]) + m.flush()
            assert SECRET.encode() not in out and base64.b64encode(SECRET.encode()) not in out, cut
            assert out.count(b"***") == 2 and out.startswith(b"x" * 50) and out.endswith(b"\n")


def test_the_stream_redactor_agrees() -> None:
    red = Redactor.from_env({"K": SECRET}).stream()
    data = ("a" * 1000 + quote(SECRET, safe="") + "b" * 10).encode()
    out = b"".join(red.feed(data[i:i + 3]) for i in range(0, len(data), 3)) + red.flush()
    assert out == b"a" * 1000 + b"***" + b"b" * 10


def test_short_and_common_fragments_are_left_alone() -> None:
    assert all(len(s) >= 4 for s in spellings("abcd"))
    assert Redactor.from_env({"K": "yes"})("yes it is") == "yes it is"


def _run_job(root: Path, command: str, env: dict[str, str], stage: str = "s") -> tuple[dict, str]:
    fp = "sha256:" + os.urandom(8).hex()
    r = handle({"op": "start", "root": str(root), "stage": stage, "fingerprint": fp, "command": command,
                "env": env})
    assert r.get("ok") is True, r
    deadline = time.monotonic() + 60
    while True:
        st = handle({"op": "wait", "root": str(root), "stage": stage, "fingerprint": fp, "timeout": 5})
        if st["state"] != "running" or time.monotonic() > deadline:
            break
    log = handle({"op": "tail", "root": str(root), "stage": stage, "fingerprint": fp})["data"]
    return st, log


def test_the_supervisor_log_is_masked_across_its_reads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".runform").mkdir(parents=True)
    (root / ".runform" / "secrets.env").write_text(f'TOKEN="{SECRET}"\n')
    script = ("import sys,base64,urllib.parse,os; s=os.environ['TOKEN']; o=sys.stdout.buffer; "
              "o.write(b'x'*(65536-5)+s.encode()+b'\\n'); "
              "o.write(urllib.parse.quote(s,safe='').encode()+b'\\n'); "
              "o.write(base64.b64encode(s.encode())+b'\\n'); o.flush()")
    st, log = _run_job(root, f'python -c "{script}"', {})
    assert st["state"] == "succeeded", (st, log[-500:])
    assert SECRET not in log and quote(SECRET, safe="") not in log
    assert base64.b64encode(SECRET.encode()).decode() not in log
    assert log.count("***") == 3, log[-300:]


def test_a_stage_that_cannot_start_says_why(tmp_path: Path) -> None:
    """An env value the kernel refuses (past the spec check, e.g. an older spec or an API caller):
    the job ends failed with the cause in its log, not `lost` with the cause on the machine."""
    root = tmp_path / "root"
    (root / ".runform").mkdir(parents=True)
    st, log = _run_job(root, "echo hi", {"BIG": "v" * 200_000})
    assert st["state"] == "failed" and st["exit_code"] == 126, st
    assert "[runform] the stage could not run" in log and "Argument list too long" in log, log
    st, log = _run_job(root, "echo hi", {"NUL": "a\0b"}, stage="t")
    assert st["state"] == "failed" and "embedded null byte" in log, (st, log)


def test_logs_prints_the_whole_log_masked_across_its_chunks(hello: Path) -> None:
    """`runform logs` printed only the first 1 MiB, cut mid-line, and masked each chunk apart."""
    from helpers import run_cli

    secret = "chunk-" + os.urandom(8).hex()
    (hello / "hello.env").write_text(f'HELLO_TOKEN="{secret}"\n')
    spec = (hello / "runform.yaml").read_text()
    # 3 MiB of lines, the secret straddling each 1 MiB chunk of the agent's tail, then END
    script = ("import os,sys; s=os.environ['HELLO_TOKEN'].encode(); o=sys.stdout.buffer; "
              "[o.write(b'y'*((1<<20)-len(s)//2-1)+b'\\n'+s+b'\\n') for _ in range(3)]; o.write(b'END\\n')")
    spec = spec.replace("run: python steps/join.py", f'run: python -c "{script}"; python steps/join.py')
    (hello / "runform.yaml").write_text(spec)
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    logs = run_cli("logs", "join", cwd=hello)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.endswith("END\njoined\n") and logs.stdout.count("y") > 3 * ((1 << 20) - 20)
    assert secret not in logs.stdout and logs.stdout.count("***") == 3
