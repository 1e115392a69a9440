"""The local state backend (the embedded default): ``.runform/state.json`` plus ``journal.jsonl``.

- Every mutation appends to the journal and fsyncs before the call returns: O(1) per action,
  never a whole-state rewrite (Terraform's local backend rewrites the file per resource).
- ``compact`` writes a new snapshot atomically (temp file, fsync, rename, fsync of the folder),
  then starts an empty journal. A crash between the two is harmless: entries whose ``seq`` the
  snapshot already holds are skipped on replay.
- A torn last journal line (a crash mid-write) is ignored; a corrupt line elsewhere is an error
  naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runform.errors import StateError
from runform.hookspecs import hookimpl
from runform.state.lock import FileLock, LockInfo
from runform.state.model import State, replay_entry


class LocalStateBackend:
    def __init__(self, folder: Path, *, lease: float = 30.0) -> None:
        self.folder = folder
        self.snapshot = folder / "state.json"
        self.journal = folder / "journal.jsonl"
        self._lock = FileLock(folder, lease=lease)
        self._fd: int | None = None
        self._seq = 0

    # -------------------------------------------------------------------------- reading
    def read(self) -> State | None:
        state: State | None = None
        if self.snapshot.exists():
            try:
                raw = json.loads(self.snapshot.read_text())
            except ValueError as exc:
                line = getattr(exc, "lineno", None)
                raise StateError(
                    f"{self.snapshot}:{line or 1}: state snapshot is not valid JSON ({exc.args[0].split(':')[0]})",
                    hint="restore it from a backup (state.json.bak) or remove .runform/ to start over",
                ) from None
            try:
                state = State.from_json(raw)
            except StateError as exc:
                raise StateError(f"{self.snapshot}: {exc.message}", hint=exc.hint) from None
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"{self.snapshot}: field {exc} is missing or malformed",
                                 hint="restore the state from state.json.bak") from None
        if self.journal.exists():
            with open(self.journal, "rb") as f:
                lines = f.read().split(b"\n")
            for i, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict):
                        raise ValueError("not an object")
                except ValueError:
                    if i >= len(lines) - 1:  # torn final line from a crash mid-write
                        break
                    raise StateError(f"{self.journal}:{i}: corrupt journal entry",
                                     hint="remove that line if it is the last one written; "
                                     "otherwise restore the state from a backup") from None
                state = replay_entry(state, entry, f"{self.journal}:{i}",
                                     reset_hint="remove .runform/journal.jsonl")
                self._seq = max(self._seq, int(entry.get("seq", 0)))
        if state is not None:
            self._seq = max(self._seq, state.seq)
        return state

    # -------------------------------------------------------------------------- writing
    def append(self, entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self._fd is None:
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
        if not self.journal.exists():
            return
        data = self.journal.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.journal, "r+b") as f:
                f.truncate(cut)

    def compact(self, state: State) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state.seq = max(state.seq, self._seq)
        if self.snapshot.exists():
            os.replace(self.snapshot, self.snapshot.with_suffix(".json.bak"))
        tmp = self.snapshot.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(state.to_json(), f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
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
        return self._lock.acquire(operation, timeout=timeout)

    def unlock(self, lock_id: str) -> None:
        self._lock.release()

    def force_unlock(self, lock_id: str) -> None:
        self._lock.force_unlock(lock_id)

    def lock_info(self) -> LockInfo | None:
        return self._lock.current()


def _factory(url: str, spec_dir: Path, *, lease: float = 30.0) -> LocalStateBackend:
    return LocalStateBackend(spec_dir / ".runform", lease=lease)


@hookimpl
def runform_register_state_backends(register: Any) -> None:
    register("local", _factory)
