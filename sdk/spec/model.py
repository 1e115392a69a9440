"""The spec as frozen attrs models. Built by :func:`runform.spec.load.load_spec` only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

Location = tuple[int, int]  # 1-based line, column


@attrs.frozen
class Compute:
    provider: str
    config: Mapping[str, Any]  # the whole `compute` block, variables resolved

    @property
    def nodes(self) -> int:
        """How many machines (``compute.nodes``; an ssh fleet: its hosts)."""
        from runform.nodes import node_count

        return node_count(self.config)

    @property
    def teardown(self) -> str:
        default = "on_success" if self.provider not in ("local", "ssh") else "never"
        return str(self.config.get("teardown", default))


@attrs.frozen
class Code:
    path: Path  # absolute
    exclude: tuple[str, ...]


@attrs.frozen
class Dataset:
    name: str
    source: str
    dest: str
    links: Mapping[str, str]

    @property
    def address(self) -> str:
        return f"dataset.{self.name}"


@attrs.frozen
class Stage:
    name: str
    run: str
    deps: tuple[str, ...] | None  # None: the whole code tree
    needs: tuple[str, ...]
    env: Mapping[str, str]
    outputs: tuple[str, ...]
    metrics: str | None
    launcher: str
    nproc: int | None
    timeout: float | None  # seconds

    @property
    def address(self) -> str:
        return f"stage.{self.name}"


@attrs.frozen
class Artifact:
    name: str
    paths: tuple[str, ...]
    to: str
    type: str = "model"  # the spec's `type`: the W&B artifact type of a wandb:// push

    @property
    def address(self) -> str:
        return f"artifact.{self.name}"


@attrs.frozen
class TrackerConfig:
    kind: str
    config: Mapping[str, Any]


@attrs.frozen
class Spec:
    """A loaded, validated spec. ``raw`` is the resolved document (no secrets in it)."""

    path: Path
    run: str
    variables: Mapping[str, Any]
    compute: Compute
    env_file: Path | None
    code: Code
    datasets: Mapping[str, Dataset]
    stages: Mapping[str, Stage]
    artifacts: Mapping[str, Artifact]
    tracker: TrackerConfig
    state_backend: str
    lock_lease: float
    raw: Mapping[str, Any]
    locations: Mapping[tuple[Any, ...], Location] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.dir / ".runform"

    def where(self, *field: Any) -> str:
        """``file:line:col`` for a field path, as precise as known."""
        key = tuple(field)
        while key and key not in self.locations:
            key = key[:-1]
        line, col = self.locations.get(key, (1, 1))
        return f"{self.path}:{line}:{col}"
