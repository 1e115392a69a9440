"""Boilerplate shared by the training entry points: start (args, config, device, seed), train
(the one loop with the stage's settings) and finish (publish the checkpoint and the metrics JSON
on rank 0, leave the process group)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoints
from .config import Config, parse_stage_args, section
from .distributed import DistContext, init_distributed, shutdown
from .latents import LatentData
from .metrics import MetricsStream, write_metrics_json
from .runtime import seed_everything, stage_seed
from .training import OptimConfig, TrainResult, run_epochs


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

    def train(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        n_items: int,
        validate: Callable[[torch.nn.Module], float],
        on_step: Callable[[], None] | None = None,
    ) -> TrainResult:
        """:func:`~burgers1d.training.run_epochs` with this stage's optim block, seed and name."""
        return run_epochs(
            model,
            loss_fn,
            n_items,
            self.optim,
            self.ctx,
            self.seed,
            self.stream,
            validate,
            name=self.name,
            on_step=on_step,
        )


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


def finish_model(
    run: StageRun,
    data: LatentData,
    model_cfg: Any,
    result: TrainResult,
    lineage: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    **extra: Any,
) -> None:
    """:func:`finish` for a model trained on latents. The payload holds the latent channels, the
    model config, the best weights, ``extra`` and the latent cache key; ``metrics`` default to
    the loop's."""
    payload = {
        "channels": data.channels,
        "model_config": asdict(model_cfg),
        "state_dict": result.best_state,
        **extra,
        "latent_cache_key": data.cache_key,
    }
    finish(run, payload, lineage, result.metrics if metrics is None else metrics)
