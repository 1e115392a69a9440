"""Files over the SSH connection: written atomically, created with their mode, read back.

A file is written under a temporary name created exclusively *with the requested mode in the
SFTP OPEN request* (there is never a moment with wider permissions), then ``posix-rename``\\ d
into place. A large file's bytes do not go through SFTP requests (paramiko's SFTP writes reach
about 0.7x of ``scp``): the temporary file is created over SFTP as above, filled by ``cat`` over
an exec channel fed in windows of raw bytes (about 0.95x of ``scp`` on loopback, see
docs/BENCHMARKS.md), then renamed over SFTP, so every failure about the file keeps its SFTP
error mapping. Ctrl-C (:meth:`~.connection.Connection.abort`) closes the channel at once and
removes the temporary file; nothing half-sent ever has the final name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import shlex
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_file import SFTPFile

from runform.transport.ssh.channels import CHUNK, exit_status, send_stream
from runform.transport.ssh.connection import Connection
from runform.transport.ssh.errors import LocalFileError, RemoteFileError, file_error

STREAM_MIN = 4 << 20  # put_file streams files from this size on (smaller: one SFTP write)


def temp_name(remote_path: str) -> str:
    """A hidden name beside ``remote_path`` that a file is written under before its rename."""
    folder, name = posixpath.split(remote_path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


class FileTransfer(Connection):
    """``put_bytes``, ``put_file``, ``get_bytes`` and ``open_new`` over the connection.

    Failures about the file, not the connection, become a RemoteFileError naming it and the
    fix (a dropped connection is retried, then an "unreachable" ProviderError, in ``_call``).
    """

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
                put = self._put_stream if size >= STREAM_MIN else self._put
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

    def file_sizes(self, remote_folder: str) -> dict[str, int]:
        """name -> size of the regular files in ``remote_folder`` ({} when it is not there), over
        SFTP: no command, no login shell started (``runform.partials`` asks it before each sync
        with large files)."""

        def sizes() -> dict[str, int]:
            with self._sftp_lock:
                try:
                    listed = self._sftp_client().listdir_attr(remote_folder)
                except FileNotFoundError:
                    return {}
            return {a.filename: int(a.st_size or 0) for a in listed
                    if a.st_mode is not None and stat.S_ISREG(a.st_mode)}

        try:
            return self._call(sizes)
        except OSError as exc:
            raise self._file_error(exc, "listing", remote_folder) from None

    def _file_error(self, exc: OSError, doing: str, remote_path: str) -> RemoteFileError:
        return file_error(
            exc, doing, remote_path, endpoint=self.endpoint, login=self._login(), user=self.user
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
        tmp = temp_name(remote_path)
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                with self.open_new(tmp, mode) as f:
                    f.set_pipelined(True)
                    for chunk in iter(lambda: src.read(CHUNK), b""):
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
        tmp = temp_name(remote_path)
        with self._sftp_lock:
            self.open_new(tmp, mode).close()  # exclusive, with ``mode``: errors mapped as for _put
        try:
            self._cat_into(tmp, src, progress)
            with self._sftp_lock:
                sftp = self._sftp_client()
                sftp.chmod(tmp, mode)  # exactly ``mode``, whatever the server's umask took away
                sftp.posix_rename(tmp, remote_path)
        except BaseException:
            with contextlib.suppress(Exception), self._sftp_lock:
                self._sftp_client().remove(tmp)
            raise

    def _cat_into(self, tmp: str, src: IO[bytes], progress: Callable[[int], None] | None) -> None:
        """Fill the (existing) file ``tmp`` with ``src`` through ``cat`` on an exec channel."""
        command = shlex.join(["sh", "-c", 'cat > "$1"', "sh", tmp])
        channel = self._open_channel(command, False)
        try:
            send_stream(channel, src, progress)
            if channel.closed:
                raise OSError(errno.EINTR, "interrupted")
            channel.shutdown_write()
            status = exit_status(channel)
            if status != 0:
                err = channel.recv_stderr(1 << 16).decode(errors="replace").strip()
                raise OSError(errno.EIO, err or f"cat exited with {status}")
        finally:
            self._close_channel(channel)
