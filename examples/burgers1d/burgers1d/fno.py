"""A 1D Fourier neural operator, the PDEBench baseline (``modes`` 12, ``width`` 20 for Burgers).

Input: the last ``initial_step`` frames [N, G, X] plus the grid coordinate as channels; four
Fourier layers (a spectral convolution keeping ``modes`` modes, plus a pointwise linear map,
GELU between layers); output: the next frame [N, X]. Rolled out autoregressively by feeding its
own output back (a sliding window of G frames), as PDEBench's autoregressive FNO is. The domain
is periodic, so there is no padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .networks import config_from_dict, frozen


@dataclass(frozen=True)
class FNOConfig:
    """Sizes of the FNO (PDEBench's Burgers settings by default)."""

    modes: int = 12
    width: int = 20
    layers: int = 4
    initial_step: int = 10

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FNOConfig:
        return config_from_dict(cls, raw)


class SpectralConv1d(nn.Module):
    """Multiply the lowest ``modes`` Fourier coefficients by learned complex matrices."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        self.weight = nn.Parameter(scale * torch.randn(width, width, modes, dtype=torch.cfloat))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        coeffs = torch.fft.rfft(h.float(), dim=-1)
        m = min(self.modes, coeffs.shape[-1])
        out = torch.zeros_like(coeffs)
        out[..., :m] = torch.einsum("bix,iox->box", coeffs[..., :m], self.weight[..., :m])
        return torch.fft.irfft(out, n=h.shape[-1], dim=-1)


class FNO1d(nn.Module):
    """[N, G, X] frames -> the next frame [N, X]."""

    def __init__(self, cfg: FNOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.lift = nn.Conv1d(cfg.initial_step + 1, w, 1)
        self.spectral = nn.ModuleList(SpectralConv1d(w, cfg.modes) for _ in range(cfg.layers))
        self.pointwise = nn.ModuleList(nn.Conv1d(w, w, 1) for _ in range(cfg.layers))
        self.head = nn.Sequential(nn.Conv1d(w, 128, 1), nn.GELU(), nn.Conv1d(128, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, _, x = frames.shape
        grid = torch.linspace(0.0, 1.0, x + 1, device=frames.device)[:-1] + 0.5 / x
        h = self.lift(torch.cat([frames, grid.expand(n, 1, x)], dim=1))
        for i, (spec, point) in enumerate(zip(self.spectral, self.pointwise)):
            h = spec(h) + point(h)
            if i < len(self.spectral) - 1:
                h = nn.functional.gelu(h)
        return self.head(h)[:, 0]


def fno_rollout(model: nn.Module, frames: torch.Tensor, steps: int) -> torch.Tensor:
    """Autoregressive rollout from the given frames [N, G, X]: [N, steps, X]."""
    window, out = frames, []
    for _ in range(steps):
        nxt = model(window).float()
        out.append(nxt)
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
    return torch.stack(out, dim=1)


def build_fno(payload: Mapping[str, Any], device: torch.device) -> FNO1d:
    """A frozen FNO from its published payload."""
    model = FNO1d(FNOConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return frozen(model, device)
