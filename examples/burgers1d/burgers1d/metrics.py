"""Metrics: PDEBench's nRMSE, the flat metrics JSON of a stage, and the runform JSONL stream.

* :func:`nrmse` is PDEBench's nRMSE: at every time step sqrt(mean_x err^2) / sqrt(mean_x true^2),
  averaged over samples and time steps, the given input frames excluded;
  :func:`nrmse_per_step` keeps the per-step values (error curves).
* :func:`relative_l2` is the whole-trajectory relative L2 error (one ratio over all (t, x) per
  trajectory, then the mean), reported beside it under its own name.
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


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs true {true.shape}")
    return pred, true


def relative_l2_per_trajectory(
    pred: np.ndarray, true: np.ndarray, eps: float = 1e-12
) -> np.ndarray:
    """||pred_n - true_n||_2 / ||true_n||_2 over all (t, x) of each trajectory n (first axis)."""
    pred, true = _pair(pred, true)
    axes = tuple(range(1, pred.ndim))
    err = np.sqrt(np.sum((pred - true) ** 2, axis=axes))
    ref = np.sqrt(np.sum(true**2, axis=axes))
    return err / np.maximum(ref, eps)


def relative_l2(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over trajectories of the whole-trajectory relative L2 error (NOT PDEBench's nRMSE:
    late, decayed time steps weigh little here)."""
    return float(np.mean(relative_l2_per_trajectory(pred, true)))


def nrmse_per_step(
    pred: np.ndarray, true: np.ndarray, given: int = 0, eps: float = 1e-12
) -> np.ndarray:
    """PDEBench's normalised RMSE of every (trajectory, time step): [N, T - given].

    For trajectories [N, T, X]: sqrt(mean_x (pred - true)^2) / sqrt(mean_x true^2) at each
    (n, t), the first ``given`` time steps (frames the model was handed) left out.
    """
    pred, true = _pair(pred, true)
    if pred.ndim != 3:
        raise ValueError(f"nrmse_per_step wants [N, T, X], got {pred.shape}")
    if not 0 <= given < pred.shape[1]:
        raise ValueError(f"given={given} frames leave no step of {pred.shape[1]} to score")
    d, t = pred[:, given:], true[:, given:]
    err = np.sqrt(np.mean((d - t) ** 2, axis=-1))
    ref = np.sqrt(np.mean(t**2, axis=-1))
    return err / np.maximum(ref, eps)


def nrmse_per_trajectory(pred: np.ndarray, true: np.ndarray, given: int = 0) -> np.ndarray:
    """PDEBench nRMSE of each trajectory: the per-step ratios averaged over the scored steps.
    Their mean over trajectories is :func:`nrmse` (all trajectories have as many steps)."""
    return nrmse_per_step(pred, true, given).mean(axis=1)


def nrmse(pred: np.ndarray, true: np.ndarray, given: int = 0) -> float:
    """PDEBench nRMSE (``err_nMSE`` of ``pdebench/models/metrics.py``): normalise every time
    step, then average over samples and time, the ``given`` input frames excluded."""
    return float(np.mean(nrmse_per_step(pred, true, given)))


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

    def images(self, images: Mapping[str, str | os.PathLike[str]]) -> None:
        """Append ``{"images": {name: path}}``: runform hands these files (relative to the run
        root) to the tracker after the stage (W&B media panel; the jsonl tracker's events)."""
        if self.path is None or not images:
            return
        record = {"images": {str(k): Path(v).as_posix() for k, v in images.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
