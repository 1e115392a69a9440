"""Stage ``setup`` (after ``pip install -r requirements.txt``): prove the image can run the
pipeline, and record what it has.

    python -m burgers1d.envcheck

Imports every third-party module a stage needs (a missing one fails here, in the first
minute, not hours later), then writes ``reports/setup.json`` (numbers: CUDA devices, torch
major/minor) and ``reports/setup_versions.txt`` (the versions, for the record).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .metrics import write_metrics_json

MODULES = ("numpy", "h5py", "yaml", "matplotlib", "torch")


def main(argv: Sequence[str] | None = None) -> int:
    reports = Path((argv or sys.argv[1:] or ["reports"])[0])
    versions = {}
    for name in MODULES:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError as exc:
            raise SystemExit(
                f"setup: {name} is not importable ({exc}); add it to requirements.txt"
            ) from exc
    import torch

    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "setup_versions.txt").write_text(
        "".join(f"{k}=={v}\n" for k, v in versions.items()), encoding="utf-8"
    )
    write_metrics_json(
        reports / "setup.json",
        {"cuda_devices": torch.cuda.device_count(), "torch_major": major, "torch_minor": minor},
    )
    print("[setup] " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
