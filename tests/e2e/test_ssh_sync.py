"""Incremental code sync (runform.codesync) over the real sshd, and over the local transport."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runform.codesync import MANIFEST_PATH, local_manifest, read_remote_manifest, sync_tree
from runform.providers.local import LocalTransport
from runform.transport.ssh import SSHTransport
from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


@pytest.fixture
def transport(sshd: SSHD):
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        p = root / f"pkg{i % 10}" / f"mod{i % 7}" / f"file{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"VALUE = {i}\n")


def remote_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".runform" not in p.relative_to(root).parts
    }


def test_local_manifest_honours_excludes(tmp_path: Path) -> None:
    for rel in [
        "src/app.py",
        "src/data/table.csv",
        "data/big.bin",
        "a.pyc",
        "src/__pycache__/x.pyc",
        ".git/config",
        ".runform/state.json",
        ".env",
        "logs/run.log",
        "README.md",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    m = local_manifest(tmp_path, ["/data/", "*.log"])
    assert [e.path for e in m.entries] == ["README.md", "src/app.py", "src/data/table.csv"]
    e = m.by_path()["README.md"]
    assert e.size == len("README.md") and e.digest.startswith("sha256:")


def test_a_2000_file_tree_sends_only_what_changed(transport: SSHTransport, tmp_path: Path) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine" / "run"
    make_tree(local, 2000)
    first = sync_tree(transport, local, str(remote))
    assert first.files_sent == 2000 and first.bytes_sent == sum(
        e.size for e in first.manifest.entries
    )
    assert remote_files(remote) == remote_files(local)

    again = sync_tree(transport, local, str(remote))
    assert (again.files_sent, again.bytes_sent, again.deleted, again.unchanged) == (0, 0, (), 2000)

    (local / "pkg3/mod2/file23.py").write_text("VALUE = 'changed'\n")
    one = sync_tree(transport, local, str(remote))
    assert one.sent == ("pkg3/mod2/file23.py",) and one.bytes_sent == len("VALUE = 'changed'\n")
    assert (remote / "pkg3/mod2/file23.py").read_text() == "VALUE = 'changed'\n"

    (local / "pkg0/mod0/file0.py").unlink()
    (local / "new/deep/added.py").parent.mkdir(parents=True)
    (local / "new/deep/added.py").write_text("x = 1\n")
    moved = sync_tree(transport, local, str(remote))
    assert moved.sent == ("new/deep/added.py",) and moved.deleted == ("pkg0/mod0/file0.py",)
    assert remote_files(remote) == remote_files(local)
    assert not (remote / ".runform/incoming").exists()


def test_never_deletes_what_it_did_not_put_there(transport: SSHTransport, tmp_path: Path) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine"
    make_tree(local, 5)
    (local / "train.py").write_text("print('hi')\n")
    sync_tree(transport, local, str(remote))
    foreign = {
        "data/big.bin": b"\0" * 1000,
        "checkpoints/model.pt": b"weights",
        "pkg0/mod0/cache.npy": b"cache",
    }  # the last one sits inside a synced folder
    for rel, data in foreign.items():
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote / rel).write_bytes(data)
    (local / "pkg0/mod0/file0.py").unlink()  # the synced file beside cache.npy leaves the tree
    (local / "train.py").unlink()
    report = sync_tree(transport, local, str(remote), exclude=["data/", "checkpoints/"])
    assert sorted(report.deleted) == ["pkg0/mod0/file0.py", "train.py"]
    for rel, data in foreign.items():
        assert (remote / rel).read_bytes() == data


def test_file_modes_travel_and_a_file_may_become_a_folder(
    transport: SSHTransport, tmp_path: Path
) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine"
    local.mkdir()
    (local / "run.sh").write_text("echo hi\n")
    (local / "run.sh").chmod(0o755)
    (local / "tool").write_text("a file first\n")
    sync_tree(transport, local, str(remote))
    assert os.stat(remote / "run.sh").st_mode & 0o777 == 0o755
    (local / "tool").unlink()
    (local / "tool").mkdir()
    (local / "tool" / "main.py").write_text("then a folder\n")
    report = sync_tree(transport, local, str(remote))
    assert report.sent == ("tool/main.py",) and report.deleted == ("tool",)
    assert (remote / "tool" / "main.py").read_text() == "then a folder\n"


def test_remote_manifest_paths_that_escape_the_root_are_ignored(
    transport: SSHTransport, tmp_path: Path
) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine"
    make_tree(local, 3)
    sync_tree(transport, local, str(remote))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    manifest_file = remote / MANIFEST_PATH
    raw = json.loads(manifest_file.read_text())
    raw["entries"] += [["../victim.txt", 7, "sha256:x"], ["/etc/hostname", 1, "sha256:y"]]
    manifest_file.write_text(json.dumps(raw))
    assert all(
        not e.path.startswith(("/", ".."))
        for e in read_remote_manifest(transport, str(remote)).entries
    )
    sync_tree(transport, local, str(remote))
    assert victim.read_text() == "keep me"


def test_a_damaged_manifest_resends_everything_and_deletes_nothing(
    transport: SSHTransport, tmp_path: Path
) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine"
    make_tree(local, 4)
    sync_tree(transport, local, str(remote))
    (remote / MANIFEST_PATH).write_text("{not json")
    report = sync_tree(transport, local, str(remote))
    assert report.files_sent == 4 and report.deleted == ()
    assert sync_tree(transport, local, str(remote)).files_sent == 0


def test_the_same_sync_works_over_the_local_transport(tmp_path: Path) -> None:
    local, remote = tmp_path / "code", tmp_path / "machine"
    make_tree(local, 50)
    transport = LocalTransport()
    assert sync_tree(transport, local, str(remote)).files_sent == 50
    assert sync_tree(transport, local, str(remote)).files_sent == 0
    assert remote_files(remote) == remote_files(local)


def test_the_remote_manifest_records_the_callers_digest(
    transport: SSHTransport, tmp_path: Path
) -> None:
    """The agent's refresh reads the top-level digest; a new digest alone rewrites the manifest."""
    local, remote = tmp_path / "code", tmp_path / "machine"
    make_tree(local, 2)
    manifest = local_manifest(local)
    sync_tree(transport, local, str(remote), manifest, "sha256:one")
    assert json.loads((remote / MANIFEST_PATH).read_text())["digest"] == "sha256:one"
    report = sync_tree(transport, local, str(remote), manifest, "sha256:two")
    assert report.files_sent == 0
    assert json.loads((remote / MANIFEST_PATH).read_text())["digest"] == "sha256:two"
