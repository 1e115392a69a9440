"""Core benchmark: plan and apply of N trivial stages, against Terraform's numbers.

    python bench/bench_core.py                       # N = 200, 1000, 2000; writes docs/BENCHMARKS.md
    python bench/bench_core.py --sizes 200 1000      # fewer sizes
    python bench/bench_core.py --runs 3              # each measurement 3 times (min-max ranges)
    python bench/bench_core.py --variants clean      # only the clean-login-shell variant
    python bench/bench_core.py --no-write            # print the table only
    python bench/bench_core.py --profile apply 200   # cProfile one command (all threads), top 30

The pipeline is the runform counterpart of plan-apply-semantics.md §14 (N × ``terraform_data``):
N stages ``run: "true"`` with ``deps: []`` on the local provider, ``tracker: {kind: none}``.
Each command is a fresh ``python -m runform.cli.main`` process (what the ``runform`` script
runs), timed with ``time.perf_counter`` and measured for peak memory with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh wrapper process, so one command's
peak never hides another's. Steps, as in §14:

1. ``plan`` (empty state)
2. ``apply --auto-approve``
3. ``plan --detailed-exitcode``                  (must be rc 0: no changes)
4. ``plan --refresh=false --detailed-exitcode``  (must be rc 0)

Stages run as ``bash -lc``, so each one pays for the host's login profile. Two variants:
``host`` (the real ``HOME``: on a developer box ``~/.bashrc`` may run ``pyenv init`` and the like)
and ``clean`` (``HOME`` is an empty folder: runform's own cost, as on a bare GPU image).
When the next size would push the total past ``--budget-min`` (10 minutes), it is skipped and
the table says so.

The results replace only the ``## Core: plan and apply`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
HEADING = "## Core: plan and apply"
SIZES = (200, 1000, 2000)
NO_CHANGE_TARGET_S = 1.0  # the no-change plan at N=1000

STEPS = (
    ("plan", ["plan"], {0}),
    ("apply", ["apply", "--auto-approve"], {0}),
    ("noop_plan", ["plan", "--detailed-exitcode"], {0}),
    ("norefresh_plan", ["plan", "--refresh=false", "--detailed-exitcode"], {0}),
)

# plan-apply-semantics.md §14: Terraform, N × terraform_data, local backend, 2 vCPU AMD EPYC.
TERRAFORM: dict[int, dict[str, Any]] = {
    200: {
        "plan": "0.07–0.10 s / 74–77 MB",
        "apply": "0.30–0.37 s / 77–78 MB",
        "noop_plan": "0.10 s / 82–85 MB",
        "norefresh_plan": "0.09–0.10 s / 81–83 MB",
        "apply_s": 0.335,
        "state": "89 KB",
    },
    1000: {
        "plan": "0.25–0.31 s / 90–93 MB",
        "apply": "4.00–4.40 s / 95–97 MB",
        "noop_plan": "0.55–0.58 s / 115–118 MB",
        "norefresh_plan": "0.50–0.59 s / 112–115 MB",
        "apply_s": 4.2,
        "state": "446 KB",
    },
    2000: {
        "plan": "0.51 s / 108 MB",
        "apply": "16.2 s / 120 MB",
        "noop_plan": "1.74 s / 147 MB",
        "norefresh_plan": "1.67 s / 148 MB",
        "apply_s": 16.2,
        "state": "895 KB",
    },
}

# Runs one command in this (fresh) wrapper process and reports its wall time and peak RSS.
MEASURE = r"""
import json, resource, subprocess, sys, time
argv, cwd, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(out + ".log", "wb") as log:
    t0 = time.perf_counter()
    rc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
json.dump({"rc": rc, "wall": wall, "rss_kb": rss_kb}, open(out, "w"))
"""


# --------------------------------------------------------------------------- the pipeline


def write_spec(folder: Path, n: int) -> Path:
    lines = [f"run: bench-{n}", "compute: {provider: local}", "code: {path: .}", "stages:"]
    lines += [f'  s{i:05d}: {{run: "true", deps: []}}' for i in range(n)]
    lines += ["tracker: {kind: none}"]
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "runform.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


VARIANTS = {"clean": "runform, clean login shell", "host": "runform, this host's login shell"}


def _env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFORM_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if home is not None:
        env["HOME"] = str(home)
    return env


def measure(
    args: list[str], cwd: Path, logs: Path, name: str, home: Path | None = None
) -> dict[str, Any]:
    """One CLI command in a fresh wrapper process: rc, wall seconds, peak RSS (KiB)."""
    out = logs / f"{name}.json"
    argv = [sys.executable, "-m", "runform.cli.main", *args]
    subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(argv), str(cwd), str(out)],
        check=True,
        env=_env(home),
    )
    return json.loads(out.read_text())


def state_bytes(spec_dir: Path) -> int:
    folder = spec_dir / ".runform"
    return sum(
        (folder / f).stat().st_size
        for f in ("state.json", "journal.jsonl")
        if (folder / f).exists()
    )


def run_size(n: int, work: Path, runs: int, variant: str) -> dict[str, Any]:
    """All steps for one N, ``runs`` times (each run in a fresh folder)."""
    results: dict[str, list[dict[str, Any]]] = {s: [] for s, _, _ in STEPS}
    sizes = []
    home = None
    if variant == "clean":
        home = work / "empty-home"
        home.mkdir(exist_ok=True)
    for r in range(runs):
        spec_dir = work / f"{variant}-n{n}-run{r}" / "pipeline"
        logs = spec_dir.parent / "logs"  # outside the code tree: the spec folder is synced
        logs.mkdir(parents=True)
        write_spec(spec_dir, n)
        for step, args, ok in STEPS:
            m = measure(args, spec_dir, logs, step, home)
            if m["rc"] not in ok:
                log = Path(str(logs / f"{step}.json") + ".log").read_text(errors="replace")
                raise SystemExit(
                    f"N={n} {step}: exit code {m['rc']} (expected {sorted(ok)})\n{log[-3000:]}"
                )
            results[step].append(m)
            print(
                f"  {variant:5} N={n:<5} run {r + 1}/{runs} {step:15} {m['wall']:7.2f} s "
                f"{m['rss_kb'] / 1024:6.0f} MB",
                flush=True,
            )
        sizes.append(state_bytes(spec_dir))
        shutil.rmtree(spec_dir / ".runform" / "machines", ignore_errors=True)
    return {"n": n, "variant": variant, "steps": results, "state_bytes": max(sizes)}


# --------------------------------------------------------------------------- the report


def _range(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return (
        fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"
    )


def cell(ms: list[dict[str, Any]]) -> str:
    return (
        f"{_range([m['wall'] for m in ms], '{:.2f}')} s / "
        f"{_range([m['rss_kb'] / 1024 for m in ms], '{:.0f}')} MB"
    )


def host() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    return (
        f"{os.cpu_count()} CPU ({model or platform.machine()}){load}; Python "
        f"{platform.python_version()}; {platform.system()} {platform.release()}"
    )


def login_profile_note() -> str:
    """What the real login profile does per stage, when it is something slow we can name."""
    slow = []
    for name in (".profile", ".bash_profile", ".bash_login", ".bashrc"):
        try:
            text = (Path.home() / name).read_text(errors="replace")
        except OSError:
            continue
        for word in ("pyenv init", "pyenv virtualenv-init", "conda", "nvm.sh", "rbenv init"):
            if word in text and word not in slow:
                slow.append(word)
    return f" (here it runs {', '.join(f'`{w}`' for w in slow)} for every stage)" if slow else ""


def render(
    results: list[dict[str, Any]], runs: int, skipped: list[tuple[str, int]], elapsed: float
) -> str:
    by_key = {(r["variant"], r["n"]): r for r in results}
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in results)]
    variants += [v for v, _ in skipped if v not in variants]
    lines = [
        HEADING,
        "",
        (
            f"_Generated by `python bench/bench_core.py` on {time.strftime('%Y-%m-%d')}, {runs} run(s) per "
            f"cell, {elapsed / 60:.1f} min in all. Host: {host()}._"
        ),
        "",
        (
            'N stages `run: "true"`, `deps: []`, local provider, `tracker: {kind: none}`, against N × '
            "`terraform_data` with Terraform's local backend "
            "(`shared/reference/plan-apply-semantics.md` §14, 2 vCPU AMD EPYC, 3 runs). Each cell: wall "
            "time / peak RSS of one fresh `runform` process (Terraform in italics). The no-change plans "
            "exit 0. Every runform stage really runs: a detached supervisor (`python -S`) starts "
            "`bash -lc true` and records its markers; a `terraform_data` resource runs nothing. "
            "_clean login shell_: `HOME` is an empty folder; _this host's login shell_: the real `HOME`"
            f"{login_profile_note()}."
        ),
        "",
        (
            "| N | tool | plan (empty state) | apply | apply per stage | 2nd plan (no changes, rc 0) "
            "| plan `--refresh=false` | state |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = sorted({n for _, n in by_key} | set(TERRAFORM) | {n for _, n in skipped})
    for n in sizes:
        for v in variants:
            r = by_key.get((v, n))
            if r is None:
                why = (
                    "not run: over the 10-minute budget (see below)"
                    if (v, n) in skipped
                    else "not run"
                )
                lines.append(f"| {n} | {VARIANTS[v]} | {why} | | | | | |")
                continue
            s = r["steps"]
            per = min(m["wall"] for m in s["apply"]) / n * 1000
            lines.append(
                f"| {n} | {VARIANTS[v]} | {cell(s['plan'])} | **{cell(s['apply'])}** | {per:.1f} ms "
                f"| {cell(s['noop_plan'])} | {cell(s['norefresh_plan'])} "
                f"| {r['state_bytes'] / 1024:.0f} KB |"
            )
        tf = TERRAFORM.get(n)
        if tf:
            lines.append(
                f"| {n} | _Terraform_ | _{tf['plan']}_ | _{tf['apply']}_ "
                f"| _{tf['apply_s'] / n * 1000:.1f} ms_ | _{tf['noop_plan']}_ "
                f"| _{tf['norefresh_plan']}_ | _{tf['state']}_ |"
            )
    lines += ["", *findings(by_key, variants, skipped), ""]
    return "\n".join(lines)


def findings(
    by_key: dict[tuple[str, int], dict[str, Any]],
    variants: list[str],
    skipped: list[tuple[str, int]],
) -> list[str]:
    out = []
    for v in variants:
        sizes = sorted(n for vv, n in by_key if vv == v)
        per = {n: min(m["wall"] for m in by_key[(v, n)]["steps"]["apply"]) / n for n in sizes}
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        growth = per[hi] / per[lo]
        shape = (
            f"linear: per-stage time ×{growth:.2f}"
            if growth < 1.3
            else f"super-linear: per-stage time ×{growth:.2f}"
        )
        tf_growth = (
            (TERRAFORM[hi]["apply_s"] / hi) / (TERRAFORM[lo]["apply_s"] / lo)
            if lo in TERRAFORM and hi in TERRAFORM
            else None
        )
        out.append(
            f"- **Apply growth ({VARIANTS[v]}):** "
            f"{', '.join(f'{per[n] * 1000:.1f} ms' for n in sizes)} per stage at N = "
            f"{', '.join(map(str, sizes))} ({shape} from N={lo} to N={hi})"
            + (
                f"; Terraform's per-resource time grows ×{tf_growth:.1f} over the same range "
                "(quadratic: whole-state rewrite per resource)."
                if tf_growth
                else "."
            )
        )
    for v in variants:
        r = by_key.get((v, 1000))
        if r is None:
            continue
        best = min(m["wall"] for m in r["steps"]["noop_plan"])
        verdict = "meets" if best < NO_CHANGE_TARGET_S else "misses"
        out.append(
            f"- **No-change plan at N=1000 ({VARIANTS[v]}):** {best:.2f} s: {verdict} the "
            f"< {NO_CHANGE_TARGET_S:.0f} s target (Terraform: {TERRAFORM[1000]['noop_plan']})."
        )
    out.append(
        "- Where the time goes: `python bench/bench_core.py --profile apply 200` (or `plan`, `noop`, "
        "`norefresh`) prints cProfile's top functions, worker threads included."
    )
    for v, n in skipped:
        out.append(
            f"- N={n} ({VARIANTS[v]}) was not run: with it the benchmark would pass "
            "10 minutes on this host (its apply extrapolated from the smaller sizes)."
        )
    return out


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace only our section (from its heading to the next ``## `` heading) in ``path``."""
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\s*$.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text.rstrip() + "\n\n", doc, count=1)
    else:
        doc = doc.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc.rstrip() + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- profiling


PROFILE = r"""
import cProfile, pstats, sys, threading
from runform.execution import executor
profiles, lock = [], threading.Lock()
one = executor.Executor._one
def _one(self, *a, **kw):  # the actions run on worker threads: profile each of them too
    p = cProfile.Profile()
    with lock:
        profiles.append(p)
    p.enable()
    try:
        return one(self, *a, **kw)
    finally:
        p.disable()
executor.Executor._one = _one
from runform.cli.main import cli
main = cProfile.Profile()
main.enable()
try:
    cli.main(args=sys.argv[2:], prog_name="runform")
except SystemExit:
    pass
main.disable()
stats = pstats.Stats(main)
for p in profiles:
    stats.add(p)
stats.dump_stats(sys.argv[1])
"""


def profile(command: str, n: int, top: int = 30) -> None:
    """cProfile ``command`` (plan | apply | noop | norefresh) at N, all threads merged, with a
    clean login shell (an empty ``HOME``): runform's own cost."""
    import pstats

    with tempfile.TemporaryDirectory(prefix="runform-bench-") as tmp:
        spec_dir = Path(tmp) / "pipeline"
        write_spec(spec_dir, n)
        home = Path(tmp) / "empty-home"
        home.mkdir()
        args = {
            "plan": ["plan"],
            "apply": ["apply", "--auto-approve"],
            "noop": ["plan", "--detailed-exitcode"],
            "norefresh": ["plan", "--refresh=false", "--detailed-exitcode"],
        }[command]
        if command in ("noop", "norefresh"):
            subprocess.run(
                [sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"],
                cwd=spec_dir,
                env=_env(home),
                check=True,
                capture_output=True,
            )
        out = Path(tmp) / "profile.out"
        subprocess.run(
            [sys.executable, "-c", PROFILE, str(out), *args],
            check=False,
            cwd=spec_dir,
            env=_env(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--runs", type=int, default=1, help="runs per size (fresh folder each)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument(
        "--budget-min",
        type=float,
        default=10.0,
        help="skip a size whose extrapolated cost would end the run past this many minutes",
    )
    ap.add_argument(
        "--no-write", action="store_true", help="print the section, leave the docs alone"
    )
    ap.add_argument(
        "--profile",
        nargs=2,
        metavar=("COMMAND", "N"),
        help="profile plan|apply|noop|norefresh at N instead of benchmarking",
    )
    ns = ap.parse_args(argv)
    if ns.profile:
        profile(ns.profile[0], int(ns.profile[1]))
        return 0
    results: list[dict[str, Any]] = []
    skipped: list[tuple[str, int]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runform-bench-") as tmp:
        for variant in ns.variants:  # clean first: the cheap one, so it gets every size
            last = None
            for n in sorted(ns.sizes):
                if last is not None:
                    # cost grows with N (apply dominates): extrapolate from the last size measured
                    spent = sum(m["wall"] for s in last["steps"].values() for m in s)
                    expected = spent / last["n"] * n
                    if time.perf_counter() - t0 + expected > ns.budget_min * 60:
                        print(
                            f"{variant} N={n}: skipped, would take about {expected / 60:.1f} min "
                            f"(budget {ns.budget_min:.0f} min in all)",
                            flush=True,
                        )
                        skipped.append((variant, n))
                        continue
                last = run_size(n, Path(tmp), ns.runs, variant)
                results.append(last)
    text = render(results, ns.runs, skipped, time.perf_counter() - t0)
    print("\n" + text)
    if not ns.no_write:
        write_section(text)
        print(f"\nwrote {BENCHMARKS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
