"""The Vast.ai provider plugin: rents GPU instances from the Vast marketplace.

Importing this package is cheap (it runs on ``runform --help``): httpx, tenacity, rich and
cryptography are imported only when the provider does its first real work.
"""

from __future__ import annotations

from runform.hookspecs import hookimpl
from runform.providers.vast.provider import VastProvider

__all__ = ["VastProvider", "runform_register_providers"]


@hookimpl
def runform_register_providers(register):  # type: ignore[no-untyped-def]
    """Register ``vast``: ``compute.provider: vast`` in a spec."""
    register("vast", VastProvider)
