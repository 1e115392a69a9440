"""Content digests of local files and trees, with a stat cache so unchanged files are not re-read."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from runform.atomic import atomic_write

# Never synced as code: runform's own folder, VCS and caches, env files, and saved plans (*.plan).
ALWAYS_EXCLUDED = (".runform/", ".git/", "__pycache__/", "*.pyc", ".pytest_cache/", ".env", "*.plan")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def excluded(rel: str, patterns: Iterable[str], *, is_dir: bool = False) -> bool:
    """gitignore-like: ``name/`` matches that folder anywhere (or at that path), ``*.x`` any level."""
    parts = rel.split("/")
    for pat in patterns:
        dir_only = pat.endswith("/")
        p = pat.rstrip("/")
        anchored = "/" in p
        if anchored:
            p = p.lstrip("/")
            # the pattern names a path from the root: match it or any parent folder of rel
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if fnmatch.fnmatchcase(prefix, p) and (i < len(parts) or is_dir or not dir_only):
                    return True
        else:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if fnmatch.fnmatchcase(part, p) and (not dir_only or not last or is_dir):
                    return True
    return False


def walk_tree(root: Path, *, prune: Callable[[str], bool] | None = None,
              skip: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Path]]:
    """The one tree walker: ``(relative posix path, path)`` of every regular file under ``root``
    (a symlink to a file is followed, one to a folder is not), top-down, each folder's entries in
    sorted order. ``prune(rel)`` drops a folder and all below it; ``skip(rel)`` drops a file."""
    root_s = str(root)
    for dirpath, dirnames, filenames in os.walk(root_s):
        rel_dir = os.path.relpath(dirpath, root_s)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = sorted(d for d in dirnames if prune is None or not prune(f"{rel_dir}/{d}" if rel_dir else d))
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if skip is not None and skip(rel):
                continue
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                yield rel, Path(path)


def walk(root: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Relative posix paths of the files under ``root``, sorted, minus excluded ones."""
    patterns = tuple(ALWAYS_EXCLUDED) + tuple(exclude)
    return sorted(rel for rel, _ in walk_tree(root, prune=lambda rel: excluded(rel, patterns, is_dir=True),
                                              skip=lambda rel: excluded(rel, patterns)))


def match_globs(root: Path, patterns: Iterable[str], files: Iterable[str] | None = None) -> list[str]:
    """Files of the tree matched by deps patterns: a file, a folder (all below it) or a glob."""
    all_files = list(files) if files is not None else walk(root)
    out: set[str] = set()
    for pat in patterns:
        p = pat.strip().lstrip("./") if pat.startswith("./") else pat.strip()
        p = p.rstrip("/")
        for f in all_files:
            if f == p or f.startswith(p + "/") or fnmatch.fnmatchcase(f, p):
                out.add(f)
    return sorted(out)


class DigestCache:
    """(size, mtime_ns) -> digest per path, persisted in the state folder."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, list] = {}
        self.dirty = False
        if path and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (ValueError, OSError, RecursionError):
                self.data = {}
            if not isinstance(self.data, dict):  # a damaged cache is only a slower plan
                self.data = {}

    def digest(self, file: Path) -> tuple[int, str]:
        st = file.stat()
        key = str(file)
        hit = self.data.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return st.st_size, hit[2]
        d = file_digest(file)
        self.data[key] = [st.st_size, st.st_mtime_ns, d]
        self.dirty = True
        return st.st_size, d

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        atomic_write(self.path, json.dumps(self.data, separators=(",", ":")))
        self.dirty = False


def tree_manifest(root: Path, exclude: Iterable[str] = (), cache: DigestCache | None = None,
                  keep: Callable[[str], bool] | None = None) -> dict[str, tuple[int, str]]:
    """path -> (size, digest) for every file of the tree (that ``keep`` keeps)."""
    cache = cache or DigestCache(None)
    return {rel: cache.digest(root / rel) for rel in walk(root, exclude) if keep is None or keep(rel)}


def salted_digest(salt: str, data: bytes) -> str:
    """A digest of secret ``data`` that reveals nothing without the state's ``salt``."""
    return "hmac-sha256:" + hashlib.sha256(salt.encode() + b"\0" + data).hexdigest()
