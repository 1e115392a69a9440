"""Stage ``operator``: train the latent time-stepper on cached latents.

    python -m burgers1d.train_operator --config configs/operator.yaml [--device ...]
    torchrun --standalone --nproc_per_node=N -m burgers1d.train_operator --config ...

Loss: mean squared error of an unrolled ``rollout``-step prediction (step 1 is the one-step
loss; later steps feed the operator its own output). The published weights are the best by
validation loss, and the payload records the latent cache key it was trained on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from . import stage
from .latent_operator import LatentOperator, OperatorConfig
from .latents import load_latents, window_count, windows

NAME = "operator"


def rollout_loss(model: torch.nn.Module, win: torch.Tensor) -> torch.Tensor:
    """Mean over steps of the MSE of an unrolled prediction from ``win[:, 0]``."""
    steps = win.shape[1] - 1
    z, loss = win[:, 0], win.new_zeros(())
    for k in range(1, steps + 1):
        z = model(z)
        loss = loss + torch.mean((z.float() - win[:, k]) ** 2)
    return loss / steps


def train_one(run: stage.StageRun) -> None:
    """Train and publish this stage's model for one training seed."""
    sec, dev = run.section, run.ctx.device
    rollout = int(sec.get("rollout", 1))
    data = load_latents(run.cfg, dev)
    train, val = data.splits["train"], data.splits["val"]
    model_cfg = OperatorConfig.from_dict(sec.get("model", {}))
    model = run.ctx.wrap(LatentOperator(train.shape[2], model_cfg))

    gen = torch.Generator().manual_seed(run.seed)
    n_val = window_count(val, rollout)
    val_idx = torch.randperm(n_val, generator=gen)[: int(sec.get("val_windows", 2048))]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return rollout_loss(model, windows(train, idx, rollout))

    def validate(module: torch.nn.Module) -> float:
        return float(
            torch.stack(
                [rollout_loss(module, windows(val, b, rollout)) for b in val_idx.split(1024)]
            ).mean()
        )

    result = run.train(model, loss_fn, window_count(train, rollout), validate)
    lineage = {"latent_cache": data.cache_key, "encoder": data.info["encoder_sha256"]}
    metrics = {"rollout": rollout, **result.metrics}
    stage.finish_model(run, data, model_cfg, result, lineage, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run_seeds(argv, __doc__.splitlines()[0], NAME, train_one)


if __name__ == "__main__":
    sys.exit(main())
