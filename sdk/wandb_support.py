"""What runform's W&B tracker and ``wandb://`` storage backend share: the quiet run settings
and the ``wandb://entity/project/name:alias`` reference.

Both plugins import this core module, never each other. ``wandb`` itself is imported only
inside :func:`settings`, when a run starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from runform.errors import RunformError

ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # storage.md §0


# W&B settings that keep everything of the process (system metrics, host metadata, installed
# packages) out of W&B files. They are private (``x_``) and may go without notice: this is the
# one place runform names them; settings() drops any a wandb upgrade removed, and
# tests/e2e/test_wandb_settings.py fails loudly when that happens.
PRIVATE_QUIET = {"x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True,
                 "x_save_requirements": False}
PUBLIC_QUIET = {"console": "off", "disable_git": True, "save_code": False, "disable_code": True,
                "silent": True, "disable_job_creation": True}


def check_artifact_name(name: str) -> str | None:
    """Why ``name`` is not a valid W&B artifact name (None when it is)."""
    if ARTIFACT_NAME.match(name):
        return None
    if len(name) > 128:
        return f"artifact name {name[:40]!r}... is {len(name)} characters long (W&B allows 128)"
    bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9_.-]", c)})
    return (f"artifact name {name!r} has characters W&B does not allow ({' '.join(map(repr, bad))})"
            if bad else "the artifact name is empty")


def settings(*, mode: str | None = None, api_key: str | None = None, base_url: str | None = None) -> Any:
    """``wandb.Settings`` for runform's runs (the pipeline's and the pushes'): quiet, nothing
    of the process recorded. ``mode`` None: W&B's own choice (``WANDB_MODE``)."""
    import wandb

    fields = getattr(wandb.Settings, "model_fields", None)
    private = {k: v for k, v in PRIVATE_QUIET.items() if fields is None or k in fields}
    kwargs: dict[str, Any] = {**PUBLIC_QUIET, **private}
    if api_key:
        kwargs["api_key"] = api_key
    if base_url:
        kwargs["base_url"] = base_url
    if mode:
        kwargs["mode"] = mode
    return wandb.Settings(**kwargs)


@attrs.frozen
class ArtifactRef:
    """``wandb://entity/project/name:alias``, parsed (the entity from ``WANDB_ENTITY`` when the
    URI names only ``project/name``; the alias ``latest`` when it names none)."""

    entity: str
    project: str
    name: str
    alias: str

    @classmethod
    def parse(cls, uri: str, env: Mapping[str, str] | None = None) -> ArtifactRef:
        if not uri.startswith("wandb://"):
            raise RunformError(f"not a wandb:// URI: {uri!r}")
        body = uri[len("wandb://"):].strip("/")
        path, _, alias = body.partition(":")
        parts = path.split("/")
        if len(parts) == 2 and (env or {}).get("WANDB_ENTITY"):
            parts = [str((env or {})["WANDB_ENTITY"]), *parts]
        if len(parts) != 3 or not all(parts):
            raise RunformError(f"{uri!r}: expected wandb://entity/project/name:alias",
                               hint="or set WANDB_ENTITY and write wandb://project/name:alias")
        return cls(parts[0], parts[1], parts[2], alias or "latest")

    @property
    def uri(self) -> str:
        """The normalised URI (entity and alias spelled out)."""
        return f"wandb://{self.entity}/{self.project}/{self.name}:{self.alias}"
