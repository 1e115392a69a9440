"""burgers1d: the physics reward (physical space) and the TTC beam search."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.dataset import TrajectorySource, nu_convention_for
from burgers1d.reward import BurgersReward, RewardConfig
from burgers1d.solver import Grid, coarsen, random_initial_conditions, solve
from burgers1d.ttc import TTCConfig, ttc_rollout


def _step(nu: float = 0.01, dt: float = 0.02) -> tuple[BurgersReward, torch.Tensor, torch.Tensor]:
    grid = Grid(128)
    u0 = random_initial_conditions(np.random.default_rng(0), 6, grid, abs_probability=0.5)
    u = solve(u0, grid, nu, np.array([0.0, 0.1, 0.1 + dt]))
    reward = BurgersReward(grid.dx, dt, nu, RewardConfig())
    return reward, torch.from_numpy(u[:, 1]), torch.from_numpy(u[:, 2])


def test_true_step_scores_better_than_perturbed_steps() -> None:
    reward, prev, true_next = _step()
    noisy = true_next + 0.05 * torch.randn(
        true_next.shape, generator=torch.Generator().manual_seed(0), dtype=true_next.dtype
    )
    shifted = true_next + 0.05
    stalled = prev.clone()
    r_true = reward(prev, true_next)
    for worse in (noisy, shifted, stalled, 1.1 * true_next):
        assert torch.all(r_true > reward(prev, worse))


def test_reward_terms() -> None:
    reward, prev, true_next = _step()
    terms = reward.terms(prev, true_next)
    assert torch.all(terms["mass"] < 1e-12)  # the solver conserves the mean exactly
    assert torch.all(reward.terms(prev, true_next + 0.1)["mass"] > 1e-4)
    assert torch.all(terms["energy"] < 1e-3)
    assert torch.all(reward.terms(prev, 1.2 * prev)["energy"] > 0.1)  # energy may not grow


class _TreeProposer:
    """Latent = node id of a binary tree; node n proposes children 2n+1 and 2n+2."""

    def propose(self, z: torch.Tensor, cfg: TTCConfig) -> torch.Tensor:
        return torch.stack([2 * z + 1, 2 * z + 2], dim=1)


class _TableReward:
    """Reward of a step = a value per child node (u_next is the node id)."""

    def __init__(self, table: dict[int, float]) -> None:
        self.table = table

    def __call__(self, u_prev: torch.Tensor, u_next: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.table.get(int(v), -100.0) for v in u_next[:, 0]])


def _tree_rollout(
    table: dict[int, float], z0: torch.Tensor, steps: int, cfg: TTCConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """ttc_rollout over the binary tree, the node ids decoded as they are."""
    return ttc_rollout(
        _TreeProposer(),  # type: ignore[arg-type]
        lambda z: z.reshape(z.shape[0], 1),
        _TableReward(table),  # type: ignore[arg-type]
        z0,
        steps=steps,
        cfg=cfg,
    )


def _first_choice(horizon: int, beam: int) -> int:
    table = {1: 1.0, 2: 0.5, 3: -5.0, 4: -5.0, 5: 2.0, 6: 0.0}
    cfg = TTCConfig(candidates=2, beam_width=beam, horizon=horizon)
    z, rewards = _tree_rollout(table, torch.zeros(1, 1, 1), 2, cfg)
    assert z.shape == (1, 2, 1, 1) and rewards.shape == (1, 2)
    return int(z[0, 0].item())


def test_beam_search_looks_ahead() -> None:
    assert _first_choice(horizon=1, beam=2) == 1  # greedy takes the best immediate reward
    assert _first_choice(horizon=2, beam=2) == 2  # 0.5 + 2.0 beats 1.0 - 5.0
    assert _first_choice(horizon=2, beam=1) == 1  # a beam of 1 prunes node 2 before looking


def test_beam_search_is_per_trajectory() -> None:
    table = {1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}
    table.update({2 * 10 + 1: 0.0, 2 * 10 + 2: 1.0})  # from node 10 the second child is best
    cfg = TTCConfig(candidates=2, beam_width=2, horizon=1)
    z, _ = _tree_rollout(table, torch.tensor([0.0, 10.0]).reshape(2, 1, 1), 1, cfg)
    assert z[:, 0].flatten().tolist() == [1.0, 22.0]


def _pdebench_file(tmp_path: Path, label: float, nx: int, dt: float) -> tuple[Path, np.ndarray]:
    """A small file named like PDEBench's, solved with viscosity label/pi as PDEBench's solver
    does, plus the same step solved with viscosity = the label (pi times too much)."""
    fine = Grid(2 * nx)
    u0 = random_initial_conditions(np.random.default_rng(1), 16, fine)
    times = np.array([0.0, 0.5, 0.5 + dt])
    true = coarsen(solve(u0, fine, label / math.pi, times), 2)
    wrong = coarsen(solve(u0, fine, label, times), 2)
    path = tmp_path / f"1D_Burgers_Sols_Nu{label}.hdf5"
    with h5py.File(path, "w") as f:  # PDEBench's raw files carry nu only in the name
        f["tensor"] = true.astype(np.float32)
        f["x-coordinate"] = Grid(nx).x.astype(np.float32)
        f["t-coordinate"] = np.array([0.0, dt, 2 * dt, 3 * dt], dtype=np.float32)  # dt only
    return path, wrong[:, 2]


def test_pdebench_files_use_nu_over_pi_and_the_true_step_beats_pi_times_viscosity(
    tmp_path: Path,
) -> None:
    path, wrong_next = _pdebench_file(tmp_path, 0.01, 256, 0.05)
    with TrajectorySource([path], t_stride=1) as src:  # nu_convention auto
        assert src.nominal_nu == pytest.approx(0.01)
        assert src.nu == pytest.approx(0.01 / math.pi)
        u = src.read(0, len(src)).astype(np.float64)
        reward = BurgersReward(src.dx, src.dt, src.nu, RewardConfig())
    with TrajectorySource([path], nu_convention="plain") as src:
        assert src.nu == pytest.approx(0.01)
    prev, true_next = torch.from_numpy(u[:, 1]), torch.from_numpy(u[:, 2])
    assert reward.substeps(prev) > 1  # PDEBench's stored step is far above the CFL limit
    assert torch.all(reward(prev, true_next) > reward(prev, torch.from_numpy(wrong_next)))


def test_nu_convention_is_checked_and_auto_only_for_pdebench_names(tmp_path: Path) -> None:
    assert nu_convention_for("1D_Burgers_Sols_Nu0.001.hdf5") == "pdebench"
    assert nu_convention_for("burgers1d_train.h5") == "plain"
    assert nu_convention_for("burgers1d_train.h5", "pdebench") == "pdebench"
    with pytest.raises(ValueError, match="nu_convention"):
        nu_convention_for("x.h5", "pi")


def test_residual_is_sub_stepped_only_above_the_cfl_limit() -> None:
    small = BurgersReward(1 / 128, 1e-3, 0.001, RewardConfig())
    u = torch.sin(2 * math.pi * torch.arange(128, dtype=torch.float64) / 128)[None]
    assert small.substeps(u) == 1  # 1e-3 * 1 * 128 = 0.128 < 0.5: the midpoint form
    big = BurgersReward(1 / 128, 0.05, 0.001, RewardConfig())
    assert big.substeps(u) == math.ceil(0.05 * 128 / 0.5)
    # the sub-stepped residual of the solver's own step is small next to a stalled state's
    grid = Grid(128)
    v = solve(u.numpy(), grid, 0.001, np.array([0.0, 0.05]))
    prev, nxt = torch.from_numpy(v[:, 0]), torch.from_numpy(v[:, 1])
    assert big.terms(prev, nxt)["pde"] < 0.05 * big.terms(prev, prev)["pde"]
