"""Operator + residual corrector plumbing shared by diff_residual, consistency_distill and eval.

The corrector works on r = (z(t+1) - operator(z(t))) / r_std with cond = [z(t), operator(z(t))];
``r_std`` (per latent channel, from train windows) is stored in both the teacher's and the
student's checkpoint so that all three stages agree on the scaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import checkpoints
from .latent_operator import LatentOperator, build_operator
from .latents import LatentData, window_count, windows


def load_operator(
    cfg: Mapping[str, Any], data: LatentData, device: torch.device
) -> tuple[LatentOperator, checkpoints.Pointer]:
    """The published operator, checked to be trained on the same latent cache as ``data``."""
    payload, pointer = checkpoints.load(
        Path(cfg["paths"]["checkpoints"]), "operator", device, checkpoints.variant_of(cfg)
    )
    if payload.get("latent_cache_key") != data.cache_key:
        raise checkpoints.StaleCheckpointError(
            f"operator {pointer.short} was trained on latent cache "
            f"{payload.get('latent_cache_key')}, current cache is {data.cache_key}: re-run operator"
        )
    return build_operator(payload, device), pointer


@torch.no_grad()
def condition(operator: LatentOperator, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(operator(z), cond = [z, operator(z)]) for normalised latents z [B, C, L]."""
    z_op = operator(z).float()
    return z_op, torch.cat([z, z_op], dim=1)


def residual_pairs(
    operator: LatentOperator, z: torch.Tensor, idx: torch.Tensor, r_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled residual target, cond) for window indices ``idx`` of latents ``z``."""
    win = windows(z, idx, 1)
    _, cond = condition(operator, win[:, 0])
    r = (win[:, 1] - cond[:, z.shape[2] :]) / r_std[:, None]
    return r, cond


@torch.no_grad()
def estimate_residual_std(
    operator: LatentOperator, z: torch.Tensor, max_windows: int, generator: torch.Generator
) -> torch.Tensor:
    """Per-channel RMS of the operator's one-step error over up to ``max_windows`` windows."""
    n = window_count(z, 1)
    idx = torch.randperm(n, generator=generator)[:max_windows]
    sq, count = torch.zeros(z.shape[2], device=z.device), 0
    for batch in idx.split(1024):
        win = windows(z, batch, 1)
        err = win[:, 1] - operator(win[:, 0]).float()
        sq += (err**2).sum(dim=(0, 2))
        count += err.shape[0] * err.shape[2]
    return torch.sqrt(sq / count).clamp_min(1e-6)
