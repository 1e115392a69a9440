"""SSHTransport: runform's :class:`~runform.interfaces.Transport` over paramiko.

- Commands run without a local shell: ``argv`` is quoted with :func:`shlex.join` for the
  remote login shell. ``env`` never lands on a command line: it travels as a 0600 file.
- Files are written atomically: a temporary name created exclusively *with the requested
  mode in the SFTP OPEN request* (there is never a moment with wider permissions), then
  ``posix-rename`` into place. A large file's bytes do not go through SFTP requests (paramiko's
  SFTP writes reach about 0.7x of ``scp``): the temporary file is created over SFTP as above,
  filled by ``cat`` over an exec channel fed in windows of raw bytes (about 0.95x of ``scp``
  on loopback, see docs/BENCHMARKS.md), then renamed over SFTP, so every failure about the
  file keeps its SFTP error mapping. Ctrl-C closes the channel at once and removes the
  temporary file; nothing half-sent ever has the final name.
- ``stdin`` of a command may be bytes or a readable binary stream; either is sent in 1 MiB
  slices through a memoryview (paramiko's ``sendall`` re-copies the rest of its buffer per
  32 KiB packet: quadratic, 160 KB/s on a 300 MB archive).
- The host key is pinned on first use (:mod:`.hostkeys`); a changed key is refused.
- A dropped connection is re-established with backoff (tenacity). Idempotent operations
  (``put_*``, ``get_bytes``, opening a command's channel) are retried; a command that was
  already running when the connection dropped raises :class:`ConnectionLostError`, because
  running it twice could do its work twice.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import re
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import paramiko
import tenacity
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_file import SFTPFile

from runform.errors import HostKeyError, ProviderError
from runform.interfaces import CommandResult
from runform.providers.ssh import hostkeys

T = TypeVar("T")

_CHUNK = 1 << 20
_STREAM_MIN = 4 << 20  # put_file streams files from this size on (smaller: one SFTP write)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Errors about a file, not about the connection: never worth a reconnect.
_FILE_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENOTEMPTY,
        errno.ENOSPC,
        errno.EROFS,
        errno.EINVAL,
    }
)


class ConnectionLostError(ProviderError):
    """The connection dropped while a command ran; the command may or may not have finished."""


class RemoteFileError(ProviderError):
    """A file could not be written to or read from the machine (the connection is fine)."""


class RemoteFileNotFoundError(RemoteFileError, FileNotFoundError):
    """The remote file (or its folder) is not there; still a :class:`FileNotFoundError`."""


class LocalFileError(ProviderError):
    """A local file to send could not be read."""


class SSHTransport:
    """A connection to one machine, opened lazily and re-opened when it drops.

    :param pinned_host_key: the ``"keytype base64"`` key pinned in state; ``None`` pins the
        first key seen (then available as :attr:`host_key` for the caller to store).
    :param on_first_key: called with ``(endpoint, key)`` when a key is accepted on first use
        (no pin), so the caller can pin it where it keeps pins (``ProviderContext.pin``).
    :param retry_timeout: seconds spent reconnecting (exponential backoff) before giving up.
    """

    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str | None = None,
        key_file: str | Path | None = None,
        *,
        pinned_host_key: str | None = None,
        connect_timeout: float = 15.0,
        retry_timeout: float = 30.0,
        keepalive: int = 15,
        log: Callable[[str], None] | None = None,
        on_first_key: Callable[[str, str], None] | None = None,
    ) -> None:
        self.host, self.port, self.user = host, int(port), user
        self.key_file = str(Path(key_file).expanduser()) if key_file else None
        self.host_key: str | None = pinned_host_key
        self.connect_timeout, self.retry_timeout, self.keepalive = (
            connect_timeout,
            retry_timeout,
            keepalive,
        )
        self.connects = 0  # connections established so far (a reconnect adds one)
        self._log = log or (lambda _msg: None)
        self._on_first_key = on_first_key
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()  # guards (re)connecting
        self._active: set[paramiko.Channel] = set()  # open command channels (see abort)
        self._aborts = 0  # how many times abort() ran: a call it cut short is not retried
        self._sftp_lock = threading.RLock()  # one SFTP conversation at a time

    # ------------------------------------------------------------------ connection
    @property
    def endpoint(self) -> str:
        """``host:port``, the key of this machine's host key pin."""
        return hostkeys.endpoint(self.host, self.port)

    def connect(self) -> SSHTransport:
        """Connect now (with retries) instead of on first use; returns ``self``."""
        self._call(self._ssh)
        return self

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def home(self) -> str:
        """The login user's home folder (what ``~`` means there)."""
        return self._call(lambda: self._sftp_client().normalize("."))

    def _ssh(self) -> paramiko.SSHClient:
        with self._lock:
            if self._alive():
                assert self._client is not None
                return self._client
            self._drop()
            client = paramiko.SSHClient()
            policy = hostkeys.pin_client(client, self.host, self.port, self.host_key)
            try:
                client.connect(
                    self.host,
                    self.port,
                    username=self.user,
                    key_filename=self.key_file,
                    look_for_keys=self.key_file is None,
                    allow_agent=self.key_file is None,
                    timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout,
                    auth_timeout=self.connect_timeout,
                    channel_timeout=self.connect_timeout,
                )
            except paramiko.BadHostKeyException as exc:
                client.close()
                assert self.host_key is not None
                presented = hostkeys.key_string(exc.key)
                raise hostkeys.changed_error(
                    self.host, self.port, self.host_key, presented
                ) from None
            except paramiko.AuthenticationException as exc:
                client.close()
                key = f"-i {self.key_file} " if self.key_file else ""
                raise ProviderError(
                    f"ssh {self.user or ''}@{self.endpoint}: authentication failed ({exc})",
                    hint=f"check that `ssh {key}-p {self.port} {self.user or ''}@{self.host} true` "
                    "works: the key file, the user, and the machine's authorized_keys",
                ) from None
            except BaseException:
                client.close()
                raise
            if policy.seen:
                self.host_key = policy.seen  # pinned for every later reconnect of this transport
                if self._on_first_key is not None:
                    self._on_first_key(self.endpoint, policy.seen)
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(self.keepalive)
            self._client = client
            self.connects += 1
            return client

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active() and transport.saved_exception is None)

    def _drop(self) -> None:
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        with contextlib.suppress(Exception):
            if sftp is not None:
                sftp.close()
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()

    def abort(self) -> None:
        """Stop what is under way now, within a fraction of a second (the first Ctrl-C): every
        open command channel is closed (its command sees EOF; its call returns exit status 255
        or fails) and a file being sent stops and removes its temporary file. Calls made
        afterwards work as usual."""
        with self._lock:
            channels = list(self._active)
            self._aborts += 1  # what was under way is not retried (see _call)
        for channel in channels:
            with contextlib.suppress(Exception):
                channel.close()

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the connection failing (worth a reconnect) rather than the request."""
        if isinstance(
            exc,
            (
                HostKeyError,
                ProviderError,
                paramiko.AuthenticationException,
                paramiko.BadHostKeyException,
                socket.gaierror,
            ),
        ):
            return False
        if isinstance(exc, (EOFError, paramiko.SSHException, ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, OSError):
            return exc.errno not in _FILE_ERRNOS and not self._alive()
        return False

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` (an operation safe to repeat), reconnecting with backoff while the
        connection fails; a machine that stays unreachable becomes a :class:`ProviderError`."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self._log(f"ssh {self.endpoint}: {type(exc).__name__}: {exc}; reconnecting")
            with self._lock:
                self._drop()

        aborts = self._aborts  # an abort during the call ends it: its failure is not retried

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: self._aborts == aborts and self._transient(e)),
            stop=tenacity.stop_after_delay(self.retry_timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=3.0),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn, *args)
        except Exception as exc:
            if self._aborts != aborts:
                raise OSError(errno.EINTR, "stopped (Ctrl-C)") from exc
            if not self._transient(exc) and not isinstance(exc, socket.gaierror):
                raise
            with self._lock:
                self._drop()
            key = f"-i {self.key_file} " if self.key_file else ""
            raise ProviderError(
                f"ssh {self.user or ''}@{self.endpoint}: unreachable after {self.retry_timeout:g}s "
                f"({type(exc).__name__}: {exc})",
                hint=f"check that the machine is up and `ssh {key}-p {self.port} "
                f"{self.user or ''}@{self.host} true` works",
            ) from exc

    # ------------------------------------------------------------------ commands
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
            return self._pump(channel, command, stdin, timeout, on_output)
        finally:
            channel.close()
            with self._lock:
                self._active.discard(channel)

    def _with_env(self, argv: list[str], env: Mapping[str, str]) -> str:
        """Upload ``env`` as a 0600 file the command sources and removes before it starts."""
        bad = [k for k in env if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"run: invalid environment variable names {bad}")
        body = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
        name = f".runform-env-{uuid.uuid4().hex}"  # relative: the login folder, as for the command
        self.put_bytes(body.encode(), name, mode=0o600)
        return shlex.join(["sh", "-c", '. "./$0" && rm -f "./$0" && exec "$@"', name, *argv])

    def _open_channel(self, command: str, combine: bool) -> paramiko.Channel:
        transport = self._ssh().get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.connect_timeout)
        try:
            channel.set_combine_stderr(combine)
            channel.exec_command(command)
        except BaseException:
            channel.close()
            raise
        with self._lock:
            self._active.add(channel)
        return channel

    def _pump(
        self,
        channel: paramiko.Channel,
        command: str,
        stdin: bytes | IO[bytes] | None,
        timeout: float | None,
        on_output: Callable[[bytes], None] | None,
    ) -> CommandResult:
        if stdin is not None and stdin != b"":
            threading.Thread(target=_feed, args=(channel, stdin), daemon=True).start()
        else:
            channel.shutdown_write()
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            if channel.recv_ready():
                data = channel.recv(_CHUNK)
                if on_output:
                    on_output(data)
                else:
                    out.append(data)
                continue
            if channel.recv_stderr_ready():
                err.append(channel.recv_stderr(_CHUNK))
                continue
            # Not exit-status: OpenSSH may send it while output still waits for window space.
            if channel.eof_received or channel.closed:
                break
            # Woken by stdout data, EOF or close; the cap bounds stderr-only latency.
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"`{command}` on {self.endpoint} timed out after {timeout:g}s")
            select.select([channel], [], [], wait)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not channel.status_event.wait(left):  # set by exit-status, or by the channel closing
            raise TimeoutError(f"`{command}` on {self.endpoint} timed out after {timeout:g}s")
        status = channel.exit_status
        if status == -1:  # no exit-status: killed by a signal, or the connection died
            transport = channel.get_transport()
            if not (transport.is_active() and transport.saved_exception is None):
                raise ConnectionLostError(
                    f"connection to {self.endpoint} lost while running `{command}`; "
                    "it may still be running there or may have been cut short",
                    hint="run apply again: runform re-attaches to detached jobs",
                )
            status = 255
        return CommandResult(status, b"".join(out), b"".join(err))

    # ------------------------------------------------------------------ files
    # Failures about the file, not the connection, become a RemoteFileError naming it and the
    # fix (a dropped connection is retried, then an "unreachable" ProviderError, in _call).
    def put_bytes(self, data: bytes, remote_path: str, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` atomically, created with ``mode`` from the start."""
        try:
            self._call(self._put, io.BytesIO(data), remote_path, mode)
        except OSError as exc:
            raise self._file_error(exc, "writing", remote_path) from None

    def put_file(
        self,
        local_path: Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy a local file to ``remote_path`` atomically, created with ``mode`` from the start.

        ``progress`` is called with the number of bytes just sent (for bytes, rate and ETA);
        a retry after a dropped connection starts the file again and reports from zero."""
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below, after the retries
        except OSError as exc:
            raise LocalFileError(
                f"cannot read {local_path} to send it to {self.endpoint}: "
                f"{exc.strerror or exc}",
                hint="check that the file exists and is readable, then run the command again",
            ) from None
        try:
            with src:
                size = os.fstat(src.fileno()).st_size
                put = self._put_stream if size >= _STREAM_MIN else self._put
                self._call(put, src, remote_path, mode, progress)
        except OSError as exc:
            raise self._file_error(exc, f"copying {local_path} to", remote_path) from None

    def get_bytes(self, remote_path: str) -> bytes:
        """Read a remote file (:class:`RemoteFileNotFoundError`, a :class:`FileNotFoundError`,
        when it is not there)."""

        def get() -> bytes:
            with self._sftp_lock, self._sftp_client().open(remote_path, "rb") as f:
                f.prefetch()
                return f.read()

        try:
            return self._call(get)
        except OSError as exc:
            raise self._file_error(exc, "reading", remote_path) from None

    def _file_error(self, exc: OSError, doing: str, remote_path: str) -> RemoteFileError:
        """``exc`` (paramiko's SFTP status as an OSError) as runform's error, with the fix."""
        if isinstance(exc, RemoteFileError):
            return exc
        where = f"{doing} {remote_path} on {self.endpoint} failed"
        login = f"ssh {'-i ' + self.key_file + ' ' if self.key_file else ''}-p {self.port} " + (
            f"{self.user}@{self.host}" if self.user else self.host
        )
        folder = posixpath.dirname(remote_path) or "."
        if exc.errno == errno.ENOENT:
            return RemoteFileNotFoundError(
                f"{where}: no such file or folder",
                hint="run the command again (apply makes the run's folders); if it fails again, "
                f"check the path with `{login} ls -ld {folder}`",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RemoteFileError(
                f"{where}: permission denied",
                hint=f"check that {self.user or 'the login user'} may "
                f"{'read it' if doing == 'reading' else 'write to ' + folder}: "
                f"`{login} ls -ld {folder}`",
            )
        reason = exc.strerror or str(exc) or type(exc).__name__
        # SFTP servers report most write failures (a full disk, a quota, a folder in the way)
        # as a bare "Failure" without a reason
        return RemoteFileError(
            f"{where}: {reason}",
            hint="the server gave no more reason; the usual ones are a full disk or quota "
            f"(`{login} df -h {folder}`) or a folder where the file should be",
        )

    def open_new(self, remote_path: str, mode: int) -> SFTPFile:
        """Create ``remote_path`` exclusively (it must not exist) with permissions ``mode`` set
        in the SFTP OPEN request itself, and return it open for writing.

        paramiko's ``SFTPClient.open`` cannot pass permissions (the file would start as 0666
        minus the server's umask), so this sends the same OPEN request with them.
        """
        with self._sftp_lock:
            sftp = self._sftp_client()
            attrs = SFTPAttributes()
            attrs.st_mode = mode & 0o7777
            flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
            # the OPEN request SFTPClient.open() sends, plus the permissions
            kind, msg = sftp._request(CMD_OPEN, remote_path, flags, attrs)
            if kind != CMD_HANDLE:
                raise OSError(f"sftp open {remote_path}: expected a handle")
            return SFTPFile(sftp, msg.get_binary(), "wb")

    def _put(
        self,
        src: IO[bytes],
        remote_path: str,
        mode: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        src.seek(0)
        tmp = _temp_name(remote_path)
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                with self.open_new(tmp, mode) as f:
                    f.set_pipelined(True)
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        f.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    f.chmod(mode)  # exactly ``mode``, whatever the server's umask took away
                sftp.posix_rename(tmp, remote_path)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise

    def _put_stream(
        self,
        src: IO[bytes],
        remote_path: str,
        mode: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Like :meth:`_put`, but the bytes go through ``cat`` on an exec channel (see the
        module docs): created and renamed over SFTP, filled at the channel's line rate."""
        src.seek(0)
        tmp = _temp_name(remote_path)
        with self._sftp_lock:
            self.open_new(tmp, mode).close()  # exclusive, with ``mode``: errors mapped as for _put
        try:
            command = shlex.join(["sh", "-c", 'cat > "$1"', "sh", tmp])
            channel = self._open_channel(command, False)
            try:
                _send_stream(channel, src, progress)
                if channel.closed:
                    raise OSError(errno.EINTR, "interrupted")
                channel.shutdown_write()
                status = _exit_status(channel)
                if status != 0:
                    err = channel.recv_stderr(1 << 16).decode(errors="replace").strip()
                    raise OSError(errno.EIO, err or f"cat exited with {status}")
            finally:
                channel.close()
                with self._lock:
                    self._active.discard(channel)
            with self._sftp_lock:
                sftp = self._sftp_client()
                sftp.chmod(tmp, mode)  # exactly ``mode``, whatever the server's umask took away
                sftp.posix_rename(tmp, remote_path)
        except BaseException:
            with contextlib.suppress(Exception), self._sftp_lock:
                self._sftp_client().remove(tmp)
            raise

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._sftp_lock:
            if self._sftp is None or self._sftp.get_channel().closed or not self._alive():
                client = self._ssh()
                self._sftp = client.open_sftp()
            return self._sftp


def _temp_name(remote_path: str) -> str:
    """A hidden name beside ``remote_path`` that a file is written under before its rename."""
    folder, name = posixpath.split(remote_path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _feed(channel: paramiko.Channel, data: bytes | IO[bytes]) -> None:
    """Send stdin, then EOF (on a thread, so a command that writes much output cannot deadlock).
    A channel closed meanwhile (Ctrl-C, a timeout) ends it quietly."""
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with contextlib.suppress(OSError, EOFError, ValueError, paramiko.SSHException):
        _send_stream(channel, src, None)
        channel.shutdown_write()


def _send_stream(
    channel: paramiko.Channel, src: IO[bytes], progress: Callable[[int], None] | None
) -> None:
    """Send ``src`` to its end in 1 MiB slices, each through a memoryview, so that every byte
    is copied once (paramiko's ``sendall`` copies the rest of its buffer per packet)."""
    while chunk := src.read(_CHUNK):
        view = memoryview(chunk)
        while len(view):
            sent = channel.send(view)
            if sent <= 0:
                raise OSError(errno.EPIPE, "the channel was closed while sending")
            view = view[sent:]
        if progress is not None:
            progress(len(chunk))


def _exit_status(channel: paramiko.Channel) -> int:
    """The command's exit status (255: killed, or the connection died), waited for in short
    slices so that Ctrl-C is seen at once."""
    while not channel.status_event.wait(0.2):
        pass
    return 255 if channel.exit_status == -1 else int(channel.exit_status)
