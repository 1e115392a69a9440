"""Install runform's agent on a machine, over any :class:`~runform.interfaces.Transport`.

The running runform is built as a wheel (:mod:`.wheel`), uploaded, and installed into
``<root>/.runform/venv``, a venv made with ``--system-site-packages`` so that the image's
torch, numpy or boto3 are reused. runform goes in with ``pip --no-deps --no-index``; the
few small pure-python libraries the agent imports (attrs, pluggy, tenacity) are shipped
as wheels too and installed only where the machine's python lacks them. Nothing is
downloaded on the machine.

The sentinel ``<root>/.runform/ready`` names the installed version. *Ready* means: the
transport authenticates and the sentinel names this client's version; then a bootstrap is
one round trip. A changed checkout has a new version and installs again.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from runform.errors import ProviderError
from runform.interfaces import Transport
from runform.providers.ssh.wheel import Wheel, build_wheel, repack_installed

AGENT_DEPENDENCIES = ("attrs", "pluggy", "tenacity")  # what `python -m runform.agent` imports
READY = ".runform/ready"
VENV = ".runform/venv"
WHEELS = ".runform/wheels"

# $1 root, $2 python, $3 runform wheel, $4 its version, $5 "import a, b" (the deps),
# $6... the dependency wheels
_INSTALL = r"""
set -eu
R=$1; PY=$2; W=$3; V=$4; DEPS=$5; shift 5
VENV="$R/.runform/venv"; P="$VENV/bin/python"
rm -f "$R/.runform/ready"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || {
  echo "runform's agent needs Python >= 3.10; '$PY' is: $("$PY" -V 2>&1)" >&2; exit 3; }
if [ ! -x "$P" ]; then
  rm -rf "$VENV"
  if "$PY" -c 'import pip' 2>/dev/null; then  # the venv sees the system's pip: no ensurepip run
    "$PY" -m venv --system-site-packages --without-pip "$VENV"
  else
    "$PY" -m venv --system-site-packages "$VENV" 2>/dev/null || {
      rm -rf "$VENV"; "$PY" -m venv --system-site-packages --without-pip "$VENV"; }
  fi
fi
install() {
  if "$P" -m pip --version >/dev/null 2>&1; then
    "$P" -m pip install --no-deps --no-index --force-reinstall --disable-pip-version-check \
      --no-warn-script-location -q "$@"
  else  # no pip anywhere: these are pure-python wheels, unpack them into site-packages
    "$P" - "$@" <<'EOF'
import pathlib, shutil, sys, sysconfig, zipfile
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for wheel in sys.argv[1:]:
    with zipfile.ZipFile(wheel) as zf:
        project = pathlib.Path(wheel).name.split("-")[0]
        for old in site.glob(project + "-*.dist-info"):
            for line in (old / "RECORD").read_text().splitlines():
                (site / line.split(",")[0]).unlink(missing_ok=True)
            shutil.rmtree(old, ignore_errors=True)
        zf.extractall(site)
EOF
  fi
}
if [ $# -gt 0 ] && ! "$P" -c "$DEPS" 2>/dev/null; then install "$@"; fi
install "$W"
"$P" - "$V" <<'EOF'
import sys
from importlib.metadata import version
got = version("runform")
if got != sys.argv[1]:
    sys.exit(f"the venv imports runform {got}, expected {sys.argv[1]}")
import runform.interfaces, runform.plugins  # noqa: E401  the agent's own imports work
EOF
find "$R/.runform/wheels" -name '*.whl' ! -name "${W##*/}" -exec rm -f {} +
"""


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
    probe = transport.run(
        [
            "sh",
            "-c",
            'mkdir -p "$1/.runform/wheels" && { cat "$1/.runform/ready" 2>/dev/null; true; }',
            "sh",
            root,
        ]
    )
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
    remote = {w: posixpath.join(root, WHEELS, w.name) for w in (wheel, *deps)}
    for w, path in remote.items():
        transport.put_file(w.path, path)
    check = "import " + ", ".join(sorted({m for d in deps for m in d.imports})) if deps else "pass"
    result = transport.run(
        [
            "sh",
            "-c",
            _INSTALL,
            "sh",
            root,
            python,
            remote[wheel],
            wheel.version,
            check,
            *(remote[d] for d in deps),
        ],
        timeout=timeout,
    )
    if not result.ok:
        raise ProviderError(
            f"installing runform's agent into {root}/{VENV} failed (exit {result.exit_code}): "
            f"{_tail(result.stderr or result.stdout)}",
            hint="the machine needs python3 >= 3.10 with its venv module; "
            "set `compute.options.python` to another interpreter if needed",
        )
    sentinel = {"version": wheel.version, "python": agent_python(root), "installed_at": time.time()}
    transport.put_bytes(json.dumps(sentinel).encode(), posixpath.join(root, READY), mode=0o644)
    return AgentInfo(
        agent_python(root), wheel.version, installed=True, seconds=time.monotonic() - started
    )


def ready_version(transport: Transport, root: str) -> str | None:
    """The runform version the sentinel names (None: no agent installed there)."""
    try:
        version = _parse(transport.get_bytes(posixpath.join(root, READY))).get("version")
    except FileNotFoundError:
        return None
    return version if isinstance(version, str) else None


def _parse(raw: bytes) -> dict[str, object]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(data: bytes, n: int = 1500) -> str:
    return data.decode(errors="replace").strip()[-n:]
