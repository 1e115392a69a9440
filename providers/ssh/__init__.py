"""The ``ssh`` provider plugin: machines that already exist, reached over SSH.

Importing this module (which happens whenever plugins load, e.g. for ``runform --help``)
imports no paramiko: the transport is imported when a connection is first needed.

Modules: :mod:`.provider` (the Provider), :mod:`.transport` (SSHTransport, paramiko),
:mod:`.hostkeys` (pinning), :mod:`.bootstrap` and :mod:`.wheel` (installing runform's agent
on any machine; reused by the Vast provider).
"""

from __future__ import annotations

from typing import Any

from runform.hookspecs import hookimpl
from runform.providers.ssh.provider import SSHProvider

__all__ = ["SSHProvider"]


@hookimpl
def runform_register_providers(register: Any) -> None:
    register("ssh", SSHProvider)
