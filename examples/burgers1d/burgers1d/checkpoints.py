"""Immutable, content-addressed stage checkpoints with a pointer file.

Layout for a stage ``S`` under ``checkpoints/``::

    checkpoints/S/S-<sha12>.pt            # the weights; name = first 12 hex of its sha256
    checkpoints/S/S-<sha12>.config.yaml   # the resolved config that produced it
    checkpoints/S/latest.json             # pointer: file, sha256, lineage, metrics

Stages trained once per training seed keep one such folder per seed: ``checkpoints/S/seed<i>/``
(``variant="seed<i>"``); the file and pointer names are the same inside it.

A checkpoint file is never rewritten: a new result gets a new name, an identical result the same
name. The pointer is the only mutable file and is replaced atomically. Downstream stages load
through the pointer and verify the sha256, and each payload records the sha256 of every upstream
checkpoint it was trained against (``lineage``), so the evaluator can refuse a mismatched set
(the seed evaluated a diffusion model next to an operator it was not trained with, and stage 3
overwrote stage 2's file).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import dump_config
from .hashing import atomic_write_text

POINTER = "latest.json"


class StaleCheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or was trained against other upstream weights."""


@dataclass(frozen=True)
class Pointer:
    """What ``latest.json`` says about a stage's current checkpoint."""

    stage: str
    path: Path
    sha256: str
    lineage: dict[str, str]

    @property
    def short(self) -> str:
        return self.sha256[:12]


def publish(
    root: str | Path,
    stage: str,
    payload: Mapping[str, Any],
    resolved_config: Mapping[str, Any],
    lineage: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    variant: str = "",
) -> Pointer:
    """Write ``payload`` as ``<root>/<stage>[/<variant>]/<stage>-<sha12>.pt`` (+ config), then
    the pointer."""
    folder = stage_dir(root, stage, variant)
    folder.mkdir(parents=True, exist_ok=True)
    body = dict(payload)
    body["stage"] = stage
    body["lineage"] = dict(lineage or {})
    body["config"] = {k: v for k, v in resolved_config.items() if k != "_sources"}
    buf = io.BytesIO()
    torch.save(body, buf)
    blob = buf.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    name = f"{stage}-{sha[:12]}"
    target = folder / f"{name}.pt"
    if not target.exists():
        tmp = folder / f".{name}.pt.tmp{os.getpid()}"
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    config_path = folder / f"{name}.config.yaml"
    if not config_path.exists():
        atomic_write_text(config_path, dump_config(resolved_config))
    pointer = {
        "stage": stage,
        "file": target.name,
        "sha256": sha,
        "config": config_path.name,
        "lineage": dict(lineage or {}),
        "metrics": dict(metrics or {}),
    }
    write_pointer(root, stage, pointer, variant)
    return Pointer(stage, target, sha, dict(lineage or {}))


def variant_of(cfg: Mapping[str, Any]) -> str:
    """The checkpoint variant a resolved config trains or reads: ``seed<i>`` when the stage
    runs once per training seed (``train_seed`` set by :mod:`burgers1d.stage`), else none."""
    return f"seed{int(cfg['train_seed'])}" if cfg.get("train_seed") is not None else ""


def stage_dir(root: str | Path, stage: str, variant: str = "") -> Path:
    """``<root>/<stage>``, or ``<root>/<stage>/<variant>`` for a per-seed checkpoint."""
    return Path(root) / stage / variant if variant else Path(root) / stage


def write_pointer(
    root: str | Path, stage: str, pointer: Mapping[str, Any], variant: str = ""
) -> bool:
    """Point ``<root>/<stage>[/<variant>]/latest.json`` at a published file; False when
    unchanged."""
    path = stage_dir(root, stage, variant) / POINTER
    text = json.dumps(dict(pointer), indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def pointer_record(root: str | Path, stage: str, variant: str = "") -> dict[str, Any]:
    """The raw JSON of a stage's pointer (to re-point to it later)."""
    return json.loads((stage_dir(root, stage, variant) / POINTER).read_text(encoding="utf-8"))


def read_pointer(root: str | Path, stage: str, variant: str = "") -> Pointer:
    """The stage's pointer; an error naming the stage to run when it is missing."""
    path = stage_dir(root, stage, variant) / POINTER
    if not path.is_file():
        raise StaleCheckpointError(
            f"no checkpoint for stage {stage!r} ({path} missing): run it first"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    return Pointer(stage, path.parent / data["file"], data["sha256"], dict(data.get("lineage", {})))


def load(
    root: str | Path, stage: str, map_location: str | torch.device = "cpu", variant: str = ""
) -> tuple[dict[str, Any], Pointer]:
    """Load a stage's current checkpoint after checking its sha256 against the pointer."""
    pointer = read_pointer(root, stage, variant)
    if not pointer.path.is_file():
        raise StaleCheckpointError(f"{pointer.path} named by {stage}/{POINTER} is missing")
    blob = pointer.path.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    if sha != pointer.sha256:
        raise StaleCheckpointError(f"{pointer.path}: sha256 {sha[:12]} != pointer {pointer.short}")
    payload = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=False)
    return payload, pointer


def require_lineage(payload: Mapping[str, Any], upstream: Mapping[str, Pointer], who: str) -> None:
    """Fail unless ``payload`` was trained against exactly the ``upstream`` checkpoints."""
    recorded = payload.get("lineage", {})
    for stage, pointer in upstream.items():
        if recorded.get(stage) != pointer.sha256:
            raise StaleCheckpointError(
                f"{who} was trained against {stage} {str(recorded.get(stage))[:12]}, but the "
                f"current {stage} is {pointer.short}; re-run {who}"
            )
