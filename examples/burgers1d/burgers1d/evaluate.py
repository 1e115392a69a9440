"""Stage ``eval``: physical-space nRMSE on val and test, without and with test-time compute.

    python -m burgers1d.evaluate --config configs/eval.yaml [--device auto|cpu|cuda]

Loads exactly the checkpoints the pointers name and refuses a mismatched set (the corrector must
have been distilled from the current diff_residual against the current operator, all on the
current latent cache, whose encoder decodes the predictions). Every trajectory is rolled out
autoregressively from its encoded initial state for all T-1 steps; predictions are decoded and
de-normalised, and nRMSE follows PDEBench (per-trajectory relative L2 over t >= 1 and x,
averaged). Columns:

* ``autoencoder``: decode(encode(u)) of the truth, the floor every latent model sits on;
* ``operator``: the operator alone;
* ``no_ttc``: operator + one corrector sample per step;
* ``ttc``: K candidates per step, physics reward, beam search (see :mod:`burgers1d.ttc`);
* ``final_rmse_*``: RMSE (physical units) of the final state, operator rollout vs the steady
  prior from t = 0. (A relative error is ill-posed there: viscous states decay towards their
  mean, often near zero.)

Writes ``<reports>/eval.json`` (flat numbers) and prints the table.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoints
from .autoencoder import load_encoder
from .config import parse_stage_args, section
from .corrector import load_operator
from .diffusion import build_residual_net
from .distributed import init_distributed
from .latent_cache import StaleCacheError
from .latents import LatentData, load_latents
from .metrics import nrmse_per_trajectory, rmse_per_trajectory, write_metrics_json
from .reward import BurgersReward, RewardConfig
from .runtime import seed_everything, stage_seed
from .splits import open_split
from .steady_prior import build_steady_prior
from .ttc import Proposer, TTCConfig, rollout, ttc_rollout

METHODS = ("autoencoder", "operator", "no_ttc", "ttc")


class Models:
    """The verified set of models the evaluation uses."""

    def __init__(self, cfg: Mapping[str, Any], data: LatentData, device: torch.device) -> None:
        root = Path(cfg["paths"]["checkpoints"])
        enc_file = Path(data.info["encoder_file"])
        if hashlib.sha256(enc_file.read_bytes()).hexdigest() != data.info["encoder_sha256"]:
            raise StaleCacheError(f"{enc_file} is not the encoder the latent cache was built with")
        enc_payload = torch.load(enc_file, map_location=device, weights_only=False)
        self.autoencoder, self.stats = load_encoder(enc_payload, device)
        self.operator, op_ptr = load_operator(cfg, data, device)
        res_ptr = checkpoints.read_pointer(root, "diff_residual")
        cm_payload, cm_ptr = checkpoints.load(root, "consistency_distill", device)
        checkpoints.require_lineage(
            cm_payload, {"operator": op_ptr, "diff_residual": res_ptr}, "consistency_distill"
        )
        self.student, self.mcfg = build_residual_net(cm_payload, device)
        self.r_std = cm_payload["r_std"].to(device)
        self.sample_sigmas = [float(s) for s in cm_payload["sample_sigmas"]]
        prior_payload, _ = checkpoints.load(root, "steady_prior", device)
        if prior_payload.get("latent_cache_key") != data.cache_key:
            raise checkpoints.StaleCheckpointError(
                "steady_prior was trained on another latent cache"
            )
        self.prior = build_steady_prior(prior_payload, device)
        self.data = data
        self.shas = {"operator": op_ptr.short, "consistency_distill": cm_ptr.short}

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [M, C, L] -> physical u [M, X]."""
        u = self.autoencoder.decode(self.data.denormalize(z)).float()
        return self.stats.denormalize(u)

    def decode_traj(self, z: torch.Tensor, batch: int = 2048) -> np.ndarray:
        """[N, T, C, L] -> physical [N, T, X] numpy (decoded ``batch`` snapshots at a time)."""
        n, t = z.shape[:2]
        flat = z.flatten(0, 1)
        u = torch.cat(
            [self.decode(flat[i : i + batch]).cpu() for i in range(0, flat.shape[0], batch)]
        )
        return u.view(n, t, -1).numpy()


@torch.no_grad()
def evaluate_split(
    models: Models, cfg: Mapping[str, Any], split: str, device: torch.device, seed: int
) -> dict[str, float]:
    """nRMSE of every method on one split, in chunks of trajectories."""
    ev = section(cfg, "eval")
    ttc_cfg = TTCConfig.from_dict(ev.get("ttc"))
    gen = torch.Generator(device=device).manual_seed(seed)
    proposer = Proposer(
        models.operator, models.student, models.mcfg, models.r_std, models.sample_sigmas, gen
    )
    z_all = models.data.splits[split]
    per_traj: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    final: dict[str, list[np.ndarray]] = {"operator": [], "steady_prior": []}
    ttc_rewards, plain_rewards = [], []
    with open_split(cfg, split) as source:
        reward = BurgersReward(
            source.dx, source.dt, source.nu, RewardConfig.from_dict(ev.get("reward"))
        )
        n = min(len(source), int(ev.get("max_trajectories", len(source))))
        chunk = int(ev.get("batch_trajectories", 64))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            truth = source.read(lo, hi)[:, 1:]  # t >= 1 (the initial state is given)
            z = z_all[lo:hi]
            z0, steps = z[:, 0], z.shape[1] - 1
            preds = {
                "autoencoder": models.decode_traj(z[:, 1:]),
                "operator": models.decode_traj(rollout(models.operator, z0, steps)),
                "no_ttc": models.decode_traj(
                    rollout(lambda s: proposer.corrected(s, 1)[:, 0], z0, steps)
                ),
            }
            z_ttc, r_ttc = ttc_rollout(proposer, models.decode, reward, z0, steps, ttc_cfg)
            preds["ttc"] = models.decode_traj(z_ttc)
            for method in METHODS:
                per_traj[method].append(nrmse_per_trajectory(preds[method], truth))
            u_no = torch.from_numpy(preds["no_ttc"]).to(device)
            u_prev = torch.cat([models.decode(z0)[:, None], u_no[:, :-1]], dim=1)
            plain_rewards.append(reward(u_prev.flatten(0, 1), u_no.flatten(0, 1)).cpu().numpy())
            ttc_rewards.append(r_ttc.flatten().cpu().numpy())
            remaining = torch.ones(z0.shape[0], device=device)
            final_prior = models.decode(models.prior(z0, remaining))[:, None].cpu().numpy()
            final["operator"].append(rmse_per_trajectory(preds["operator"][:, -1:], truth[:, -1:]))
            final["steady_prior"].append(rmse_per_trajectory(final_prior, truth[:, -1:]))
    out = {f"{split}_nrmse_{m}": float(np.mean(np.concatenate(v))) for m, v in per_traj.items()}
    out.update(
        {f"{split}_final_rmse_{m}": float(np.mean(np.concatenate(v))) for m, v in final.items()}
    )
    out[f"{split}_trajectories"] = n
    out[f"{split}_mean_reward_no_ttc"] = float(np.mean(np.concatenate(plain_rewards)))
    out[f"{split}_mean_reward_ttc"] = float(np.mean(np.concatenate(ttc_rewards)))
    return out


def format_table(metrics: Mapping[str, float], splits: Sequence[str], ttc: TTCConfig) -> str:
    """The markdown table printed at the end of the stage."""
    head = (
        "| split | n | autoencoder | operator | no TTC (op + corrector) | "
        f"TTC (K={ttc.candidates}, beam {ttc.beam_width}, H={ttc.horizon}) | "
        "final-state RMSE: operator | final-state RMSE: steady prior |"
    )
    rows = [head, "|" + "---|" * 8]
    for s in splits:
        cells = [s, str(int(metrics[f"{s}_trajectories"]))]
        cells += [f"{metrics[f'{s}_nrmse_{m}']:.4f}" for m in METHODS]
        cells += [f"{metrics[f'{s}_final_rmse_{m}']:.4f}" for m in ("operator", "steady_prior")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    _, cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("eval runs as one process; do not launch it with torchrun")
    ctx = init_distributed(cfg["runtime"]["device"], cfg["runtime"].get("num_threads"))
    device = ctx.device
    seed = stage_seed(cfg, "eval")
    seed_everything(seed)
    t0 = time.perf_counter()
    splits = tuple(section(cfg, "eval").get("splits", ["val", "test"]))
    data = load_latents(cfg, device, splits)
    models = Models(cfg, data, device)
    print(
        f"[eval] device {device}; operator {models.shas['operator']}, corrector "
        f"{models.shas['consistency_distill']}, latent cache {data.cache_key}"
    )
    metrics: dict[str, float] = {}
    for i, split in enumerate(splits):
        metrics.update(evaluate_split(models, cfg, split, device, seed + i))
    ttc = TTCConfig.from_dict(section(cfg, "eval").get("ttc"))
    metrics.update(
        {
            "ttc_candidates": ttc.candidates,
            "ttc_beam_width": ttc.beam_width,
            "ttc_horizon": ttc.horizon,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    write_metrics_json(Path(cfg["paths"]["reports"]) / "eval.json", metrics)
    print(
        "\nPhysical-space nRMSE (PDEBench: per-trajectory ||pred - true||_2 / ||true||_2 over "
        "the full rollout t >= 1, averaged):\n"
    )
    print(format_table(metrics, splits, ttc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
