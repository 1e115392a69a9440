"""Stage ``eval``: PDEBench nRMSE and relative L2 of every method, with confidence intervals.

    python -m burgers1d.evaluate --config configs/eval.yaml [--device auto|cpu|cuda]

For every training seed (the checkpoints ``checkpoints/<stage>/seed<i>/``, each set checked for
lineage) and every sampling seed (``eval.sampling_seeds``), every val/test trajectory is rolled
out from its ``data.given_frames`` given frames to the end and scored in physical space on the
frames it was not given. Methods:

* ``autoencoder``: decode(encode(truth)), the floor of every latent model;
* ``fno``: the PDEBench FNO baseline (from all given frames);
* ``operator``: the latent operator alone (from the last given frame, like every latent method);
* ``no_ttc``: operator + one corrector sample per step;
* ``teacher``: operator + one sample of the EDM teacher (diff_residual, Heun) per step;
* ``mean_k``, ``random_pick``, ``greedy``: equal-compute controls for TTC (the mean of as many
  corrector samples as TTC draws per step; a random one of TTC's K candidates; best-of-that-many
  by reward, one step ahead);
* ``ttc``: K candidates per step, physics reward (+ the steady prior when ``w_prior`` > 0), beam
  search (:mod:`burgers1d.ttc`); ``ttc_no_prior``: the same without the prior (the ablation).

Metrics (:mod:`burgers1d.metrics`): ``nrmse`` is PDEBench's (per time step, then averaged),
``rel_l2`` the whole-trajectory relative L2. Intervals: hierarchical paired bootstrap over
training seeds and trajectories (:mod:`burgers1d.stats`). Writes ``reports/eval.json`` (flat
numbers), ``reports/eval_errors.npz`` (every per-trajectory error and per-step curve),
``reports/error_curves.csv``, the PNGs and ``reports/summary.md`` (:mod:`burgers1d.plots`), and
prints the table, ending with the summary's path.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoints
from .autoencoder import load_encoder
from .config import parse_stage_args, section
from .corrector import condition, load_operator
from .diffusion import build_residual_net, teacher_sample
from .distributed import init_distributed
from .fno import build_fno, fno_rollout
from .latent_cache import StaleCacheError
from .latents import LatentData, load_latents
from .metrics import MetricsStream, nrmse_per_step, relative_l2_per_trajectory, write_metrics_json
from .reward import BurgersReward, RewardConfig
from .runtime import seed_everything, stage_seed
from .splits import open_split, split_digest
from .stats import Interval, bootstrap, paired_bootstrap, spearman
from .steady_prior import build_steady_prior
from .ttc import Proposer, TTCConfig, mean_rollout, pick_rollout, rollout, ttc_rollout

DETERMINISTIC = ("autoencoder", "fno", "operator")
STOCHASTIC = ("no_ttc", "teacher", "mean_k", "random_pick", "greedy", "ttc", "ttc_no_prior")
LABELS = {
    "autoencoder": "autoencoder (floor)",
    "fno": "FNO baseline",
    "operator": "operator",
    "no_ttc": "no TTC (op + 1 corrector sample)",
    "teacher": "op + 1 teacher sample",
    "mean_k": "control: mean of samples",
    "random_pick": "control: random pick of K",
    "greedy": "control: greedy best-of",
    "ttc": "TTC",
    "ttc_no_prior": "TTC without steady prior",
}


class Models:
    """The verified models of one training seed."""

    def __init__(self, cfg: Mapping[str, Any], data: LatentData, device: torch.device) -> None:
        root = Path(cfg["paths"]["checkpoints"])
        ev = cfg.get("eval") or {}
        variant = checkpoints.variant_of(cfg)
        enc_file = Path(data.info["encoder_file"])
        if hashlib.sha256(enc_file.read_bytes()).hexdigest() != data.info["encoder_sha256"]:
            raise StaleCacheError(f"{enc_file} is not the encoder the latent cache was built with")
        enc_payload = torch.load(enc_file, map_location=device, weights_only=False)
        self.autoencoder, self.stats = load_encoder(enc_payload, device)
        self.operator, op_ptr = load_operator(cfg, data, device)
        res_payload, res_ptr = checkpoints.load(root, "diff_residual", device, variant)
        checkpoints.require_lineage(res_payload, {"operator": op_ptr}, "diff_residual")
        self.teacher, self.teacher_cfg = build_residual_net(res_payload, device)
        self.teacher_steps = int(
            ev.get("teacher_steps")
            or res_payload["config"]["diff_residual"].get("sample_steps", 12)
        )
        cm_payload, cm_ptr = checkpoints.load(root, "consistency_distill", device, variant)
        checkpoints.require_lineage(
            cm_payload, {"operator": op_ptr, "diff_residual": res_ptr}, "consistency_distill"
        )
        self.student, self.mcfg = build_residual_net(cm_payload, device)
        self.r_std = cm_payload["r_std"].to(device)
        self.sample_sigmas = [float(s) for s in cm_payload["sample_sigmas"]]
        prior_payload, _ = checkpoints.load(root, "steady_prior", device, variant)
        if prior_payload.get("latent_cache_key") != data.cache_key:
            raise checkpoints.StaleCheckpointError(
                "steady_prior was trained on another latent cache"
            )
        self.prior = build_steady_prior(prior_payload, device)
        fno_payload, fno_ptr = checkpoints.load(root, "fno", device, variant)
        if fno_payload.get("train_digest") != split_digest(cfg, "train"):
            raise checkpoints.StaleCheckpointError("fno was trained on other data: re-run fno")
        self.fno = build_fno(fno_payload, device)
        self.data = data
        self.shas = {
            "operator": op_ptr.short,
            "consistency_distill": cm_ptr.short,
            "fno": fno_ptr.short,
        }

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
    def teacher_step(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Operator + one teacher (EDM, Heun) sample of the residual."""
        z_op, cond = condition(self.operator, z)
        noise = torch.randn(z_op.shape, generator=gen, device=gen.device).to(z.device)
        r = teacher_sample(self.teacher, cond, noise, self.teacher_steps, self.teacher_cfg)
        return z_op + r * self.r_std[:, None]

    def prior_score(self, z_start: torch.Tensor, steps: int) -> Any:
        """Score for TTC: -(distance of each candidate's predicted end point from the prior's
        prediction made at the start), in normalised latent units."""
        target = self.prior(z_start, torch.ones(z_start.shape[0], device=z_start.device))

        def score(states: torch.Tensor, t_next: int) -> torch.Tensor:
            n, j = states.shape[:2]
            remaining = torch.full((n * j,), max(steps - t_next, 0) / steps, device=states.device)
            pred = self.prior(states.flatten(0, 1), remaining).view(n, j, *states.shape[2:])
            return -((pred - target[:, None]) ** 2).mean(dim=(2, 3))

        return score


class Recorder:
    """What TTC picked and how its reward ranked candidates against their true error."""

    def __init__(self, truth: np.ndarray, keep_points: bool) -> None:
        self.truth, self.keep = truth, keep_points
        self.picks: list[np.ndarray] = []
        self.rho: list[float] = []
        self.best_hit: list[np.ndarray] = []
        self.points: list[np.ndarray] = []

    def __call__(self, t: int, u: torch.Tensor, r: torch.Tensor, picked: torch.Tensor) -> None:
        cand = u.cpu().numpy().astype(np.float64)  # [N, K, X]
        true = self.truth[:, t][:, None]
        err = np.sqrt(((cand - true) ** 2).mean(-1)) / np.sqrt((true**2).mean(-1) + 1e-12)
        rew = r.cpu().numpy()
        self.picks.append(picked.cpu().numpy())
        self.best_hit.append(picked.cpu().numpy() == err.argmin(axis=1))
        self.rho += [spearman(-rew[i], err[i]) for i in range(err.shape[0])]
        if self.keep:
            self.points.append(np.stack([rew.ravel(), err.ravel()], axis=1))


def _steps_proposer(models: Models, gen: torch.Generator) -> Proposer:
    return Proposer(
        models.operator, models.student, models.mcfg, models.r_std, models.sample_sigmas, gen
    )


@torch.no_grad()
def predict_chunk(
    models: Models,
    frames: np.ndarray,
    z: torch.Tensor,
    ttc_cfg: TTCConfig,
    reward: BurgersReward,
    gen: torch.Generator,
    stochastic: bool,
    deterministic: bool,
    recorder: Recorder | None,
) -> dict[str, np.ndarray]:
    """Predictions [n, T - G, X] of the methods asked for, for one chunk of trajectories."""
    given = frames.shape[1]
    z0, steps = z[:, given - 1], z.shape[1] - given
    dev = z.device
    out: dict[str, np.ndarray] = {}
    if deterministic:
        out["autoencoder"] = models.decode_traj(z[:, given:])
        out["operator"] = models.decode_traj(rollout(models.operator, z0, steps))
        out["fno"] = fno_rollout(models.fno, torch.from_numpy(frames).to(dev), steps).cpu().numpy()
    if not stochastic:
        return out
    prop = _steps_proposer(models, gen)
    k_eq = ttc_cfg.proposals_per_step
    out["no_ttc"] = models.decode_traj(rollout(lambda s: prop.corrected(s, 1)[:, 0], z0, steps))
    out["teacher"] = models.decode_traj(rollout(lambda s: models.teacher_step(s, gen), z0, steps))
    out["mean_k"] = models.decode_traj(mean_rollout(prop, z0, steps, k_eq))
    pick_gen = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
    out["random_pick"] = models.decode_traj(pick_rollout(prop, z0, steps, ttc_cfg, pick_gen))
    greedy = replace(ttc_cfg, candidates=k_eq, horizon=1, beam_width=1, w_prior=0.0)
    out["greedy"] = models.decode_traj(
        ttc_rollout(prop, models.decode, reward, z0, steps, greedy)[0]
    )
    prior = models.prior_score(z0, steps)
    z_ttc, _ = ttc_rollout(prop, models.decode, reward, z0, steps, ttc_cfg, prior, recorder)
    out["ttc"] = models.decode_traj(z_ttc)
    if ttc_cfg.w_prior > 0:
        no_prior = replace(ttc_cfg, w_prior=0.0)
        out["ttc_no_prior"] = models.decode_traj(
            ttc_rollout(prop, models.decode, reward, z0, steps, no_prior)[0]
        )
    return out


def seed_config(cfg: Mapping[str, Any], i: int) -> dict[str, Any]:
    """The config a training stage saw for training seed ``i``."""
    seeded = copy.deepcopy(dict(cfg))
    seeded["train_seed"] = i
    seeded["seed"] = int(cfg.get("seed", 0)) + i
    return seeded


def evaluate_split(
    cfg: Mapping[str, Any], split: str, device: torch.device, seed: int, reports: Path
) -> dict[str, Any]:
    """Every method on one split over all training x sampling seeds; arrays for the report."""
    ev = section(cfg, "eval")
    ttc_cfg = TTCConfig.from_dict(ev.get("ttc"))
    n_train = int(cfg.get("train_seeds", 1))
    n_sample = int(ev.get("sampling_seeds", 1))
    given = int(section(cfg, "data").get("given_frames", 1))
    data = load_latents(cfg, device, (split,))
    errs: dict[str, np.ndarray] = {}
    rel: dict[str, np.ndarray] = {}
    curves: dict[str, np.ndarray] = {}
    examples: dict[str, np.ndarray] = {}
    recorders: list[Recorder] = []
    shas: list[dict[str, str]] = []
    with open_split(cfg, split) as source:
        reward = BurgersReward(
            source.dx, source.dt, source.nu, RewardConfig.from_dict(ev.get("reward"))
        )
        n = min(len(source), int(ev.get("max_trajectories", len(source))))
        chunk = int(ev.get("batch_trajectories", 64))
        steps = source.nt - given
        for i in range(n_train):
            models = Models(seed_config(cfg, i), data, device)
            shas.append(models.shas)
            for j in range(n_sample):
                gen = torch.Generator(device=device).manual_seed(seed + 1000 * i + j)
                for lo in range(0, n, chunk):
                    hi = min(n, lo + chunk)
                    full = source.read(lo, hi)
                    truth = full[:, given:]
                    rec = Recorder(truth, keep_points=(i == 0 and j == 0 and lo == 0))
                    preds = predict_chunk(
                        models, full[:, :given], data.splits[split][lo:hi], ttc_cfg, reward,
                        gen, stochastic=True, deterministic=(j == 0), recorder=rec,
                    )  # fmt: skip
                    recorders.append(rec)
                    for m, pred in preds.items():
                        per_step = nrmse_per_step(pred, truth)
                        shape = (n_train, n_sample, n)
                        errs.setdefault(m, np.full(shape, np.nan))
                        rel.setdefault(m, np.full(shape, np.nan))
                        curves.setdefault(m, np.zeros(steps))
                        sl = slice(None) if m in DETERMINISTIC else j
                        errs[m][i, sl, lo:hi] = per_step.mean(axis=1)
                        rel[m][i, sl, lo:hi] = relative_l2_per_trajectory(pred, truth)
                        weight = n_sample if m in DETERMINISTIC else 1
                        curves[m] += per_step.sum(axis=0) * weight
                        if i == 0 and j == 0 and lo == 0:
                            examples[m] = pred[:4]
                            examples["truth"] = truth[:4]
                            examples["given"] = full[:4, :given]
    total = n_train * n_sample * n
    return {
        "split": split,
        "n": n,
        "given": given,
        "dt": source_dt(cfg, split),
        "errs": errs,
        "rel": rel,
        "curves": {m: c / total for m, c in curves.items()},
        "examples": examples,
        "picks": np.concatenate([p for r in recorders for p in r.picks]),
        "best_hit": float(np.mean(np.concatenate([b for r in recorders for b in r.best_hit]))),
        "rho": float(np.mean([x for r in recorders for x in r.rho])),
        "points": np.concatenate([p for r in recorders for p in r.points] or [np.zeros((0, 2))]),
        "candidates": ttc_cfg.candidates,
        "shas": shas,
    }


def source_dt(cfg: Mapping[str, Any], split: str) -> float:
    with open_split(cfg, split) as source:
        return source.dt


def summarise(result: Mapping[str, Any], n_boot: int, seed: int) -> dict[str, float]:
    """Flat metrics of one split: means, intervals, paired differences against TTC."""
    s, errs, rel = result["split"], result["errs"], result["rel"]
    out: dict[str, float] = {f"{s}_trajectories": result["n"]}
    for m in errs:
        for name, arr in (("nrmse", errs[m]), ("rel_l2", rel[m])):
            iv = bootstrap(arr, n_boot, seed=seed)
            out.update({f"{s}_{name}_{m}": iv.mean, f"{s}_{name}_{m}_lo": iv.lo,
                        f"{s}_{name}_{m}_hi": iv.hi})  # fmt: skip
        if m != "ttc" and "ttc" in errs:
            d = paired_bootstrap(errs[m], errs["ttc"], n_boot, seed=seed)
            out.update({f"{s}_delta_{m}_minus_ttc": d.mean, f"{s}_delta_{m}_minus_ttc_lo": d.lo,
                        f"{s}_delta_{m}_minus_ttc_hi": d.hi})  # fmt: skip
    picks = result["picks"]
    for c in range(result["candidates"]):
        out[f"{s}_ttc_pick_frac_{c}"] = float(np.mean(picks == c)) if picks.size else 0.0
    out[f"{s}_ttc_picks_true_best"] = result["best_hit"]
    out[f"{s}_reward_error_spearman"] = result["rho"]
    return out


def format_table(metrics: Mapping[str, float], result: Mapping[str, Any]) -> str:
    """The markdown table of one split: both metrics with 95% CIs, the paired difference
    against TTC and whether its interval excludes zero."""
    s = result["split"]
    rows = [
        (
            "| method | nRMSE (PDEBench) [95% CI] | relative L2 [95% CI] | "
            "nRMSE minus TTC [95% CI] | significant? |"
        ),
        "|---|---|---|---|---|",
    ]
    for m in result["errs"]:
        iv = Interval(*(metrics[f"{s}_nrmse_{m}{x}"] for x in ("", "_lo", "_hi")))
        rl = Interval(*(metrics[f"{s}_rel_l2_{m}{x}"] for x in ("", "_lo", "_hi")))
        if m == "ttc":
            delta, sig = "—", "—"
        else:
            d = Interval(*(metrics[f"{s}_delta_{m}_minus_ttc{x}"] for x in ("", "_lo", "_hi")))
            delta = f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]"
            sig = ("yes: TTC better" if d.lo > 0 else "yes: TTC worse") if d.excludes_zero else "no"
        rows.append(f"| {LABELS.get(m, m)} | {iv} | {rl} | {delta} | {sig} |")
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
    ev = section(cfg, "eval")
    splits = tuple(ev.get("splits", ["val", "test"]))
    reports = Path(cfg["paths"]["reports"])
    reports.mkdir(parents=True, exist_ok=True)
    ttc = TTCConfig.from_dict(ev.get("ttc"))
    n_boot = int(ev.get("bootstrap", 2000))
    print(
        f"[eval] device {device}; {cfg.get('train_seeds', 1)} training seeds x "
        f"{ev.get('sampling_seeds', 1)} sampling seeds; TTC K={ttc.candidates}, beam "
        f"{ttc.beam_width}, H={ttc.horizon}, w_prior={ttc.w_prior} "
        f"({ttc.proposals_per_step} candidates per step)"
    )
    metrics: dict[str, float] = {}
    results = []
    for k, split in enumerate(splits):
        result = evaluate_split(cfg, split, device, seed + 7919 * k, reports)
        results.append(result)
        metrics.update(summarise(result, n_boot, seed))
    metrics.update(
        {
            "ttc_candidates": ttc.candidates,
            "ttc_beam_width": ttc.beam_width,
            "ttc_horizon": ttc.horizon,
            "ttc_proposals_per_step": ttc.proposals_per_step,
            "train_seeds": int(cfg.get("train_seeds", 1)),
            "sampling_seeds": int(ev.get("sampling_seeds", 1)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    write_metrics_json(reports / "eval.json", metrics)
    save_arrays(reports, results)
    tables = {r["split"]: format_table(metrics, r) for r in results}
    from .plots import write_report  # matplotlib is imported only here

    summary = write_report(reports, results, metrics, tables, ttc)
    MetricsStream().images({png.stem: os.path.relpath(png) for png in sorted(reports.glob("*.png"))})
    for r in results:
        s = r["split"]
        print(
            f"\n{s}: {r['n']} trajectories x {cfg.get('train_seeds', 1)} training seeds x "
            f"{ev.get('sampling_seeds', 1)} sampling seeds; scored on the {r['curves']['ttc'].size}"
            f" frames after the {r['given']} given. nRMSE = PDEBench's (per step, then mean); "
            "relative L2 = whole trajectory. CIs: paired bootstrap over training seeds and "
            "trajectories.\n"
        )
        print(tables[s])
        picks = ", ".join(
            f"{'operator' if c == 0 else f'sample {c}'} {metrics[f'{s}_ttc_pick_frac_{c}']:.0%}"
            for c in range(ttc.candidates)
        )
        print(
            f"\nTTC picks: {picks}; picks the truly best candidate "
            f"{metrics[f'{s}_ttc_picks_true_best']:.0%} of the time; Spearman(reward rank, true "
            f"error rank) over candidates {metrics[f'{s}_reward_error_spearman']:+.2f}"
        )
    print(f"\nsummary: {summary}")
    return 0


def save_arrays(reports: Path, results: Sequence[Mapping[str, Any]]) -> None:
    """Per-trajectory errors (npz) and the per-step curves (npz + csv) of every split."""
    arrays: dict[str, np.ndarray] = {}
    lines = ["split,method,step,time,nrmse"]
    for r in results:
        s = r["split"]
        for m in r["errs"]:
            arrays[f"{s}/nrmse/{m}"] = r["errs"][m]
            arrays[f"{s}/rel_l2/{m}"] = r["rel"][m]
            arrays[f"{s}/curve/{m}"] = r["curves"][m]
            for k, v in enumerate(r["curves"][m]):
                t = (r["given"] + k) * r["dt"]
                lines.append(f"{s},{m},{r['given'] + k},{t:.6g},{v:.6g}")
    np.savez(reports / "eval_errors.npz", **arrays)
    (reports / "error_curves.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
