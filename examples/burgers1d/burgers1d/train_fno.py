"""Stage ``fno``: the PDEBench FNO baseline, trained on the physical data (no latents).

    python -m burgers1d.train_fno --config configs/fno.yaml [--device ...]

Windows of ``initial_step`` given frames followed by ``unroll`` target frames are cut from the
train trajectories; the loss is the MSE of the autoregressive prediction of the targets
(gradients through the whole unroll, like PDEBench's autoregressive training). Validation: the
same loss on val windows. The evaluator rolls the FNO out from the same given frames as every
other method and scores it with the same metric. Trains once per training seed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch

from . import stage
from .fno import FNO1d, FNOConfig, fno_rollout
from .splits import open_split, split_digest


def load_split(cfg: dict, split: str, cap: int, device: torch.device) -> torch.Tensor:
    """Up to ``cap`` trajectories of ``split`` as float32 [N, T, X] on ``device``."""
    with open_split(cfg, split) as source:
        return torch.from_numpy(source.read(0, min(len(source), cap))).to(device)


def window_loss(model: torch.nn.Module, u: torch.Tensor, idx: torch.Tensor, g: int, k: int):
    """MSE of a ``k``-step rollout from ``g`` frames, for flat (trajectory, start) ``idx``."""
    per_traj = u.shape[1] - g - k + 1
    idx = idx.to(u.device)
    traj, start = idx // per_traj, idx % per_traj
    steps = start[:, None] + torch.arange(g + k, device=u.device)
    win = u[traj[:, None], steps]
    pred = fno_rollout(model, win[:, :g], k)
    return torch.mean((pred - win[:, g:]) ** 2)


def train_one(run: stage.StageRun) -> None:
    """Train and publish the FNO for one training seed."""
    sec, dev = run.section, run.ctx.device
    given = int((run.cfg.get("data") or {}).get("given_frames", 1))
    model_cfg = replace(FNOConfig.from_dict(sec.get("model", {})), initial_step=given)
    unroll = int(sec.get("unroll", 4))
    cap = int(sec.get("max_trajectories", 1_000_000))
    train = load_split(run.cfg, "train", cap, dev)
    val = load_split(run.cfg, "val", int(sec.get("val_trajectories", 64)), dev)
    unroll = min(unroll, train.shape[1] - given)
    model = run.ctx.wrap(FNO1d(model_cfg))
    n_train = train.shape[0] * (train.shape[1] - given - unroll + 1)
    n_val = val.shape[0] * (val.shape[1] - given - unroll + 1)
    gen = torch.Generator().manual_seed(run.seed)
    val_idx = torch.randperm(n_val, generator=gen)[: int(sec.get("val_windows", 512))]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return window_loss(model, train, idx, given, unroll)

    def validate(module: torch.nn.Module) -> float:
        return float(
            torch.stack(
                [window_loss(module, val, b, given, unroll) for b in val_idx.split(256)]
            ).mean()
        )

    result = run.train(model, loss_fn, n_train, validate)
    payload = {
        "model_config": asdict(model_cfg),
        "state_dict": result.best_state,
        "unroll": unroll,
        "train_digest": split_digest(run.cfg, "train"),
    }
    metrics = {"unroll": unroll, "initial_step": given, **result.metrics}
    stage.finish(run, payload, {"train_data": payload["train_digest"]}, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run_seeds(argv, __doc__.splitlines()[0], "fno", train_one)


if __name__ == "__main__":
    sys.exit(main())
