"""Host key pinning now lives in the core, :mod:`runform.transport.ssh.hostkeys`. This module
keeps the old import path working for third parties."""

from runform.transport.ssh.hostkeys import (
    TofuPolicy,
    changed_error,
    endpoint,
    fingerprint,
    key_string,
    parse,
    pin_client,
)

__all__ = ["TofuPolicy", "changed_error", "endpoint", "fingerprint", "key_string", "parse", "pin_client"]
