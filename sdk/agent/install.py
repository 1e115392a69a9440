"""Install runform's agent on a machine, over any :class:`~runform.interfaces.Transport`.

The running runform is built as a wheel (:mod:`runform.agent.wheel`), uploaded, and installed into
``<root>/.runform/venv``, a venv made with ``--system-site-packages`` so that the image's
torch, numpy or boto3 are reused. runform goes in with ``pip --no-deps --no-index``; the
few small pure-python libraries the agent imports (attrs, pluggy, tenacity) are shipped
as wheels too and installed only where the machine's python lacks them. Nothing is
downloaded on the machine.

The sentinel ``<root>/.runform/ready`` names the installed version. *Ready* means: the
transport authenticates, the sentinel names this client's version and the venv's python is
there; then a bootstrap is one round trip. A changed checkout has a new version and installs
again.

The install itself runs on the machine (:mod:`.installer`, sent over stdin): under a lock,
it builds a new venv aside and switches ``.runform/venv`` (a symlink) to it with one rename,
so a bootstrap killed at any point (the client, the connection or the machine's process)
leaves a machine that the next apply repairs. Its failures say which step failed.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from runform.agent.wheel import Wheel, build_wheel, repack_installed
from runform.errors import ProviderError
from runform.interfaces import CommandResult, Transport

AGENT_DEPENDENCIES = ("attrs", "pluggy", "tenacity")  # what `python -m runform.agent` imports
READY = ".runform/ready"
VENV = ".runform/venv"
WHEELS = ".runform/wheels"
INSTALLER = Path(__file__).with_name("installer.py")
# Tests only: the installer waits at this point (`venv` or `install`) while
# <root>/.runform/bootstrap.paused exists, so a test can kill it exactly there.
PAUSE_ENV = "RUNFORM_TEST_BOOTSTRAP_PAUSE"

# the sentinel, when the venv's python is there
_PROBE = (
    'mkdir -p "$1/.runform" && '
    '{ [ -x "$1/.runform/venv/bin/python" ] && cat "$1/.runform/ready"; true; } 2>/dev/null'
)

# $1 the machine's python; the installer's own arguments follow (see installer.py)
_RUN_INSTALLER = r"""
PY=$1; shift
command -v "$PY" >/dev/null 2>&1 || {
  echo "runform's agent needs Python >= 3.10; there is no '$PY' on the machine" >&2; exit 3; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || {
  echo "runform's agent needs Python >= 3.10; '$PY' is: $("$PY" -V 2>&1)" >&2; exit 3; }
exec "$PY" - "$@"
"""

# what to do when the installer's step failed (its exit code)
_FIXES = {
    3: "set `compute.options.python` to a Python >= 3.10 that the machine has",
    4: "the machine's python needs its venv module (Debian/Ubuntu: apt-get install python3-venv), "
    "or set `compute.options.python` to another interpreter",
    5: "pip's own reason is above (a full disk: free space on the machine, `df -h {root}`); "
    "then run apply again: a failed install changes nothing there",
    6: "run apply again; if it fails the same way, the machine's python or its site-packages "
    "conflict with runform's (set `compute.options.python` to another interpreter)",
    7: "wait for that bootstrap to finish, or end it (`kill PID` on the machine), "
    "then run apply again",
    8: "check that {root} is writable and its disk has space (`df -h {root}`), "
    "then run apply again",
}


@attrs.frozen
class AgentInfo:
    """runform's agent on a machine: the python that runs ``-m runform.agent``."""

    python: str
    version: str
    installed: bool  # False: the sentinel already named this version, nothing was done
    seconds: float = 0.0


def agent_python(root: str) -> str:
    return posixpath.join(root, VENV, "bin", "python")


def ensure_agent(
    transport: Transport,
    root: str,
    *,
    python: str = "python3",
    wheel: Wheel | None = None,
    dependencies: Sequence[str] = AGENT_DEPENDENCIES,
    cache_dir: Path | None = None,
    timeout: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> AgentInfo:
    """Make ``<root>/.runform/venv`` hold this client's runform, unless the sentinel says it
    already does. ``root`` is absolute; ``python`` is the machine's interpreter for the venv."""
    if not posixpath.isabs(root):
        raise ValueError(f"bootstrap: root must be an absolute path, not {root!r}")
    started = time.monotonic()
    wheel = wheel or build_wheel(cache_dir)
    probe = transport.run(["sh", "-c", _PROBE, "sh", root])
    if not probe.ok:
        raise ProviderError(
            f"cannot create {root} on the machine: {_tail(probe.stderr)}",
            hint="pick a `root` the login user may write to",
        )
    ready = _parse(probe.stdout)
    if ready.get("version") == wheel.version and ready.get("python"):
        return AgentInfo(
            str(ready["python"]), wheel.version, installed=False, seconds=time.monotonic() - started
        )
    (log or (lambda _m: None))(f"installing runform {wheel.version} into {root}/{VENV}")
    deps = [repack_installed(name, cache_dir) for name in dependencies]
    uploads, remote = _upload(transport, root, (wheel, *deps))
    check = "import " + ", ".join(sorted({m for d in deps for m in d.imports})) if deps else "pass"
    argv = [
        "sh", "-c", _RUN_INSTALLER, "sh", python,
        root, uploads, remote[wheel], wheel.version, check, os.environ.get(PAUSE_ENV, ""),
        *(remote[d] for d in deps),
    ]  # fmt: skip
    try:
        result = transport.run(argv, stdin=INSTALLER.read_bytes(), timeout=timeout)
    except TimeoutError:
        raise ProviderError(
            f"installing runform's agent into {root}/{VENV} took more than {timeout:g} s",
            hint="check the machine's load and disk (`df -h`), then run apply again",
        ) from None
    if not result.ok:
        raise _install_error(result, root)
    done = _parse(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else b"")
    return AgentInfo(
        agent_python(root),
        wheel.version,
        installed=bool(done.get("installed", True)),
        seconds=time.monotonic() - started,
    )


def _upload(transport: Transport, root: str, wheels: Sequence[Wheel]) -> tuple[str, dict[Wheel, str]]:
    """Put the wheels in this bootstrap's own upload folder (another bootstrap may be installing
    on the machine right now, its client killed; the installer removes the folder when done)."""
    uploads = posixpath.join(root, WHEELS, uuid.uuid4().hex[:12])
    made = transport.run(["mkdir", "-p", uploads])
    if not made.ok:
        raise ProviderError(
            f"cannot create {uploads} on the machine: {_tail(made.stderr)}",
            hint=_FIXES[8].format(root=root),
        )
    remote = {w: posixpath.join(uploads, w.name) for w in wheels}
    for w, path in remote.items():
        transport.put_file(w.path, path)
    return uploads, remote


def _install_error(result: CommandResult, root: str) -> ProviderError:
    """What failed, from the installer's own sentence and exit code."""
    said = _tail(result.stderr or result.stdout) or "no output"
    fix = _FIXES.get(result.exit_code)
    if result.exit_code == 3:  # the sentence names the python: nothing to add
        return ProviderError(said, hint=fix)
    if fix is None:  # not one of the installer's own failures: killed, or a bug in it
        return ProviderError(
            f"installing runform's agent into {root}/{VENV} stopped (exit {result.exit_code}): "
            f"{said}",
            hint="run apply again: a half-made install is removed and made again",
        )
    return ProviderError(
        f"installing runform's agent into {root}/{VENV} failed: {said}", hint=fix.format(root=root)
    )


def ready_version(transport: Transport, root: str) -> str | None:
    """The runform version the sentinel names (None: no agent installed there)."""
    try:
        version = _parse(transport.get_bytes(posixpath.join(root, READY))).get("version")
    except FileNotFoundError:
        return None
    return version if isinstance(version, str) else None


def _parse(raw: bytes | str) -> dict[str, object]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(data: bytes, n: int = 1500) -> str:
    return data.decode(errors="replace").strip()[-n:]
