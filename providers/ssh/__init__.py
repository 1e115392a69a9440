"""The ``ssh`` provider plugin: machines that already exist, reached over SSH.

Importing this module (which happens whenever plugins load, e.g. for ``runform --help``)
imports no paramiko: the transport is imported when a connection is first needed.

Modules: :mod:`.provider` (the Provider). The SSH transport and host-key pinning are the
core's (:mod:`runform.transport.ssh`), shared with the Vast provider; :mod:`.transport` and
:mod:`.hostkeys` here re-export them for old imports. Installing runform's agent over any
transport is the core's too (:mod:`runform.agent.install`).
"""

from __future__ import annotations

from typing import Any

from runform.hookspecs import hookimpl
from runform.providers.ssh.provider import SSHProvider

__all__ = ["SSHProvider"]


@hookimpl
def runform_register_providers(register: Any) -> None:
    register("ssh", SSHProvider)
