"""Reaching an instance over SSH: the readiness probe and the transport for ``connect``.

The SSH transport is the core's (:mod:`runform.transport.ssh`, paramiko, shared with the ``ssh``
provider); it is imported only here and only when used. Without paramiko the probe falls back
to "the SSH port answers with an SSH banner".
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from runform.errors import HostKeyError
from runform.providers.vast.config import DEFAULT_ROOT
from runform.providers.vast.onstart import SENTINEL

if TYPE_CHECKING:
    from runform.transport.ssh import SSHTransport


def endpoint(a: Mapping[str, Any]) -> str:
    """``host:port`` of an instance's SSH endpoint (from its attrs): where its host key is pinned
    (the same key the ssh provider uses)."""
    host, port = str(a.get("ssh_host")), int(a.get("ssh_port") or 22)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_transport(a: Mapping[str, Any], *, pinned: str | None, retry_timeout: float,
                   log: Callable[[str], None] | None = None,
                   on_first_key: Callable[[str, str], None] | None = None) -> SSHTransport:
    """An ``SSHTransport`` to the instance described by ``a`` (ssh_host, ssh_port, ssh_user,
    key_file)."""
    from runform.transport.ssh import SSHTransport  # paramiko only when used

    return SSHTransport(str(a["ssh_host"]), int(a["ssh_port"]), a.get("ssh_user") or "root", a.get("key_file"),
                        pinned_host_key=pinned, retry_timeout=retry_timeout,
                        connect_timeout=min(15.0, retry_timeout or 10.0), log=log, on_first_key=on_first_key)


def ssh_banner(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether ``host:port`` accepts a connection and speaks SSH (an ``SSH-`` banner)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def probe(a: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(ready, host key seen): an SSH session with the instance's key finds the onstart
    sentinel ``<root>/.runform/vast/onstart.done``. One quick try; the caller polls.

    A changed host key (HostKeyError) is raised; any other failure (keys not there yet, sshd
    restarting) is "not ready". Without the SSH transport: the banner check, no host key.
    """
    host, port = a.get("ssh_host"), a.get("ssh_port")
    if not host or not port:
        return False, None
    try:
        import runform.transport.ssh  # noqa: F401 - paramiko there?
    except ImportError:
        return ssh_banner(str(host), int(port)), None
    transport = None
    try:
        transport = open_transport(a, pinned=a.get("host_key"), retry_timeout=0.0)
        ok = transport.run(["test", "-e", f"{a.get('root') or DEFAULT_ROOT}/{SENTINEL}"], timeout=30).ok
        return ok, getattr(transport, "host_key", None) if ok else None
    except HostKeyError:
        raise
    except Exception:
        return False, None
    finally:
        if transport is not None:
            try:
                transport.close()
            except Exception:
                pass
