"""Byte-range resume of the large files of a sync (:func:`runform.codesync.sync_tree`).

A file of :data:`RESUME_MIN` bytes or more (with a sha256 digest, as every local tree's file
has) does not travel inside its batch's tar stream. Its bytes are appended by ``cat``, over one
command, to a *partial file* in ``<root>/.runform/partial/``, named for its digest with runform's
temporary mark (``.runform-tmp-partial-<sha256 hex>``: never listed, pushed, hashed as data or
taken for the file). Then the batch lands as any other (:mod:`runform.codesync`), its landing
script first taking the partial file in (:func:`take_in`) and moving it into the staging folder.

- A sync cut short (Ctrl-C, SIGTERM, a dropped connection, a killed client) leaves the bytes that
  arrived in the partial file: a prefix of the file, as ``cat`` writes in order what the
  channel delivered. Nothing under the file's final name, nothing in a manifest.
- The next sync asks the machine, in one command, how much the partial files of the large files
  it must send hold (:func:`held`); any other partial file (another version of a file, a file
  no longer sent) is removed. It sends only the bytes after the partial file's length.
- A continued file is checked on the machine against the plan's sha256 (``sha256sum``) before
  it moves; a mismatch (or a partial file that is not the length it was) removes the partial
  file and the file is sent whole. A file sent in one go is not read back: one SSH stream,
  protected by SSH's MAC, as the tar stream of the small files is.
- A sync's last landing removes the partial folder.

Only ``Transport.run`` is used, so the local transport and the SSH transport behave alike.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runform.atomic import TMP_MARK
from runform.errors import RunformError
from runform.interfaces import ManifestEntry, Transport

STAGING = ".runform/incoming"  # relative to the sync's remote root: where a batch lands first
RESUME_MIN = 64 << 20  # files from this size on collect in a partial file (each its own batch)
FOLDER = ".runform/partial"  # relative to the sync's remote root
MISMATCH = 97  # exit status: the partial file is not what it should be (removed; send it whole)
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class SyncError(RunformError):
    """The machine refused part of a sync (disk full, a folder where a file should go, ...)."""


class Mismatch(SyncError):
    """A partial file on the machine was not the file's prefix: it was removed."""


def resumable(entry: ManifestEntry) -> bool:
    """Whether ``entry`` goes through a partial file (large, and a sha256 the machine can check:
    also all that goes into the partial file's name and the landing script)."""
    return entry.size >= RESUME_MIN and _SHA256.fullmatch(entry.digest) is not None


def name(entry: ManifestEntry) -> str:
    """The partial file's name: the digest's, so a partial file of another version is never
    continued."""
    return f"{TMP_MARK}partial-{entry.digest.split(':', 1)[1]}"


@runtime_checkable
class ListsSizes(Protocol):
    """Optional, on a Transport: the sizes of a remote folder's files without running a command
    (the SSH transport's, over SFTP: no login shell started)."""

    def file_sizes(self, remote_folder: str) -> dict[str, int]: ...


def held(transport: Transport, remote_root: str, entries: Iterable[ManifestEntry]) -> dict[str, int]:
    """path -> bytes its partial file already holds on the machine (0: nothing to continue), for
    the resumable ``entries`` (asked once; not at all when none is resumable)."""
    wanted = {name(e): e for e in entries if resumable(e)}
    if not wanted:
        return {}
    folder = posixpath.join(remote_root, FOLDER)
    if isinstance(transport, ListsSizes):
        sizes = transport.file_sizes(folder)
    else:
        script = (f'cd "$1" 2>/dev/null || exit 0; for f in {TMP_MARK}partial-*; do '
                  '[ -f "$f" ] && echo "$f $(wc -c < "$f")"; done')
        out = transport.run(["sh", "-c", script, "sh", folder]).stdout.decode(errors="replace")
        sizes = {n: int(s) for n, _, s in (line.strip().partition(" ") for line in out.splitlines())
                 if s.strip().isdigit()}
    return {e.path: sizes[n] if 0 < sizes.get(n, 0) < e.size else 0 for n, e in wanted.items()}


def send_large(transport: Transport, remote_root: str, local_root: Path, entry: ManifestEntry,
               offset: int, keep: Sequence[str], land: Callable[[list[str]], None],
               progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Send ``entry``'s bytes from ``offset`` on into its partial file (any partial file not
    named in ``keep``, the sync's large files, is removed first), then ``land`` the batch with
    the lines that take the partial file in (checked against the digest when continued). A
    partial file that fails its check is removed and the file sent whole. Returns (bytes sent,
    bytes that were already there)."""
    mode = os.stat(local_root / entry.path).st_mode & 0o777
    sent, offset = _send(transport, remote_root, local_root, entry, offset, keep, progress)
    try:
        land(take_in(entry, mode, check=offset > 0))
        return sent, offset
    except Mismatch:
        if offset == 0:
            raise
    again, _ = _send(transport, remote_root, local_root, entry, 0, keep, progress)
    land(take_in(entry, mode, check=False))
    return sent + again, 0


def _send(transport: Transport, remote_root: str, local_root: Path, entry: ManifestEntry,
          offset: int, keep: Sequence[str], progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Append ``entry``'s bytes after ``offset`` to its partial file (created private; from 0:
    replaced), the partial files not in ``keep`` removed first. Returns (bytes sent, the
    offset used: 0 when the partial file was not ``offset`` bytes long any more)."""
    script = ('umask 077; mkdir -p "$1" && cd "$1" || exit 1; p=$2; o=$3; shift 3; '
              f'for f in {TMP_MARK}partial-*; do case " $* " in *" $f "*) ;; *) rm -f -- "$f";; esac; done; '
              'if [ "$o" -gt 0 ]; then '
              f'[ -f "$p" ] && [ "$(wc -c < "$p")" -eq "$o" ] || exit {MISMATCH}; exec cat >> "$p"; fi; '
              'exec cat > "$p"')
    argv = ["sh", "-c", script, "sh", posixpath.join(remote_root, FOLDER), name(entry), str(offset), *keep]
    with open(local_root / entry.path, "rb") as f:
        f.seek(offset)
        rest = _Counted(f, progress)
        result = transport.run(argv, stdin=rest)  # type: ignore[arg-type]
    if result.exit_code == MISMATCH and offset:
        return _send(transport, remote_root, local_root, entry, 0, keep, progress)
    if result.ok and rest.count != entry.size - offset:
        raise SyncError(f"{local_root / entry.path} changed while it was being sent "
                        f"({rest.count} bytes after byte {offset}, {entry.size - offset} expected)",
                        hint="run apply again once the file is no longer being written")
    if not result.ok:
        tail = result.stderr.decode(errors="replace").strip()[-2000:]
        raise SyncError(f"sending {entry.path} to {remote_root} failed (exit {result.exit_code}, "
                        f"{rest.count} of {entry.size - offset} bytes sent): {tail}",
                        hint="check the machine's free disk space and that the root is writable; "
                             "apply again to continue where it stopped")
    return rest.count, offset


def take_in(entry: ManifestEntry, mode: int, *, check: bool) -> list[str]:
    """Landing-script lines (run in the sync's root) that move ``entry``'s partial file into the
    staging folder with ``mode``, after checking its length and, with ``check``, its sha256
    (else: removed, exit :data:`MISMATCH`)."""
    q = shlex.quote
    p = q(posixpath.join(FOLDER, name(entry)))
    bad = f"{{ rm -f {p}; exit {MISMATCH}; }}"
    lines = [f'[ -f {p} ] && [ "$(wc -c < {p})" -eq {entry.size} ] || {bad}']
    if check:
        lines.append(f'h=$(sha256sum < {p} 2>/dev/null || shasum -a 256 < {p} 2>/dev/null) || h=""')
        lines.append(f'[ "${{h%% *}}" = {entry.digest.split(":", 1)[1]} ] || {bad}')
    folder = posixpath.dirname(entry.path)
    lines += [f"chmod {mode:o} {p}", f"mkdir -p {q(posixpath.join(STAGING, 'f', folder))}",
              f"mv -f {p} {q(posixpath.join(STAGING, 'f', entry.path))}"]
    return lines


class _Counted:
    """A file read for a channel's stdin, each read counted (for ``progress`` and the check that
    the whole rest went)."""

    def __init__(self, f: Any, progress: Callable[[int], None] | None) -> None:
        self._f, self._progress, self.count = f, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data
