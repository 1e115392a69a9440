"""Fit (seeded) and save the autoencoder, then cache the latents of every split.

    python -m burgers1d.precompute --config configs/encoder.yaml [--device auto|cpu|cuda]

Two keyed steps, each a no-op when its key already exists (it prints why):

1. encoder fit, keyed by (train data digest, encoder config, seed). The weights are published as
   ``checkpoints/encoder/encoder-<sha12>.pt`` with the train normalisation stats;
2. latent cache, keyed by (data digests of all splits, encoder weights sha256, cache dtype), see
   :mod:`burgers1d.latent_cache`.

A changed encoder config gives a new fit key, new weights, a new cache key, and a recompute.
Raw data are read lazily, a chunk of trajectories at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from . import checkpoints
from .autoencoder import AutoencoderConfig, ConvAutoencoder, load_encoder
from .config import parse_stage_args, section
from .dataset import TrajectorySource
from .distributed import DistContext, init_distributed
from .hashing import atomic_write_text, sha256_json, source_digest
from .latent_cache import CacheWriter, cache_key, cache_path, is_complete, write_pointer
from .metrics import MetricsStream, nrmse, write_metrics_json
from .normalization import FieldStats, compute_field_stats
from .runtime import seed_everything, stage_seed
from .splits import SPLITS, data_digests, open_split
from .training import OptimConfig, run_epochs

STAGE = "encoder"


FIT_CODE = ("autoencoder", "networks", "normalization", "training", "dataset", "precompute")
ENCODE_CODE = ("autoencoder", "networks", "normalization", "dataset", "precompute")


def fit_key(train_digest: str, enc: Mapping[str, Any], seed: int) -> str:
    """Key of an encoder fit: train data, the ``encoder`` section (minus cache settings), seed
    and the code that fits it."""
    recipe = {k: v for k, v in enc.items() if k not in ("cache_dtype", "encode_chunk")}
    return sha256_json(
        {"train": train_digest, "encoder": recipe, "seed": seed, "code": source_digest(*FIT_CODE)}
    )[:20]


def _read_fit_snapshots(train: TrajectorySource, max_traj: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = min(len(train), max_traj)
    idx = np.sort(rng.choice(len(train), size=n, replace=False))
    return train.read_indices(idx.tolist()).reshape(-1, train.nx)


def fit_encoder(
    cfg: Mapping[str, Any], ctx: DistContext, stats: FieldStats, seed: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train the autoencoder on train snapshots; returns (payload, metrics)."""
    enc = section(cfg, "encoder")
    model_cfg = AutoencoderConfig.from_dict(enc.get("model", {}))
    fit = dict(enc.get("fit", {}))
    max_traj = int(fit.pop("max_trajectories", 1_000_000))
    optim = OptimConfig.from_dict(fit)
    seed_everything(seed)
    with open_split(cfg, "train") as train:
        snaps = torch.from_numpy(stats.normalize(_read_fit_snapshots(train, max_traj, seed)))
        nx = train.nx
    autoencoder = ConvAutoencoder(model_cfg)
    autoencoder.tokens(nx)  # fails early when nx does not fit the levels
    model = ctx.wrap(autoencoder)
    snaps = snaps.to(ctx.device)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        u = snaps[idx.to(ctx.device)]
        return torch.mean((model(u).float() - u) ** 2)

    with open_split(cfg, "val") as val:
        val_u = val.read(0, min(len(val), 16))
    val_t = torch.from_numpy(stats.normalize(val_u.reshape(-1, nx))).to(ctx.device)

    def validate(module: torch.nn.Module) -> float:
        return float(torch.mean((module(val_t).float() - val_t) ** 2))

    result = run_epochs(
        model,
        loss_fn,
        snaps.shape[0],
        optim,
        ctx,
        seed,
        MetricsStream(ctx.is_main),
        validate,
        name="encoder",
    )
    payload = {
        "model_config": model_cfg.__dict__,
        "state_dict": result.best_state,
        "field_stats": stats.to_dict(),
        "nx": nx,
    }
    return payload, {f"encoder_{k}": v for k, v in result.metrics.items()}


@torch.no_grad()
def encode_block(
    model: ConvAutoencoder,
    stats: FieldStats,
    block: np.ndarray,
    device: torch.device,
    batch: int = 4096,
) -> np.ndarray:
    """[n, T, X] physical -> [n, T, dim, tokens] latents (float32)."""
    n, t, x = block.shape
    flat = torch.from_numpy(stats.normalize(block.reshape(n * t, x))).to(device)
    z = torch.cat([model.encode(flat[i : i + batch]).float() for i in range(0, n * t, batch)])
    return z.reshape(n, t, *z.shape[1:]).cpu().numpy()


@torch.no_grad()
def reconstruction_nrmse(
    model: ConvAutoencoder, stats: FieldStats, block: np.ndarray, device: torch.device
) -> float:
    """Physical-space nRMSE of decode(encode(u)) on a [n, T, X] block."""
    z = torch.from_numpy(encode_block(model, stats, block, device)).to(device)
    n, t = z.shape[:2]
    u = model.decode(z.reshape(n * t, *z.shape[2:])).float().cpu().numpy()
    return nrmse(stats.denormalize(u.reshape(block.shape)), block)


def write_cache(
    cfg: Mapping[str, Any],
    model: ConvAutoencoder,
    stats: FieldStats,
    key: str,
    dtype: str,
    device: torch.device,
    chunk: int,
) -> dict[str, Any]:
    """Encode every split into a new cache file; returns the attrs it was committed with."""
    cache_dir = Path(cfg["paths"]["latent_cache"])
    writer = CacheWriter(cache_dir, key, dtype)
    try:
        sums = sq = None
        count = 0
        for split in SPLITS:
            with open_split(cfg, split) as source:
                tokens = model.tokens(source.nx)
                dset = writer.create(split, (len(source), source.nt, model.cfg.dim, tokens))
                for lo, block in source.iter_chunks(chunk):
                    z = encode_block(model, stats, block, device)
                    dset[lo : lo + len(z)] = z.astype(dtype)
                    if split == "train":
                        zc = z.astype(np.float64).transpose(2, 0, 1, 3).reshape(z.shape[2], -1)
                        sums = zc.sum(1) if sums is None else sums + zc.sum(1)
                        sq = (zc**2).sum(1) if sq is None else sq + (zc**2).sum(1)
                        count += zc.shape[1]
        assert sums is not None and sq is not None
        mean = sums / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
        attrs = {"latent_mean": mean.astype(np.float32), "latent_std": std.astype(np.float32)}
        writer.commit(attrs)
        return {"latent_mean": mean.tolist(), "latent_std": std.tolist()}
    except BaseException:
        writer.abort()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    _, cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("precompute runs as one process; do not launch it with torchrun")
    ctx = init_distributed(cfg["runtime"]["device"], cfg["runtime"].get("num_threads"))
    enc = section(cfg, "encoder")
    ckpt_root = Path(cfg["paths"]["checkpoints"])
    cache_dir = Path(cfg["paths"]["latent_cache"])
    seed = stage_seed(cfg, STAGE)
    t0 = time.perf_counter()

    digests = data_digests(cfg)
    fkey = fit_key(digests["train"], enc, seed)
    index = ckpt_root / STAGE / "fits" / f"{fkey}.json"
    metrics: dict[str, float] = {}
    pointer_rec: dict[str, Any] | None = None
    if index.is_file():
        pointer_rec = json.loads(index.read_text(encoding="utf-8"))
        weights = ckpt_root / STAGE / pointer_rec["file"]
        if not weights.is_file():
            pointer_rec = None
    if pointer_rec is not None:
        print(
            f"[precompute] encoder fit {fkey} exists ({pointer_rec['file']}): same train data "
            f"{digests['train'][:12]}, encoder config and seed {seed}; skipping fit"
        )
        checkpoints.write_pointer(ckpt_root, STAGE, pointer_rec)
    else:
        print(
            f"[precompute] fitting encoder {fkey} on train {digests['train'][:12]} "
            f"(device {ctx.device})"
        )
        with open_split(cfg, "train") as train:
            stats = compute_field_stats(train)
        payload, fit_metrics = fit_encoder(cfg, ctx, stats, seed)
        published = checkpoints.publish(
            ckpt_root,
            STAGE,
            payload,
            cfg,
            lineage={"data.train": digests["train"]},
            metrics=fit_metrics,
        )
        pointer_rec = checkpoints.pointer_record(ckpt_root, STAGE)
        atomic_write_text(index, json.dumps(pointer_rec, indent=2, sort_keys=True) + "\n")
        print(f"[precompute] encoder -> {published.path}")

    payload, enc_pointer = checkpoints.load(ckpt_root, STAGE, map_location=ctx.device)
    model, stats = load_encoder(payload, ctx.device)
    dtype = str(enc.get("cache_dtype", "float32"))
    code = source_digest(*ENCODE_CODE)
    key = cache_key(digests, enc_pointer.sha256, dtype, code)
    path = cache_path(cache_dir, key)
    desc = (
        f"data train/val/test {'/'.join(d[:8] for d in digests.values())}, "
        f"encoder {enc_pointer.short}, dtype {dtype}"
    )
    pointer_file = cache_dir / "current.json"
    if is_complete(path, key) and pointer_file.is_file():
        info = json.loads(pointer_file.read_text(encoding="utf-8"))
        if info.get("key") == key:
            print(f"[precompute] latent cache {key} already complete ({desc}); skipping encode")
            write_metrics_json(Path(cfg["paths"]["reports"]) / "precompute.json", info["metrics"])
            return 0
    if is_complete(path, key):
        with h5py.File(path, "r") as f:
            latent_stats = {
                "latent_mean": np.asarray(f.attrs["latent_mean"]).tolist(),
                "latent_std": np.asarray(f.attrs["latent_std"]).tolist(),
            }
        print(f"[precompute] latent cache {key} already complete ({desc}); re-pointing to it")
    else:
        print(f"[precompute] encoding latent cache {key} ({desc})")
        chunk = int(enc.get("encode_chunk", 32))
        latent_stats = write_cache(cfg, model, stats, key, dtype, ctx.device, chunk)
    with open_split(cfg, "val") as val:
        block = val.read(0, min(len(val), 32))
    metrics.update(
        {
            "recon_nrmse_val": reconstruction_nrmse(model, stats, block, ctx.device),
            "latent_dim": model.cfg.dim,
            "tokens": model.tokens(block.shape[-1]),
            "field_mean": stats.mean,
            "field_std": stats.std,
        }
    )
    metrics.update(
        {
            k: v
            for k, v in (checkpoints.pointer_record(ckpt_root, STAGE).get("metrics") or {}).items()
        }
    )
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    info = {
        "key": key,
        "file": path.name,
        "data_digests": digests,
        "encoder_sha256": enc_pointer.sha256,
        "encoder_file": str(enc_pointer.path),
        "dtype": dtype,
        "code_digest": code,
        "field_stats": stats.to_dict(),
        **latent_stats,
        "metrics": metrics,
    }
    write_pointer(cache_dir, info)
    write_metrics_json(Path(cfg["paths"]["reports"]) / "precompute.json", metrics)
    print(f"[precompute] done: {path} (val reconstruction nRMSE {metrics['recon_nrmse_val']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
