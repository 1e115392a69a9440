"""Device, seeds, threads and mixed precision for the torch stages.

* :func:`select_device`: ``auto`` picks CUDA when present; ``cuda`` without CUDA is an error (the
  seed pipeline evaluated on the CPU of a GPU box because nobody passed ``--device``).
* :func:`autocast`: bf16 autocast on CUDA (no loss scaler needed), a no-op on CPU.
* :func:`configure_threads`: on CPU, share the cores between the local processes.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch


class DeviceError(RuntimeError):
    """The requested device is not available."""


def select_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:<local_rank> when CUDA is available, else cpu; ``cuda`` must exist."""
    requested = (requested or "auto").lower()
    if requested not in {"auto", "cpu", "cuda"}:
        raise DeviceError(f"unknown device {requested!r} (auto | cpu | cuda)")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise DeviceError("--device cuda was requested but CUDA is not available on this machine")
    if requested == "cpu" or not has_cuda:
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls/convs outside autocast
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", local_rank)


def configure_threads(cfg_threads: int | None, local_world_size: int = 1) -> int:
    """Set torch's intra-op threads: the config's value, else OMP_NUM_THREADS, else
    cores // local processes. Returns the number set."""
    if cfg_threads:
        n = int(cfg_threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        n = max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); returns a CPU generator with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stage_seed(cfg: Mapping[str, Any], stage: str) -> int:
    """A per-stage seed derived from the shared ``seed`` and the stage's own ``seed`` if set."""
    own = (cfg.get(stage) or {}).get("seed") if isinstance(cfg.get(stage), dict) else None
    base = int(cfg.get("seed", 0))
    offset = sum(ord(c) for c in stage)
    return int(own) if own is not None else base * 1000 + offset


def autocast(device: torch.device, enabled: bool = True) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA; a null context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
