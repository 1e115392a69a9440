"""runform's folder in the user's cache, ``$XDG_CACHE_HOME/runform`` (``~/.cache/runform``
without it): the agent's wheels, Vast's request spacing, and the client caches that only save
time (botocore's parsed S3 data, what the HEADs of multipart objects found), which
``RUNFORM_CACHE=0`` turns off. Nothing of a spec, a state or a credential is kept there."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/runform/<parts>`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "runform", *parts)


def time_caches_on() -> bool:
    """Whether the caches that only save time are used (``RUNFORM_CACHE=0``: not)."""
    return os.environ.get("RUNFORM_CACHE", "1") != "0"
