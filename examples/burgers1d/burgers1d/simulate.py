"""Generate train / val / test Burgers trajectories in PDEBench's raw HDF5 layout.

    python -m burgers1d.simulate --config configs/data.yaml

Each split has its own seed, so initial conditions differ between splits (``check_splits``
proves it afterwards). The solver runs ``refine`` times finer than the stored grid and the result
is cell-averaged down. A split whose file already holds this exact recipe is skipped. numpy and
h5py only: no torch import.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .config import config_digest, parse_stage_args, section
from .dataset import write_pdebench
from .hashing import source_digest
from .metrics import write_metrics_json
from .solver import Grid, coarsen, random_initial_conditions, solve
from .splits import SPLITS, split_spec


def simulate_split(sim: Mapping[str, Any], n: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Solve ``n`` trajectories for one split; returns ([n, nt, nx] float32, coordinate info)."""
    nx, refine = int(sim["nx"]), int(sim.get("refine", 1))
    length = float(sim.get("length", 1.0))
    fine = Grid(nx * refine, length)
    t_out = np.linspace(0.0, float(sim["t_end"]), int(sim["nt"]))
    rng = np.random.default_rng(seed)
    u0 = random_initial_conditions(
        rng,
        n,
        fine,
        n_waves=int(sim.get("n_waves", 2)),
        max_wavenumber=int(sim.get("max_wavenumber", 4)),
        abs_probability=float(sim.get("abs_probability", 0.1)),
        sign_flip=bool(sim.get("sign_flip", False)),
        window_probability=float(sim.get("window_probability", 0.0)),
    )
    batch = int(sim.get("batch", 64))
    out = np.empty((n, t_out.size, nx), dtype=np.float32)
    for lo in range(0, n, batch):
        u = solve(
            u0[lo : lo + batch], fine, float(sim["nu"]), t_out, cfl=float(sim.get("cfl", 0.4))
        )
        out[lo : lo + batch] = coarsen(u, refine).astype(np.float32)
    dt = float(t_out[1] - t_out[0])
    coords = {
        "x": Grid(nx, length).x,
        "t": np.arange(t_out.size + 1) * dt,  # PDEBench stores T+1 time coordinates
    }
    return out, coords


def relative_mass_drift(tensor: np.ndarray) -> float:
    """max over trajectories and times of |mean_x u(t) - mean_x u(0)| / (RMS of u(0))."""
    mass = tensor.astype(np.float64).mean(axis=-1)
    scale = np.sqrt((tensor[:, :1].astype(np.float64) ** 2).mean(axis=(1, 2))) + 1e-12
    return float(np.max(np.abs(mass - mass[:, :1]) / scale[:, None]))


def _existing_drift(path: Path, recipe: str) -> float | None:
    """The stored mass drift when ``path`` already holds ``recipe``; None otherwise."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("recipe_digest") == recipe:
                return float(f.attrs["max_relative_mass_drift"])
    except (OSError, KeyError):
        pass
    return None


def main(argv: Sequence[str] | None = None) -> int:
    _, cfg = parse_stage_args(argv, __doc__.splitlines()[0], device=False)
    sim = section(cfg, "simulate")
    seeds = {split: int(sim["splits"][split]["seed"]) for split in SPLITS}
    if len(set(seeds.values())) != len(seeds):
        raise SystemExit(f"simulate.splits seeds must differ per split, got {seeds}")
    metrics: dict[str, float] = {}
    t_total = time.perf_counter()
    for split in SPLITS:
        n = int(sim["splits"][split]["n"])
        recipe = config_digest(
            {
                "simulate": {k: v for k, v in sim.items() if k != "splits"},
                "n": n,
                "code": source_digest("solver", "simulate"),
                "seed": seeds[split],
            }
        )
        path = Path(split_spec(cfg, split)["path"])
        metrics[f"{split}_trajectories"] = n
        drift = _existing_drift(path, recipe)
        if drift is not None:
            print(f"[simulate] {split}: {path} already holds recipe {recipe[:12]}; skipping")
            metrics[f"{split}_max_relative_mass_drift"] = drift
            continue
        t0 = time.perf_counter()
        tensor, coords = simulate_split(sim, n, seeds[split])
        drift = relative_mass_drift(tensor)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        write_pdebench(
            tmp,
            tensor,
            coords["x"],
            coords["t"],
            float(sim["nu"]),
            attrs={
                "split": split,
                "seed": seeds[split],
                "recipe_digest": recipe,
                "max_relative_mass_drift": drift,
            },
        )
        os.replace(tmp, path)
        seconds = time.perf_counter() - t0
        metrics[f"{split}_max_relative_mass_drift"] = drift
        print(f"[simulate] {split}: {n} trajectories {tensor.shape} -> {path} in {seconds:.1f}s")
    metrics["seconds"] = round(time.perf_counter() - t_total, 3)
    write_metrics_json(Path(cfg["paths"]["reports"]) / "simulate.json", metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
