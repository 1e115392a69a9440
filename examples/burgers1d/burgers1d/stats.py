"""Confidence intervals for errors measured over training seeds x sampling seeds x trajectories.

Errors come as arrays ``[S_train, S_sample, N]`` (one number per trajectory, per sampling seed,
per training seed). Sampling seeds are nested in training seeds, so they are averaged first; the
bootstrap then resamples training seeds AND trajectories (with replacement, jointly), which
keeps both sources of variation in the interval. Differences between two methods are paired:
both are resampled with the same indices, so the trajectory-to-trajectory spread (large for
Burgers: easy smooth states, hard shocks) cancels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap percentile interval."""

    mean: float
    lo: float
    hi: float

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.lo:.4f}, {self.hi:.4f}]"


def _seed_trajectory_means(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"want [train seeds, sampling seeds, trajectories], got {values.shape}")
    return values.mean(axis=1)  # [S_train, N]


def bootstrap(
    values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of ``values`` [S_train, S_sample, N] with a hierarchical bootstrap interval."""
    v = _seed_trajectory_means(values)
    s, n = v.shape
    rng = np.random.default_rng(seed)
    ti = rng.integers(0, s, size=(n_boot, s))
    ni = rng.integers(0, n, size=(n_boot, n))
    means = v[ti[:, :, None], ni[:, None, :]].mean(axis=(1, 2))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(v.mean()), float(lo), float(hi))


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """mean(a - b) with a paired hierarchical bootstrap interval (same resampled indices)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return bootstrap(a - b, n_boot, level, seed)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError("spearman needs two arrays of equal length >= 2")

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v[np.r_[False, np.diff(v[order]) == 0]]) if v.size else []:
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0
