"""Commands over the SSH connection: ``run`` and ``run_stream``.

Commands run without a local shell: ``argv`` is quoted with :func:`shlex.join` for the remote
login shell. ``env`` never lands on a command line: it travels as a 0600 file the command
sources and removes before it starts.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Callable, Mapping
from typing import IO

from runform.interfaces import CommandResult
from runform.transport.ssh.channels import pump
from runform.transport.ssh.files import FileTransfer

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class Commands(FileTransfer):
    """``run`` and ``run_stream`` (an ``env`` is sent as a file, hence on top of the files)."""

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the machine and return its exit code, stdout and stderr.

        A command killed by a signal reports 255 (as ``ssh`` does). Past ``timeout`` the
        channel is closed and :class:`TimeoutError` raised.
        """
        return self._exec(argv, stdin=stdin, env=env, timeout=timeout, on_output=None)

    def run_stream(
        self,
        argv: list[str],
        on_output: Callable[[bytes], None],
        *,
        stdin: bytes | IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Like :meth:`run`, but hands stdout and stderr (merged) to ``on_output`` as they
        arrive instead of collecting them; the result carries only the exit code."""
        return self._exec(argv, stdin=stdin, env=env, timeout=timeout, on_output=on_output)

    def _exec(
        self,
        argv: list[str],
        *,
        stdin: bytes | IO[bytes] | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
        on_output: Callable[[bytes], None] | None,
    ) -> CommandResult:
        if not argv:
            raise ValueError("run: empty argv")
        command = self._with_env(argv, env) if env else shlex.join(argv)
        channel = self._call(self._open_channel, command, on_output is not None)
        try:
            return pump(channel, command, stdin, timeout, on_output, self.endpoint)
        finally:
            self._close_channel(channel)

    def _with_env(self, argv: list[str], env: Mapping[str, str]) -> str:
        """Upload ``env`` as a 0600 file the command sources and removes before it starts."""
        bad = [k for k in env if not ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"run: invalid environment variable names {bad}")
        body = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
        name = f".runform-env-{uuid.uuid4().hex}"  # relative: the login folder, as for the command
        self.put_bytes(body.encode(), name, mode=0o600)
        return shlex.join(["sh", "-c", '. "./$0" && rm -f "./$0" && exec "$@"', name, *argv])
