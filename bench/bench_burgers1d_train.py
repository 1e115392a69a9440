"""Training throughput (samples/s) and peak GPU memory of the burgers1d stages.

    python bench/bench_burgers1d_train.py --sizes gpu            # GPU presets (configs/pdebench/)
    python bench/bench_burgers1d_train.py --sizes cpu --device cpu

Each stage's model is built from its resolved config (the same ``load_config`` the stages use)
and trained for ``--steps`` timed steps (after ``--warmup``) with the stage's own loss on
synthetic latents of the real shape, with bf16 autocast on CUDA as in the stages. Prints one
markdown table row per stage. Without CUDA it runs on the CPU and says so (GPU sizes on a CPU
are slow: the default step count drops to 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

import torch
from burgers1d.autoencoder import AutoencoderConfig, ConvAutoencoder
from burgers1d.config import load_config
from burgers1d.corrector import condition
from burgers1d.diffusion import (
    DenoiserConfig,
    ResidualNet,
    consistency_loss,
    edm_loss,
    karras_sigmas,
)
from burgers1d.latent_operator import LatentOperator, OperatorConfig
from burgers1d.networks import count_parameters
from burgers1d.runtime import autocast, configure_threads, select_device
from burgers1d.steady_prior import SteadyPrior, SteadyPriorConfig
from burgers1d.train_operator import rollout_loss
from burgers1d.train_steady_prior import prior_loss
from burgers1d.training import OptimConfig
from torch import nn

STAGES = ("encoder", "operator", "diff_residual", "consistency_distill", "steady_prior")
GRID = {"gpu": (256, 41), "cpu": (128, 41)}  # (nx, nt): PDEBench preset (strided) / CPU preset

Loss = Callable[[int], torch.Tensor]  # batch size -> scalar loss


@dataclass
class Setup:
    """What one stage's benchmark needs: the preset, the device, synthetic latents."""

    sizes: str
    device: torch.device
    nx: int
    nt: int
    channels: int
    latents: torch.Tensor  # [32, nt, channels, tokens], random

    def config(self, name: str) -> dict[str, Any]:
        folder = EXAMPLE / "configs" / ("pdebench" if self.sizes == "gpu" else "")
        return load_config(folder / f"{name}.yaml")

    def windows(self, b: int, length: int) -> torch.Tensor:
        dev = self.device
        n = torch.randint(0, self.latents.shape[0], (b,), device=dev)
        t = torch.randint(0, self.nt - length, (b,), device=dev)
        return self.latents[n[:, None], t[:, None] + torch.arange(length + 1, device=dev)]


def make_setup(sizes: str, device: torch.device) -> Setup:
    nx, nt = GRID[sizes]
    folder = EXAMPLE / "configs" / ("pdebench" if sizes == "gpu" else "")
    enc = AutoencoderConfig.from_dict(load_config(folder / "encoder.yaml")["encoder"]["model"])
    latents = torch.randn(32, nt, enc.dim, nx // 2**enc.levels, device=device)
    return Setup(sizes, device, nx, nt, enc.dim, latents)


def _batch(sec: dict[str, Any]) -> int:
    return OptimConfig.from_dict(sec["optim"]).batch_size


def bench_encoder(s: Setup) -> tuple[nn.Module, Loss, int]:
    sec = s.config("encoder")["encoder"]
    model = ConvAutoencoder(AutoencoderConfig.from_dict(sec["model"])).to(s.device)
    u = torch.randn(4096, s.nx, device=s.device)

    def loss(b: int) -> torch.Tensor:
        x = u[torch.randint(0, u.shape[0], (b,), device=s.device)]
        return torch.mean((model(x).float() - x) ** 2)

    return model, loss, int(sec["fit"]["batch_size"])


def bench_operator(s: Setup) -> tuple[nn.Module, Loss, int]:
    sec = s.config("operator")["operator"]
    model = LatentOperator(s.channels, OperatorConfig.from_dict(sec["model"])).to(s.device)
    rollout = int(sec.get("rollout", 1))
    return model, lambda b: rollout_loss(model, s.windows(b, rollout)), _batch(sec)


def bench_steady_prior(s: Setup) -> tuple[nn.Module, Loss, int]:
    sec = s.config("steady_prior")["steady_prior"]
    model = SteadyPrior(s.channels, SteadyPriorConfig.from_dict(sec["model"])).to(s.device)
    n_items = s.latents.shape[0] * (s.nt - 1)

    def loss(b: int) -> torch.Tensor:
        idx = torch.randint(0, n_items, (b,), device=s.device)
        return prior_loss(model, s.latents, idx)

    return model, loss, _batch(sec)


def _residual_setup(s: Setup) -> tuple[DenoiserConfig, Callable[[int], tuple[torch.Tensor, ...]]]:
    mcfg = DenoiserConfig.from_dict(s.config("diff_residual")["diff_residual"]["model"])
    op_cfg = OperatorConfig.from_dict(s.config("operator")["operator"]["model"])
    operator = LatentOperator(s.channels, op_cfg).to(s.device).eval()

    def pairs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = s.windows(b, 1)
        z_op, cond = condition(operator, w[:, 0])
        return w[:, 1] - z_op, cond

    return mcfg, pairs


def bench_diff_residual(s: Setup) -> tuple[nn.Module, Loss, int]:
    mcfg, pairs = _residual_setup(s)
    model = ResidualNet(s.channels, mcfg).to(s.device)

    def loss(b: int) -> torch.Tensor:
        r, cond = pairs(b)
        return edm_loss(model, r, cond, mcfg)

    return model, loss, _batch(s.config("diff_residual")["diff_residual"])


def bench_consistency_distill(s: Setup) -> tuple[nn.Module, Loss, int]:
    mcfg, pairs = _residual_setup(s)
    sec = s.config("consistency_distill")["consistency_distill"]
    model = ResidualNet(s.channels, mcfg).to(s.device)
    teacher = ResidualNet(s.channels, mcfg).to(s.device).eval()
    target = ResidualNet(s.channels, mcfg).to(s.device).eval()
    sigmas = karras_sigmas(int(sec.get("discretization", 18)), mcfg).to(s.device)

    def loss(b: int) -> torch.Tensor:
        r, cond = pairs(b)
        return consistency_loss(model, teacher, target, r, cond, sigmas, mcfg)

    return model, loss, _batch(sec)


BUILDERS: dict[str, Callable[[Setup], tuple[nn.Module, Loss, int]]] = {
    "encoder": bench_encoder,
    "operator": bench_operator,
    "diff_residual": bench_diff_residual,
    "consistency_distill": bench_consistency_distill,
    "steady_prior": bench_steady_prior,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(stage: str, setup: Setup, steps: int, warmup: int) -> str:
    """Train ``steps`` timed steps; returns the markdown row."""
    torch.manual_seed(0)
    device, sizes = setup.device, setup.sizes
    model, loss_fn, batch = BUILDERS[stage](setup)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with autocast(device):
            loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = (
        f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}"
        if device.type == "cuda"
        else "n/a (CPU)"
    )
    return (
        f"| {stage} | {sizes} | {device.type} | {batch} | {count_parameters(model) / 1e6:.2f}M | "
        f"{steps * batch / seconds:,.0f} | {peak} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=sorted(GRID), default="gpu")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (20 on CUDA, 2 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (5 on CUDA, 1 on CPU)"
    )
    args = parser.parse_args(argv)
    device = select_device(args.device)
    if device.type == "cpu":
        configure_threads(None)  # OMP_NUM_THREADS if set, else all cores
    steps = args.steps or (20 if device.type == "cuda" else 2)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    if device.type != "cuda":
        print(
            f"note: CUDA not available; running the {args.sizes} sizes on the CPU "
            f"({torch.get_num_threads()} threads), {steps} timed steps; peak GPU memory n/a\n"
        )
    else:
        print(f"device: {torch.cuda.get_device_name(device)}\n")
    setup = make_setup(args.sizes, device)
    print("| stage | sizes | device | batch | params | samples/s | peak GPU mem (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        print(bench(stage, setup, steps, warmup), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
