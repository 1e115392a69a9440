"""The local provider (the embedded default): the machine is a folder under ``.runform/machines/``.

Commands run through a subprocess transport, and runform's agent is called in-process: the same
agent code that runs on remote machines, without a process per call.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runform.hookspecs import hookimpl
from runform.interfaces import CommandResult, InstanceInfo, InstanceRequest, Machine, ProviderContext


class LocalTransport:
    """Transport on this machine: subprocess and file copies. The agent's calls run in-process
    (:meth:`in_process_call`); :meth:`abort` (the first Ctrl-C) tells those under way to stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[threading.Event] = set()

    @contextlib.contextmanager
    def in_process_call(self) -> Iterator[threading.Event]:
        """The stop event of one in-process agent call, set by :meth:`abort` while it runs."""
        stop = threading.Event()
        with self._lock:
            self._calls.add(stop)
        try:
            yield stop
        finally:
            with self._lock:
                self._calls.discard(stop)

    def abort(self) -> None:
        """Stop what is under way now: every in-process agent call that can stop (a push, a
        hydration from presigned URLs) does, within a fraction of a second. Calls made
        afterwards work as usual."""
        with self._lock:
            for stop in self._calls:
                stop.set()

    def run(self, argv: list[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None) -> CommandResult:
        full_env = {**os.environ, **(env or {})}
        try:
            data = stdin if stdin is None or isinstance(stdin, bytes) else stdin.read()  # a stream
            p = subprocess.run(argv, input=data, capture_output=True, env=full_env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:  # the Transport contract: TimeoutError
            raise TimeoutError(f"`{shlex.join(argv)}` timed out after {timeout:g}s") from exc
        return CommandResult(p.returncode, p.stdout, p.stderr)

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(remote_path), exist_ok=True)
        tmp = f"{remote_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # mode from the start
        try:
            os.fchmod(fd, mode)  # umask must not widen or narrow it
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, remote_path)

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(remote_path), exist_ok=True)
        tmp = f"{remote_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        shutil.copyfile(local_path, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, remote_path)

    def get_bytes(self, remote_path: str) -> bytes:
        return Path(remote_path).read_bytes()

    def close(self) -> None:
        pass


class LocalProvider:
    name = "local"

    def _root(self, label: str, ctx: ProviderContext) -> Path:
        from runform.rootpath import check_name

        # the label comes from the state (untrusted): one plain folder name under machines/
        return ctx.state_dir / "machines" / check_name(label, what="machine label")

    def find(self, labels: Iterable[str], ctx: ProviderContext) -> dict[str, InstanceInfo]:
        out = {}
        for label in labels:
            root = self._root(label, ctx)
            if (root / ".runform" / "claim").is_file():
                out[label] = InstanceInfo(id=label, label=label, status="running", attrs={"root": str(root)})
        return out

    def create(self, request: InstanceRequest, ctx: ProviderContext) -> InstanceInfo:
        root = self._root(request.label, ctx)
        (root / ".runform").mkdir(parents=True, exist_ok=True)
        (root / ".runform" / "claim").write_text(request.label)
        return InstanceInfo(id=request.label, label=request.label, status="running", attrs={"root": str(root)})

    def destroy(self, instance: InstanceInfo, ctx: ProviderContext) -> None:
        root = self._root(instance.label, ctx)
        if root.exists():
            # move aside first so a crash mid-delete never leaves a half machine that looks alive
            trash = root.with_name(root.name + ".deleting")
            if trash.exists():
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(root, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def connect(self, instance: InstanceInfo, ctx: ProviderContext) -> Machine:
        return Machine(transport=LocalTransport(), root=str(self._root(instance.label, ctx)),
                       python=sys.executable, local=True)

    def replace_reason(self, instance: InstanceInfo, compute: Mapping[str, Any]) -> str | None:
        return None


@hookimpl
def runform_register_providers(register: Any) -> None:
    register("local", LocalProvider)
