"""One SSH connection to a machine: opened lazily, the host key pinned, re-opened when it drops.

- The host key is pinned on first use (:mod:`.hostkeys`); a changed key is refused.
- A dropped connection is re-established with backoff (tenacity). Idempotent operations
  (``put_*``, ``get_bytes``, opening a command's channel) are retried (:meth:`Connection._call`);
  a command that was already running when the connection dropped raises
  :class:`~.errors.ConnectionLostError`, because running it twice could do its work twice.
- :meth:`Connection.abort` (the first Ctrl-C) closes every open command channel at once; what
  it cut short is not retried.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import paramiko
import tenacity

from runform.errors import ProviderError
from runform.transport.ssh import hostkeys
from runform.transport.ssh.errors import is_transient

T = TypeVar("T")


class Connection:
    """The connection machinery under :class:`~runform.transport.ssh.SSHTransport` (see there
    for the parameters)."""

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

    @property
    def endpoint(self) -> str:
        """``host:port``, the key of this machine's host key pin."""
        return hostkeys.endpoint(self.host, self.port)

    def _login(self) -> str:
        """The ``ssh`` command line that reaches the machine (for hints)."""
        key = f"-i {self.key_file} " if self.key_file else ""
        return f"ssh {key}-p {self.port} " + (f"{self.user}@{self.host}" if self.user else self.host)

    def _ssh(self) -> paramiko.SSHClient:
        with self._lock:
            if self._alive():
                assert self._client is not None
                return self._client
            self._drop()
            client = paramiko.SSHClient()
            policy = hostkeys.pin_client(client, self.host, self.port, self.host_key)
            self._open(client)
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

    def _open(self, client: paramiko.SSHClient) -> None:
        """Connect ``client``; a changed host key or refused login becomes runform's error."""
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
            raise hostkeys.changed_error(self.host, self.port, self.host_key, presented) from None
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
        return is_transient(exc, self._alive)

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
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> ProviderError:
        key = f"-i {self.key_file} " if self.key_file else ""
        return ProviderError(
            f"ssh {self.user or ''}@{self.endpoint}: unreachable after {self.retry_timeout:g}s "
            f"({type(exc).__name__}: {exc})",
            hint=f"check that the machine is up and `ssh {key}-p {self.port} "
            f"{self.user or ''}@{self.host} true` works",
        )

    def _open_channel(self, command: str, combine: bool) -> paramiko.Channel:
        """An exec channel running ``command``, registered for :meth:`abort`."""
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

    def _close_channel(self, channel: paramiko.Channel) -> None:
        channel.close()
        with self._lock:
            self._active.discard(channel)

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._sftp_lock:
            if self._sftp is None or self._sftp.get_channel().closed or not self._alive():
                client = self._ssh()
                self._sftp = client.open_sftp()
            return self._sftp
