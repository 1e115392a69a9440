"""Physics reward for test-time compute, computed in PHYSICAL space on decoded fields.

For a step u_prev -> u_next over dt (periodic grid, spacing dx, viscosity nu), with the
midpoint state u_m = (u_prev + u_next) / 2:

* ``pde``: mean squared discrete Burgers residual
  (u_next - u_prev)/dt + (F_{i+1/2} - F_{i-1/2})/dx - nu (u_m)_xx, with Godunov fluxes F of u_m,
  times dt^2 and divided by the mean square of u_prev (dimensionless);
* ``mass``: squared change of the mean of u (exactly conserved by periodic Burgers), relative;
* ``energy``: energy must fall by at least the viscous dissipation nu <u_x^2> dt; the relative
  excess relu(E_next - E_prev + nu <(u_m)_x^2> dt) / E_prev is penalised.

Where a stored step is longer than the explicit stability limit (dt max|u| / dx > ``cfl``, or
dt > dx^2 / (2 nu) for the diffusion; PDEBench's strides give CFL numbers near 10), a one-step
midpoint residual says little about the PDE. There the ``pde`` term is the defect
(u_next - S(u_prev)) / dt against ``S``: u_prev integrated over dt in ``n`` stable sub-steps
(forward Euler, Godunov fluxes, 3-point diffusion), with n the smallest count within the limits.

reward = -(w_pde pde + w_mass mass + w_energy energy); higher is better. The seed's reward used
a random, never-loaded 2D decoder and fields (rho, e) that 1D Burgers does not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms."""

    w_pde: float = 1.0
    w_mass: float = 1.0
    w_energy: float = 0.1
    cfl: float = 0.5  # sub-step the residual above this CFL number

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RewardConfig:
        raw = dict(raw or {})
        return cls(**{k: float(raw[k]) for k in asdict(cls()) if k in raw})


def godunov_flux(ul: torch.Tensor, ur: torch.Tensor) -> torch.Tensor:
    """Exact Godunov flux of u^2/2 (same formula as the numpy solver)."""
    fl, fr = 0.5 * ul * ul, 0.5 * ur * ur
    zero = torch.zeros_like(ul)
    rarefaction = torch.where(ul > 0, fl, torch.where(ur < 0, fr, zero))
    return torch.where(ul <= ur, rarefaction, torch.maximum(fl, fr))


def burgers_rhs(u: torch.Tensor, dx: float, nu: float) -> torch.Tensor:
    """-(F_{i+1/2} - F_{i-1/2}) / dx + nu (u_{i+1} - 2 u_i + u_{i-1}) / dx^2, periodic."""
    right, left = torch.roll(u, -1, dims=-1), torch.roll(u, 1, dims=-1)
    flux = godunov_flux(u, right)
    div = (flux - torch.roll(flux, 1, dims=-1)) / dx
    return -div + nu * (right - 2.0 * u + left) / dx**2


class BurgersReward:
    """Scores candidate next states u_next [M, X] given u_prev [M, X]."""

    def __init__(self, dx: float, dt: float, nu: float, cfg: RewardConfig) -> None:
        self.dx, self.dt, self.nu, self.cfg = float(dx), float(dt), float(nu), cfg

    def substeps(self, u_prev: torch.Tensor) -> int:
        """Sub-steps the residual needs for a step from ``u_prev`` (1 = the midpoint form)."""
        umax = float(u_prev.abs().max()) if u_prev.numel() else 0.0
        n = self.dt * umax / (self.cfg.cfl * self.dx)
        if self.nu > 0:
            n = max(n, self.dt * 2.0 * self.nu / (self.cfg.cfl * self.dx**2))
        return max(1, math.ceil(n - 1e-9))

    def residual(self, u_prev: torch.Tensor, u_next: torch.Tensor) -> torch.Tensor:
        """The discrete Burgers residual of the step, [M, X] (see the module docstring)."""
        n = self.substeps(u_prev)
        if n == 1:
            um = 0.5 * (u_prev + u_next)
            return (u_next - u_prev) / self.dt - burgers_rhs(um, self.dx, self.nu)
        h, u = self.dt / n, u_prev
        for _ in range(n):
            u = u + h * burgers_rhs(u, self.dx, self.nu)
        return (u_next - u) / self.dt

    def terms(self, u_prev: torch.Tensor, u_next: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three penalty terms, each [M]."""
        u_prev, u_next = u_prev.double(), u_next.double()
        um = 0.5 * (u_prev + u_next)
        right = torch.roll(um, -1, dims=-1)
        res = self.residual(u_prev, u_next)
        scale = u_prev.pow(2).mean(-1) + 1e-8
        e_prev, e_next = 0.5 * u_prev.pow(2).mean(-1), 0.5 * u_next.pow(2).mean(-1)
        dissipation = self.nu * ((right - um) / self.dx).pow(2).mean(-1) * self.dt
        return {
            "pde": res.pow(2).mean(-1) * self.dt**2 / scale,
            "mass": (u_next.mean(-1) - u_prev.mean(-1)).pow(2) / scale,
            "energy": torch.relu(e_next - e_prev + dissipation) / (e_prev + 1e-8),
        }

    def __call__(self, u_prev: torch.Tensor, u_next: torch.Tensor) -> torch.Tensor:
        t = self.terms(u_prev, u_next)
        c = self.cfg
        return -(c.w_pde * t["pde"] + c.w_mass * t["mass"] + c.w_energy * t["energy"]).float()
