"""The job supervisor: runs one stage's command detached and records its markers.

Started by :func:`runform.agent.jobs.start` as ``python -S supervise.py JOBDIR`` in a new
session, holding the job's ``flock`` (inherited as ``RUNFORM_LOCK_FD``; the job's processes
inherit it too). Standard library only, and it imports nothing from runform's package
namespace except the env-file parser, loaded by path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time


def _atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _secrets(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        return {}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("_runform_envfile", os.path.join(here, "envfile.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(path, encoding="utf-8") as f:
        return mod.parse_env(f.read())


def main(jobdir: str) -> int:
    lock_fd = int(os.environ.pop("RUNFORM_LOCK_FD"))
    _atomic(os.path.join(jobdir, "pid"), str(os.getpid()))
    with open(os.path.join(jobdir, "request.json")) as f:
        req = json.load(f)
    root = req["root"]
    secrets = _secrets(req["secrets"])
    env = dict(os.environ)
    env.update(secrets)
    env.update({k: str(v) for k, v in req.get("env", {}).items()})
    # `bash -l` may reset PATH from /etc/profile: put the agent's interpreter first inside the shell
    bindir = os.path.dirname(sys.executable)
    command = f'export PATH={shlex.quote(bindir)}:"$PATH"; {req["command"]}'
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["RUNFORM_STAGE"] = req["stage"]
    env["RUNFORM_FINGERPRINT"] = req["fingerprint"]
    env["RUNFORM_ROOT"] = root
    env["RUNFORM_METRICS_FILE"] = os.path.join(jobdir, "metrics.jsonl")
    hide = sorted((v.encode() for v in secrets.values() if len(v) >= 4), key=len, reverse=True)

    started = time.time()
    _atomic(os.path.join(jobdir, "started"), repr(started))
    log = open(os.path.join(jobdir, "log"), "ab", buffering=0)
    proc = subprocess.Popen(
        ["bash", "-lc", command],
        cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        pass_fds=(lock_fd,), start_new_session=True,
    )
    timed_out = threading.Event()
    timer = None
    if req.get("timeout"):
        def expire() -> None:
            timed_out.set()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    return
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        continue
                return

        timer = threading.Timer(float(req["timeout"]), expire)
        timer.daemon = True
        timer.start()
    assert proc.stdout is not None
    for line in iter(lambda: proc.stdout.readline(1 << 16), b""):
        for value in hide:
            line = line.replace(value, b"***")
        log.write(line)
    code = proc.wait()
    if timer:
        timer.cancel()
    if timed_out.is_set():
        log.write(f"\n[runform] stage timed out after {req['timeout']}s\n".encode())
        code = 124
    elif code < 0:
        code = 128 - code
    log.close()
    _atomic(os.path.join(jobdir, "ended"), repr(time.time()))
    _atomic(os.path.join(jobdir, "exit_code"), str(code))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
