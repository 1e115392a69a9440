"""The bytes on one exec channel: stdin sent in slices, output collected or streamed, the
exit status waited for.

``stdin`` may be bytes or a readable binary stream; either is sent in 1 MiB slices through a
memoryview (paramiko's ``sendall`` re-copies the rest of its buffer per 32 KiB packet:
quadratic, 160 KB/s on a 300 MB archive).
"""

from __future__ import annotations

import contextlib
import errno
import io
import select
import threading
import time
from collections.abc import Callable
from typing import IO

import paramiko

from runform.interfaces import CommandResult
from runform.transport.ssh.errors import ConnectionLostError

CHUNK = 1 << 20


def pump(
    channel: paramiko.Channel,
    command: str,
    stdin: bytes | IO[bytes] | None,
    timeout: float | None,
    on_output: Callable[[bytes], None] | None,
    endpoint: str,
) -> CommandResult:
    """Feed ``stdin`` and read the channel until the command ends; its exit code (255 when
    killed by a signal), and stdout/stderr unless ``on_output`` takes the output as it comes."""
    if stdin is not None and stdin != b"":
        threading.Thread(target=feed, args=(channel, stdin), daemon=True).start()
    else:
        channel.shutdown_write()
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        if channel.recv_ready():
            data = channel.recv(CHUNK)
            if on_output:
                on_output(data)
            else:
                out.append(data)
            continue
        if channel.recv_stderr_ready():
            err.append(channel.recv_stderr(CHUNK))
            continue
        # Not exit-status: OpenSSH may send it while output still waits for window space.
        if channel.eof_received or channel.closed:
            break
        # Woken by stdout data, EOF or close; the cap bounds stderr-only latency.
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError(f"`{command}` on {endpoint} timed out after {timeout:g}s")
        select.select([channel], [], [], wait)
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not channel.status_event.wait(left):  # set by exit-status, or by the channel closing
        raise TimeoutError(f"`{command}` on {endpoint} timed out after {timeout:g}s")
    return CommandResult(_status(channel, command, endpoint), b"".join(out), b"".join(err))


def _status(channel: paramiko.Channel, command: str, endpoint: str) -> int:
    status = channel.exit_status
    if status == -1:  # no exit-status: killed by a signal, or the connection died
        transport = channel.get_transport()
        if not (transport.is_active() and transport.saved_exception is None):
            raise ConnectionLostError(
                f"connection to {endpoint} lost while running `{command}`; "
                "it may still be running there or may have been cut short",
                hint="run apply again: runform re-attaches to detached jobs",
            )
        status = 255
    return int(status)


def feed(channel: paramiko.Channel, data: bytes | IO[bytes]) -> None:
    """Send stdin, then EOF (on a thread, so a command that writes much output cannot deadlock).
    A channel closed meanwhile (Ctrl-C, a timeout) ends it quietly."""
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with contextlib.suppress(OSError, EOFError, ValueError, paramiko.SSHException):
        send_stream(channel, src, None)
        channel.shutdown_write()


def send_stream(
    channel: paramiko.Channel, src: IO[bytes], progress: Callable[[int], None] | None
) -> None:
    """Send ``src`` to its end in 1 MiB slices, each through a memoryview, so that every byte
    is copied once (paramiko's ``sendall`` copies the rest of its buffer per packet)."""
    while chunk := src.read(CHUNK):
        view = memoryview(chunk)
        while len(view):
            sent = channel.send(view)
            if sent <= 0:
                raise OSError(errno.EPIPE, "the channel was closed while sending")
            view = view[sent:]
        if progress is not None:
            progress(len(chunk))


def exit_status(channel: paramiko.Channel) -> int:
    """The command's exit status (255: killed, or the connection died), waited for in short
    slices so that Ctrl-C is seen at once."""
    while not channel.status_event.wait(0.2):
        pass
    return 255 if channel.exit_status == -1 else int(channel.exit_status)
