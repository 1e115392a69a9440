"""Diffusion residual corrector (EDM) and its consistency-distilled student.

The corrector models the distribution of the operator's one-step error in normalised latent
space, r = (z(t+1) - operator(z(t))) / r_std, conditioned on z(t) and operator(z(t)).

* Teacher (stage ``diff_residual``): EDM (Karras et al. 2022) preconditioning
  D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s), cond), trained by denoising with
  log-normal noise levels; sampled with the deterministic Heun ODE solver.
* Student (stage ``consistency_distill``): consistency distillation (Song et al. 2023). The
  same network F under the consistency parameterisation f(x, s) = c_skip'(s) x + c_out'(s) F(...),
  with c_skip'(s_min) = 1 and c_out'(s_min) = 0, so f is the identity at the smallest noise; it is
  trained so that f(x_{n+1}, s_{n+1}) matches an EMA target at the teacher's ODE step x_n, and
  samples in one or a few steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .networks import ConvNet, FourierEmbedding, config_from_dict, frozen


@dataclass(frozen=True)
class DenoiserConfig:
    """Network sizes and the EDM noise range (latents are normalised, so sigma_data = 1)."""

    width: int = 32
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 1))
    kernel: int = 5
    embed_dim: int = 64
    sigma_min: float = 0.002
    sigma_max: float = 20.0
    sigma_data: float = 1.0
    rho: float = 7.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DenoiserConfig:
        return config_from_dict(cls, raw)


class ResidualNet(nn.Module):
    """F(x_in, c_noise, cond): FiLM-conditioned periodic conv net; cond = [z(t), operator(z(t))]."""

    def __init__(self, channels: int, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.channels = channels
        self.cfg = cfg
        self.embed = FourierEmbedding(cfg.embed_dim)
        self.net = ConvNet(
            3 * channels, channels, cfg.width, cfg.dilations, cfg.embed_dim, cfg.kernel
        )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, cond], dim=1), self.embed(c_noise))


def _col(s: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=like.dtype, device=like.device)
    return s.reshape(-1, *([1] * (like.ndim - 1))) if s.ndim else s


def _preconditioned(
    net: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: torch.Tensor,
    cfg: DenoiserConfig,
    s_shift: float,
) -> torch.Tensor:
    """c_skip x + c_out F(c_in x, c_noise, cond), with sigma - ``s_shift`` in c_skip and c_out:
    ``s_shift`` = 0 is EDM's denoiser, ``s_shift`` = sigma_min the consistency model."""
    s = _col(sigma, x)
    sd = cfg.sigma_data
    c_skip = sd**2 / ((s - s_shift) ** 2 + sd**2)
    c_out = (s - s_shift) * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1.0 / torch.sqrt(s**2 + sd**2)
    c_noise = torch.log(torch.as_tensor(sigma, device=x.device).expand(x.shape[0])) / 4.0
    return c_skip * x + c_out * net(c_in * x, c_noise, cond).float()


def edm_denoise(
    net: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: torch.Tensor,
    cfg: DenoiserConfig,
) -> torch.Tensor:
    """EDM-preconditioned denoiser D(x, sigma) -> estimate of the clean residual."""
    return _preconditioned(net, x, sigma, cond, cfg, 0.0)


def consistency_fn(
    net: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: torch.Tensor,
    cfg: DenoiserConfig,
) -> torch.Tensor:
    """Consistency model f(x, sigma) with f(x, sigma_min) = x exactly."""
    return _preconditioned(net, x, sigma, cond, cfg, cfg.sigma_min)


def edm_loss(
    net: nn.Module,
    r: torch.Tensor,
    cond: torch.Tensor,
    cfg: DenoiserConfig,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """EDM denoising loss with log-normal sigma and the (s^2 + sd^2) / (s sd)^2 weighting."""
    sigma = torch.exp(p_mean + p_std * torch.randn(r.shape[0], device=r.device))
    s = _col(sigma, r)
    weight = (s**2 + cfg.sigma_data**2) / (s * cfg.sigma_data) ** 2
    noisy = r + s * torch.randn_like(r)
    return torch.mean(weight * (edm_denoise(net, noisy, sigma, cond, cfg) - r) ** 2)


def karras_sigmas(n: int, cfg: DenoiserConfig) -> torch.Tensor:
    """``n`` decreasing noise levels from sigma_max to sigma_min (Karras rho schedule)."""
    ramp = torch.linspace(0.0, 1.0, n)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    return (hi + ramp * (lo - hi)) ** cfg.rho


def heun_step(
    net: nn.Module,
    x: torch.Tensor,
    s_from: torch.Tensor | float,
    s_to: torch.Tensor | float,
    cond: torch.Tensor,
    cfg: DenoiserConfig,
) -> torch.Tensor:
    """One Heun step of the probability-flow ODE dx/ds = (x - D(x, s)) / s."""
    sf, st = _col(s_from, x), _col(s_to, x)
    d = (x - edm_denoise(net, x, s_from, cond, cfg)) / sf
    x_next = x + (st - sf) * d
    d2 = (x_next - edm_denoise(net, x_next, s_to, cond, cfg)) / st
    return x + (st - sf) * 0.5 * (d + d2)


def consistency_loss(
    student: nn.Module,
    teacher: nn.Module,
    target: nn.Module,
    r: torch.Tensor,
    cond: torch.Tensor,
    sigmas: torch.Tensor,
    cfg: DenoiserConfig,
) -> torch.Tensor:
    """Consistency distillation loss: for x_{n+1} = r + s_{n+1} eps at random adjacent levels of
    the decreasing ``sigmas``, one teacher Heun step gives x_n, and the student's
    f(x_{n+1}, s_{n+1}) is pulled towards the (EMA) target's f(x_n, s_n)."""
    n = torch.randint(0, sigmas.numel() - 1, (r.shape[0],), device=r.device)
    s_hi, s_lo = sigmas[n], sigmas[n + 1]
    x_hi = r + s_hi[:, None, None] * torch.randn_like(r)
    with torch.no_grad():
        x_lo = heun_step(teacher, x_hi, s_hi, s_lo, cond, cfg)
        y = consistency_fn(target, x_lo, s_lo, cond, cfg)
    return torch.mean((consistency_fn(student, x_hi, s_hi, cond, cfg) - y) ** 2)


@torch.no_grad()
def teacher_sample(
    net: nn.Module, cond: torch.Tensor, noise: torch.Tensor, steps: int, cfg: DenoiserConfig
) -> torch.Tensor:
    """Deterministic Heun sampling from sigma_max * noise down to sigma_min, then denoise."""
    sig = karras_sigmas(steps, cfg).tolist()
    x = noise * sig[0]
    for a, b in itertools.pairwise(sig):
        x = heun_step(net, x, a, b, cond, cfg)
    return edm_denoise(net, x, sig[-1], cond, cfg)


@torch.no_grad()
def consistency_sample(
    net: nn.Module,
    cond: torch.Tensor,
    noises: Sequence[torch.Tensor],
    sigmas: Sequence[float],
    cfg: DenoiserConfig,
) -> torch.Tensor:
    """Multistep consistency sampling: f at sigmas[0] from pure noise, then re-noise to each
    further sigma and apply f again. len(noises) == len(sigmas)."""
    x = consistency_fn(net, noises[0] * sigmas[0], sigmas[0], cond, cfg)
    for eps, s in zip(noises[1:], sigmas[1:]):
        noisy = x + math.sqrt(max(s**2 - cfg.sigma_min**2, 0.0)) * eps
        x = consistency_fn(net, noisy, s, cond, cfg)
    return x


def build_residual_net(
    payload: Mapping[str, Any], device: torch.device
) -> tuple[ResidualNet, DenoiserConfig]:
    """A frozen ResidualNet (eval mode) and its config from a published payload."""
    cfg = DenoiserConfig.from_dict(payload["model_config"])
    net = ResidualNet(int(payload["channels"]), cfg)
    net.load_state_dict(payload["state_dict"])
    return frozen(net, device), cfg
