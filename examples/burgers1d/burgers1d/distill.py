"""Stage ``consistency_distill``: distil the diffusion corrector into a few-step student.

    python -m burgers1d.distill --config configs/consistency_distill.yaml [--device ...]

Consistency distillation: the student starts from the teacher's weights (so a re-run is
idempotent; the seed's stage 3 kept training its own previous output). For x_{n+1} = r +
s_{n+1} eps, one teacher Heun step gives x_n, and the student f(x_{n+1}, s_{n+1}) is pulled
towards an EMA target f^-(x_n, s_n). The result is published as its OWN checkpoint
(``checkpoints/consistency_distill/``); the teacher's file is only read.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence

import torch

from . import checkpoints, stage
from .corrector import load_operator, residual_pairs
from .diffusion import (
    ResidualNet,
    build_residual_net,
    consistency_loss,
    consistency_sample,
    karras_sigmas,
    teacher_sample,
)
from .distributed import unwrap
from .latents import load_latents, window_count
from .networks import frozen

NAME = "consistency_distill"


def train_one(run: stage.StageRun) -> None:
    """Train and publish this stage's model for one training seed."""
    sec, dev = run.section, run.ctx.device
    data = load_latents(run.cfg, dev)
    train, val = data.splits["train"], data.splits["val"]
    operator, op_pointer = load_operator(run.cfg, data, dev)
    t_payload, t_pointer = checkpoints.load(
        run.ckpt_root, "diff_residual", dev, checkpoints.variant_of(run.cfg)
    )
    checkpoints.require_lineage(t_payload, {"operator": op_pointer}, "diff_residual")
    teacher, mcfg = build_residual_net(t_payload, dev)
    r_std = t_payload["r_std"].to(dev)

    student = ResidualNet(train.shape[2], mcfg)
    student.load_state_dict(t_payload["state_dict"])
    target = frozen(copy.deepcopy(student), dev)  # the EMA target: updated by hand, no grads
    model = run.ctx.wrap(student)
    sigmas = karras_sigmas(int(sec.get("discretization", 18)), mcfg).to(dev)  # decreasing
    target_decay = float(sec.get("target_ema", 0.95))
    sample_sigmas = [float(s) for s in sec.get("sample_sigmas", [mcfg.sigma_max, 0.8])]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        r, cond = residual_pairs(operator, train, idx, r_std)
        return consistency_loss(model, teacher, target, r, cond, sigmas, mcfg)

    @torch.no_grad()
    def update_target() -> None:
        for pt, ps in zip(target.parameters(), unwrap(model).parameters()):
            pt.lerp_(ps.detach(), 1.0 - target_decay)

    gen = torch.Generator().manual_seed(run.seed)
    val_idx = torch.randperm(window_count(val, 1), generator=gen)[
        : int(sec.get("val_windows", 512))
    ]
    r_val, cond_val = residual_pairs(operator, val, val_idx, r_std)
    noises = [torch.randn(r_val.shape, generator=gen).to(dev) for _ in sample_sigmas]

    def validate(module: torch.nn.Module) -> float:
        return float(
            torch.mean(
                (consistency_sample(module, cond_val, noises, sample_sigmas, mcfg) - r_val) ** 2
            )
        )

    result = run.train(model, loss_fn, window_count(train, 1), validate, on_step=update_target)
    best = ResidualNet(train.shape[2], mcfg).to(dev).eval()
    best.load_state_dict(result.best_state)
    one_step = consistency_sample(best, cond_val, noises[:1], sample_sigmas[:1], mcfg)
    teacher_out = teacher_sample(
        teacher, cond_val, noises[0], int(sec.get("teacher_steps", 12)), mcfg
    )
    metrics = {
        **result.metrics,
        "val_residual_mse_operator": float(torch.mean(r_val**2)),
        "val_residual_mse_student_1step": float(torch.mean((one_step - r_val) ** 2)),
        "val_residual_mse_student": float(result.metrics.get("best_val_loss", float("nan"))),
        "val_residual_mse_teacher": float(torch.mean((teacher_out - r_val) ** 2)),
        "sample_steps": len(sample_sigmas),
    }
    run.log(
        f"val residual mse: operator {metrics['val_residual_mse_operator']:.4f}, teacher "
        f"{metrics['val_residual_mse_teacher']:.4f}, student {len(sample_sigmas)}-step "
        f"{metrics['val_residual_mse_student']:.4f}, 1-step "
        f"{metrics['val_residual_mse_student_1step']:.4f}"
    )
    lineage = {
        "diff_residual": t_pointer.sha256,
        "operator": op_pointer.sha256,
        "latent_cache": data.cache_key,
    }
    extra = {"r_std": r_std.cpu(), "sample_sigmas": sample_sigmas}
    stage.finish_model(run, data, mcfg, result, lineage, metrics, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run_seeds(argv, __doc__.splitlines()[0], NAME, train_one)


if __name__ == "__main__":
    sys.exit(main())
