"""Helpers shared by the hello steps: each step counts its runs in out/runs.log."""

import os
import pathlib

OUT = pathlib.Path("out")


def count_run(name: str) -> None:
    OUT.mkdir(exist_ok=True)
    fingerprint = os.environ.get("RUNFORM_FINGERPRINT", "?")
    with open(OUT / "runs.log", "a") as f:
        f.write(f"{name} {fingerprint}\n")
