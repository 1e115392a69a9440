"""The local state backend (the embedded default): ``.runform/state.json`` plus ``journal.jsonl``.

- Every mutation appends to the journal and fsyncs before the call returns: O(1) per action,
  never a whole-state rewrite (Terraform's local backend rewrites the file per resource).
- ``compact`` keeps the current snapshot as ``state.json.bak`` (a hard link, or a copy, swapped
  in atomically: ``state.json`` never goes missing), writes the new snapshot to a temp file
  (fsync), ``os.replace``s it over ``state.json`` (the one step that commits), fsyncs the folder,
  and only then starts an empty journal. A crash at any step leaves a readable state: before the
  replace, the old snapshot plus the whole journal; after it, the new snapshot plus a journal
  whose entries replay skips (their ``seq`` is at most the snapshot's ``seq``).
- ``state.json`` missing while ``state.json.bak`` exists (a compaction by an older runform,
  which renamed the snapshot away first, was killed): ``read`` uses the backup plus the journal,
  links the backup back as ``state.json`` (never over one written meanwhile), and says so on
  stderr.
- An unparsable last journal line (torn by a crash mid-write, or garbled) is ignored on read and
  cut before the next append; a corrupt line before it is an error naming the file and line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runform.errors import StateError
from runform.hookspecs import hookimpl
from runform.state.lock import FileLock, LockInfo
from runform.state.model import State, replay_entry

MAX_STATE_BYTES = 256 << 20


class LocalStateBackend:
    def __init__(self, folder: Path, *, lease: float = 30.0) -> None:
        self.folder = folder
        self.snapshot = folder / "state.json"
        self.journal = folder / "journal.jsonl"
        self.backup = folder / "state.json.bak"
        self._lock = FileLock(folder, lease=lease)
        self._fd: int | None = None
        self._seq = 0

    # -------------------------------------------------------------------------- reading
    def _check_files(self) -> None:
        """The state folder and its files are what runform writes there: a folder of regular files
        (a file in the folder's place, a folder or a device as state.json: refused, with the fix)."""
        if self.folder.is_symlink() or (self.folder.exists() and not self.folder.is_dir()):
            raise StateError(f"{self.folder} is not a folder (runform keeps its state there)",
                             hint=f"move that file away; {self.folder.name}/ is runform's own folder")
        for path in (self.snapshot, self.journal, self.backup):
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise StateError(f"{path} is not a regular file",
                                 hint="restore .runform/ from a copy of it, or remove that entry")
            if path.is_file() and path.stat().st_size > MAX_STATE_BYTES:
                raise StateError(f"{path} is {path.stat().st_size} bytes, more than a state can hold "
                                 f"({MAX_STATE_BYTES >> 20} MiB)",
                                 hint="restore .runform/ from a copy of it")

    def read(self) -> State | None:
        self._check_files()
        state = self._read_snapshot()
        if self.journal.exists():
            entries, _ = self._scan(self.journal.read_bytes())
            for i, entry in entries:
                state = replay_entry(state, entry, f"{self.journal}:{i}",
                                     reset_hint="remove .runform/journal.jsonl")
                self._seq = max(self._seq, _seq_of(entry))
        if state is not None:
            self._seq = max(self._seq, state.seq)
        return state

    def _read_snapshot(self) -> State | None:
        if self.snapshot.exists():
            return self._load(self.snapshot)
        if not self.backup.exists():
            return None
        # state.json is gone but its backup is not: a compaction by an older runform (which renamed
        # the snapshot away first) was killed. The backup is the snapshot the journal started from,
        # so backup + journal is the whole state. Put it back as state.json: a hard link, which
        # never replaces a state.json someone wrote meanwhile.
        state = self._load(self.backup, hint="restore .runform/ from a copy of it; removing .runform/ "
                           "starts over with a state that does not know what this one rented")
        try:
            os.link(self.backup, self.snapshot)
            self._fsync_dir()
        except FileExistsError:
            return self._load(self.snapshot)  # written meanwhile: that one is newer
        except OSError:
            print(f"Warning: {self.snapshot} is missing (a compaction was interrupted); reading "
                  f"{self.backup.name} and replaying {self.journal.name} on top of it.", file=sys.stderr)
            return state
        print(f"Warning: {self.snapshot} was missing (a compaction was interrupted); restored it "
              f"from {self.backup.name}, and {self.journal.name} replays on top of it.", file=sys.stderr)
        return state

    def _load(self, path: Path, *, hint: str | None = None) -> State:
        try:
            raw = json.loads(path.read_bytes().decode("utf-8"))
        except RecursionError:
            raise StateError(f"{path}: state snapshot is not a runform state (JSON nested too deep)",
                             hint=hint or "restore it from a backup (state.json.bak) or remove .runform/ "
                             "to start over") from None
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            raise StateError(
                f"{path}:{line or 1}: state snapshot is not valid JSON ({exc.args[0].split(':')[0]})",
                hint=hint or "restore it from a backup (state.json.bak) or remove .runform/ to start over",
            ) from None
        try:
            return State.from_json(raw)
        except StateError as exc:
            raise StateError(f"{path}: {exc.message}", hint=hint or exc.hint) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"{path}: malformed state ({type(exc).__name__}: {exc})",
                             hint=hint or "restore the state from state.json.bak") from None

    def _scan(self, data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], int]:
        """The journal's entries as (line number, entry), and how many leading bytes hold them.

        An unparsable LAST line (a crash tore it mid-write, or it is garbled) is left out: the
        byte count stops before it. An unparsable line before the last one is an error.
        """
        lines = data.split(b"\n")
        last = max((k for k, line in enumerate(lines) if line.strip()), default=-1)
        entries: list[tuple[int, dict[str, Any]]] = []
        offset = 0
        for k, line in enumerate(lines):
            start, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError):
                if k == last:
                    return entries, start
                raise StateError(
                    f"{self.journal}:{k + 1}: corrupt journal entry (not a JSON object; a crash "
                    "can tear only the last line)",
                    hint=f"restore .runform/ from a backup; or repair line {k + 1} by hand (one JSON "
                    "object per line): deleting it forgets what it recorded") from None
            entries.append((k + 1, entry))
        return entries, len(data)

    # -------------------------------------------------------------------------- writing
    def append(self, entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        self._lock.check()  # the fence: still our lock (a paused holder must not write)
        if self._fd is None:
            self._check_files()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._truncate_torn_tail()
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        written = []
        buf = bytearray()
        for e in entries:
            self._seq += 1
            entry = {"seq": self._seq, **e}
            written.append(entry)
            buf += json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"
        os.write(self._fd, bytes(buf))
        os.fsync(self._fd)
        return written

    def _truncate_torn_tail(self) -> None:
        """Make the journal end in a whole line before appending: cut an unparsable last line
        (what ``read`` skips), and end a whole last entry that lost its newline (what ``read``
        replays). A corrupt line before the last one raises, and nothing is written."""
        if not self.journal.exists():
            return
        data = self.journal.read_bytes()
        _, keep = self._scan(data)
        if keep < len(data):
            with open(self.journal, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
        elif data and not data.endswith(b"\n"):
            with open(self.journal, "ab") as f:
                f.write(b"\n")
                os.fsync(f.fileno())

    def compact(self, state: State) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state.seq = max(state.seq, self._seq)
        if self.snapshot.exists():
            self._keep_backup()
        tmp = self.snapshot.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state.to_json(), f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        # the commit: until here state.json is the old snapshot (and the journal is whole), from
        # here the new one (and the journal's entries are all at or below its seq)
        os.replace(tmp, self.snapshot)
        self._fsync_dir()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        # the snapshot holds everything up to state.seq; start an empty journal
        empty = self.journal.with_suffix(".tmp")
        empty.write_bytes(b"")
        os.replace(empty, self.journal)
        self._fsync_dir()

    def _keep_backup(self) -> None:
        """Point state.json.bak at the current snapshot without ever removing state.json: a hard
        link (or, where the filesystem has none, a copy) under a temp name, swapped in."""
        tmp = self.backup.with_suffix(".bak.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.snapshot, tmp)
        except OSError:
            shutil.copyfile(self.snapshot, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.backup)
        tmp.unlink(missing_ok=True)  # a rename onto a link to the same file leaves its source

    def _fsync_dir(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -------------------------------------------------------------------------- locking
    def lock(self, operation: str, *, timeout: float = 0.0) -> LockInfo:
        self._check_files()
        return self._lock.acquire(operation, timeout=timeout)

    def unlock(self, lock_id: str) -> None:
        self._lock.release()

    def force_unlock(self, lock_id: str) -> None:
        self._check_files()
        self._lock.force_unlock(lock_id)

    def lock_info(self) -> LockInfo | None:
        self._check_files()
        return self._lock.current()


def _seq_of(entry: Mapping[str, Any]) -> int:
    try:
        return int(entry.get("seq", 0))
    except (TypeError, ValueError):
        return 0


def _factory(url: str, spec_dir: Path, *, lease: float = 30.0) -> LocalStateBackend:
    return LocalStateBackend(spec_dir / ".runform", lease=lease)


@hookimpl
def runform_register_state_backends(register: Any) -> None:
    register("local", _factory)
