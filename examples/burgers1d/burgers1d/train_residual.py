"""Stage ``diff_residual``: train the diffusion residual corrector (EDM teacher).

    python -m burgers1d.train_residual --config configs/diff_residual.yaml [--device ...]

Target: r = (z(t+1) - operator(z(t))) / r_std with the published operator frozen; condition:
[z(t), operator(z(t))]. Validation: the denoising loss at fixed noise levels and fixed noise. The
payload records the operator sha256 it was trained against.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from . import stage
from .corrector import estimate_residual_std, load_operator, residual_pairs
from .diffusion import DenoiserConfig, ResidualNet, edm_denoise, edm_loss, teacher_sample
from .latents import load_latents, window_count

NAME = "diff_residual"
VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0)


def train_one(run: stage.StageRun) -> None:
    """Train and publish this stage's model for one training seed."""
    sec, dev = run.section, run.ctx.device
    data = load_latents(run.cfg, dev)
    train, val = data.splits["train"], data.splits["val"]
    operator, op_pointer = load_operator(run.cfg, data, dev)
    gen = torch.Generator().manual_seed(run.seed)
    r_std = estimate_residual_std(operator, train, int(sec.get("std_windows", 4096)), gen)
    model_cfg = DenoiserConfig.from_dict(sec.get("model", {}))
    model = run.ctx.wrap(ResidualNet(train.shape[2], model_cfg))
    p_mean, p_std = float(sec.get("p_mean", -1.2)), float(sec.get("p_std", 1.2))

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        r, cond = residual_pairs(operator, train, idx, r_std)
        return edm_loss(model, r, cond, model_cfg, p_mean, p_std)

    val_idx = torch.randperm(window_count(val, 1), generator=gen)[
        : int(sec.get("val_windows", 1024))
    ]
    r_val, cond_val = residual_pairs(operator, val, val_idx, r_std)
    val_noise = torch.randn(r_val.shape, generator=gen).to(dev)

    def validate(module: torch.nn.Module) -> float:
        losses = [
            torch.mean(
                (edm_denoise(module, r_val + s * val_noise, s, cond_val, model_cfg) - r_val) ** 2
            )
            for s in VAL_SIGMAS
        ]
        return float(torch.stack(losses).mean())

    result = run.train(model, loss_fn, window_count(train, 1), validate)
    # How much the teacher's samples reduce the operator's one-step error on val (scaled units).
    net = ResidualNet(train.shape[2], model_cfg).to(dev).eval()
    net.load_state_dict(result.best_state)
    # Does the corrector correct? One teacher sample adds its own spread to the error, so the
    # test is the MEAN of ``mean_samples`` samples: its error must be below the operator's, and
    # its size (mean_correction_rms) well above zero.
    steps = int(sec.get("sample_steps", 12))
    draws = [
        teacher_sample(
            net, cond_val, torch.randn(r_val.shape, generator=gen).to(dev), steps, model_cfg
        )
        for _ in range(int(sec.get("mean_samples", 8)))
    ]
    mean_r = torch.stack(draws).mean(0)
    metrics = {
        **result.metrics,
        "val_residual_mse_operator": float(torch.mean(r_val**2)),
        "val_residual_mse_teacher": float(torch.mean((draws[0] - r_val) ** 2)),
        "val_residual_mse_teacher_mean": float(torch.mean((mean_r - r_val) ** 2)),
        "val_mean_correction_rms": float(torch.sqrt(torch.mean(mean_r**2))),
    }
    run.log(
        f"val residual mse: operator {metrics['val_residual_mse_operator']:.4f} -> "
        f"operator+teacher sample {metrics['val_residual_mse_teacher']:.4f}, operator+mean of "
        f"{len(draws)} samples {metrics['val_residual_mse_teacher_mean']:.4f} (mean correction "
        f"rms {metrics['val_mean_correction_rms']:.3f})"
    )
    lineage = {"operator": op_pointer.sha256, "latent_cache": data.cache_key}
    stage.finish_model(run, data, model_cfg, result, lineage, metrics, r_std=r_std.cpu())


def main(argv: Sequence[str] | None = None) -> int:
    return stage.run_seeds(argv, __doc__.splitlines()[0], NAME, train_one)


if __name__ == "__main__":
    sys.exit(main())
