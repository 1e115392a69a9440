"""file:// backend, the shared fetch engine and verify, on the local filesystem."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from runform.errors import RunformError
from runform.storage.record import RECORD_NAME
from runform.storage_backends.file import FileBackend


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(50_000), "sub/deep/c": b""}
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return files


def test_resolve_absolute_and_relative(tmp_path: Path):
    src = tmp_path / "data"
    files = _tree(src)
    b = FileBackend()
    m = b.resolve(src.as_uri(), {})
    assert m.uri == src.as_uri() + "/"
    assert [e.path for e in m.entries] == sorted(files)
    for e in m.entries:
        assert e.digest == "sha256:" + hashlib.sha256(files[e.path]).hexdigest()
        assert e.size == len(files[e.path])
    assert FileBackend(base_dir=tmp_path).resolve("file://data", {}) == m
    assert FileBackend().resolve("file://./data", {"RUNFORM_BASE_DIR": str(tmp_path)}) == m
    with pytest.raises(RunformError, match="does not exist"):
        b.resolve("file:///no/such/place", {})


def test_fetch_incremental_verify_and_repair(tmp_path: Path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    files = _tree(src)
    b = FileBackend()
    m = b.resolve(src.as_uri(), {})
    assert b.fetch(m, dest, {}) == m.total_bytes
    assert b.fetch(m, dest, {}) == 0
    assert (dest / RECORD_NAME).exists()
    for rel, body in files.items():
        assert (dest / rel).read_bytes() == body

    (src / "a.txt").write_bytes(b"ALPHA!\n")
    m2 = b.resolve(src.as_uri(), {})
    assert b.fetch(m2, dest, {}) == 7

    st = (dest / "sub/b.bin").stat()
    with open(dest / "sub/b.bin", "r+b") as f:
        f.seek(10)
        f.write(b"\0\0\0")
    os.utime(dest / "sub/b.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.remove(dest / "sub/deep/c")
    report = b.verify(m2, dest)
    assert report.corrupted == ("sub/b.bin",) and report.missing == ("sub/deep/c",)
    assert b.fetch(m2, dest, {}) == 50_000
    assert b.verify(m2, dest).clean


def test_fetch_never_deletes_foreign_files(tmp_path: Path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    (dest / "cache").mkdir(parents=True)
    (dest / "cache" / "mine.pt").write_bytes(b"keep")
    b = FileBackend()
    b.fetch(b.resolve(src.as_uri(), {}), dest, {})
    assert (dest / "cache" / "mine.pt").read_bytes() == b"keep"


def test_push_copies_only_changes(tmp_path: Path):
    src, target = tmp_path / "out", tmp_path / "store"
    _tree(src)
    b = FileBackend()
    m = b.push(src, target.as_uri() + "/", {})
    assert [e.path for e in m.entries] == ["a.txt", "sub/b.bin", "sub/deep/c"]
    before = (target / "sub/b.bin").stat().st_mtime_ns
    (src / "a.txt").write_text("new")
    m2 = b.push(src, target.as_uri() + "/", {}, prior=m)
    assert (target / "sub/b.bin").stat().st_mtime_ns == before
    assert m2.by_path()["a.txt"].size == 3


def test_single_file(tmp_path: Path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"123456")
    b = FileBackend()
    m = b.resolve(f.as_uri(), {})
    assert [(e.path, e.size) for e in m.entries] == [("w.pt", 6)]
    assert b.fetch(m, tmp_path / "d", {}) == 6
    assert (tmp_path / "d" / "w.pt").read_bytes() == b"123456"


def test_unsafe_manifest_paths_are_refused(tmp_path: Path):
    from runform.interfaces import Manifest, ManifestEntry

    m = Manifest((tmp_path).as_uri() + "/", (ManifestEntry("../escape", 1, "sha256:00"),))
    with pytest.raises(ValueError, match="unsafe path"):
        FileBackend().fetch(m, tmp_path / "d", {})


def test_progress_and_atomic_failure(tmp_path: Path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    _tree(src)
    b = FileBackend()
    m = b.resolve(src.as_uri(), {})
    (src / "sub/b.bin").write_bytes(b"different size now")
    seen: list[int] = []
    from runform.storage.hydrate import DigestMismatch

    with pytest.raises(DigestMismatch):
        b.fetch(m, dest, {}, progress=seen.append)
    assert not (dest / "sub" / "b.bin").exists()  # never a wrong file in place
    leftovers = [p for p in dest.rglob("*") if "runform-tmp" in p.name]
    assert leftovers == []


def test_a_stopped_push_leaves_no_half_file_and_the_next_one_finishes(tmp_path: Path):
    """The agent's count raises ``TransferStopped`` at Ctrl-C: the file being copied is
    dropped (no final name, no temporary left), and the next push copies what is missing."""
    from runform.errors import TransferStopped

    src, store = tmp_path / "out", tmp_path / "store"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1000))
    (src / "z.bin").write_bytes(os.urandom(9 << 20))  # three 4 MiB chunks
    seen = [0]

    def count(n: int) -> None:
        seen[0] += n
        if seen[0] > (5 << 20):
            raise TransferStopped("stop")

    with pytest.raises(TransferStopped):
        FileBackend().push_with_progress(src, store.as_uri() + "/", {}, progress=count)
    assert sorted(p.name for p in store.iterdir()) == ["a.bin"]  # whole, and nothing else
    m = FileBackend().push_with_progress(src, store.as_uri() + "/", {}, progress=lambda n: None)
    assert sorted(e.path for e in m.entries) == ["a.bin", "z.bin"]
    assert (store / "z.bin").read_bytes() == (src / "z.bin").read_bytes()
