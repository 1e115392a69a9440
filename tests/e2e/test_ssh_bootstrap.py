"""Bootstrap: the running runform as a wheel, installed into a venv on the "remote" (this
machine over the real sshd), skipped when the sentinel already names the version."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from runform.errors import ProviderError
from runform.agent.install import READY, ensure_agent, ready_version
from runform.transport.ssh import SSHTransport
from runform.agent.wheel import Wheel, build_wheel, content_hash
from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

# The image python: Debian's lacks attrs/pluggy/tenacity here, so the shipped deps are exercised.
IMAGE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


@pytest.fixture
def transport(sshd: SSHD):
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


def test_the_wheel_holds_every_runform_package_and_a_valid_record(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    assert re.fullmatch(r"\d+\.\d+\.\d+\+[0-9a-f]{12}", wheel.version)
    assert wheel.name == f"runform-{wheel.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel.path) as zf:
        names = set(zf.namelist())
        for module in (
            "runform/__init__.py",
            "runform/interfaces.py",
            "runform/codesync.py",
            "runform/providers/ssh/transport.py",
            "runform/testing/sshd.py",
        ):
            assert module in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        dist_info = f"runform-{wheel.version}.dist-info"
        assert f"Version: {wheel.version}" in zf.read(f"{dist_info}/METADATA").decode()
        assert "[runform]" in zf.read(f"{dist_info}/entry_points.txt").decode()
        for line in zf.read(f"{dist_info}/RECORD").decode().splitlines():
            path, digest, size = line.split(",")
            if digest:
                data = zf.read(path)
                expected = (
                    base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                )
                assert digest == f"sha256={expected}" and int(size) == len(data)
    assert build_wheel(tmp_path).path == wheel.path  # cached by version


def test_the_version_follows_the_content(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    before = content_hash({"runform/a.py": a})
    a.write_text("x = 2\n")
    assert content_hash({"runform/a.py": a}) != before


def test_bootstrap_installs_into_a_venv_then_skips(transport: SSHTransport, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "cache")  # one wheel: the checkout may change during the test
    root = str(tmp_path / "machine" / "run")
    logged: list[str] = []
    first = ensure_agent(
        transport,
        root,
        python=IMAGE_PYTHON,
        wheel=wheel,
        cache_dir=tmp_path / "cache",
        log=logged.append,
    )
    assert first.installed and first.python == f"{root}/.runform/venv/bin/python"
    assert logged and wheel.version in logged[0]
    code = (
        "import runform, runform.plugins, importlib.metadata as m; "
        "print(runform.__file__); print(m.version('runform'))"
    )
    probe = transport.run([first.python, "-c", code])
    assert probe.ok, probe.stderr
    where, version = probe.stdout.decode().split()
    assert where.startswith(f"{root}/.runform/venv/") and version == wheel.version
    assert ready_version(transport, root) == wheel.version
    assert os.listdir(f"{root}/.runform/wheels") == []  # the uploads are gone
    venv = Path(root) / ".runform" / "venv"  # a symlink to the venv built aside
    assert venv.is_symlink() and json.loads((Path(root) / READY).read_text())["venv"] == str(
        venv.readlink()
    )

    second = ensure_agent(
        transport, root, python=IMAGE_PYTHON, wheel=wheel, cache_dir=tmp_path / "cache"
    )
    assert not second.installed and second.python == first.python

    # another checkout (another version in the sentinel) installs again
    sentinel = Path(root) / READY
    sentinel.write_text(json.dumps({"version": "0.0.0+000000000000", "python": first.python}))
    third = ensure_agent(
        transport, root, python=IMAGE_PYTHON, wheel=wheel, cache_dir=tmp_path / "cache"
    )
    assert third.installed and ready_version(transport, root) == wheel.version


def test_a_machine_without_a_usable_python_is_a_clear_error(
    transport: SSHTransport, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path / "cache")
    with pytest.raises(ProviderError, match="Python >= 3.10"):
        ensure_agent(
            transport,
            str(tmp_path / "run"),
            python="/bin/false",
            wheel=wheel,
            cache_dir=tmp_path / "cache",
        )
    assert ready_version(transport, str(tmp_path / "run")) is None


def test_leftovers_of_killed_installs_are_removed_and_rebuilt(
    transport: SSHTransport, tmp_path: Path
) -> None:
    """A real-folder venv of an older runform whose install was cut short (bin/python there,
    runform not), a half-built venv nothing points to, and an upload whose installer died."""
    wheel = build_wheel(tmp_path / "cache")
    root = tmp_path / "run"
    meta = root / ".runform"
    (meta / "venv" / "bin").mkdir(parents=True)
    os.symlink(os.path.realpath(IMAGE_PYTHON), meta / "venv" / "bin" / "python")
    (meta / "ready").write_text(json.dumps({"version": "0.0.1", "python": "x"}))
    (meta / "venv.0123456789ab" / "bin").mkdir(parents=True)
    dead = meta / "wheels" / "deadbeef0000"
    dead.mkdir(parents=True)
    (dead / "owner").write_text("999999999")  # no such process
    (meta / "wheels" / "runform-0.0.1-py3-none-any.whl").write_bytes(b"old layout")

    agent = ensure_agent(
        transport, str(root), python=IMAGE_PYTHON, wheel=wheel, cache_dir=tmp_path / "cache"
    )
    assert agent.installed and ready_version(transport, str(root)) == wheel.version
    current = json.loads((meta / "ready").read_text())["venv"]
    assert (meta / "venv").is_symlink() and str((meta / "venv").readlink()) == current
    # the half-built one and the old real folder are gone
    assert [p.name for p in meta.glob("venv.*")] == [current]
    assert os.listdir(meta / "wheels") == []
    probe = transport.run([agent.python, "-c", "import runform.agent"])
    assert probe.ok, probe.stderr


def test_a_failed_install_says_what_failed_and_keeps_the_agent(
    transport: SSHTransport, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path / "cache")
    root = str(tmp_path / "run")
    good = ensure_agent(transport, root, python=IMAGE_PYTHON, wheel=wheel, cache_dir=tmp_path / "c")
    venv = (Path(root) / ".runform" / "venv").readlink()

    broken = tmp_path / "runform-9.9.9-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ProviderError) as err:
        ensure_agent(
            transport,
            root,
            python=IMAGE_PYTHON,
            wheel=Wheel(broken, "9.9.9", ("runform",)),
            cache_dir=tmp_path / "c",
        )
    message = str(err.value)
    assert "runform-9.9.9-py3-none-any.whl" in message and "venv module" not in message, message
    assert "fix: " in message
    # the installed agent is untouched: same venv, same sentinel, nothing half-built beside it
    assert (Path(root) / ".runform" / "venv").readlink() == venv
    assert ready_version(transport, root) == wheel.version
    assert sorted(p.name for p in (Path(root) / ".runform").glob("venv.*")) == [str(venv)]
    assert transport.run([good.python, "-c", "import runform.agent"]).ok
