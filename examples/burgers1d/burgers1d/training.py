"""The one training loop every stage uses: epochs over sample indices, DDP-aware.

* Sample indices are sharded with a :class:`~torch.utils.data.DistributedSampler` (also with one
  process, so single- and multi-process runs use the same code path), reshuffled per epoch from
  the stage seed.
* AdamW, linear warm-up then cosine decay, gradient clipping, optional EMA of the weights,
  bf16 autocast on CUDA.
* A non-finite loss stops the stage (it must not publish a NaN checkpoint).
* Every ``log_every`` steps rank 0 appends ``{"step", "loss", "lr"}`` to the runform metrics
  stream; ``validate`` runs after every epoch and the best weights by validation loss (the EMA
  weights when EMA is on) are returned. The seed kept the best checkpoint by *train* loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from .distributed import DistContext, unwrap
from .metrics import MetricsStream
from .runtime import autocast


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and loop settings of a stage (its ``optim:`` block)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 64
    log_every: int = 10
    min_lr_ratio: float = 0.1

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> OptimConfig:
        raw = dict(raw or {})
        known = cls.__dataclass_fields__
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"unknown optim keys: {sorted(unknown)}")
        return cls(**raw)


class EMA:
    """Exponential moving average of a module's floating-point state."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in unwrap(model).state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value.detach(), 1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.shadow.items()}


@dataclass
class TrainResult:
    """What a loop produced: the weights to publish and numbers for the metrics JSON."""

    best_state: dict[str, torch.Tensor]
    metrics: dict[str, float] = field(default_factory=dict)


class _Indices(Dataset[int]):
    """The dataset 0..n-1: the sampler shards indices; the stage's loss gathers the samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _schedule(step: int, total: int, cfg: OptimConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def run_epochs(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n_items: int,
    cfg: OptimConfig,
    ctx: DistContext,
    seed: int,
    stream: MetricsStream,
    validate: Callable[[nn.Module], float] | None = None,
    name: str = "train",
    on_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``model`` (already on ``ctx.device``, DDP-wrapped when distributed).

    ``loss_fn(indices)`` gets a 1D LongTensor of this rank's sample indices and returns the scalar
    loss. ``validate(module)`` gets the unwrapped module (EMA weights loaded when EMA is on) and
    returns a validation loss; the best epoch's weights are returned. ``on_step()`` runs after
    every optimiser step (e.g. to update a distillation target network).
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        _Indices(n_items), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    per_rank_batch = max(1, cfg.batch_size // ctx.world_size)
    steps_per_epoch = math.ceil(len(sampler) / per_rank_batch)
    total = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, cfg))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    probe = copy.deepcopy(unwrap(model)) if (validate is not None and ema is not None) else None

    best_val, best_state = math.inf, None
    step, samples, last_loss = 0, 0, math.nan
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        model.train()
        for batch in order.split(per_rank_batch):
            with autocast(ctx.device):
                loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            if on_step is not None:
                on_step()
            step += 1
            samples += int(batch.numel()) * ctx.world_size
            if step % cfg.log_every == 0 or step == total:
                last_loss = ctx.mean(float(loss.detach()))
                if ctx.is_main:
                    stream.log(step, loss=last_loss, lr=float(sched.get_last_lr()[0]), epoch=epoch)
        if validate is not None:
            module = unwrap(model)
            if probe is not None and ema is not None:
                probe.load_state_dict(ema.shadow)
                module = probe
            module.eval()
            with torch.no_grad():
                val = float(validate(module))
            if ctx.is_main:
                print(
                    f"[{name}] epoch {epoch + 1}/{cfg.epochs} loss {last_loss:.5f} val {val:.5f}",
                    flush=True,
                )
                stream.log(step, val_loss=val, epoch=epoch)
            if val < best_val:
                best_val = val
                best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    seconds = time.perf_counter() - t0
    if best_state is None:
        source = ema.state_dict() if ema is not None else unwrap(model).state_dict()
        best_state = {k: v.detach().cpu().clone() for k, v in source.items()}
    metrics = {
        "steps": step,
        "epochs": cfg.epochs,
        "final_loss": last_loss,
        "train_seconds": round(seconds, 3),
        "samples_per_s": round(samples / max(seconds, 1e-9), 2),
        "world_size": ctx.world_size,
    }
    if math.isfinite(best_val):
        metrics["best_val_loss"] = best_val
    return TrainResult(best_state=best_state, metrics=metrics)
