"""``runform status``: every run of this user on this machine, from the run registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click


def status_rows(now: float | None = None) -> list[dict[str, Any]]:
    """The registry's runs with their uptime and spend computed now (``docs/schemas/status.schema.json``)."""
    from runform import runs

    now = time.time() if now is None else now
    rows = []
    for e in runs.read_all():
        money = runs.spend(e, now)  # a fleet: summed over its nodes
        machines = runs.live_machines(e)
        m = e.get("machine") or (machines[0] if machines else None)
        rows.append({
            "run": e.get("run"), "spec": e.get("spec"), "dir": e.get("dir"), "provider": e.get("provider"),
            "phase": (e.get("phase") or "unknown") + ("" if not e.get("spec") or Path(e["spec"]).exists()
                                                       else " (spec gone)"),
            "instance": m.get("id") if m else None, "gpu": _gpu(m),
            "price_per_hour": money["price_per_hour"] if machines else None,
            "uptime": money["uptime"], "spent": money["spent"], "billing": money["billing"],
            "running": sorted(e.get("running") or {}) if machines else [],
            "nodes": [_node(n, k, now) for k, n in enumerate(machines)],
            "updated": e.get("updated"),
        })
    return rows


def _node(m: dict[str, Any], index: int, now: float) -> dict[str, Any]:
    """One node's machine of a run: where it is, what it costs, how long it has been up."""
    from runform import runs

    uptime, cost = runs.machine_spend(m, now)
    return {"node": m.get("node", index), "instance": m.get("id"), "host": (m.get("ssh") or {}).get("host"),
            "gpu": _gpu(m), "price_per_hour": m.get("price_per_hour"),
            "uptime": round(uptime, 1) if uptime is not None else None, "spent": round(cost, 4),
            "billing": (m.get("price_per_hour") or 0) > 0}


def _gpu(m: dict[str, Any] | None) -> str | None:
    if not m or not m.get("gpu"):
        return None
    return f"{m.get('num_gpus') or 1}x {m['gpu']}"


def render_status(rows: list[dict[str, Any]]) -> str:
    from runform.durations import format_duration

    if not rows:
        return "No runs yet. `runform apply` records each run here."
    lines = []
    header = f" {'RUN':15} {'PHASE':18} {'PROVIDER':8} {'INSTANCE':24} {'GPU':14} {'$/H':>7} {'UPTIME':>8} {'SPENT':>8}  SPEC"
    lines.append(header)
    for r in rows:
        price = f"{r['price_per_hour']:.3f}" if r["price_per_hour"] is not None else "-"
        up = format_duration(r["uptime"]) if r["uptime"] is not None else "-"
        mark = "*" if r["instance"] else " "
        if len(r.get("nodes") or []) > 1:  # a fleet: $/h and spend are every node's together
            more = f" +{len(r['nodes']) - 1} node(s)"
            r = {**r, "instance": str(r["instance"] or "-")[:24 - len(more)] + more}
        line = (f"{mark}{str(r['run'])[:15]:15} {str(r['phase'])[:18]:18} {str(r['provider'])[:8]:8} "
                f"{str(r['instance'] or '-')[:24]:24} {str(r['gpu'] or '-')[:14]:14} {price:>7} {up:>8} "
                f"{'$' + format(r['spent'], '.2f'):>8}  {r['spec']}")
        # a row whose machine still bills stands out (click strips the colour when not a terminal)
        lines.append(click.style(line, fg="yellow", bold=True) if r["billing"] else line)
        if len(r.get("nodes") or []) > 1:  # a fleet: the row above sums it, a row per node follows
            for n in r["nodes"]:
                price = f"{n['price_per_hour']:.3f}" if n["price_per_hour"] is not None else "-"
                up = format_duration(n["uptime"]) if n["uptime"] is not None else "-"
                sub = (f"   node {n['node']:<3} {str(n['host'] or '-')[:32]:32} {str(n['instance'] or '-')[:24]:24} "
                       f"{str(n['gpu'] or '-')[:14]:14} {price:>7} {up:>8} {'$' + format(n['spent'], '.2f'):>8}")
                lines.append(click.style(sub, fg="yellow", bold=True) if n["billing"] else sub)
        if r["running"]:
            lines.append(f"    running: {', '.join(r['running'])}")
    if any(r["instance"] for r in rows):
        lines.append("")
        lines.append("* a machine is still there" + (" and bills" if any(r["billing"] for r in rows) else "")
                     + ": `runform destroy SPEC` gives it back")
    return "\n".join(lines)
