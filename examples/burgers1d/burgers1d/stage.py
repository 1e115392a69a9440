"""Boilerplate shared by the training entry points: start (args, config, device, seed), train
(the one loop with the stage's settings) and finish (publish the checkpoint on rank 0).

Every latent-model stage trains once per training seed (``train_seeds: N`` in ``base.yaml``):
:func:`run_seeds` calls the stage's ``train_one`` with a config whose ``train_seed`` is i and
whose ``seed`` is shifted by i, so seed i's checkpoints live in ``checkpoints/<stage>/seed<i>/``
and form their own lineage (operator i -> diff_residual i -> consistency_distill i). The
metrics JSON holds ``seed<i>_<name>`` per seed and ``<name>`` as the mean over seeds; only
seed 0 streams its training curve to runform."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
    metrics: dict[str, float] = field(default_factory=dict)

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
    """Rank 0 publishes the checkpoint (this seed's variant); the metrics are kept on ``run``."""
    run.metrics = dict(metrics)
    if run.ctx.is_main:
        pointer = checkpoints.publish(
            run.ckpt_root,
            run.name,
            payload,
            run.cfg,
            lineage,
            metrics,
            variant=checkpoints.variant_of(run.cfg),
        )
        run.log(f"checkpoint {pointer.path} (sha256 {pointer.short})")


def seed_runs(run: StageRun) -> Iterator[StageRun]:
    """One :class:`StageRun` per training seed (see the module docstring)."""
    count = int(run.cfg.get("train_seeds", 1))
    if count < 1:
        raise ValueError(f"train_seeds must be >= 1, got {count}")
    for i in range(count):
        cfg = copy.deepcopy(run.cfg)
        cfg["train_seed"] = i
        cfg["seed"] = int(run.cfg.get("seed", 0)) + i
        seed = stage_seed(cfg, run.name)
        seed_everything(seed)
        stream = run.stream if i == 0 else MetricsStream(False)
        yield StageRun(name=run.name, cfg=cfg, ctx=run.ctx, seed=seed, stream=stream)


def run_seeds(
    argv: Sequence[str] | None, description: str, name: str, train_one: Callable[[StageRun], None]
) -> int:
    """Start the stage, train it once per training seed, write ``reports/<stage>.json``."""
    run = start(argv, description, name)
    per_seed: list[dict[str, float]] = []
    try:
        for seeded in seed_runs(run):
            run.log(f"training seed {seeded.cfg['train_seed']} (seed {seeded.seed})")
            train_one(seeded)
            per_seed.append(seeded.metrics)
        if run.ctx.is_main:
            write_metrics_json(
                Path(run.cfg["paths"]["reports"]) / f"{name}.json", seed_summary(per_seed)
            )
    finally:
        shutdown(run.ctx)
    return 0


def seed_summary(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``seed<i>_<k>`` for every seed's metrics plus ``<k>`` = the mean over seeds."""
    out: dict[str, float] = {}
    for i, metrics in enumerate(per_seed):
        out.update({f"seed{i}_{k}": float(v) for k, v in metrics.items()})
    for key in per_seed[0] if per_seed else ():
        out[key] = float(sum(float(m[key]) for m in per_seed) / len(per_seed))
    return out


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
