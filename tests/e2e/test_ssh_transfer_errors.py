"""What a file transfer over SSH can fail with becomes runform's own error, naming the file and
the fix (the connection is fine, so nothing is retried); the CLI exits 1 without a traceback.
Real OpenSSH sshd on loopback (the ``sshd`` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from runform.errors import ProviderError
from runform.transport.ssh import (
    LocalFileError,
    RemoteFileError,
    RemoteFileNotFoundError,
    SSHTransport,
)
from runform.testing.sshd import SSHD

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")]


@pytest.fixture
def transport(sshd: SSHD):
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


def test_reading_a_missing_file_is_still_a_file_not_found(
    transport: SSHTransport, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.json")
    with pytest.raises(RemoteFileNotFoundError) as err:
        transport.get_bytes(missing)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ProviderError)
    assert f"reading {missing} on {transport.endpoint} failed" in str(err.value)


def test_writing_into_a_missing_folder_names_it(transport: SSHTransport, tmp_path: Path) -> None:
    target = str(tmp_path / "no-such-folder" / "f.txt")
    with pytest.raises(RemoteFileNotFoundError) as err:
        transport.put_bytes(b"x", target)
    message = str(err.value)
    assert target in message and "no such file or folder" in message
    assert f"ls -ld {tmp_path / 'no-such-folder'}" in message  # the fix names the folder
    assert transport.connects == 1  # a file's problem, not a reconnect


def test_a_folder_in_the_way_is_an_error_with_the_fix(
    transport: SSHTransport, tmp_path: Path
) -> None:
    """SFTP reports it as a bare "Failure" (as it does a full disk): runform says where."""
    (tmp_path / "taken").mkdir()
    with pytest.raises(RemoteFileError) as err:
        transport.put_bytes(b"x", str(tmp_path / "taken"))
    message = str(err.value)
    assert f"writing {tmp_path / 'taken'} on {transport.endpoint} failed" in message, message
    assert "fix: " in message and "df -h" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # its temporary file is gone
    assert transport.connects == 1


def test_a_local_file_that_cannot_be_read_names_it(
    transport: SSHTransport, tmp_path: Path
) -> None:
    with pytest.raises(LocalFileError, match=f"cannot read {tmp_path / 'gone.whl'}"):
        transport.put_file(tmp_path / "gone.whl", str(tmp_path / "dest.whl"))
    assert not (tmp_path / "dest.whl").exists()


def test_apply_reports_a_failed_upload_without_a_traceback(
    hello: Path, sshd: SSHD, tmp_path: Path
) -> None:
    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    spec["datasets"]["one"] = {"source": "file://one.txt", "dest": "data/one"}  # sent by sync_tree
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (hello / "one.txt").write_text("one\n")
    blocked = root / "data" / "one" / "one.txt"
    blocked.mkdir(parents=True)  # a folder where the file must land
    p = run_cli("apply", "--auto-approve", cwd=hello)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert f"dataset.one: sending files to {blocked.parent} failed (exit 1)" in out, out
    assert "cannot overwrite directory './one.txt'" in out and "fix: " in out, out
    assert "Traceback" not in out
    assert (root / "out" / "joined.txt").exists()  # the other branches went on
    blocked.rmdir()
    done = run_cli("apply", "--auto-approve", cwd=hello)
    assert done.returncode == 0, done.stdout + done.stderr
    assert blocked.read_text() == "one\n"
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
