"""Benchmark: the whole ``runform apply`` of a one-stage spec with a ~300 MB ``s3://`` dataset
against a bare ``rclone copy`` of the same objects, and an artifact push (what the agent runs:
``S3Backend.push`` in a fresh process) against ``aws s3 cp --recursive``; one moto_server.

    python bench/bench_apply_data.py [--total-mb 300] [--objects 64] [--repeat 3] [--home both]

The spec runs on the local provider (the machine is a folder), so the apply's time is the
CLI's start, the plan (refresh + the dataset's listing), the presigned URLs, the agent's
fetch, the one stage (``python -c pass``, run by the agent's supervisor under ``bash -l``) and
the state writes; the stage's command alone is timed too. Each row is the best of ``--repeat``
runs, each from scratch (no state, empty destination); the load average is shown. The objects
carry S3's CRC32 (boto3's default upload), see bench_hydrate.py; so do runform's processes
carry a bytecode cache (``bench_hydrate.bytecode_cache``).

The stage runs under a login shell, so its cost depends on the machine's: this host's
``~/.bashrc`` runs ``pyenv init`` (and ``pyenv rehash``) at every login, ~0.1 s that a fresh
GPU machine's login shell does not spend. ``--home both`` (the default) times every tool, repeat
by repeat, once with this host's HOME and once with HOME an empty folder (a clean login shell,
as the scaling benchmark in docs/BENCHMARKS.md does), and prints a table for each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hydrate as bh  # the same server, objects and tool environment

SPEC = """run: bench
compute:
  provider: local
code:
  path: .
  exclude: [data/]
datasets:
  ds:
    source: s3://{bucket}/{prefix}
    dest: data/ds
stages:
  one:
    run: python -c pass
    needs: [dataset.ds]
tracker:
  kind: jsonl
"""

PUSH_CHILD = r"""
import os, sys
from pathlib import Path
from runform.storage_backends.s3 import S3Backend
S3Backend().push(Path(sys.argv[1]), sys.argv[2], dict(os.environ))
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return took


HOMES = {
    "host": "this host's login shell (the real HOME: its ~/.bashrc runs `pyenv init` at every login)",
    "clean": "a clean login shell (HOME an empty folder, as on a fresh machine)",
}
STAGE_ALONE = "the stage's command alone (bash -lc 'python -c pass')"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mb", type=int, default=300)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--home", choices=["host", "clean", "both"], default="both",
                    help="the HOME every tool runs with (the stage's login shell reads it)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rf-bench-apply"))
    args = ap.parse_args()
    load0 = os.getloadavg()
    bucket, prefix = "bench", "data/"
    port = bh.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = bh.start_moto(port)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    homes = ["host", "clean"] if args.home == "both" else [args.home]
    runs: dict[str, dict[str, list[float]]] = {h: {} for h in homes}
    try:
        total = bh.upload(endpoint, bucket, prefix, args.total_mb, args.objects)
        for rep in range(args.repeat):
            for home in homes:  # interleaved: both see the same moments of the machine's load
                env = bh.tool_env(endpoint)
                if home == "clean":
                    (args.workdir / "home").mkdir(exist_ok=True)
                    env["HOME"] = str(args.workdir / "home")
                one_repeat(args, env, bucket, prefix, endpoint, f"{rep}-{home}", runs[home])
    finally:
        server.terminate()
        server.wait(timeout=10)
    load = os.getloadavg()
    print(f"\n{total / bh.MB:.0f} MB in {args.objects} objects, moto_server on 127.0.0.1; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(at the start {load0[0]:.1f}); best of {args.repeat}.")
    for home in homes:
        report(HOMES[home], runs[home])


def one_repeat(args: argparse.Namespace, env: dict[str, str], bucket: str, prefix: str,
               endpoint: str, tag: str, runs: dict[str, list[float]]) -> None:
    def keep(name: str, took: float) -> None:
        runs.setdefault(name, []).append(took)

    project, local_copy = args.workdir / "project", args.workdir / "rclone"
    rclone, aws = bh.find("rclone"), bh.find("aws")
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    (project / "runform.yaml").write_text(SPEC.format(bucket=bucket, prefix=prefix))
    os.sync()
    keep("runform apply", timed([sys.executable, "-m", "runform.cli.main", "apply",
                                 "--auto-approve"], env, project))
    keep("runform apply, no change", timed([sys.executable, "-m", "runform.cli.main", "apply",
                                            "--auto-approve"], env, project))
    # what the one stage costs by itself: its command under the login shell the supervisor
    # runs it in (with the host's HOME, ~/.bashrc runs `pyenv init` here)
    keep(STAGE_ALONE, timed(["bash", "-lc", f"{sys.executable} -c pass"], env, project))
    if rclone:
        shutil.rmtree(local_copy, ignore_errors=True)
        local_copy.mkdir()
        os.sync()
        keep("rclone copy", timed([rclone, "copy", f"moto:{bucket}/{prefix}", str(local_copy)], env))
    # the artifact push: the dataset just fetched, to a fresh prefix per tool and run
    src = next((project / ".runform" / "machines").iterdir()) / "data" / "ds"
    keep("runform push (agent's S3Backend.push)", timed(
        [sys.executable, "-c", PUSH_CHILD, str(src), f"s3://{bucket}/out-rf-{tag}/"], env))
    if aws:
        keep("aws s3 cp --recursive", timed(
            [aws, "s3", "cp", "--recursive", "--only-show-errors", str(src),
             f"s3://{bucket}/out-aws-{tag}/", "--endpoint-url", endpoint], env))


def report(title: str, runs: dict[str, list[float]]) -> None:
    best = {name: min(times) for name, times in runs.items()}
    print(f"\nWith {title}:\n\n| what | seconds | ratio |\n|---|---:|---|")
    ratios = {"runform apply": ("rclone copy", "x a bare rclone copy"),
              "runform push (agent's S3Backend.push)": ("aws s3 cp --recursive", "x aws s3 cp")}
    for name, took in best.items():
        ref = ratios.get(name)
        ratio = f"{took / best[ref[0]]:.2f}{ref[1]}" if ref and ref[0] in best else ""
        print(f"| {name} | {took:.2f} | {ratio} |")
    pairs = sorted(a / r for a, r in zip(runs.get("runform apply", []), runs.get("rclone copy", [])))
    if pairs:  # each repeat ran both, one after the other: the ratio of each pair, sorted
        print(f"\nrunform apply / rclone copy, repeat by repeat (sorted): "
              f"{', '.join(f'{x:.2f}' for x in pairs)}; median {statistics.median(pairs):.2f}x, "
              f"{sum(x <= 1.5 for x in pairs)} of {len(pairs)} within 1.5x")
    if {"runform apply", "rclone copy", STAGE_ALONE} <= set(best):  # the stage's own command is not runform's
        net = (best["runform apply"] - best[STAGE_ALONE]) / best["rclone copy"]
        print(f"runform apply less its stage's own command: {net:.2f}x a bare rclone copy "
              f"(the whole apply: {best['runform apply'] / best['rclone copy']:.2f}x)")


if __name__ == "__main__":
    main()
