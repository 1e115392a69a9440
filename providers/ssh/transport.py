"""The SSH transport now lives in the core, :mod:`runform.transport.ssh`, shared by the ``ssh``
and ``vast`` providers. This module keeps the old import path working for third parties."""

from runform.transport.ssh import (
    ConnectionLostError,
    LocalFileError,
    RemoteFileError,
    RemoteFileNotFoundError,
    SSHTransport,
)

__all__ = [
    "ConnectionLostError",
    "LocalFileError",
    "RemoteFileError",
    "RemoteFileNotFoundError",
    "SSHTransport",
]
