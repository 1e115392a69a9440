"""A run root with tiny configs, for tests and quick smoke runs (seconds, not minutes).

    python -m burgers1d.tiny /tmp/b1d-tiny      # then run the stages there with configs/tiny/*

:func:`make_run_root` copies the code tree (``burgers1d/`` and ``configs/``) the way runform
lays out a run root and adds ``configs/tiny/<stage>.yaml`` overlays, each including the real
stage config (so the include chain is exercised too) and shrinking every size.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

EXAMPLE_ROOT = Path(__file__).resolve().parent.parent

_OPTIM = {"epochs": 1, "batch_size": 32, "lr": 2.0e-3, "warmup_steps": 2, "log_every": 2}

TINY: dict[str, dict[str, Any]] = {
    "base": {
        "include": "../base.yaml",
        "runtime": {"device": "cpu", "num_threads": 1},
        "train_seeds": 2,
    },
    "data": {
        "include": ["../data.yaml", "base.yaml"],
        "simulate": {
            "nx": 32,
            "refine": 1,
            "nt": 9,
            "t_end": 0.4,
            "batch": 16,
            "splits": {
                "train": {"n": 16, "seed": 11},
                "val": {"n": 4, "seed": 22},
                "test": {"n": 4, "seed": 33},
            },
        },
    },
    "encoder": {
        "include": ["../encoder.yaml", "base.yaml"],
        "encoder": {
            "model": {"width": 8, "dim": 4, "levels": 2, "blocks_per_level": 1},
            "fit": {"max_trajectories": 16, **_OPTIM},
            "encode_chunk": 8,
        },
    },
    "operator": {
        "include": ["../operator.yaml", "base.yaml"],
        "operator": {
            "model": {"width": 8, "dilations": [1, 2]},
            "val_windows": 64,
            "optim": {**_OPTIM, "ema_decay": 0.9},
        },
    },
    "diff_residual": {
        "include": ["../diff_residual.yaml", "base.yaml"],
        "diff_residual": {
            "model": {"width": 8, "dilations": [1, 2], "embed_dim": 16},
            "std_windows": 64,
            "val_windows": 32,
            "sample_steps": 3,
            "optim": _OPTIM,
        },
    },
    "consistency_distill": {
        "include": ["../consistency_distill.yaml", "base.yaml"],
        "consistency_distill": {
            "discretization": 6,
            "val_windows": 32,
            "teacher_steps": 3,
            "optim": _OPTIM,
        },
    },
    "steady_prior": {
        "include": ["../steady_prior.yaml", "base.yaml"],
        "steady_prior": {
            "model": {"width": 8, "dilations": [1, 2], "embed_dim": 8},
            "optim": _OPTIM,
        },
    },
    "fno": {
        "include": ["../fno.yaml", "base.yaml"],
        "fno": {"model": {"modes": 4, "width": 8}, "unroll": 2, "val_windows": 16, "optim": _OPTIM},
    },
    "eval": {
        "include": ["../eval.yaml", "base.yaml"],
        "eval": {
            "splits": ["val", "test"],
            "batch_trajectories": 4,
            "sampling_seeds": 2,
            "bootstrap": 200,
            "ttc": {"candidates": 3, "beam_width": 2, "horizon": 2},
        },
    },
}


def make_run_root(dest: str | Path) -> Path:
    """Copy the code tree into ``dest`` and write ``configs/tiny/*.yaml``; returns ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("burgers1d", "configs"):
        shutil.copytree(EXAMPLE_ROOT / name, dest / name, dirs_exist_ok=True, ignore=ignore)
    tiny = dest / "configs" / "tiny"
    tiny.mkdir(exist_ok=True)
    for name, body in TINY.items():
        (tiny / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return dest


if __name__ == "__main__":
    print(make_run_root(sys.argv[1] if len(sys.argv) > 1 else "burgers1d-tiny"))
