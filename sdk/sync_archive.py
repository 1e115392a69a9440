"""The tar archive that carries one batch of a sync (:mod:`runform.codesync`): the landing
script, the manifests and the files, built in memory for a small batch or written by a thread
into a pipe for a large one (never whole in memory)."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from runform.interfaces import ManifestEntry

CHUNK = 1 << 20


def write_archive(
    out: IO[bytes],
    local_root: Path,
    send: Sequence[ManifestEntry],
    script: str,
    manifest: bytes,
    intent: bytes | None,
    stream: bool = False,
) -> None:
    with tarfile.open(fileobj=out, mode="w|" if stream else "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, ".sync.sh", script.encode(), 0o600)
        _add_bytes(tar, ".manifest.json", manifest, 0o644)
        if intent is not None:
            _add_bytes(tar, ".intent.json", intent, 0o644)
        for entry in send:
            path = local_root / entry.path
            with open(path, "rb") as f:  # the content, also behind a symlink
                st = os.fstat(f.fileno())
                info = tarfile.TarInfo(f"f/{entry.path}")
                info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o777, int(st.st_mtime)
                tar.addfile(info, f)


def archive(
    local_root: Path,
    send: Sequence[ManifestEntry],
    script: str,
    manifest: bytes,
    intent: bytes | None,
) -> bytes:
    buf = io.BytesIO()
    write_archive(buf, local_root, send, script, manifest, intent)
    return buf.getvalue()


class ArchiveStream:
    """The tar archive of a large batch as a readable stream, written by a thread into a pipe
    (never whole in memory). Counts what is read for ``progress``; a local read error ends the
    stream early (the remote ``tar`` then fails) and is kept in :attr:`error`."""

    def __init__(self, local_root: Path, send: Sequence[ManifestEntry], script: str,
                 manifest: bytes, intent: bytes | None,
                 progress: Callable[[int], None] | None) -> None:
        r, w = os.pipe()
        self._reader = os.fdopen(r, "rb")
        self._progress = progress
        self.error: BaseException | None = None

        def write() -> None:
            try:
                with os.fdopen(w, "wb", buffering=CHUNK) as out:
                    write_archive(out, local_root, send, script, manifest, intent, stream=True)
            except BrokenPipeError:
                pass  # the reader went away (Ctrl-C, a dropped connection)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.error = exc

        self._thread = threading.Thread(target=write, daemon=True, name="runform-tar")
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def close(self) -> None:
        self._reader.close()
        self._thread.join(timeout=1.0)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))
