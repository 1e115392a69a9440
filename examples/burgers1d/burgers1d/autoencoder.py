"""The encoder/decoder pair that maps u(x) (normalised) to a latent [dim, tokens] and back.

The seed's encoder was a never-trained ``LazyLinear`` with an unseeded RNG and its reward decoder
was a different, random network, so latents and the physics reward meant nothing. Here one
convolutional autoencoder is fitted (seeded) on train snapshots in the precompute stage, saved,
and the same weights encode the cache and decode predictions for the reward and the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .networks import ResBlock, config_from_dict, frozen, periodic_conv
from .normalization import FieldStats


@dataclass(frozen=True)
class AutoencoderConfig:
    """Sizes: ``levels`` halvings of the grid (tokens = X / 2**levels), ``dim`` latent channels."""

    width: int = 32
    dim: int = 8
    levels: int = 3
    blocks_per_level: int = 1

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AutoencoderConfig:
        return config_from_dict(cls, raw)


class ConvAutoencoder(nn.Module):
    """Periodic conv encoder (strided halvings) and decoder (nearest upsampling + convs)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        enc: list[nn.Module] = [periodic_conv(1, w, 5)]
        for _ in range(cfg.levels):
            enc.append(nn.Conv1d(w, w, 4, stride=2, padding=1, padding_mode="circular"))
            enc += [ResBlock(w) for _ in range(cfg.blocks_per_level)]
        self.encoder = nn.ModuleList(enc)
        self.to_latent = nn.Sequential(nn.GroupNorm(1, w), nn.GELU(), periodic_conv(w, cfg.dim, 1))
        dec: list[nn.Module] = [periodic_conv(cfg.dim, w, 1)]
        for _ in range(cfg.levels):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), periodic_conv(w, w, 5)]
            dec += [ResBlock(w) for _ in range(cfg.blocks_per_level)]
        self.decoder = nn.ModuleList(dec)
        self.to_field = nn.Sequential(nn.GroupNorm(1, w), nn.GELU(), periodic_conv(w, 1, 5))

    def tokens(self, nx: int) -> int:
        """Latent length for a grid of ``nx`` cells."""
        if nx % (2**self.cfg.levels):
            raise ValueError(f"grid of {nx} cells is not divisible by 2**{self.cfg.levels}")
        return nx // 2**self.cfg.levels

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """u [B, X] (normalised) -> z [B, dim, X / 2**levels]."""
        h = u.unsqueeze(1)
        for layer in self.encoder:
            h = layer(h)
        return self.to_latent(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, dim, tokens] -> u [B, X] (normalised)."""
        h = z
        for layer in self.decoder:
            h = layer(h)
        return self.to_field(h).squeeze(1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(u))


def load_encoder(
    payload: Mapping[str, Any], device: torch.device
) -> tuple[ConvAutoencoder, FieldStats]:
    """The frozen autoencoder and the train stats from an encoder checkpoint payload."""
    model = ConvAutoencoder(AutoencoderConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return frozen(model, device), FieldStats.from_dict(payload["field_stats"])
