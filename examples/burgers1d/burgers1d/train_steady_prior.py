"""Stage ``steady_prior``: train the steady-state prior on cached latents.

    python -m burgers1d.train_steady_prior --config configs/steady_prior.yaml [--device ...]

Samples are (trajectory, t) for t < T-1 with target z(T-1). It depends on the latents only, not
on the operator, so a changed operator config does not re-run it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from . import stage
from .latents import load_latents
from .steady_prior import SteadyPrior, SteadyPriorConfig

NAME = "steady_prior"


def prior_loss(model: torch.nn.Module, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """MSE of the predicted final latent for flat (trajectory, t) indices ``idx``."""
    t_last = z.shape[1] - 1
    idx = idx.to(z.device)
    traj, t = idx // t_last, idx % t_last
    remaining = (t_last - t).float() / t_last
    pred = model(z[traj, t], remaining)
    return torch.mean((pred.float() - z[traj, t_last]) ** 2)


def train_one(run: stage.StageRun) -> None:
    """Train and publish this stage's model for one training seed."""
    sec, dev = run.section, run.ctx.device
    data = load_latents(run.cfg, dev)
    train, val = data.splits["train"], data.splits["val"]
    model_cfg = SteadyPriorConfig.from_dict(sec.get("model", {}))
    model = run.ctx.wrap(SteadyPrior(train.shape[2], model_cfg))
    n_train = train.shape[0] * (train.shape[1] - 1)
    val_idx = torch.arange(val.shape[0] * (val.shape[1] - 1))

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return prior_loss(model, train, idx)

    def validate(module: torch.nn.Module) -> float:
        return float(torch.stack([prior_loss(module, val, b) for b in val_idx.split(2048)]).mean())

    result = run.train(model, loss_fn, n_train, validate)
    stage.finish_model(run, data, model_cfg, result, {"latent_cache": data.cache_key})


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run_seeds(argv, __doc__.splitlines()[0], NAME, train_one)


if __name__ == "__main__":
    sys.exit(main())
