"""Lease locks for the local state: lock info as Terraform has it, plus a lease and a heartbeat.

A holder renews its lease every third of the lease time. A lock whose lease lapsed, or whose
holder's process is gone (same host), is taken over. ``force-unlock ID`` removes a lock by ID.
All reads and writes of the lock file happen under an ``flock`` on a guard file, which the
kernel frees when a holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from runform.atomic import atomic_write
from runform.errors import LockError, StateError


@attrs.frozen
class LockInfo:
    id: str
    operation: str
    who: str
    version: str
    created: str
    path: str
    pid: int
    host: str
    expires: float

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id, "Operation": self.operation, "Who": self.who, "Version": self.version,
            "Created": self.created, "Path": self.path, "pid": self.pid, "host": self.host,
            "expires": self.expires,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LockInfo:
        return cls(id=raw["ID"], operation=raw["Operation"], who=raw["Who"], version=raw.get("Version", "?"),
                   created=raw["Created"], path=raw.get("Path", ""), pid=int(raw.get("pid", 0)),
                   host=raw.get("host", ""), expires=float(raw.get("expires", 0)))

    def describe(self) -> str:
        return (
            "Lock Info:\n"
            f"  ID:        {self.id}\n"
            f"  Path:      {self.path}\n"
            f"  Operation: {self.operation}\n"
            f"  Who:       {self.who}\n"
            f"  Version:   {self.version}\n"
            f"  Created:   {self.created}"
        )

    def lapsed(self, now: float | None = None) -> bool:
        if (now or time.time()) > self.expires:
            return True
        if self.host == socket.gethostname() and self.pid and not _alive(self.pid):
            return True
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class FileLock:
    """The local backend's lock: ``lock.json`` guarded by ``lock.guard``."""

    def __init__(self, folder: Path, lease: float = 30.0) -> None:
        self.folder = folder
        self.file = folder / "lock.json"
        self.guard = folder / "lock.guard"
        self.lease = lease
        self._held: LockInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> LockInfo | None:
        try:
            raw = json.loads(self.file.read_text())
            return LockInfo.from_json(raw)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise StateError(f"{self.file}: unreadable lock file ({type(exc).__name__})",
                             hint=f"remove {self.file} if no runform is running") from None

    def _write(self, info: LockInfo) -> None:
        atomic_write(self.file, json.dumps(info.to_json()), parents=False)

    def current(self) -> LockInfo | None:
        with self._guarded():
            return self._read()

    def acquire(self, operation: str, *, timeout: float = 0.0) -> LockInfo:
        from runform.version import __version__

        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.05
        while True:
            with self._guarded():
                held = self._read()
                if held is None or held.lapsed():
                    info = LockInfo(
                        id=str(uuid.uuid4()), operation=operation,
                        who=f"{_user()}@{socket.gethostname()}", version=__version__,
                        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                        path=str(self.folder), pid=os.getpid(), host=socket.gethostname(),
                        expires=time.time() + self.lease,
                    )
                    self._write(info)
                    self._held = info
                    self._start_heartbeat()
                    return info
            if time.monotonic() >= deadline:
                raise LockError(
                    "Error acquiring the state lock: the state is locked by "
                    f"{held.who} (pid {held.pid}) for {held.operation}\n{held.describe()}",
                    hint="wait for that operation to finish (or pass --lock-timeout 60s); if its holder "
                    f"is gone for good: runform force-unlock {held.id}",
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def check(self) -> None:
        """The fence before every journal write: the lock is still ours. A holder that was
        paused past its lease, and whose lock another process then took, must not write."""
        if self._held is None:
            return  # not holding (read-only use): nothing to fence
        with self._guarded():
            held = self._read()
            if held is None or held.id != self._held.id:
                self._stop.set()
                who = f"{held.who} (pid {held.pid}) for {held.operation}" if held else "nobody (removed)"
                raise LockError(
                    f"the state lock was lost while this operation ran: it is now held by {who}; "
                    "nothing more is written",
                    hint="this process was paused past the lock's lease; run `runform plan` to see "
                    "where the state stands",
                )
            if held.expires - time.time() < self.lease / 2:  # renew here too (the heartbeat may lag)
                self._held = attrs.evolve(self._held, expires=time.time() + self.lease)
                self._write(self._held)

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.lease / 3):
                with self._guarded():
                    held = self._read()
                    if not self._held or not held or held.id != self._held.id:
                        return
                    self._held = attrs.evolve(self._held, expires=time.time() + self.lease)
                    self._write(self._held)

        self._thread = threading.Thread(target=beat, name="runform-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if not self._held:
            return
        with self._guarded():
            held = self._read()
            if held and held.id == self._held.id:
                self.file.unlink(missing_ok=True)
        self._held = None

    def force_unlock(self, lock_id: str) -> None:
        with self._guarded():
            held = self._read()
            if held is None:
                raise LockError("the state is not locked", hint="nothing to unlock")
            if held.id != lock_id:
                raise LockError(f"lock ID {lock_id!r} does not match the current lock\n{held.describe()}",
                                hint=f"pass the ID shown above: runform force-unlock {held.id}")
            self.file.unlink(missing_ok=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())
