"""The evaluation's pictures and ``reports/summary.md`` (matplotlib, Agg backend, PNG files).

* ``rollouts_<split>.png``: truth and predictions of a few trajectories at four times;
* ``xt_<split>_<method>.png``: x-t heatmaps of one trajectory: truth, prediction, |error|;
* ``error_curves_<split>.png``: PDEBench nRMSE of every method at every predicted step;
* ``ttc_picks_<split>.png``: how often TTC committed each candidate (0 = the operator step);
* ``reward_vs_error_<split>.png``: reward against true one-step error of TTC's candidates.

``summary.md`` embeds them next to the tables. Only the evaluator imports this module, so no
other stage needs matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

SHOWN = ("operator", "no_ttc", "ttc", "fno")


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def rollouts(path: Path, r: Mapping[str, Any]) -> str:
    ex = r["examples"]
    truth = ex["truth"]
    n, t = truth.shape[:2]
    times = sorted({0, t // 3, (2 * t) // 3, t - 1})
    fig, axes = plt.subplots(n, len(times), figsize=(3.2 * len(times), 2.2 * n), squeeze=False)
    x = (np.arange(truth.shape[-1]) + 0.5) / truth.shape[-1]
    for i in range(n):
        for c, k in enumerate(times):
            ax = axes[i, c]
            ax.plot(x, truth[i, k], "k-", lw=2, label="truth")
            for m in SHOWN:
                if m in ex:
                    ax.plot(x, ex[m][i, k], lw=1, label=m)
            if i == 0:
                ax.set_title(f"step {r['given'] + k}")
    axes[0, -1].legend(fontsize=7)
    return _save(fig, path)


def heatmap(path: Path, r: Mapping[str, Any], method: str) -> str:
    truth, pred = r["examples"]["truth"][0], r["examples"][method][0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    lim = float(np.abs(truth).max())
    for ax, field, title, kw in (
        (axes[0], truth, "truth", {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
        (axes[1], pred, method, {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
        (axes[2], np.abs(pred - truth), f"|{method} - truth|", {"cmap": "magma"}),
    ):
        im = ax.imshow(field.T, origin="lower", aspect="auto", extent=(0, 1, 0, 1), **kw)
        ax.set_title(title)
        ax.set_xlabel("t (fraction of the rollout)")
        ax.set_ylabel("x")
        fig.colorbar(im, ax=ax)
    return _save(fig, path)


def error_curves(path: Path, r: Mapping[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, curve in r["curves"].items():
        steps = r["given"] + np.arange(curve.size)
        ax.plot(steps, curve, lw=2 if m in ("ttc", "fno", "operator") else 1, label=m)
    ax.set_xlabel("time step")
    ax.set_ylabel("nRMSE at the step (PDEBench)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def picks(path: Path, r: Mapping[str, Any]) -> str:
    k = r["candidates"]
    freq = [float(np.mean(r["picks"] == c)) if r["picks"].size else 0.0 for c in range(k)]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["op"] + [f"s{c}" for c in range(1, k)], freq)
    ax.set_ylabel("fraction of committed steps")
    ax.set_title("TTC's pick (op = operator step, s = corrector sample)")
    return _save(fig, path)


def reward_vs_error(path: Path, r: Mapping[str, Any]) -> str:
    pts = r["points"]
    fig, ax = plt.subplots(figsize=(5, 4))
    if pts.size:
        ax.scatter(-pts[:, 0], pts[:, 1], s=4, alpha=0.4)
        ax.set_xscale("symlog", linthresh=1e-6)
        ax.set_yscale("log")
    ax.set_xlabel("penalty (-reward)")
    ax.set_ylabel("true nRMSE of the candidate at that step")
    ax.set_title(f"mean Spearman per step {r['rho']:+.2f}")
    return _save(fig, path)


def write_report(
    reports: Path,
    results: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, float],
    tables: Mapping[str, str],
    ttc: Any,
) -> Path:
    """Write every PNG and ``summary.md``; returns the summary's path."""
    lines = [
        "# burgers1d evaluation",
        "",
        (
            f"{int(metrics['train_seeds'])} training seeds x {int(metrics['sampling_seeds'])} "
            f"sampling seeds. TTC: K={ttc.candidates}, beam {ttc.beam_width}, H={ttc.horizon}, "
            f"w_prior={ttc.w_prior}; the controls draw {ttc.proposals_per_step} candidates per step "
            "like TTC. nRMSE is PDEBench's (normalised per time step, given frames excluded); "
            "relative L2 is one ratio per trajectory. A difference is significant when its 95% "
            "paired-bootstrap interval (training seeds and trajectories resampled) excludes zero."
        ),
        "",
    ]
    for r in results:
        s = r["split"]
        files = [
            rollouts(reports / f"rollouts_{s}.png", r),
            *(heatmap(reports / f"xt_{s}_{m}.png", r, m) for m in SHOWN if m in r["examples"]),
            error_curves(reports / f"error_curves_{s}.png", r),
            picks(reports / f"ttc_picks_{s}.png", r),
            reward_vs_error(reports / f"reward_vs_error_{s}.png", r),
        ]
        lines += [f"## {s} ({r['n']} trajectories)", "", tables[s], ""]
        lines += [f"![{f}]({f})" for f in files] + [""]
    path = reports / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
