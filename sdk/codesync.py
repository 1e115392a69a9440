"""Incremental code sync over any :class:`~runform.interfaces.Transport`.

runform keeps, on the machine, a manifest of what *it* put in the run's root
(``<root>/.runform/code-manifest.json``). A sync compares the local tree with it and, in
one ``run`` call, sends only new and changed files and deletes only files it put there
earlier that have left the tree. Everything else under the root (data, checkpoints,
caches) is never touched.

How one sync lands, so that a kill at any moment leaves nothing unaccounted for:

1. the changed files travel as one tar stream (one round trip however many files) into
   ``<root>/.runform/incoming``, together with a small script;
2. if new paths are coming, a manifest that already lists them (digest ``pending``)
   replaces the old one first, so an interrupted sync can still clean them up later;
3. files that left the tree are deleted; new and changed files are renamed into place
   (``mv``: each file is replaced atomically, never seen half-written);
4. the new manifest is renamed into place last.

The remote manifest file is the :class:`Manifest` JSON plus a top-level ``digest`` (the
caller's code fingerprint; ``None`` while a sync is landing, or after a batch that was not
the last), which refreshes read.

Only ``Transport.run`` and ``Transport.get_bytes`` are used, so the local transport and
the SSH transport behave alike. File modes travel with the files, but a mode-only change
is not detected (the manifest holds sizes and digests). Large syncs (``file://`` datasets)
go in batches of about 64 MB, each one tar stream written by a thread into a pipe. A file
of 64 MiB or more is a batch of its own whose bytes collect in a partial file that the next
sync continues after an interruption (byte-range resume, :mod:`runform.partials`).
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from runform import partials
from runform.digests import DigestCache, tree_manifest
from runform.interfaces import Manifest, ManifestEntry, Transport
from runform.partials import STAGING, SyncError
from runform.sync_archive import ArchiveStream, archive

MANIFEST_PATH = ".runform/code-manifest.json"  # relative to the remote root
PENDING = "pending"  # digest of a path announced before its content landed
_BATCH = 200  # paths per mkdir / mv / rm command line
_BATCH_BYTES = 64 << 20  # bytes per landing (an interrupted sync keeps the batches that landed)
_STREAM_MIN = 4 << 20  # a batch from this size on is streamed, not built in memory


@attrs.frozen
class SyncReport:
    """What one sync did. ``sent`` and ``deleted`` are paths relative to the root;
    ``bytes_sent`` is what went over the wire, ``resumed`` the bytes of large files that
    partial files on the machine already held (an interrupted sync's)."""

    sent: tuple[str, ...]
    bytes_sent: int
    deleted: tuple[str, ...]
    unchanged: int
    manifest: Manifest
    resumed: int = 0

    @property
    def files_sent(self) -> int:
        return len(self.sent)

    @property
    def changed(self) -> bool:
        return bool(self.sent or self.deleted)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": list(self.sent),
            "bytes_sent": self.bytes_sent,
            "resumed": self.resumed,
            "deleted": list(self.deleted),
            "unchanged": self.unchanged,
            "digest": self.manifest.digest,
        }


def local_manifest(
    root: Path, exclude: Iterable[str] = (), *, cache: DigestCache | None = None,
    never: Iterable[Path | None] = (),
) -> Manifest:
    """The files of the local tree ``root`` (sizes, sha256), minus ``exclude`` globs
    (gitignore-like, see :func:`runform.digests.excluded`) and the always-excluded
    ``.git/``, ``.runform/``, ``__pycache__/``, ``*.pyc``, ``.env``.

    Never synced, whatever the globs say, by identity rather than by name: the files of
    ``never`` (the secrets env file), under any name, through a symlink or a hard link; and any
    symlink that leads into a ``.runform/`` folder."""
    root = Path(root)
    files = tree_manifest(root, exclude, cache, keep=_not_private(root, never))
    entries = tuple(
        ManifestEntry(path, size, digest) for path, (size, digest) in sorted(files.items())
    )
    return Manifest(uri=root.resolve().as_uri(), entries=entries)


def _not_private(root: Path, never: Iterable[Path | None]) -> Any:
    """A predicate on relative paths: False for the secret files and runform's own files."""
    import os

    ids = set()
    for p in never:
        if p is None:
            continue
        try:
            st = os.stat(p)
            ids.add((st.st_dev, st.st_ino))
        except OSError:
            continue

    def keep(rel: str) -> bool:
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) in ids:
            return False
        if os.path.islink(path) or any(os.path.islink(os.path.join(root, *rel.split("/")[:i]))
                                       for i in range(1, rel.count("/") + 1)):
            return ".runform" not in Path(os.path.realpath(path)).parts
        return True

    return keep


def read_remote_manifest(
    transport: Transport, remote_root: str, path: str | None = None
) -> Manifest | None:
    """What runform put under ``remote_root`` (None: nothing, or an unreadable manifest).
    Entries whose path could escape the root are dropped, so they are never deleted."""
    return _read(transport, path or posixpath.join(remote_root, MANIFEST_PATH))[0]


def _read(transport: Transport, path: str) -> tuple[Manifest | None, str | None]:
    """The remote manifest and the digest recorded with it."""
    try:
        raw = json.loads(transport.get_bytes(path))
        manifest = Manifest.from_json(raw)
    except FileNotFoundError:
        return None, None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None  # a damaged manifest: resend everything, delete nothing
    safe = attrs.evolve(manifest, entries=tuple(e for e in manifest.entries if _safe(e.path)))
    return safe, raw.get("digest")


def diff(local: Manifest, remote: Manifest | None) -> tuple[list[ManifestEntry], list[str]]:
    """(entries to send, paths to delete) to make the remote match ``local``."""
    known = remote.by_path() if remote else {}
    send = [
        e
        for e in local.entries
        if (old := known.get(e.path)) is None or (old.size, old.digest) != (e.size, e.digest)
    ]
    wanted = {e.path for e in local.entries}
    delete = sorted(p for p in known if p not in wanted)
    return send, delete


def sync_tree(
    transport: Transport,
    local_root: Path,
    remote_root: str,
    manifest: Manifest | None = None,
    digest: str | None = None,
    *,
    remote_manifest_path: str | None = None,
    exclude: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    missing: Iterable[str] | None = (),
) -> SyncReport:
    """Make ``remote_root`` hold the local tree (``manifest``, or the tree minus ``exclude``).

    ``missing``: paths found missing or changed on the machine (a refresh's check) that the
    remote manifest still lists: they are sent again; ``None``: nothing the remote manifest
    lists is taken as there (every file is sent; deletions still follow it).

    ``remote_root`` must be absolute. Sends only new and changed files; deletes only files
    that an earlier sync put there and that have left the tree. ``digest`` (default: the
    manifest's) is recorded at the top of the remote manifest, where refreshes read it.

    The files go in batches of about 64 MB, each landing on its own (so an interrupted sync
    keeps the batches that landed), a large batch streamed without being held in memory; a
    file of :data:`~runform.partials.RESUME_MIN` or more continues from the partial file an
    interrupted sync left. ``progress`` is called with the number of bytes just sent; one with
    a ``total`` attribute (a meter) gets it set to the bytes this sync sends, before the first
    byte, and its ``resumed`` (if it has one) to the bytes partial files already held.
    """
    if not posixpath.isabs(remote_root):
        raise ValueError(f"sync_tree: remote root must be an absolute path, not {remote_root!r}")
    local_root = Path(local_root)
    manifest = manifest or local_manifest(local_root, exclude)
    digest = digest or manifest.digest
    manifest_path = remote_manifest_path or posixpath.join(remote_root, MANIFEST_PATH)
    remote, recorded = _read(transport, manifest_path)
    send, delete = diff(manifest, remote)
    lost = None if missing is None else set(missing)
    if lost is None or lost:  # what the machine lost since it landed
        queued = {e.path for e in send}
        send = [e for e in manifest.entries if e.path in queued or lost is None or e.path in lost]
    report = SyncReport(
        sent=tuple(e.path for e in send),
        bytes_sent=sum(e.size for e in send),
        deleted=tuple(delete),
        unchanged=len(manifest.entries) - len(send),
        manifest=manifest,
    )
    if remote is not None and not report.changed and recorded == digest:
        return report
    held = partials.held(transport, remote_root, send)  # large files: what is there already
    if progress is not None and hasattr(progress, "total"):  # a meter: what this sync will send
        progress.total = report.bytes_sent - sum(held.values())
        if hasattr(progress, "resumed"):
            progress.resumed = sum(held.values())
    sent, resumed = _send_batches(transport, local_root, remote_root, manifest_path, manifest, digest,
                                  remote, send, delete, held, progress)
    return attrs.evolve(report, bytes_sent=sent, resumed=resumed)


def _send_batches(transport: Transport, local_root: Path, remote_root: str, manifest_path: str,
                  manifest: Manifest, digest: str, remote: Manifest | None, send: Sequence[ManifestEntry],
                  delete: Sequence[str], held: dict[str, int],
                  progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Send ``send`` batch by batch, each landing with its own manifest (see :func:`sync_tree`);
    a large file's batch through its partial file (``held``: its bytes already there).
    Returns (bytes sent, bytes resumed)."""
    known = remote.by_path() if remote else {}
    batches = _batches(send)
    sent = resumed = 0
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        gone = delete if i == 0 else []
        current = {p: e for p, e in known.items() if p not in gone}
        after = {**current, **{e.path: e for e in batch}}
        # a batch that is not the last lands with its own manifest and no digest: an interrupted
        # sync keeps what landed (the next one sends only the rest), and a refresh sees it as
        # unfinished
        landed = manifest if last else attrs.evolve(
            manifest, entries=tuple(after[p] for p in sorted(after)))
        intent = None
        if any(e.path not in current for e in batch):
            announced = {  # the paths about to be deleted too, until they are
                **known,
                **{e.path: ManifestEntry(e.path, e.size, PENDING) for e in batch if e.path not in current},
            }
            intent = attrs.evolve(manifest, entries=tuple(announced[p] for p in sorted(announced)))
        docs = (_dumps(landed, digest if last else None), intent and _dumps(intent, None))

        def land(prelude: list[str], content: Sequence[ManifestEntry] = batch) -> None:
            script = _script(remote_root, manifest_path, batch, gone, intent is not None, prelude, last)
            _land(transport, remote_root, local_root, content, script, *docs, progress)

        if len(batch) == 1 and batch[0].path in held:  # a large file: through its partial file
            keep = [partials.name(e) for e in send if e.path in held]
            more, kept = partials.send_large(transport, remote_root, local_root, batch[0],
                                             held[batch[0].path], keep, lambda p: land(p, ()), progress)
            sent, resumed = sent + more, resumed + kept
        else:
            land([])
            sent += sum(e.size for e in batch)
        known = after
    return sent, resumed


def _batches(send: Sequence[ManifestEntry]) -> list[list[ManifestEntry]]:
    """``send`` cut into batches of about :data:`_BATCH_BYTES` (at least one, maybe empty); a
    file that goes through a partial file is a batch of its own."""
    out: list[list[ManifestEntry]] = [[]]
    size = 0
    for e in send:
        if out[-1] and (size + e.size > _BATCH_BYTES or partials.resumable(e)
                        or partials.resumable(out[-1][-1])):
            out.append([])
            size = 0
        out[-1].append(e)
        size += e.size
    return out


def _land(
    transport: Transport,
    remote_root: str,
    local_root: Path,
    send: Sequence[ManifestEntry],
    script: str,
    manifest: bytes,
    intent: bytes | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Send one batch as a tar stream and run its landing script."""
    command = (
        'set -e; mkdir -p "$1"; cd "$1"; rm -rf "$2"; mkdir -p "$2"; '
        'tar -x -o -f - -C "$2"; exec sh "$2/.sync.sh"'
    )
    argv = ["sh", "-c", command, "sh", remote_root, STAGING]
    if sum(e.size for e in send) < _STREAM_MIN:
        result = transport.run(argv, stdin=archive(local_root, send, script, manifest, intent))
        if progress is not None:
            progress(sum(e.size for e in send))
    else:
        stream = ArchiveStream(local_root, send, script, manifest, intent, progress)
        try:
            result = transport.run(argv, stdin=stream)  # type: ignore[arg-type]
        finally:
            stream.close()
        if stream.error is not None:
            raise stream.error
    if result.exit_code == partials.MISMATCH:
        raise partials.Mismatch(f"the partial file of a large file under {remote_root} did not match "
                                "it; it was removed", hint="apply again: the file is sent whole")
    if not result.ok:
        tail = result.stderr.decode(errors="replace").strip()[-2000:]
        raise SyncError(
            f"sending files to {remote_root} failed (exit {result.exit_code}): {tail}",
            hint="check the machine's free disk space and that the root is writable",
        )


def _script(
    remote_root: str,
    manifest_path: str,
    send: Sequence[ManifestEntry],
    delete: Sequence[str],
    announce: bool,
    prelude: Sequence[str] = (),
    last: bool = True,
) -> str:
    """The shell script that lands one sync (run in ``remote_root``; see the module docs),
    after the ``prelude`` lines (a large file's partial file taken in); the last batch's
    removes the partial files' folder."""
    q = shlex.quote
    lines = ["set -eu", f"cd {q(remote_root)}", *prelude, f"mkdir -p {q(posixpath.dirname(manifest_path))}"]
    if announce:
        lines.append(f"mv -f {STAGING}/.intent.json {q(manifest_path)}")
    for chunk in _chunks(delete):
        lines.append("rm -f -- " + " ".join(q(p) for p in chunk))
    # folders emptied by the deletions go too (only if empty), so a file may take their name
    emptied = sorted({d for p in delete for d in _parents(p)}, key=lambda d: -d.count("/"))
    lines += [f"rmdir -- {q(d)} 2>/dev/null || true" for d in emptied]
    # a top-level folder that is not there yet arrives whole, with one rename (atomic: it
    # appears with every file complete); a first sync of a tree is a few renames, not one
    # ``mv`` per folder
    for top in sorted({e.path.split("/", 1)[0] for e in send if "/" in e.path}):
        staged = q(f"{STAGING}/f/{top}")
        lines.append(f"if [ ! -e {q(top)} ] && [ ! -L {q(top)} ]; then mv -- {staged} {q(top)}; fi")
    for chunk in _chunks(sorted({d for e in send for d in _parents(e.path)})):
        lines.append("mkdir -p -- " + " ".join(q(d) for d in chunk))
    by_folder: dict[str, list[str]] = {}
    for e in send:
        by_folder.setdefault(posixpath.dirname(e.path), []).append(e.path)
    for folder, paths in sorted(by_folder.items()):
        guard = f"[ ! -d {q(f'{STAGING}/f/{folder}')} ] || " if folder else ""  # moved whole
        for chunk in _chunks(paths):
            lines.append(
                guard
                + "mv -f -- "
                + " ".join(q(f"{STAGING}/f/{p}") for p in chunk)
                + " "
                + q(f"{folder or '.'}/")
            )
    lines.append(f"mv -f {STAGING}/.manifest.json {q(manifest_path)}")
    lines.append(f"rm -rf {STAGING}" + (f" {partials.FOLDER}" if last else ""))
    return "\n".join(lines) + "\n"


def _dumps(manifest: Manifest, digest: str | None) -> bytes:
    """The remote manifest file: the Manifest's JSON plus the recorded ``digest`` (None while
    the sync that announced it is still landing)."""
    return json.dumps({**manifest.to_json(), "digest": digest}, separators=(",", ":")).encode()


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


def _safe(path: str) -> bool:
    """A relative path that stays under the root (remote manifests are not trusted blindly)."""
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith("/")
        and "\0" not in path
        and all(p not in ("", ".", "..") for p in parts)
    )
