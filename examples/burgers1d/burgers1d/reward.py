"""Physics reward for test-time compute, computed in PHYSICAL space on decoded fields.

For a step u_prev -> u_next over dt (periodic grid, spacing dx, viscosity nu), with the
midpoint state u_m = (u_prev + u_next) / 2:

* ``pde``: mean squared discrete Burgers residual
  (u_next - u_prev)/dt + (F_{i+1/2} - F_{i-1/2})/dx - nu (u_m)_xx, with Godunov fluxes F of u_m,
  times dt^2 and divided by the mean square of u_prev (dimensionless);
* ``mass``: squared change of the mean of u (exactly conserved by periodic Burgers), relative;
* ``energy``: energy must fall by at least the viscous dissipation nu <u_x^2> dt; the relative
  excess relu(E_next - E_prev + nu <(u_m)_x^2> dt) / E_prev is penalised.

reward = -(w_pde pde + w_mass mass + w_energy energy); higher is better. The seed's reward used
a random, never-loaded 2D decoder and fields (rho, e) that 1D Burgers does not have.
"""

from __future__ import annotations

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


class BurgersReward:
    """Scores candidate next states u_next [M, X] given u_prev [M, X]."""

    def __init__(self, dx: float, dt: float, nu: float, cfg: RewardConfig) -> None:
        self.dx, self.dt, self.nu, self.cfg = float(dx), float(dt), float(nu), cfg

    def terms(self, u_prev: torch.Tensor, u_next: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three penalty terms, each [M]."""
        u_prev, u_next = u_prev.double(), u_next.double()
        um = 0.5 * (u_prev + u_next)
        right = torch.roll(um, -1, dims=-1)
        flux = godunov_flux(um, right)
        div = (flux - torch.roll(flux, 1, dims=-1)) / self.dx
        lap = (right - 2.0 * um + torch.roll(um, 1, dims=-1)) / self.dx**2
        res = (u_next - u_prev) / self.dt + div - self.nu * lap
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
