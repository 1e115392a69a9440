"""runform's SSH transport (paramiko): commands, files and host-key pinning over one connection.

Modules, each named for what it does:

- :mod:`.transport`: :class:`SSHTransport`, the public class (what providers import);
- :mod:`.connection`: connecting, the host-key pin, reconnecting with backoff, ``abort``;
- :mod:`.commands`: running a command (``run``, ``run_stream``), its env as a 0600 file;
- :mod:`.channels`: the bytes on an exec channel: stdin in slices, output, the exit status;
- :mod:`.files`: ``put_bytes``/``put_file``/``get_bytes``: atomic writes with the mode set at
  creation, the fast ``cat``-over-exec path for large files, temp files removed on abort;
- :mod:`.errors`: runform's errors for a lost connection and for a file, with the fix;
- :mod:`.hostkeys`: trust on first use, a changed key refused.

Importing this package imports paramiko: providers import it when they first connect.
"""

from runform.transport.ssh.errors import (
    ConnectionLostError,
    LocalFileError,
    RemoteFileError,
    RemoteFileNotFoundError,
)
from runform.transport.ssh.transport import SSHTransport

__all__ = [
    "ConnectionLostError",
    "LocalFileError",
    "RemoteFileError",
    "RemoteFileNotFoundError",
    "SSHTransport",
]
