"""The storage backend contract (``runform.interfaces.StorageBackend``) as reusable tests.

Fixtures a subclass gives:

- ``backend``: the backend under test.
- ``storage_uri``: a location of its scheme, empty and writable, for this test only (a folder:
  the suite pushes a small tree there).
- ``storage_env`` (optional): the env the backend reads credentials from (default: empty).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from runform.interfaces import Manifest, ReportsPushProgress, StorageBackend

TREE = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 200, "sub/deep/c.json": b'{"n": 1}\n'}


def _write(root: Path, files: Mapping[str, bytes]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def _read(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(".")}


class StorageBackendContract:
    """Resolve, fetch (incremental and verified), push (incremental)."""

    @pytest.fixture
    def storage_env(self) -> Mapping[str, str]:
        return {}

    @pytest.fixture
    def pushed(self, backend: StorageBackend, storage_uri: str, storage_env: Mapping[str, str],
               tmp_path: Path) -> Manifest:
        """The suite's tree pushed to ``storage_uri`` (what the tests fetch)."""
        return backend.push(_write(tmp_path / "src", TREE), storage_uri, storage_env)

    def test_it_is_a_storage_backend(self, backend: StorageBackend, storage_uri: str) -> None:
        assert isinstance(backend, StorageBackend), "a method of runform.interfaces.StorageBackend is missing"
        assert storage_uri.split("://", 1)[0] in backend.schemes

    def test_push_returns_what_is_there(self, pushed: Manifest) -> None:
        assert sorted((e.path, e.size) for e in pushed.entries) == sorted((p, len(b)) for p, b in TREE.items())
        assert pushed.total_bytes == sum(len(b) for b in TREE.values())

    def test_resolve_lists_what_was_pushed(self, backend: StorageBackend, storage_uri: str,
                                           storage_env: Mapping[str, str], pushed: Manifest) -> None:
        m = backend.resolve(storage_uri, storage_env)
        assert [(e.path, e.size, e.digest) for e in m.entries] == \
            [(e.path, e.size, e.digest) for e in sorted(pushed.entries, key=lambda e: e.path)]
        assert m.digest == pushed.digest
        assert backend.resolve(storage_uri, storage_env).digest == m.digest, "resolve is stable"

    def test_digests_name_their_algorithm(self, pushed: Manifest) -> None:
        for e in pushed.entries:
            algo, _, value = e.digest.partition(":")
            assert algo in ("sha256", "md5", "etag") and value, e.digest
            if algo == "sha256":
                assert value == hashlib.sha256(TREE[e.path]).hexdigest()
            if algo == "md5" and len(value) == 32:
                assert value == hashlib.md5(TREE[e.path]).hexdigest()

    def test_fetch_moves_everything_once(self, backend: StorageBackend, storage_uri: str,
                                         storage_env: Mapping[str, str], pushed: Manifest, tmp_path: Path) -> None:
        m = backend.resolve(storage_uri, storage_env)
        dest = tmp_path / "dest"
        moved: list[int] = []
        assert backend.fetch(m, dest, storage_env, progress=moved.append) == m.total_bytes
        assert _read(dest) == TREE
        assert sum(moved) == m.total_bytes, "progress reports every byte moved"
        assert backend.fetch(m, dest, storage_env) == 0, "a second fetch moves nothing"

    def test_fetch_is_incremental(self, backend: StorageBackend, storage_uri: str, storage_env: Mapping[str, str],
                                  pushed: Manifest, tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        backend.fetch(backend.resolve(storage_uri, storage_env), dest, storage_env)
        changed = {**TREE, "a.txt": b"ALPHA, changed\n", "new.txt": b"new\n"}
        backend.push(_write(tmp_path / "src", changed), storage_uri, storage_env, prior=pushed)
        m = backend.resolve(storage_uri, storage_env)
        assert {e.path for e in m.entries} == set(changed)
        assert backend.fetch(m, dest, storage_env) == len(changed["a.txt"]) + len(changed["new.txt"])
        assert _read(dest) == changed

    def test_fetch_verifies_and_repairs(self, backend: StorageBackend, storage_uri: str,
                                        storage_env: Mapping[str, str], pushed: Manifest, tmp_path: Path) -> None:
        """A file damaged or deleted on the machine is fetched again; the rest stays."""
        m = backend.resolve(storage_uri, storage_env)
        dest = tmp_path / "dest"
        backend.fetch(m, dest, storage_env)
        body = bytearray((dest / "sub/b.bin").read_bytes())
        body[10:13] = b"\0\0\0" if body[10:13] != b"\0\0\0" else b"\1\1\1"
        (dest / "sub/b.bin").write_bytes(bytes(body))
        os.remove(dest / "a.txt")
        assert backend.fetch(m, dest, storage_env) == len(TREE["sub/b.bin"]) + len(TREE["a.txt"])
        assert _read(dest) == TREE

    def test_push_is_incremental(self, backend: StorageBackend, storage_uri: str, storage_env: Mapping[str, str],
                                 pushed: Manifest, tmp_path: Path) -> None:
        """Pushing the same tree again changes nothing: the same entries, the same digest."""
        again = backend.push(tmp_path / "src", storage_uri, storage_env, prior=pushed)
        assert sorted(again.entries, key=lambda e: e.path) == sorted(pushed.entries, key=lambda e: e.path)
        assert backend.resolve(storage_uri, storage_env).digest == pushed.digest

    def test_push_progress_counts_every_byte(self, backend: StorageBackend, storage_uri: str,
                                             storage_env: Mapping[str, str], tmp_path: Path) -> None:
        """Optional (``ReportsPushProgress``): the count ends at the tree's size, on a first push
        and on a push where nothing changed (files already there count in full)."""
        if not isinstance(backend, ReportsPushProgress):
            pytest.skip("the backend does not report push progress (optional)")
        src = _write(tmp_path / "src", TREE)
        for _ in range(2):
            seen: list[int] = []
            m = backend.push_with_progress(src, storage_uri, storage_env, progress=seen.append)
            assert sum(seen) == sum(len(b) for b in TREE.values()), seen
            assert sorted(e.path for e in m.entries) == sorted(TREE)

    def test_fetch_leaves_no_temporary_file(self, backend: StorageBackend, storage_uri: str,
                                            storage_env: Mapping[str, str], pushed: Manifest,
                                            tmp_path: Path) -> None:
        dest = tmp_path / "dest"
        backend.fetch(backend.resolve(storage_uri, storage_env), dest, storage_env)
        assert set(_read(dest)) == set(TREE), sorted(_read(dest))
