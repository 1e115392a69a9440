"""1D viscous Burgers, u_t + (u^2/2)_x = nu u_xx on a periodic domain (numpy only).

Scheme (finite volume, batched over trajectories):

* convection: MUSCL reconstruction with a minmod limiter, the exact Godunov flux for the convex
  flux u^2/2, and SSP-RK2 (Heun) in time under a CFL limit. Conservative, so on a periodic grid
  the sum of cell averages changes only by round-off;
* diffusion: the discrete heat equation (3-point Laplacian) solved exactly in Fourier space, so
  large nu costs no extra steps; the k=0 multiplier is exactly 1, so the mean is untouched;
* Strang splitting: half diffusion, convection, half diffusion.

The state holds cell averages, so a fine solution is brought to a coarse output grid exactly by
averaging groups of cells (:func:`coarsen`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A periodic grid of ``nx`` cells on [0, length); cell centres are the coordinates."""

    nx: int
    length: float = 1.0

    @property
    def dx(self) -> float:
        return self.length / self.nx

    @property
    def x(self) -> np.ndarray:
        return (np.arange(self.nx) + 0.5) * self.dx


def godunov_flux(ul: np.ndarray, ur: np.ndarray) -> np.ndarray:
    """Exact Godunov flux for f(u) = u^2/2 between left state ``ul`` and right state ``ur``."""
    fl = 0.5 * ul * ul
    fr = 0.5 * ur * ur
    rarefaction = np.where(ul > 0.0, fl, np.where(ur < 0.0, fr, 0.0))
    shock = np.maximum(fl, fr)
    return np.where(ul <= ur, rarefaction, shock)


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a * b > 0.0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)


def convection_rhs(u: np.ndarray, dx: float) -> np.ndarray:
    """-(F_{i+1/2} - F_{i-1/2}) / dx with MUSCL-minmod states; ``u`` is [..., nx], periodic."""
    up = np.roll(u, -1, axis=-1)
    um = np.roll(u, 1, axis=-1)
    slope = _minmod(u - um, up - u)
    left = u + 0.5 * slope  # state left of face i+1/2
    right = np.roll(u - 0.5 * slope, -1, axis=-1)  # state right of face i+1/2
    flux = godunov_flux(left, right)  # F_{i+1/2}
    return -(flux - np.roll(flux, 1, axis=-1)) / dx


def diffusion_multiplier(nx: int, dx: float, nu: float, dt: float) -> np.ndarray:
    """rfft multiplier that solves the periodic 3-point-Laplacian heat equation exactly over dt."""
    k = np.arange(nx // 2 + 1)
    eig = -4.0 / dx**2 * np.sin(np.pi * k / nx) ** 2
    return np.exp(nu * eig * dt)


def _diffuse(u: np.ndarray, nu: float, dx: float, dt: float) -> np.ndarray:
    if nu <= 0.0 or dt <= 0.0:
        return u
    nx = u.shape[-1]
    return np.fft.irfft(
        np.fft.rfft(u, axis=-1) * diffusion_multiplier(nx, dx, nu, dt), n=nx, axis=-1
    )


def _convect(u: np.ndarray, dx: float, dt: float) -> np.ndarray:
    u1 = u + dt * convection_rhs(u, dx)
    return 0.5 * (u + u1 + dt * convection_rhs(u1, dx))


def stable_dt(u: np.ndarray, dx: float, cfl: float) -> float:
    """Largest convective step under ``cfl`` for the current state (diffusion is exact)."""
    umax = float(np.max(np.abs(u))) if u.size else 0.0
    return cfl * dx / max(umax, 1e-8)


def solve(
    u0: np.ndarray,
    grid: Grid,
    nu: float,
    t_out: np.ndarray,
    cfl: float = 0.4,
    max_steps: int = 10_000_000,
) -> np.ndarray:
    """Integrate from ``u0`` ([B, nx] or [nx], cell averages) and return u at each ``t_out``.

    ``t_out`` must start at 0 and increase. Output shape: [B, len(t_out), nx] (float64).
    """
    t_out = np.asarray(t_out, dtype=np.float64)
    if t_out.ndim != 1 or t_out[0] != 0.0 or np.any(np.diff(t_out) <= 0.0):
        raise ValueError("t_out must be 1D, start at 0 and increase strictly")
    u = np.atleast_2d(np.asarray(u0, dtype=np.float64)).copy()
    if u.shape[-1] != grid.nx:
        raise ValueError(f"u0 has {u.shape[-1]} cells, grid has {grid.nx}")
    out = np.empty((u.shape[0], t_out.size, grid.nx), dtype=np.float64)
    out[:, 0] = u
    t = 0.0
    steps = 0
    for k in range(1, t_out.size):
        while t < t_out[k]:
            dt = min(stable_dt(u, grid.dx, cfl), t_out[k] - t)
            u = _diffuse(u, nu, grid.dx, 0.5 * dt)
            u = _convect(u, grid.dx, dt)
            u = _diffuse(u, nu, grid.dx, 0.5 * dt)
            t = t_out[k] if t_out[k] - (t + dt) < 1e-12 else t + dt
            steps += 1
            if steps > max_steps:
                raise RuntimeError(f"solver exceeded {max_steps} steps")
        out[:, k] = u
    return out


def coarsen(u: np.ndarray, factor: int) -> np.ndarray:
    """Average groups of ``factor`` neighbouring cells along the last axis (exact for FV)."""
    if factor == 1:
        return u
    nx = u.shape[-1]
    if nx % factor:
        raise ValueError(f"{nx} cells cannot be coarsened by {factor}")
    return u.reshape(*u.shape[:-1], nx // factor, factor).mean(axis=-1)


def cell_average_sines(
    amplitudes: np.ndarray, wavenumbers: np.ndarray, phases: np.ndarray, grid: Grid
) -> np.ndarray:
    """Exact cell averages of sum_j A_j sin(2 pi k_j x / L + phi_j); inputs are [B, J]."""
    edges = np.arange(grid.nx + 1) * grid.dx
    w = 2.0 * np.pi * wavenumbers[..., None] / grid.length  # [B, J, 1]
    antideriv = -np.cos(w * edges + phases[..., None]) / w  # [B, J, nx+1]
    avg = (antideriv[..., 1:] - antideriv[..., :-1]) / grid.dx
    return np.sum(amplitudes[..., None] * avg, axis=-2)


def random_initial_conditions(
    rng: np.random.Generator,
    n: int,
    grid: Grid,
    n_waves: int = 2,
    max_wavenumber: int = 4,
    abs_probability: float = 0.1,
    sign_flip: bool = False,
    window_probability: float = 0.0,
    window_width: float = 0.01,
) -> np.ndarray:
    """PDEBench-style initial states: a sum of ``n_waves`` sines (k in 1..max_wavenumber,
    A ~ U(0, 1), phase ~ U(0, 2 pi)); with ``abs_probability`` the state is replaced by |u|,
    which gives a non-zero mean and moving shocks. Returns [n, nx] cell averages.

    The rest of PDEBench's recipe (off by default, so existing data keep their recipe):
    ``sign_flip`` multiplies each state by a random sign, and with ``window_probability`` a
    state is multiplied by the tanh window 0.5 (tanh((x - a) / w) - tanh((x - b) / w)),
    a ~ U(0.1, 0.45) L, b ~ U(0.55, 0.9) L, w = ``window_width`` L (evaluated at cell
    centres)."""
    amplitudes = rng.uniform(0.0, 1.0, size=(n, n_waves))
    wavenumbers = rng.integers(1, max_wavenumber + 1, size=(n, n_waves)).astype(np.float64)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, n_waves))
    u0 = cell_average_sines(amplitudes, wavenumbers, phases, grid)
    flip = rng.uniform(size=n) < abs_probability
    u0[flip] = np.abs(u0[flip])
    if sign_flip:
        u0 *= rng.choice(np.array([1.0, -1.0]), size=(n, 1))
    if window_probability > 0.0:
        length = grid.length
        a = rng.uniform(0.1, 0.45, size=(n, 1)) * length
        b = rng.uniform(0.55, 0.9, size=(n, 1)) * length
        w = window_width * length
        window = 0.5 * (np.tanh((grid.x - a) / w) - np.tanh((grid.x - b) / w))
        use = rng.uniform(size=n) < window_probability
        u0[use] *= window[use]
    return u0
