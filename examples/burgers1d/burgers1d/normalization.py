"""Per-dataset normalisation statistics, computed from the TRAIN split only.

The seed z-scored each file with its own statistics, so val and test were normalised with their
own means (a leak and a distribution shift). Here the stats come from train, streamed in chunks
(float64 accumulators, so an 8 GB file is fine), are stored with the encoder, and the same numbers
normalise val and test and de-normalise every prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset import TrajectorySource


@dataclass(frozen=True)
class FieldStats:
    """Scalar mean and standard deviation of u over the train split."""

    mean: float
    std: float

    def normalize(self, u: Any) -> Any:
        return (u - self.mean) / self.std

    def denormalize(self, u: Any) -> Any:
        return u * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FieldStats:
        return cls(float(raw["mean"]), float(raw["std"]))


def compute_field_stats(train: TrajectorySource, chunk: int = 64) -> FieldStats:
    """Mean and std of every value of the train split, read ``chunk`` trajectories at a time."""
    count, total, total_sq = 0, 0.0, 0.0
    for _, block in train.iter_chunks(chunk):
        values = block.astype(np.float64)
        count += values.size
        total += float(values.sum())
        total_sq += float((values**2).sum())
    if count == 0:
        raise ValueError("train split is empty")
    mean = total / count
    var = max(total_sq / count - mean**2, 0.0)
    return FieldStats(mean=mean, std=max(float(np.sqrt(var)), 1e-8))
