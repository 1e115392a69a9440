"""Latent trajectories for the training stages: verified cache -> normalised tensors -> windows.

Latents are read from the cache the pointer names, after :func:`latent_cache.open_current`
checked that the data on disk still has the digests the cache was keyed by. They are normalised
per channel with statistics of the TRAIN latents (stored in the cache pointer). Latents are the
compact form of the data (PDEBench Burgers at full size: ~2 GB in fp16), so a split is held in
memory; ``runtime.max_latent_gb`` guards that assumption with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .latent_cache import open_current
from .splits import data_digests


@dataclass
class LatentData:
    """Normalised latents per split ([N, T, C, L] float32 on one device) and their stats."""

    splits: dict[str, torch.Tensor]
    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    info: dict[str, Any]

    @property
    def cache_key(self) -> str:
        return str(self.info["key"])

    @property
    def channels(self) -> int:
        """Latent channels C."""
        return int(self.mean.shape[0])

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents [..., C, L] -> normalised."""
        return (z - self.mean[:, None]) / self.std[:, None]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [..., C, L] -> raw (what the decoder takes)."""
        return z * self.std[:, None] + self.mean[:, None]


def load_latents(
    cfg: Mapping[str, Any], device: torch.device, splits: Sequence[str] = ("train", "val")
) -> LatentData:
    """Open the verified cache and load ``splits`` normalised onto ``device``."""
    cache_dir = Path(cfg["paths"]["latent_cache"])
    limit_gb = float((cfg.get("runtime") or {}).get("max_latent_gb", 32.0))
    with open_current(cache_dir, data_digests(cfg)) as cache:
        need = sum(4 * int(torch.Size(cache.shape(s)).numel()) for s in splits) / 2**30
        if need > limit_gb:
            raise MemoryError(
                f"latents of {list(splits)} need {need:.1f} GiB in float32, over "
                f"runtime.max_latent_gb={limit_gb}; use fewer trajectories or a larger limit"
            )
        mean = torch.from_numpy(cache.latent_mean).to(device)
        std = torch.from_numpy(cache.latent_std).to(device)
        out = {}
        for name in splits:
            z = torch.from_numpy(cache.split(name)).to(device)
            out[name] = (z - mean[:, None]) / std[:, None]
        return LatentData(splits=out, mean=mean, std=std, info=dict(cache.info))


def window_count(z: torch.Tensor, length: int) -> int:
    """Number of windows of ``length`` + 1 consecutive snapshots in [N, T, ...] latents."""
    n, t = z.shape[:2]
    if t <= length:
        raise ValueError(f"trajectories of {t} snapshots cannot hold windows of {length} steps")
    return n * (t - length)


def windows(z: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """Windows ``z[n, t : t + length + 1]`` for flat window indices -> [B, length + 1, C, L]."""
    per_traj = z.shape[1] - length
    index = index.to(z.device)
    traj, start = index // per_traj, index % per_traj
    steps = start[:, None] + torch.arange(length + 1, device=z.device)
    return z[traj[:, None], steps]
