"""SSHTransport: runform's :class:`~runform.interfaces.Transport` over paramiko.

- Commands run without a local shell; ``env`` travels as a 0600 file (:mod:`.commands`).
- Files are written atomically, created with their mode; large files go through ``cat`` over
  an exec channel (:mod:`.files`). ``stdin`` and large files are sent in 1 MiB slices
  (:mod:`.channels`).
- The host key is pinned on first use (:mod:`.hostkeys`); a changed key is refused.
- A dropped connection is re-established with backoff; idempotent operations are retried, a
  command cut off by a dropped connection raises :class:`ConnectionLostError`
  (:mod:`.connection`). Errors about a file name it and the fix (:mod:`.errors`).
"""

from __future__ import annotations

from runform.transport.ssh.commands import Commands


class SSHTransport(Commands):
    """A connection to one machine, opened lazily and re-opened when it drops.

    :param pinned_host_key: the ``"keytype base64"`` key pinned in state; ``None`` pins the
        first key seen (then available as :attr:`host_key` for the caller to store).
    :param on_first_key: called with ``(endpoint, key)`` when a key is accepted on first use
        (no pin), so the caller can pin it where it keeps pins (``ProviderContext.pin``).
    :param retry_timeout: seconds spent reconnecting (exponential backoff) before giving up.

    Also: ``connect_timeout`` (each connection and channel), ``keepalive`` (seconds), ``log``
    (called with a line on each reconnect).
    """

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
