"""The job supervisor: runs one stage's command detached and records its markers.

Started by :func:`runform.agent.jobs.start` as ``python -S supervise.py JOBDIR`` in a new
session, holding the job's ``flock`` (inherited as ``RUNFORM_LOCK_FD``; the job's processes
inherit it too). Standard library only, and it imports nothing from runform's package
namespace except the env-file parser and the secret masker, loaded by path. The command's output
goes to the log through the masker (a secret split across two reads is caught too); a failure
to run the command at all (an env value the kernel refuses, say) is written into the log with
its cause, and the job ends with exit code 126.
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
from typing import Any


def _atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(name: str) -> object:
    """A stdlib-only module of runform's package (``envfile``, ``masking``), loaded by path."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"_runform_{name}", os.path.join(here, f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _secrets(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return _load("envfile").parse_env(f.read())  # type: ignore[attr-defined]


def main(jobdir: str) -> int:
    lock_fd = int(os.environ.pop("RUNFORM_LOCK_FD"))
    _atomic(os.path.join(jobdir, "pid"), str(os.getpid()))
    try:
        return _supervise(jobdir, lock_fd)
    except BaseException as exc:  # the cause goes into the job's log, and the job ends failed
        cause = f"{type(exc).__name__}: {exc}".encode(errors="replace")
        masker: Any = _holder.get("masker")
        if masker is not None:
            cause = masker.feed(cause) + masker.flush()
        with open(os.path.join(jobdir, "log"), "ab") as log:
            log.write(b"\n[runform] the stage could not run: " + cause + b"\n")
        if not os.path.exists(os.path.join(jobdir, "started")):
            _atomic(os.path.join(jobdir, "started"), repr(time.time()))
        _atomic(os.path.join(jobdir, "ended"), repr(time.time()))
        _atomic(os.path.join(jobdir, "exit_code"), "126")
        return 0


_holder: dict[str, object] = {}  # the masker, for the cause of a failure


def _supervise(jobdir: str, lock_fd: int) -> int:
    with open(os.path.join(jobdir, "request.json")) as f:
        req = json.load(f)
    root = req["root"]
    secrets = _secrets(req["secrets"])
    masking = _load("masking")
    masker = masking.ByteMasker.of(secrets.values())  # type: ignore[attr-defined]
    _holder["masker"] = masker
    env = _stage_env(req, secrets, jobdir)
    # `bash -l` may reset PATH from /etc/profile: put the agent's interpreter first inside the shell
    bindir = os.path.dirname(sys.executable)
    command = f'export PATH={shlex.quote(bindir)}:"$PATH"; {req["command"]}'

    started = time.time()
    _atomic(os.path.join(jobdir, "started"), repr(started))
    log = open(os.path.join(jobdir, "log"), "ab", buffering=0)
    proc = subprocess.Popen(
        ["bash", "-lc", command],
        cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        pass_fds=(lock_fd,), start_new_session=True,
    )
    _atomic(os.path.join(jobdir, "child"), str(proc.pid))  # its process group, for `stop`
    timed_out = threading.Event()
    timer = _start_timer(proc, float(req["timeout"]), timed_out) if req.get("timeout") else None
    assert proc.stdout is not None
    code = _pump_until_done(proc, log, masker, req)
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


def _pump_until_done(proc: subprocess.Popen, log: Any, masker: Any, req: dict) -> int:
    """Copy the command's output to the log until it ends; its exit code. Raw reads (whatever is
    there, up to 64 KiB) go through the masker, which holds back the tail that could be the start
    of a secret split across two reads. A job with ``reap`` (a node of a multi-node stage) ends
    with its command: processes it started in sessions of their own (torchrun's workers) that
    still hold the output open once it died are killed, not waited for."""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]

    def pump() -> None:
        for chunk in iter(lambda: os.read(fd, 1 << 16), b""):
            log.write(masker.feed(chunk))

    if not req.get("reap"):
        pump()
        log.write(masker.flush())
        return proc.wait()
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = proc.wait()
    reader.join(timeout=REAP_AFTER_S)
    if reader.is_alive():
        killed = kill_leftovers(req["root"], req["fingerprint"])
        reader.join(timeout=10)
        log.write(f"\n[runform] the command ended; {killed} process(es) it left running were killed\n".encode())
    log.write(masker.flush())
    return code


REAP_AFTER_S = 5.0  # how long a reaped job's leftover processes may still write after its command ended


def kill_leftovers(root: str, fingerprint: str) -> int:
    """SIGKILL every process whose environment carries this job's markers (``RUNFORM_ROOT``,
    ``RUNFORM_FINGERPRINT``): what a launcher started in sessions of its own outlives the job's
    process group. Linux (``/proc``); elsewhere nothing is found. The number killed."""
    marks = (f"RUNFORM_ROOT={root}".encode(), f"RUNFORM_FINGERPRINT={fingerprint}".encode())
    killed = 0
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if all(m in env for m in marks):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def _stage_env(req: dict, secrets: dict, jobdir: str) -> dict:
    """The stage's environment: the agent's, the secrets, the spec's ``env`` and runform's own."""
    root = req["root"]
    env = dict(os.environ)
    env.update(secrets)
    env.update({k: str(v) for k, v in req.get("env", {}).items()})
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["RUNFORM_STAGE"] = req["stage"]
    env["RUNFORM_FINGERPRINT"] = req["fingerprint"]
    env["RUNFORM_ROOT"] = root
    env["RUNFORM_METRICS_FILE"] = os.path.join(jobdir, "metrics.jsonl")
    return env


def _start_timer(proc: subprocess.Popen, timeout: float, timed_out: threading.Event) -> threading.Timer:
    """After ``timeout`` s: SIGTERM the stage's process group, then SIGKILL 10 s later."""

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

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return timer


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
