"""The fetch engine shared by every backend: decide what must move, move it through a
backend-supplied ``transfer`` function, verify it, rename it into place, record it.

A backend's ``fetch`` is ``hydrate(manifest, dest, transfer=...)``; ``transfer(entry,
tmp_path, progress)`` writes the bytes of one entry to ``tmp_path`` and may return the
check result it computed while the bytes streamed through (a
:class:`.digest.StreamHasher`), which saves reading the file again; None means "check the
file".

Per file the engine:

1. skips it when the record says it was fetched for the same digest and ``stat`` shows the
   recorded size and mtime (the no-change case reads no file and makes no request);
2. re-reads it when the size matches but the mtime moved, or when no record exists but a
   file of the right size is there (adopting it when its content matches);
3. otherwise transfers it to a temp file beside the target, checks size and digest, and
   renames it over the target (atomic: a reader never sees half a file).

A path that left the manifest (it is in the record, not in the manifest) is deleted before
the transfers, but only when ``stat`` shows the file is still the one the engine wrote (the
recorded size and mtime); a file changed since is left in place with a warning. Folders
those deletions emptied go too, never ``dest`` itself; a file the record does not list is
never touched.

Transfers run in a thread pool; each is retried (tenacity) on transient errors and on a
digest mismatch. The record is saved as files complete, so a killed fetch resumes.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry

from . import digest as _digest
from .record import TMP_MARK, Fetched, Record, safe_join

if TYPE_CHECKING:  # the no-change path imports neither (it runs on every re-apply)
    from concurrent.futures import Future

    import tenacity

log = logging.getLogger("runform.storage")

Progress = Callable[[int], None]
Transfer = Callable[[ManifestEntry, Path, Progress], "_digest.CheckResult | None"]


class DigestMismatch(RunformError):
    """The bytes that arrived do not match the manifest (changed since plan, or corrupted)."""


class PermanentError(RunformError):
    """A transfer error that a retry cannot fix (missing object, access denied)."""


@attrs.frozen
class HydrateOptions:
    workers: int = 16
    attempts: int = 3
    save_every_s: float = 1.0


def _is_retryable(exc: BaseException) -> bool:
    return not isinstance(exc, PermanentError | ValueError | KeyboardInterrupt)


def _stop(state: tenacity.RetryCallState, attempts: int) -> bool:
    """Transient errors get ``attempts`` tries; a digest mismatch gets one retry (the bytes
    were corrupted on the way) before it is reported (the source changed since the plan)."""
    if state.outcome is not None and isinstance(state.outcome.exception(), DigestMismatch):
        return state.attempt_number >= 2
    return state.attempt_number >= attempts


def _wait(state: tenacity.RetryCallState) -> float:
    if state.outcome is not None and isinstance(state.outcome.exception(), DigestMismatch):
        return 0.0
    import tenacity

    return float(tenacity.wait_exponential(multiplier=0.2, max=5)(state))


def _locked(progress: Progress | None) -> Progress:
    if progress is None:
        return lambda n: None
    lock = threading.Lock()

    def call(n: int) -> None:
        with lock:
            progress(n)

    return call


def _fresh(entry: ManifestEntry, target: Path, rec: Fetched | None) -> bool:
    """The cheap check: recorded for this digest, same size and mtime on disk."""
    if rec is None or rec.digest != entry.digest or rec.size != entry.size:
        return False
    try:
        st = target.stat()
    except OSError:
        return False
    return st.st_size == entry.size and st.st_mtime_ns == rec.mtime_ns


def hydrate(
    manifest: Manifest,
    dest: Path,
    *,
    transfer: Transfer,
    progress: Progress | None = None,
    options: HydrateOptions = HydrateOptions(),
) -> int:
    """Make ``dest`` hold ``manifest``; return the bytes transferred."""
    dest = Path(dest)
    record = Record.load(dest)
    todo: list[tuple[ManifestEntry, Path]] = []
    for entry in manifest.entries:
        target = safe_join(dest, entry.path)
        if not _fresh(entry, target, record.files.get(entry.path)):
            todo.append((entry, target))
    wanted = {e.path for e in manifest.entries}
    stale = [p for p in record.files if p not in wanted]
    if not todo and not stale and record.uri == manifest.uri and record.version == manifest.version:
        return 0  # nothing to do, nothing to write

    record.uri, record.version = manifest.uri, manifest.version
    if stale:  # before the transfers: a removed ``x`` may make room for a new ``x/y``
        _remove_stale(dest, record, stale, wanted, manifest.uri)
    if not todo:
        record.save()
        return 0

    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    job = _Job(record, transfer, _locked(progress), options)
    dest.mkdir(parents=True, exist_ok=True)
    todo.sort(key=lambda item: -item[0].size)  # largest first: no big file left alone at the end
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(options.workers, len(todo))),
                                thread_name_prefix="runform-fetch") as pool:
            futures = [pool.submit(job.one, e, t) for e, t in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                job.cancelled.set()
                for f in futures:
                    f.cancel()
                raise _first_error(failed)
    finally:
        record.save()
    return job.moved


def _remove_stale(dest: Path, record: Record, stale: list[str], wanted: set[str], uri: str) -> int:
    """Delete the files of ``stale`` (recorded paths no longer in the manifest) that are
    provably the ones hydration wrote: a regular file with the recorded size and mtime. A file
    changed since (or replaced by a link or a folder) is left in place with a warning. Each
    path leaves the record, except one whose deletion failed (tried again next time), so
    anything left behind is a foreign file from then on. Folders emptied by these deletions go
    too, up to but never including ``dest``. Returns the number of files deleted."""
    aliases = _aliases(stale, wanted)
    removed: list[tuple[str, ...]] = []
    for path in sorted(stale):
        rec = record.files[path]
        try:
            target = safe_join(dest, path)
        except ValueError:
            log.warning("%r: unsafe path in the fetch record of %s: dropped, nothing deleted",
                        path, dest)
            del record.files[path]
            continue
        try:
            st = target.lstat()
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s: no longer in %s, cannot be checked (%s): left in place",
                            target, uri, exc)
            del record.files[path]
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
            log.warning("%s: no longer in %s, but changed since it was fetched: left in place",
                        target, uri)
            del record.files[path]
            continue
        if _same_as_wanted(dest, st, aliases.get(path, ())):
            del record.files[path]  # another name of a file still wanted: keep the file
            continue
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: no longer in %s, could not be deleted (%s)", target, uri, exc)
            continue  # still recorded: the next fetch tries again
        del record.files[path]
        removed.append(target.relative_to(dest).parts)
    for parts in removed:  # the folders these deletions emptied: from each file's folder up
        for depth in range(len(parts) - 1, 0, -1):
            try:
                os.rmdir(dest.joinpath(*parts[:depth]))
            except OSError:  # not empty (or not a folder): neither it nor its parents go
                break
    if removed:
        log.info("%s: removed %d file(s) no longer in %s", dest, len(removed), uri)
    return len(removed)


def _fold(path: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKC", path).casefold()


def _aliases(stale: list[str], wanted: set[str]) -> dict[str, list[str]]:
    """The wanted paths that a case- or normalization-insensitive filesystem could store
    under the same name as a stale path (no filesystem call)."""
    folded: dict[str, list[str]] = {}
    for p in stale:
        folded.setdefault(_fold(p), []).append(p)
    out: dict[str, list[str]] = {}
    for w in wanted:
        for p in folded.get(_fold(w), ()):
            out.setdefault(p, []).append(w)
    return out


def _same_as_wanted(dest: Path, st: os.stat_result, aliases: list[str] | tuple[()]) -> bool:
    for w in aliases:
        try:
            other = safe_join(dest, w).stat()
        except (OSError, ValueError):
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _first_error(failed: list[Future[None]]) -> BaseException:
    exc = failed[0].exception()
    assert exc is not None
    return exc


class _Job:
    """State shared by the workers of one hydrate call."""

    def __init__(self, record: Record, transfer: Transfer, progress: Progress,
                 options: HydrateOptions) -> None:
        self.record = record
        self.transfer = transfer
        self.progress = progress
        self.options = options
        self.moved = 0
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._saved_at = time.monotonic()

    def one(self, entry: ManifestEntry, target: Path) -> None:
        if self.cancelled.is_set():
            return
        rec = self.record.files.get(entry.path)
        if self._adopt(entry, target, rec):
            return
        import tenacity

        retrying = tenacity.Retrying(
            stop=lambda state: _stop(state, self.options.attempts),
            wait=_wait,
            retry=tenacity.retry_if_exception(_is_retryable),
            reraise=True,
        )
        retrying(self._move, entry, target)

    def _adopt(self, entry: ManifestEntry, target: Path, rec: Fetched | None) -> bool:
        """Keep a file already on disk when its bytes are provably the right ones."""
        try:
            st = target.stat()
        except OSError:
            return False
        if st.st_size != entry.size:
            return False
        if rec is not None and rec.digest == entry.digest:
            same = _digest.content_of(target, rec.content) == rec.content
            checked = rec.checked
        elif _digest.is_checkable(entry.digest):
            result = _digest.check(target, entry.digest, entry.size)
            same, checked = result.ok and result.checked, True
            rec = Fetched(entry.size, entry.digest, result.content, 0) if same else None
        else:
            return False
        if not same or rec is None:
            return False
        self._done(entry, target, attrs.evolve(rec, checked=checked), moved=0)
        return True

    def _move(self, entry: ManifestEntry, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
        try:
            streamed = self.transfer(entry, tmp, self.progress)
            if streamed is not None and tmp.stat().st_size == entry.size:
                result = streamed
            else:
                result = _digest.check(tmp, entry.digest, entry.size)
            if not result.ok:
                raise DigestMismatch(
                    f"{entry.path}: {result.reason}",
                    hint="the source changed since the plan was made (run plan again), "
                         "or the transfer was corrupted",
                )
            if not result.checked:
                log.warning("%s: %s", entry.path, result.reason)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        mtime = target.stat().st_mtime_ns
        self._done(entry, target, Fetched(entry.size, entry.digest, result.content, mtime,
                                          result.checked), moved=entry.size - result.resumed)

    def _done(self, entry: ManifestEntry, target: Path, fetched: Fetched, *, moved: int) -> None:
        if fetched.mtime_ns != (mtime := target.stat().st_mtime_ns):
            fetched = attrs.evolve(fetched, mtime_ns=mtime)
        with self._lock:
            self.record.files[entry.path] = fetched
            self.moved += moved
            if time.monotonic() - self._saved_at > self.options.save_every_s:
                self.record.save()
                self._saved_at = time.monotonic()
