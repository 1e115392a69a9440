"""The steady-state prior: from z(t) and the time left, predict the latent at the final time.

For viscous Burgers on a periodic domain the long-time state is the (conserved) mean; the prior
learns where a trajectory is heading: z(T) = z(t) + G(z(t), (T - t) / T). The evaluator reports
its final-state nRMSE from t = 0 next to the operator rollout's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .networks import ConvNet, FourierEmbedding, config_from_dict


@dataclass(frozen=True)
class SteadyPriorConfig:
    """Network sizes of the prior."""

    width: int = 32
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 8))
    kernel: int = 5
    embed_dim: int = 32

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SteadyPriorConfig:
        return config_from_dict(cls, raw)


class SteadyPrior(nn.Module):
    """z(t), remaining-time fraction in [0, 1] -> predicted z(T) (normalised latents)."""

    def __init__(self, channels: int, cfg: SteadyPriorConfig) -> None:
        super().__init__()
        self.channels = channels
        self.cfg = cfg
        self.embed = FourierEmbedding(cfg.embed_dim, max_period=10.0)
        self.net = ConvNet(channels, channels, cfg.width, cfg.dilations, cfg.embed_dim, cfg.kernel)

    def forward(self, z: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        return z + self.net(z, self.embed(remaining))


def build_steady_prior(payload: Mapping[str, Any], device: torch.device) -> SteadyPrior:
    """A frozen prior from its published payload."""
    model = SteadyPrior(
        int(payload["channels"]), SteadyPriorConfig.from_dict(payload["model_config"])
    )
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
