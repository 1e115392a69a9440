"""Wall time of the hello example over SSH on loopback: first apply (with the bootstrap's share)
and a no-op re-apply. Starts its own sshd (runform.testing.sshd); prints a markdown table.

    python bench/bench_hello_ssh.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from runform.testing.sshd import SSHD

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "runform.cli.main", *args], cwd=cwd, capture_output=True,
                       text=True, check=False)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"runform {' '.join(args)} failed:\n{p.stderr}")
    return took, p.stdout + p.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    first, boot, noop = [], [], []
    with tempfile.TemporaryDirectory() as tmp, SSHD(Path(tmp) / "sshd") as sshd:
        for i in range(args.runs):
            project = Path(tmp) / f"hello{i}"
            shutil.copytree(REPO / "examples" / "hello", project,
                            ignore=shutil.ignore_patterns(".runform", "out", "__pycache__"))
            spec = yaml.safe_load((project / "runform.yaml").read_text())
            spec["compute"] = {**sshd.compute, "root": str(Path(tmp) / f"remote{i}")}
            (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            took, out = cli("apply", "--auto-approve", cwd=project)
            first.append(took)
            line = next((x for x in out.splitlines() if x.startswith("instance.main: Creation complete after")), "")
            boot.append(float(line.rsplit(" ", 1)[-1].rstrip("s")) if line else float("nan"))
            noop.append(cli("apply", "--auto-approve", cwd=project)[0])
    med = statistics.median
    print(f"| hello over SSH (loopback) | median of {args.runs} | share |")
    print("|---|---:|---:|")
    print(f"| first apply | {med(first):.2f} s | 100% |")
    print(f"| of which instance.main (claim + agent bootstrap) | {med(boot):.2f} s | {med(boot) / med(first):.0%} |")
    print(f"| no-op re-apply | {med(noop):.2f} s | target ≤ 2 s |")


if __name__ == "__main__":
    main()
