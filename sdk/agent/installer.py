"""runform's agent installer. It runs ON THE MACHINE, under the machine's python (>= 3.10, the
standard library only); :func:`runform.agent.install.ensure_agent` sends it over
stdin::

    python - ROOT WHEELS_DIR RUNFORM_WHEEL VERSION IMPORT_CHECK PAUSE_AT [DEPENDENCY_WHEEL ...]

A kill at any moment leaves the machine repairable by the next run:

- One bootstrap at a time: ``.runform/bootstrap.lock`` (``flock``; the kernel releases it when
  its holder dies). A bootstrap whose client was killed goes on; the next one waits for it.
- The venv is built aside, in a new ``.runform/venv.<id>`` that nothing points to, then
  installed into and checked. Only then is ``.runform/venv`` (a symlink) switched to it with
  one rename, and the sentinel ``.runform/ready`` written (also a rename). A kill leaves either
  the previous venv and sentinel, or a folder nothing points to; the next run removes it.
- The previous venv stays until the next install (a job started from it may still run).

Every failure prints one sentence on stderr saying what failed, and exits with the code of
its step (see ``EXIT``). ``PAUSE_AT`` (tests only) names a point where the installer waits
while ``.runform/bootstrap.paused`` exists, so a test can kill it exactly there.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

EXIT = {"venv": 4, "install": 5, "check": 6, "lock": 7, "files": 8}
LOCK_WAIT_S = 300.0
PAUSE_LIMIT_S = 300.0
STALE_UPLOAD_S = 3600.0  # an upload folder this old belongs to no bootstrap still waiting
PAUSE_POINTS = ("venv", "install")


class Failed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def main(argv: list[str]) -> int:
    root, uploads, wheel, version, check, pause_at, *deps = argv
    base = os.path.join(root, ".runform")
    step, build, switched = "files", None, False
    try:
        _write(os.path.join(uploads, "owner"), str(os.getpid()))  # its uploads are in use
        with _locked(os.path.join(base, "bootstrap.lock")):
            _remove(os.path.join(base, "bootstrap.paused"))  # left by a killed, paused installer
            done = _ready(base, version)
            if done:
                print(json.dumps({"installed": False, "venv": done}))
                return 0
            current = _target(base)
            _remove_venvs(base, keep={current})  # half-built ones of killed installers
            name = f"venv.{os.urandom(6).hex()}"
            build = os.path.join(base, name)
            step = "venv"
            python = _make_venv(build, pause_at)
            step = "install"
            if deps and _run([python, "-c", check]).returncode != 0:
                _install(python, build, deps)
            _pause(base, pause_at, "install")
            _install(python, build, [wheel])
            step = "check"
            _check(python, build, version)
            step = "files"
            _switch(base, name)
            switched = True
            _write(os.path.join(base, "ready"), json.dumps({
                "version": version,
                "python": os.path.join(base, "venv", "bin", "python"),
                "venv": name,
                "installed_at": time.time(),
            }))
            _remove_venvs(base, keep={name, current})
            print(json.dumps({"installed": True, "venv": name}))
            return 0
    except Failed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT[exc.step]
    except OSError as exc:
        print(f"{_STEPS[step]} failed: {exc}", file=sys.stderr)
        return EXIT[step]
    finally:
        if build and not switched:  # a venv that failed: nothing points to it
            shutil.rmtree(build, ignore_errors=True)
        _clean_uploads(uploads)


_STEPS = {
    "venv": "creating the venv",
    "install": "installing the wheels",
    "check": "checking the venv",
    "lock": "taking the bootstrap lock",
    "files": "writing under .runform",
}


@contextlib.contextmanager
def _locked(path: str):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise Failed(
                        "lock",
                        f"another bootstrap (pid {holder}) has held {path} for "
                        f"{LOCK_WAIT_S:g} s",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ready(base: str, version: str) -> str | None:
    """The venv's name when the sentinel names ``version`` and the venv's python is there."""
    try:
        with open(os.path.join(base, "ready")) as f:
            sentinel = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(sentinel, dict) and sentinel.get("version") == version
    if ok and os.access(os.path.join(base, "venv", "bin", "python"), os.X_OK):
        return str(sentinel.get("venv") or "venv")
    return None


def _target(base: str) -> str | None:
    link = os.path.join(base, "venv")
    return os.readlink(link) if os.path.islink(link) else None


def _remove_venvs(base: str, keep: set[str | None]) -> None:
    for name in os.listdir(base):
        if name.startswith("venv.") and name not in keep:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _make_venv(build: str, pause_at: str) -> str:
    """A venv at ``build`` that sees the machine's packages (its torch, numpy, boto3)."""
    try:
        import venv
    except ImportError as exc:
        raise Failed("venv", f"{sys.executable} has no venv module ({exc})") from None

    class Builder(venv.EnvBuilder):
        def setup_python(self, context):  # type: ignore[no-untyped-def]
            super().setup_python(context)
            # the venv's python is there; its pip, scripts and packages are not yet
            _pause(os.path.dirname(build), pause_at, "venv")

    # the venv sees the machine's pip through its system site-packages: no ensurepip run then
    has_pip = importlib.util.find_spec("pip") is not None
    try:
        Builder(system_site_packages=True, with_pip=not has_pip, symlinks=True).create(build)
    except (subprocess.CalledProcessError, OSError) as exc:
        if has_pip:
            raise Failed("venv", f"creating a venv at {build} failed: {_why(exc)}") from None
        # no pip and no ensurepip (Debian without python3-venv): a venv without pip will do
        shutil.rmtree(build, ignore_errors=True)
        try:
            Builder(system_site_packages=True, with_pip=False, symlinks=True).create(build)
        except (subprocess.CalledProcessError, OSError) as exc2:
            raise Failed("venv", f"creating a venv at {build} failed: {_why(exc2)}") from None
    python = os.path.join(build, "bin", "python")
    if not os.access(python, os.X_OK):
        raise Failed("venv", f"the venv at {build} has no bin/python")
    return python


def _install(python: str, build: str, wheels: list[str]) -> None:
    names = ", ".join(os.path.basename(w) for w in wheels)
    if _run([python, "-m", "pip", "--version"]).returncode == 0:
        p = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
                  "--disable-pip-version-check", "--no-warn-script-location", "-q", *wheels])
        if p.returncode != 0:
            raise Failed("install", f"pip install {names} into {build} failed "
                                    f"(exit {p.returncode}): {_tail(p)}")
        return
    # no pip anywhere: these are pure-python wheels, unpacked into the new venv's site-packages
    p = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    if p.returncode != 0:
        raise Failed("install", f"the venv's python at {python} does not run: {_tail(p)}")
    site = p.stdout.strip()
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(site)
        except (OSError, zipfile.BadZipFile) as exc:
            raise Failed("install", f"unpacking {os.path.basename(wheel)} into {site} "
                                    f"failed: {exc}") from None


_CHECK = """
import sys
from importlib.metadata import version
got = version("runform")
if got != sys.argv[1]:
    sys.exit(f"the venv imports runform {got}, expected {sys.argv[1]}")
import runform.interfaces, runform.plugins  # the agent's own imports work
"""


def _check(python: str, build: str, version: str) -> None:
    p = _run([python, "-c", _CHECK, version])
    if p.returncode != 0:
        raise Failed("check", f"the new venv at {build} cannot run runform's agent: {_tail(p)}")


def _switch(base: str, name: str) -> None:
    """Point ``.runform/venv`` at ``name`` with one rename (after the sentinel is gone)."""
    _remove(os.path.join(base, "ready"))
    link = os.path.join(base, "venv")
    tmp = os.path.join(base, f".{name}.link")
    _remove(tmp)
    os.symlink(name, tmp)
    if os.path.isdir(link) and not os.path.islink(link):  # a venv of an older runform
        os.rename(link, os.path.join(base, f"{name}-old"))
    os.replace(tmp, link)


def _pause(base: str, pause_at: str, point: str) -> None:
    if pause_at != point:
        return
    marker = os.path.join(base, "bootstrap.paused")
    _write(marker, json.dumps({"point": point, "pid": os.getpid()}))
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


def _clean_uploads(uploads: str) -> None:
    """Remove this installer's upload folder, and those of installers that died (their owner
    is gone, or an upload that never got an installer is an hour old)."""
    shutil.rmtree(uploads, ignore_errors=True)
    parent = os.path.dirname(uploads)
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            path = os.path.join(parent, name)
            if not os.path.isdir(path):  # a wheel an older runform uploaded here
                _remove(path)
                continue
            dead = False
            try:
                with open(os.path.join(path, "owner")) as f:
                    dead = not _pid_alive(int(f.read().strip() or 0))
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    dead = time.time() - os.stat(path).st_mtime > STALE_UPLOAD_S
            if dead:
                shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)


def _tail(p: subprocess.CompletedProcess[str], n: int = 1200) -> str:
    return (p.stderr.strip() or p.stdout.strip())[-n:] or "no output"


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        cmd = " ".join(map(str, exc.cmd))
        return f"`{cmd}` exited {exc.returncode}: {(out or '').strip()[-800:]}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
