"""Building blocks shared by the models: periodic convolutions, residual blocks, embeddings,
and the plumbing of their configs and frozen copies.

The domain is periodic, so every convolution pads circularly; the networks are translation
equivariant like the PDE itself. Latents are laid out [batch, channels, tokens].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import torch
from torch import nn

ConfigT = TypeVar("ConfigT")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def periodic_conv(c_in: int, c_out: int, kernel: int = 5, dilation: int = 1) -> nn.Conv1d:
    """A same-length 1D convolution with circular padding."""
    return nn.Conv1d(
        c_in,
        c_out,
        kernel,
        padding=dilation * (kernel // 2),
        dilation=dilation,
        padding_mode="circular",
    )


class ResBlock(nn.Module):
    """GroupNorm -> GELU -> conv -> (FiLM from ``cond``) -> GELU -> conv, plus the skip."""

    def __init__(self, width: int, dilation: int = 1, cond_dim: int = 0, kernel: int = 5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, width)
        self.conv1 = periodic_conv(width, width, kernel, dilation)
        self.conv2 = periodic_conv(width, width, kernel, 1)
        self.film = nn.Linear(cond_dim, 2 * width) if cond_dim else None
        nn.init.zeros_(self.conv2.weight)
        if self.conv2.bias is not None:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(nn.functional.gelu(self.norm(x)))
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
            h = h * (1.0 + scale) + shift
        return x + self.conv2(nn.functional.gelu(h))


class ConvNet(nn.Module):
    """in_channels -> width -> residual blocks (given dilations) -> out_channels, periodic."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        dilations: Sequence[int],
        cond_dim: int = 0,
        kernel: int = 5,
    ) -> None:
        super().__init__()
        self.lift = periodic_conv(in_channels, width, kernel)
        self.blocks = nn.ModuleList(ResBlock(width, d, cond_dim, kernel) for d in dilations)
        self.norm = nn.GroupNorm(1, width)
        self.proj = periodic_conv(width, out_channels, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.proj(nn.functional.gelu(self.norm(h)))


class FourierEmbedding(nn.Module):
    """Embeds a scalar per sample (noise level, time) as sin/cos features and an MLP."""

    freqs: torch.Tensor

    def __init__(self, dim: int, max_period: float = 100.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / max(1, half - 1))
        self.register_buffer("freqs", freqs * 2.0 * math.pi, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        angles = s.reshape(-1, 1).float() * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


def config_from_dict(cls: type[ConfigT], raw: Mapping[str, Any]) -> ConfigT:
    """The config dataclass ``cls`` from the keys of ``raw`` it knows (others are ignored), with
    ``dilations`` (YAML gives a list) as a tuple of ints."""
    known = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}  # type: ignore[arg-type]
    if "dilations" in known:
        known["dilations"] = tuple(int(d) for d in known["dilations"])
    return cls(**known)


def frozen(model: ModuleT, device: torch.device) -> ModuleT:
    """``model`` on ``device`` in eval mode with gradients off (an upstream stage's weights)."""
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
