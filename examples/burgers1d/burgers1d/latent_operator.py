"""The latent time-stepper: z(t+1) = z(t) + F(z(t)), F a periodic residual conv net."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .networks import ConvNet, config_from_dict, frozen


@dataclass(frozen=True)
class OperatorConfig:
    """Sizes of the operator network (latent channels come from the cache)."""

    width: int = 64
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 1))
    kernel: int = 5

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> OperatorConfig:
        return config_from_dict(cls, raw)


class LatentOperator(nn.Module):
    """One step of the latent dynamics on normalised latents [B, C, L]."""

    def __init__(self, channels: int, cfg: OperatorConfig) -> None:
        super().__init__()
        self.channels = channels
        self.cfg = cfg
        self.net = ConvNet(channels, channels, cfg.width, cfg.dilations, kernel=cfg.kernel)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.net(z)

    def rollout(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """[B, C, L] -> [B, steps, C, L] autoregressive predictions."""
        out, z = [], z0
        for _ in range(steps):
            z = self(z)
            out.append(z)
        return torch.stack(out, dim=1)


def build_operator(payload: Mapping[str, Any], device: torch.device) -> LatentOperator:
    """A frozen operator (eval mode, no grads) from its published checkpoint payload."""
    model = LatentOperator(
        int(payload["channels"]), OperatorConfig.from_dict(payload["model_config"])
    )
    model.load_state_dict(payload["state_dict"])
    return frozen(model, device)
