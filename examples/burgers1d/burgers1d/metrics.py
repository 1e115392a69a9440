"""Metrics: PDEBench's nRMSE, the flat metrics JSON of a stage, and the runform JSONL stream.

* :func:`nrmse` follows PDEBench: per trajectory ||pred - true||_2 / ||true||_2 over all (t, x),
  then the mean over trajectories. It is computed in physical space.
* :func:`write_metrics_json` writes a flat ``{name: number}`` JSON (what a stage's ``metrics:``
  file must be); anything else is an error, so a NaN loss fails the stage instead of being logged.
* :class:`MetricsStream` appends ``{"step": i, "loss": x, ...}`` lines to the file named by
  ``RUNFORM_METRICS_FILE`` when it is set (runform forwards them to the tracker). Only the
  process that owns the files (rank 0) writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .hashing import atomic_write_text

METRICS_ENV = "RUNFORM_METRICS_FILE"


def nrmse_per_trajectory(pred: np.ndarray, true: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """||pred_n - true_n||_2 / ||true_n||_2 for each trajectory n (first axis)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs true {true.shape}")
    axes = tuple(range(1, pred.ndim))
    err = np.sqrt(np.sum((pred - true) ** 2, axis=axes))
    ref = np.sqrt(np.sum(true**2, axis=axes))
    return err / np.maximum(ref, eps)


def nrmse(pred: np.ndarray, true: np.ndarray) -> float:
    """PDEBench nRMSE: mean over trajectories of the per-trajectory relative L2 error."""
    return float(np.mean(nrmse_per_trajectory(pred, true)))


def rmse_per_trajectory(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Root mean squared error of each trajectory (first axis), in the data's units."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return np.sqrt(np.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1))


def _check_flat(metrics: Mapping[str, object]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"metric {key!r} is not a number: {value!r}")
        number = value.item() if isinstance(value, (np.integer, np.floating)) else value
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"metric {key!r} is not finite: {number}")
        out[str(key)] = number
    return out


def write_metrics_json(path: str | Path, metrics: Mapping[str, object]) -> bool:
    """Write flat numeric ``metrics`` to ``path`` atomically; False when the file already held
    exactly these metrics (nothing written)."""
    path = Path(path)
    text = json.dumps(_check_flat(metrics), indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


class MetricsStream:
    """Append-only JSON lines for runform (``RUNFORM_METRICS_FILE``); a no-op when unset."""

    def __init__(self, enabled: bool = True, path: str | os.PathLike[str] | None = None) -> None:
        target = path if path is not None else os.environ.get(METRICS_ENV)
        self.path = Path(target) if (enabled and target) else None

    def log(self, step: int, **values: float) -> None:
        """Append ``{"step": step, **values}`` (numbers only)."""
        if self.path is None:
            return
        record = {"step": int(step), **_check_flat(values)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
