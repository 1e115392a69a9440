"""burgers1d: the numpy Burgers solver and the simulate entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d import simulate
from burgers1d.solver import (
    Grid,
    cell_average_sines,
    coarsen,
    diffusion_multiplier,
    godunov_flux,
    random_initial_conditions,
    solve,
)
from burgers1d.tiny import make_run_root


def _max_gradient(u: np.ndarray, dx: float) -> np.ndarray:
    return np.max(np.abs(np.diff(u, axis=-1, append=u[..., :1])), axis=-1) / dx


@pytest.mark.parametrize("nu", [0.0, 0.02])
def test_integral_of_u_is_conserved_with_periodic_bcs(nu: float) -> None:
    grid = Grid(64)
    u0 = random_initial_conditions(np.random.default_rng(0), 8, grid, abs_probability=0.5)
    u = solve(u0, grid, nu, np.linspace(0.0, 0.5, 6))
    mass = u.sum(axis=-1) * grid.dx
    assert np.max(np.abs(mass - mass[:, :1])) < 1e-12


def test_shock_steepening_in_the_inviscid_limit() -> None:
    grid = Grid(128)
    u0 = cell_average_sines(np.ones((1, 1)), np.ones((1, 1)), np.zeros((1, 1)), grid)
    u = solve(u0, grid, 1e-4, np.array([0.0, 0.1, 0.2]))[0]
    grad = _max_gradient(u, grid.dx)
    assert grad[1] > 1.5 * grad[0]  # steepening before the break time 1/(2 pi)
    assert grad[2] > 5.0 * grad[0]  # a shock after it
    assert np.all(np.abs(u) <= np.abs(u0).max() + 1e-9)  # no new extrema (TVD)


def test_viscosity_dissipates_energy_monotonically() -> None:
    grid = Grid(64)
    u0 = random_initial_conditions(np.random.default_rng(1), 4, grid)
    u = solve(u0, grid, 0.1, np.linspace(0.0, 0.5, 11))
    energy = 0.5 * np.mean(u**2, axis=-1)
    assert np.all(np.diff(energy, axis=1) < 0)
    assert np.all(_max_gradient(u[:, -1], grid.dx) < _max_gradient(u[:, 0], grid.dx))


def test_godunov_flux_cases() -> None:
    ul = np.array([1.0, -1.0, -2.0, 2.0, -1.0])
    ur = np.array([2.0, -2.0, 1.0, -1.0, -0.5])
    # right-moving rarefaction, left-moving shock, sonic rarefaction, shock, left rarefaction
    np.testing.assert_allclose(godunov_flux(ul, ur), [0.5, 2.0, 0.0, 2.0, 0.125])


def test_diffusion_multiplier_solves_the_discrete_heat_equation() -> None:
    grid, nu, t = Grid(32), 0.05, 0.3
    mult = diffusion_multiplier(grid.nx, grid.dx, nu, t)
    eig = -4.0 / grid.dx**2 * np.sin(np.pi * 3 / grid.nx) ** 2  # 3-point Laplacian, mode 3
    assert mult[0] == 1.0  # the mean is never touched
    assert mult[3] == pytest.approx(np.exp(nu * eig * t))
    assert np.all(np.diff(mult) < 0)


def test_coarsen_is_exact_cell_averaging() -> None:
    fine = Grid(64)
    u = random_initial_conditions(np.random.default_rng(2), 3, fine)
    coarse = coarsen(u, 4)
    assert coarse.shape == (3, 16)
    np.testing.assert_allclose(coarse.mean(-1), u.mean(-1), atol=1e-14)


def test_simulate_writes_pdebench_layout_and_skips_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_run_root(tmp_path / "run")
    monkeypatch.chdir(root)
    assert simulate.main(["--config", "configs/tiny/data.yaml"]) == 0
    with h5py.File(root / "data/burgers1d/burgers1d_train.h5", "r") as f:
        assert f["tensor"].shape == (16, 9, 32) and f["tensor"].dtype == np.float32
        assert f["x-coordinate"].shape == (32,)
        assert f["t-coordinate"].shape == (10,)  # T + 1, as in PDEBench
        assert f.attrs["nu"] == pytest.approx(0.01)
        first = f["tensor"][...]
    capsys.readouterr()
    assert simulate.main(["--config", "configs/tiny/data.yaml"]) == 0
    assert capsys.readouterr().out.count("skipping") == 3
    with h5py.File(root / "data/burgers1d/burgers1d_train.h5", "r") as f:
        np.testing.assert_array_equal(f["tensor"][...], first)


def test_data_side_never_imports_torch() -> None:
    code = (
        "import sys; import burgers1d.simulate, burgers1d.check_splits, burgers1d.splits; "
        "sys.exit(int('torch' in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=EXAMPLE, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr or "torch was imported by the data side"


def _cole_hopf(amplitude: float, nu: float, t: float, n_fine: int) -> np.ndarray:
    """Exact viscous Burgers solution for u0 = A sin(2 pi x) on [0, 1) at time t (point values
    on n_fine cell centres): u = -2 nu phi_x / phi, phi solving the heat equation with
    phi0 = exp(A cos(2 pi x) / (4 pi nu)); the heat equation is solved exactly in Fourier."""
    x = (np.arange(n_fine) + 0.5) / n_fine
    phi0 = np.exp(amplitude * np.cos(2 * np.pi * x) / (4 * np.pi * nu))
    k = 2 * np.pi * np.fft.rfftfreq(n_fine, d=1.0 / n_fine)
    phi_hat = np.fft.rfft(phi0) * np.exp(-nu * k**2 * t)
    phi = np.fft.irfft(phi_hat, n=n_fine)
    phi_x = np.fft.irfft(1j * k * phi_hat, n=n_fine)
    return -2.0 * nu * phi_x / phi


def test_solver_matches_the_exact_cole_hopf_solution() -> None:
    nu, t_end, nx = 0.02, 0.3, 128
    fine = Grid(nx * 4)
    u0 = cell_average_sines(np.ones((1, 1)), np.ones((1, 1)), np.zeros((1, 1)), fine)
    u = coarsen(solve(u0, fine, nu, np.array([0.0, t_end]))[0, -1], 4)
    exact = coarsen(_cole_hopf(1.0, nu, t_end, nx * 64), 64)  # cell averages of the exact field
    assert np.max(np.abs(exact)) > 0.5  # a steep front has formed, not a decayed state
    assert np.max(np.abs(u - exact)) < 1e-3  # worst cell, the steepest front included
    assert np.sqrt(np.mean((u - exact) ** 2)) < 2e-4


def test_pdebench_style_initial_states_sign_and_tanh_window() -> None:
    grid = Grid(256)
    plain = random_initial_conditions(np.random.default_rng(3), 64, grid, abs_probability=1.0)
    assert np.all(plain >= 0)  # |u| everywhere
    again = random_initial_conditions(
        np.random.default_rng(3), 64, grid, abs_probability=1.0, sign_flip=True
    )
    negative = np.all(again <= 0, axis=1)
    assert 10 < negative.sum() < 54  # about half the states flipped
    np.testing.assert_allclose(np.abs(again), plain)  # the same states otherwise
    windowed = random_initial_conditions(
        np.random.default_rng(3), 64, grid, abs_probability=1.0, window_probability=1.0
    )
    outside = (grid.x < 0.05) | (grid.x > 0.95)  # outside every window [0.1..0.45, 0.55..0.9]
    assert np.max(np.abs(windowed[:, outside])) < 1e-3 * np.max(np.abs(plain))
    inside = (grid.x > 0.49) & (grid.x < 0.51)  # >= 4 widths inside every window
    np.testing.assert_allclose(windowed[:, inside], plain[:, inside], rtol=2e-3, atol=1e-9)
