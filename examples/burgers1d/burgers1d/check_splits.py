"""Prove train / val / test are disjoint; exit 1 when any trajectory is shared.

    python -m burgers1d.check_splits --config configs/data.yaml

Every trajectory is hashed twice: its exact float32 values and its rounded initial state (which
also catches a copy re-saved at another dtype or cut at another time). Splits are read lazily in
chunks. The seed pipeline cut val and test out of the train shard; this check fails on exactly
that. Writes ``<reports>/splits.json`` (flat numbers) either way.
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import parse_stage_args
from .dataset import TrajectorySource
from .hashing import initial_condition_hash, trajectory_hash
from .metrics import write_metrics_json
from .splits import SPLITS, open_split

CHUNK = 64


def split_hashes(source: TrajectorySource, chunk: int = CHUNK) -> tuple[list[str], list[str]]:
    """(trajectory hashes, initial-state hashes) for every trajectory of ``source``."""
    traj, ic = [], []
    for _, block in source.iter_chunks(chunk):
        for row in block:
            traj.append(trajectory_hash(row))
            ic.append(initial_condition_hash(row))
    return traj, ic


def find_overlaps(hashes: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], int]:
    """Number of shared hashes for every pair of splits."""
    sets = {name: set(values) for name, values in hashes.items()}
    return {(a, b): len(sets[a] & sets[b]) for a, b in itertools.combinations(sets, 2)}


def check(cfg: Mapping[str, Any]) -> tuple[bool, dict[str, float]]:
    """Hash all splits; returns (disjoint?, flat metrics)."""
    traj: dict[str, list[str]] = {}
    ic: dict[str, list[str]] = {}
    metrics: dict[str, float] = {}
    for split in SPLITS:
        with open_split(cfg, split) as source:
            traj[split], ic[split] = split_hashes(source)
        dups = sum(c - 1 for c in Counter(traj[split]).values() if c > 1)
        metrics[f"{split}_trajectories"] = len(traj[split])
        metrics[f"{split}_duplicates_within"] = dups
        print(f"[check_splits] {split}: {len(traj[split])} trajectories, {dups} duplicated within")
    ok = True
    for kind, table in (("trajectory", traj), ("initial_state", ic)):
        for (a, b), shared in find_overlaps(table).items():
            metrics[f"overlap_{kind}_{a}_{b}"] = shared
            status = "ok" if shared == 0 else "OVERLAP"
            print(f"[check_splits] {a} vs {b}: {shared} shared {kind} hashes  {status}")
            ok = ok and shared == 0
    metrics["disjoint"] = int(ok)
    return ok, metrics


def main(argv: Sequence[str] | None = None) -> int:
    _, cfg = parse_stage_args(argv, __doc__.splitlines()[0], device=False)
    ok, metrics = check(cfg)
    write_metrics_json(Path(cfg["paths"]["reports"]) / "splits.json", metrics)
    if not ok:
        print("[check_splits] FAIL: splits overlap (data leakage)", file=sys.stderr)
        return 1
    print("[check_splits] splits are disjoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
