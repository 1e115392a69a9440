"""Boilerplate shared by the training entry points: start (args, config, device, seed) and
finish (publish the checkpoint and the metrics JSON on rank 0, leave the process group)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoints
from .config import Config, parse_stage_args, section
from .distributed import DistContext, init_distributed, shutdown
from .metrics import MetricsStream, write_metrics_json
from .runtime import seed_everything, stage_seed
from .training import OptimConfig


@dataclass
class StageRun:
    """One running stage: its resolved config and where it runs."""

    name: str
    cfg: Config
    ctx: DistContext
    seed: int
    stream: MetricsStream

    @property
    def ckpt_root(self) -> Path:
        return Path(self.cfg["paths"]["checkpoints"])

    @property
    def section(self) -> dict[str, Any]:
        return section(self.cfg, self.name)

    @property
    def optim(self) -> OptimConfig:
        return OptimConfig.from_dict(self.section.get("optim"))

    def log(self, message: str) -> None:
        if self.ctx.is_main:
            print(f"[{self.name}] {message}", flush=True)


def start(argv: Sequence[str] | None, description: str, name: str) -> StageRun:
    """Parse ``--config/--set/--device``, resolve the config, join DDP if launched by torchrun,
    seed everything (same seed on every rank: DDP starts all replicas from rank 0's weights)."""
    _, cfg = parse_stage_args(argv, description)
    runtime = cfg["runtime"]
    ctx = init_distributed(runtime["device"], runtime.get("num_threads"))
    seed = stage_seed(cfg, name)
    seed_everything(seed)
    run = StageRun(name=name, cfg=cfg, ctx=ctx, seed=seed, stream=MetricsStream(ctx.is_main))
    run.log(f"device {ctx.device}, world size {ctx.world_size}, seed {seed}")
    return run


def finish(
    run: StageRun,
    payload: Mapping[str, Any],
    lineage: Mapping[str, str],
    metrics: Mapping[str, float],
) -> None:
    """Rank 0 publishes the checkpoint and writes ``<reports>/<stage>.json``; all ranks sync."""
    if run.ctx.is_main:
        pointer = checkpoints.publish(run.ckpt_root, run.name, payload, run.cfg, lineage, metrics)
        write_metrics_json(Path(run.cfg["paths"]["reports"]) / f"{run.name}.json", metrics)
        run.log(f"checkpoint {pointer.path} (sha256 {pointer.short})")
    shutdown(run.ctx)
