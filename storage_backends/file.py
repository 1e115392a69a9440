"""``file://`` storage: a folder or a file on a filesystem the process can read.

``file:///abs/path`` is absolute; ``file://rel/path`` (or ``file://./rel``) is relative to
the backend's base dir: the ``base_dir`` given to the constructor, else ``RUNFORM_BASE_DIR``
from the env passed in, else the current folder. Manifests carry sha256 digests, and the
resolved manifest's ``uri`` is always absolute (with a trailing ``/`` for a folder), so a
fetch works from any working directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import runform.hookspecs
from runform.digests import DigestCache
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry, digest_of
from runform.storage import digest as _digest
from runform.storage.record import TMP_MARK, safe_join, walk_files
from runform.storage.verify import VerifyReport, verify

from runform.storage.hydrate import PermanentError, Progress, hydrate

_COPY_CHUNK = 4 << 20


class FileBackend:
    """The ``file://`` scheme."""

    schemes = ("file",)

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = base_dir
        self._digests = DigestCache(None)  # in memory: (size, mtime) -> sha256, shared with the core

    # ------------------------------------------------------------------ paths
    def path_of(self, uri: str, env: Mapping[str, str] | None = None) -> Path:
        """The local path a ``file://`` URI names."""
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise RunformError(f"not a file:// URI: {uri!r}")
        raw = unquote(parts.netloc + parts.path)
        path = Path(raw)
        if not path.is_absolute():
            base = self.base_dir or Path((env or {}).get("RUNFORM_BASE_DIR") or os.getcwd())
            path = Path(base) / path
        return Path(os.path.normpath(path))

    def _sha256(self, path: Path) -> str:
        return self._digests.digest(path)[1]

    # ------------------------------------------------------------------ protocol
    def resolve(self, uri: str, env: Mapping[str, str]) -> Manifest:
        """List a folder (or one file) with sizes and sha256 digests."""
        root = self.path_of(uri, env)
        if not root.exists():
            raise RunformError(f"{uri}: {root} does not exist",
                               hint="check the path; relative file:// paths start at the spec's folder")
        entries = tuple(ManifestEntry(rel, p.stat().st_size, self._sha256(p))
                        for rel, p in walk_files(root))
        norm = root.as_uri() + ("/" if root.is_dir() else "")
        return Manifest(norm, entries, version=digest_of([[e.path, e.size, e.digest] for e in entries]))

    def _source_of(self, manifest: Manifest, entry: ManifestEntry) -> Path:
        root = self.path_of(manifest.uri)
        return safe_join(root, entry.path) if manifest.uri.endswith("/") else root

    def fetch(self, manifest: Manifest, dest: Path, env: Mapping[str, str], *,
              progress: Callable[[int], None] | None = None) -> int:
        """Copy what changed into ``dest``, verified and atomically; return bytes copied."""

        def transfer(entry: ManifestEntry, tmp: Path, report: Progress) -> _digest.CheckResult | None:
            hasher = _digest.StreamHasher(entry.digest, entry.size)
            _copy(self._source_of(manifest, entry), tmp, report, hasher)
            return hasher.result()

        return hydrate(manifest, Path(dest), transfer=transfer, progress=progress)

    def verify(self, manifest: Manifest, dest: Path) -> VerifyReport:
        """Read ``dest`` back and compare it with ``manifest`` (see :func:`_verify.verify`)."""
        return verify(manifest, dest)

    def push(self, src: Path, uri: str, env: Mapping[str, str], *,
             prior: Manifest | None = None) -> Manifest:
        """Copy changed files of ``src`` under the target folder; return its manifest.

        ``prior`` is not needed: the target folder is read directly.
        """
        return self.push_with_progress(src, uri, env, prior=prior, progress=lambda n: None)

    def push_with_progress(self, src: Path, uri: str, env: Mapping[str, str], *,
                           progress: Callable[[int], None], prior: Manifest | None = None) -> Manifest:
        """``push`` counting its bytes (``runform.interfaces.ReportsPushProgress``): each chunk
        copied, and each file already there in full."""
        src = Path(src)
        if not src.exists():
            raise RunformError(f"nothing to push: {src} does not exist")
        target = self.path_of(uri, env)
        if src.is_file() and not uri.endswith("/"):
            pairs = [(target, src)]
        else:
            pairs = [(target / rel, p) for rel, p in walk_files(src)]
        for dst, path in pairs:
            size = path.stat().st_size
            if dst.is_file() and dst.stat().st_size == size and self._sha256(dst) == self._sha256(path):
                progress(size)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + TMP_MARK + str(os.getpid()))
            try:
                _copy(path, tmp, progress)
            except BaseException:  # stopped (TransferStopped) or failed: no half file stays
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, dst)
        return self.resolve(target.as_uri() + ("/" if target.is_dir() else ""), env)


def _copy(src: Path, dst: Path, progress: Progress,
          hasher: _digest.StreamHasher | None = None) -> None:
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(_COPY_CHUNK):
                fout.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                progress(len(chunk))
    except FileNotFoundError as exc:
        raise PermanentError(f"{src} vanished since the plan", hint="run plan again") from exc


@runform.hookspecs.hookimpl
def runform_register_storage_backends(register: Callable[..., None]) -> None:
    register("file", FileBackend)
