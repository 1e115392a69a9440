"""The local record of a fetched folder: ``<dest>/.runform-manifest.json``.

It maps each path that runform fetched to what it fetched (size, the source digest, the
content digest it computed, the file's mtime), so that the next fetch moves only what is
missing or changed, after a ``stat`` per file instead of reading every byte again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
from runform.atomic import TMP_MARK, atomic_write
from runform.digests import walk_tree

RECORD_NAME = ".runform-manifest.json"
FORMAT = 1


@attrs.frozen
class Fetched:
    """One file as runform last wrote it."""

    size: int
    digest: str  # the manifest entry's digest it was fetched for
    content: str  # what runform computed from the bytes (sha256:/md5:/mpetag:)
    mtime_ns: int
    checked: bool = True  # False: only the size could be checked against the source

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Record:
    """The record of one destination folder."""

    dest: Path
    uri: str | None = None
    version: str | None = None
    files: dict[str, Fetched] = attrs.field(factory=dict)

    @property
    def path(self) -> Path:
        return self.dest / RECORD_NAME

    @classmethod
    def load(cls, dest: Path) -> Record:
        """The record in ``dest``; an empty one when it is missing or unreadable."""
        try:
            raw = json.loads((dest / RECORD_NAME).read_text())
            if raw.get("format") != FORMAT:
                return cls(dest)
            files = {p: Fetched(**f) for p, f in raw.get("files", {}).items()}
            return cls(dest, raw.get("uri"), raw.get("version"), files)
        except (OSError, ValueError, TypeError):
            return cls(dest)

    def save(self) -> None:
        """Write the record atomically (temp file, fsync, rename)."""
        self.dest.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "uri": self.uri, "version": self.version,
               "files": {p: f.to_json() for p, f in sorted(self.files.items())}}
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600, parents=False)




def safe_join(dest: Path, rel: str) -> Path:
    """``dest / rel`` for a manifest path, refusing paths that would leave ``dest``."""
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("..", "") for part in p.parts):
        raise ValueError(f"unsafe path in manifest: {rel!r}")
    return dest.joinpath(*p.parts)


def is_internal(name: str) -> bool:
    """runform's own bookkeeping files, never part of a manifest."""
    return name == RECORD_NAME or TMP_MARK in name or name.startswith(".runform-index")


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` for every regular file under ``root``, sorted,
    skipping runform's own files. Symlinks to files are followed (as ``--copy-links``)."""
    if root.is_file():
        yield root.name, root
        return
    yield from walk_tree(root, skip=lambda rel: is_internal(rel.rsplit("/", 1)[-1]))
