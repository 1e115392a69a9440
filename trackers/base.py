"""What every tracker gets from the core, and the run id they share."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from runform.redact import Redactor

_SLUG = re.compile(r"[^a-z0-9_-]+")


def deterministic_run_id(run: str, lineage: str) -> str:
    """The tracker run id of a pipeline: stable across applies of the same state.

    ``<slug of run>-<12 hex of sha256(run, lineage)>``, at most 53 characters, using only
    ``[a-z0-9_-]`` (valid as a W&B run id). A new state (new lineage) gets a new id, so a
    destroyed and re-created pipeline does not resume an old run.
    """
    slug = _SLUG.sub("-", run.lower()).strip("-")[:40] or "run"
    digest = hashlib.sha256(f"{run}\0{lineage}".encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


@attrs.frozen
class TrackerContext:
    """What a tracker may use.

    :param run: the spec's ``run`` name.
    :param lineage: the state's lineage (a uuid fixed when the state is created).
    :param state_dir: runform's local folder (``.runform/`` beside the spec).
    :param spec_dir: the folder of the spec file.
    :param redactor: masks secrets in everything a tracker writes (None: nothing to mask).
    :param env: environment for the tracker itself (e.g. ``WANDB_API_KEY`` from the secrets
        env file, ``WANDB_MODE``); defaults to the process environment.
    """

    run: str
    lineage: str
    state_dir: Path = attrs.field(converter=Path)
    spec_dir: Path = attrs.field(converter=Path)
    redactor: Redactor | None = None
    env: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))

    @property
    def run_id(self) -> str:
        return deterministic_run_id(self.run, self.lineage)

    def redact(self, value: Any) -> Any:
        """``value`` with secrets masked (strings, bytes or JSON-like documents)."""
        return value if self.redactor is None else self.redactor(value)
