"""Stage ``setup``: prove the image can run the pipeline, and record what it has.

    python -m burgers1d.envcheck --pins requirements.txt   # exit 0 iff every pin is installed
    python -m burgers1d.envcheck reports                   # after the install: import and record

``--pins`` uses the standard library only (it runs before anything is installed), so the setup
stage can skip ``pip install`` where the interpreter already has the pinned versions: a machine
set up before, or an offline rehearsal whose interpreter has them (pip then never needs the
network).

Imports every third-party module a stage needs (a missing one fails here, in the first
minute, not hours later), then writes ``reports/setup.json`` (numbers: CUDA devices, torch
major/minor) and ``reports/setup_versions.txt`` (the versions, for the record).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

MODULES = ("numpy", "h5py", "yaml", "matplotlib", "torch")


def missing_pins(requirements: Path) -> list[str]:
    """The ``name==version`` lines of ``requirements`` this interpreter does not have."""
    out = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            have = importlib.metadata.version(name.strip())
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version.strip():
            out.append(f"{line} (installed: {have or 'none'})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--pins"]:
        missing = missing_pins(Path(args[1] if len(args) > 1 else "requirements.txt"))
        for line in missing:
            print(f"[setup] not installed: {line}")
        if not missing:
            print("[setup] every pin is installed; nothing to install")
        return 1 if missing else 0
    from .metrics import write_metrics_json

    reports = Path((args or ["reports"])[0])
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
