"""Detached jobs with markers: start once per fingerprint, observe, wait, tail.

A job folder ``.runform/jobs/<stage>/<fingerprint16>/`` holds ``request.json``, ``pid``,
``started``, ``log``, ``metrics.jsonl`` and, once it ended, ``exit_code`` and ``ended``.
Its ``lock`` file is ``flock``-ed by the supervisor and inherited by the job's processes, so
"locked" means running, whoever started it; the kernel drops the lock when they die. Starting is
therefore idempotent: a running job is attached to, a finished one is never run again for the
same fingerprint, and only a job that died without an exit code (or a failed one, on request)
is started anew. A finished job that another job of its stage followed (``current`` names the
stage's latest) counts as never run: the outputs on the machine are the later job's.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from runform.agent.layout import job_dir, meta, secrets_path
from runform.atomic import atomic_write
from runform.rootpath import check_name, resolve_inside

SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervise.py")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _superseded(root: str, stage: str, d: str) -> bool:
    """Whether another job of ``stage`` started after this one (its outputs are that job's now)."""
    current = _read(meta(root, "jobs", stage, "current"))
    return bool(current) and current != os.path.basename(d)


def job_status(root: str, stage: str, fingerprint: str) -> dict[str, Any]:
    d = job_dir(root, stage, fingerprint)
    if not os.path.isdir(d):
        return {"state": "none"}
    if _read(os.path.join(d, "exit_code")) and _superseded(root, stage, d):
        return {"state": "none", "superseded": True}  # it ran, but a later job rewrote the outputs
    out: dict[str, Any] = {"started": _float(_read(os.path.join(d, "started")))}
    if (why := _read(os.path.join(d, "stopped"))) is not None:
        out["stopped"] = why
    code = _read(os.path.join(d, "exit_code"))
    if code is not None and code != "":
        out.update(state="succeeded" if code == "0" else "failed", exit_code=_int(code),
                   ended=_float(_read(os.path.join(d, "ended"))))
        return out
    if _locked(os.path.join(d, "lock")):
        out.update(state="running", pid=_int(_read(os.path.join(d, "pid"))))
        return out
    # a finished job writes exit_code before its lock goes; re-check to avoid a race
    code = _read(os.path.join(d, "exit_code"))
    if code:
        out.update(state="succeeded" if code == "0" else "failed", exit_code=_int(code),
                   ended=_float(_read(os.path.join(d, "ended"))))
        return out
    out["state"] = "lost" if os.path.exists(os.path.join(d, "pid")) else "none"
    if out["state"] == "lost":  # the supervisor died: what it said on its way out, if anything
        err = _read(os.path.join(d, "supervisor.err"))
        if err:
            out["cause"] = err[-500:]
    return out


def _locked(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock
    return False


def start(req: dict[str, Any]) -> dict[str, Any]:
    root, stage, fp = req["root"], req["stage"], req["fingerprint"]
    d = job_dir(root, stage, fp)
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {**job_status(root, stage, fp), "attached": True}
        code = _read(os.path.join(d, "exit_code"))
        if code and not req.get("retry_failed") and not _superseded(root, stage, d):
            return {**job_status(root, stage, fp), "attached": True}  # finished: report it
        if code or os.path.exists(os.path.join(d, "pid")):
            # a run again asked for (failed, outputs gone, --replace), or one that died without an
            # exit code: keep the old run's log aside, then start afresh
            aside = f"{d}.{int(time.time() * 1000)}"
            for name in ("log", "exit_code", "ended", "pid", "started", "metrics.jsonl", "child", "stopped"):
                p = os.path.join(d, name)
                if os.path.exists(p):
                    os.makedirs(aside, exist_ok=True)
                    shutil.move(p, os.path.join(aside, name))
        request = {
            "root": root,
            "stage": stage,
            "fingerprint": fp,
            "command": launch_command(req),
            "env": req.get("env", {}),
            "timeout": req.get("timeout"),
            "secrets": secrets_path(root),
            "reap": bool(req.get("multinode")),  # a node's job ends with its torchrun (supervise.py)
        }
        atomic_write(os.path.join(d, "request.json"), json.dumps(request).encode())
        atomic_write(meta(root, "jobs", stage, "current"), os.path.basename(d).encode())
        python = req.get("python") or sys.executable
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORM_LOCK")}
        env["RUNFORM_LOCK_FD"] = str(fd)
        with open(os.path.join(d, "supervisor.err"), "ab") as err:
            subprocess.Popen(
                [python, "-S", SUPERVISOR, d],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                pass_fds=(fd,), start_new_session=True, env=env, cwd=root,
            )
        # the supervisor holds the job's lock from its first instruction: the job reads as running
        return {**job_status(root, stage, fp), "attached": False}
    finally:
        os.close(fd)


def launch_command(req: dict[str, Any]) -> str:
    cmd = req["command"]
    if req.get("launcher") != "torchrun":
        return cmd
    import shlex

    nproc = req.get("nproc") or max(1, gpu_count())
    words = shlex.split(cmd)
    args = ["--standalone", f"--nproc_per_node={nproc}"]
    if req.get("multinode"):
        args = multinode_args(req["multinode"], nproc)
    if words and os.path.basename(words[0]).startswith("python"):
        # torch's launcher under the interpreter the stage names, so its workers run under that
        # interpreter too (a `torchrun` on PATH may belong to another Python, or be missing)
        return shlex.join([words[0], "-m", "torch.distributed.run", *args, *words[1:]])
    return shlex.join(["torchrun", *args, *words])


def multinode_args(m: dict[str, Any], nproc: int) -> list[str]:
    """torchrun's flags for one node of ``m["nnodes"]`` under the c10d rendezvous at
    ``m["endpoint"]``: node 0 hosts its store (``is_host``), the others join it; no restarts (a
    failed node fails the stage, and runform stops the others). No ``--node-rank``: c10d numbers
    the nodes itself and torchrun warns that it ignores one (the node's index is ``RUNFORM_NODE``)."""
    node = int(m["node"])
    return ["--nnodes", str(int(m["nnodes"])), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", str(m["endpoint"]), "--rdzv-id", str(m["rdzv_id"]),
            "--rdzv-conf", f"is_host={'true' if node == 0 else 'false'}", "--max-restarts", "0",
            *(["--local-addr", str(m["local_addr"])] if m.get("local_addr") else [])]


def stop(req: dict[str, Any]) -> dict[str, Any]:
    """Stop a running job: SIGTERM to its process group, SIGKILL after ``grace`` seconds. A
    ``stopped`` marker says why (the job's state and its log tell the rest)."""
    import signal

    root, stage, fp = req["root"], req["stage"], req["fingerprint"]
    d = job_dir(root, stage, fp)
    if job_status(root, stage, fp)["state"] != "running":
        return {**job_status(root, stage, fp), "stopped": False}
    atomic_write(os.path.join(d, "stopped"), str(req.get("reason") or "stopped").encode())
    deadline = time.monotonic() + float(req.get("grace", 10))
    child = _int(_read(os.path.join(d, "child")))
    while child is None and time.monotonic() < deadline and job_status(root, stage, fp)["state"] == "running":
        time.sleep(0.05)  # the supervisor writes it right after it started the job
        child = _int(_read(os.path.join(d, "child")))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if child is None:
            break
        try:
            os.killpg(child, sig)
        except ProcessLookupError:
            break
        while time.monotonic() < deadline and job_status(root, stage, fp)["state"] == "running":
            time.sleep(0.05)
        if job_status(root, stage, fp)["state"] != "running":
            break
        deadline = time.monotonic() + 10
    if _reaped(d):  # what torchrun started in sessions of its own, should it still run
        from runform.agent.supervise import kill_leftovers

        kill_leftovers(root, fp)
    return {**job_status(root, stage, fp), "stopped": True}


def _reaped(jobdir: str) -> bool:
    try:
        with open(os.path.join(jobdir, "request.json")) as f:
            return bool(json.load(f).get("reap"))
    except (OSError, ValueError):
        return False


def gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def wait(req: dict[str, Any]) -> dict[str, Any]:
    """Block until the job is no longer running or ``timeout`` seconds passed."""
    root, stage, fp = req["root"], req["stage"], req["fingerprint"]
    begun = time.monotonic()
    deadline = begun + float(req.get("timeout", 30))
    delay = 0.002
    while True:
        st = job_status(root, stage, fp)
        if st["state"] != "running" or time.monotonic() >= deadline:
            return st
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        # a short job is seen ending within 10 ms of its end (its markers are a few stats:
        # cheap), one of a few seconds within 50 ms; a long one is polled 4 times a second
        ran = time.monotonic() - begun
        delay = min(delay * 1.5, 0.01 if ran < 3 else 0.05 if ran < 10 else 0.25)


def tail(req: dict[str, Any]) -> dict[str, Any]:
    root, stage = req["root"], req["stage"]
    fp = req.get("fingerprint")
    if fp:
        d = job_dir(root, stage, fp)
    else:
        cur = _read(meta(root, "jobs", check_name(stage, what="stage"), "current"))
        if not cur:
            return {"state": "none", "data": "", "offset": 0}
        d = meta(root, "jobs", stage, check_name(cur, what="job"))
        fp = cur
    offset = int(req.get("offset", 0))
    limit = int(req.get("limit", 1 << 20))
    data = b""
    try:
        with open(os.path.join(d, "log"), "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except OSError:
        pass
    if len(data) == limit:  # more follows: end on a whole UTF-8 character, the rest comes next
        data = data[:_whole_chars(data)] or data
    st = job_status(root, stage, fp)
    return {**st, "data": data.decode("utf-8", "replace"), "offset": offset + len(data)}


def _whole_chars(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 sequence cut at its end."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII): is its sequence whole?
            need = 1 if b < 0x80 else 2 if b >> 5 == 0x6 else 3 if b >> 4 == 0xE else 4 if b >> 3 == 0x1E else 1
            return len(data) - back if need > back else len(data)
    return len(data)


def read_metrics(root: str, stage: str, fingerprint: str, metrics_file: str | None) -> dict[str, Any]:
    """The stage's metrics: the last values of ``metrics.jsonl`` records and its metrics JSON."""
    d = job_dir(root, stage, fingerprint)
    records: list[dict[str, Any]] = []
    try:
        with open(os.path.join(d, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
    except OSError:
        pass
    final: dict[str, float] = {}
    if metrics_file:
        try:
            with open(resolve_inside(root, metrics_file, what="metrics file")) as f:
                raw = json.load(f)
            final = {k: v for k, v in _flatten(raw).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        except (OSError, ValueError, RecursionError):
            pass
    return {"records": records[-10000:], "final": final}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}/" if isinstance(v, dict) else f"{prefix}{k}"))
        return out
    return {prefix.rstrip("/"): value}


def _float(s: str | None) -> float | None:
    try:
        return float(s) if s else None
    except ValueError:
        return None


def _int(s: str | None) -> int | None:
    try:
        return int(s) if s else None
    except ValueError:
        return None
