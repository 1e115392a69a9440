"""Transports the core offers to providers: how runform reaches a machine.

- :mod:`runform.transport.ssh`: :class:`~runform.transport.ssh.SSHTransport`, the
  :class:`~runform.interfaces.Transport` over paramiko, with host-key pinning. The ``ssh`` and
  ``vast`` providers both use it; a third-party provider whose machines speak SSH may too.

Importing this package imports nothing heavy; ``runform.transport.ssh`` imports paramiko.
"""
