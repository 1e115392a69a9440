"""Host key pinning: trust on first use, refuse a changed key with the fix spelled out.

A pin is the OpenSSH ``known_hosts`` form of a public key, ``"<keytype> <base64>"``
(e.g. ``"ssh-ed25519 AAAAC3Nz..."``), stored in runform's state under ``"host:port"``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import paramiko

from runform.errors import HostKeyError


def endpoint(host: str, port: int) -> str:
    """The key under which a machine's host key is pinned: ``host:port`` (``[v6]:port``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def key_string(key: paramiko.PKey) -> str:
    """``"<keytype> <base64>"`` for a paramiko public key."""
    return f"{key.get_name()} {key.get_base64()}"


def fingerprint(pin: str) -> str:
    """OpenSSH's ``SHA256:<base64, unpadded>`` fingerprint of a ``"keytype base64"`` key."""
    blob = base64.b64decode(pin.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse(pin: str) -> paramiko.PKey:
    """The paramiko key for a ``"keytype base64"`` pin."""
    keytype, b64 = pin.split()[:2]
    return paramiko.PKey.from_type_string(keytype, base64.b64decode(b64))


def changed_error(host: str, port: int, pinned: str, presented: str) -> HostKeyError:
    """The error for a host whose key differs from its pin: where, both fingerprints, the fix."""
    where = endpoint(host, port)
    return HostKeyError(
        f"host key of {where} changed: state pins {fingerprint(pinned)} ({pinned.split()[0]}), "
        f"the machine presented {fingerprint(presented)} ({presented.split()[0]}); refusing to "
        "connect (this is what a man-in-the-middle looks like)",
        hint="only if the machine was really re-installed: "
        f"runform apply --accept-host-key {where}",
    )


def pin_client(client: paramiko.SSHClient, host: str, port: int, pinned: str | None) -> TofuPolicy:
    """Arm ``client`` for one connection: the pinned key is the only key accepted; with no pin,
    the first key presented is recorded (never silently replaced later). Returns the policy,
    whose ``seen`` holds the recorded key after ``connect``."""
    if pinned:
        name = host if port == 22 else f"[{host}]:{port}"
        key = parse(pinned)
        client.get_host_keys().add(name, key.get_name(), key)  # also makes paramiko prefer its type
    policy = TofuPolicy(host, port, pinned)
    client.set_missing_host_key_policy(policy)
    return policy


class TofuPolicy(paramiko.MissingHostKeyPolicy):
    """Records the key on first use when nothing is pinned; refuses any key when a pin exists
    (paramiko only asks the policy when the presented key type has no pin)."""

    def __init__(self, host: str, port: int, pinned: str | None) -> None:
        self.host, self.port, self.pinned = host, port, pinned
        self.seen: str | None = None

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        presented = key_string(key)
        if self.pinned and presented != self.pinned:
            raise changed_error(self.host, self.port, self.pinned, presented)
        self.seen = presented
