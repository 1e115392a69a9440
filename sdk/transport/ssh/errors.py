"""The SSH transport's errors, and which failures are worth a reconnect.

A failure about the connection is retried (then becomes an "unreachable"
:class:`~runform.errors.ProviderError`, see :mod:`.connection`); a failure about a file becomes
a :class:`RemoteFileError` naming the file and the fix (:func:`file_error`).
"""

from __future__ import annotations

import errno
import posixpath
import socket
from collections.abc import Callable

import paramiko

from runform.errors import HostKeyError, ProviderError

# Errors about a file, not about the connection: never worth a reconnect.
FILE_ERRNOS = frozenset(
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


def is_transient(exc: BaseException, alive: Callable[[], bool]) -> bool:
    """Whether ``exc`` is the connection failing (worth a reconnect) rather than the request;
    ``alive`` tells whether the connection still stands (an OSError on a live one is the file's)."""
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
        return exc.errno not in FILE_ERRNOS and not alive()
    return False


def file_error(
    exc: OSError, doing: str, remote_path: str, *, endpoint: str, login: str, user: str | None
) -> RemoteFileError:
    """``exc`` (paramiko's SFTP status as an OSError) as runform's error, with the fix.
    ``login`` is the ``ssh ...`` command line that reaches the machine (for the hints)."""
    if isinstance(exc, RemoteFileError):
        return exc
    where = f"{doing} {remote_path} on {endpoint} failed"
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
            hint=f"check that {user or 'the login user'} may "
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
