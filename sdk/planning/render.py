"""Human rendering of plans, after Terraform: symbols, a reason on every line, a summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runform.planning.model import SYMBOLS, Plan


def render_plan(plan: Plan, *, saved: bool = False, verbose_noop: bool = True) -> str:
    lines: list[str] = []
    for w in plan.warnings:
        lines.append(f"Warning: {w}")
        lines.append("")
    changes = plan.changes
    if not changes and plan.destroy:
        lines.append("No changes. Nothing to destroy: the state holds nothing, and no machine carries "
                     "this run's label.")
        return "\n".join(lines)
    if not changes:
        lines.append("No changes. Your infrastructure matches the configuration.")
        lines.append("")
        lines.append("runform has compared your real infrastructure against your configuration and found "
                     "no differences, so no changes are needed.")
        if verbose_noop:
            lines.append("")
            for a in plan.actions:
                lines.append(f"  {a.address}: {a.reason}")
        return "\n".join(lines)
    used = []
    for kind in ("create", "update", "replace", "delete", "read", "attach", "forget"):
        if any(a.kind == kind for a in changes):
            used.append(kind)
    lines.append("runform will perform the following actions:")
    lines.append("")
    for a in plan.actions:
        sym, verb = SYMBOLS[a.kind]
        if a.kind == "no-op":
            lines.append(f"    {a.address}: {a.reason}")
            continue
        header = "will be replaced, as requested" if a.code == "replace_by_request" else verb
        lines.append(f"  # {a.address} {header}")
        lines.append(f"  {sym} {a.address}: {a.reason}")
        for detail in a.details[:10] if a.kind != "update" or a.address != "code.workdir" else ():
            if detail not in a.reason:
                lines.append(f"        - {detail}")
    lines.append("")
    legend = {"create": "+ create", "update": "~ update in-place",
              "replace": "-/+ destroy and then create replacement", "delete": "- destroy",
              "read": "<= read (record what exists)", "attach": "<~ attach to a running job",
              "forget": ". forget (kept where it is)"}
    lines.append("Resource actions are indicated with the following symbols:")
    for k in used:
        lines.append(f"  {legend[k]}")
    lines.append("")
    if plan.cost:
        lines.extend(cost_lines(plan.cost))
    if plan.teardown:
        lines.append(f"Teardown: {plan.teardown}")
    lines.append(plan.summary().line())
    if not saved and not plan.destroy:
        lines.append("")
        lines.append('Note: You didn\'t use the --out option to save this plan, so runform can\'t guarantee '
                     'to take exactly these actions if you run "runform apply" now.')
    return "\n".join(lines)


def cost_lines(c: Mapping[str, Any]) -> list[str]:
    """The chosen offer (or the machine in use) and the estimated cost."""
    lines: list[str] = []
    if c.get("price_per_hour") is None:  # a fleet on a provider without prices
        return [f"Estimated cost: unknown for {c.get('nodes', 1)} nodes ({c.get('basis') or 'no price'})"]
    offer = c.get("offer", {})
    gpu = offer.get("gpu_name", "?")
    n = offer.get("num_gpus", 1)
    lines.append(f"Chosen offer: {offer.get('id', '?')} ({n}x {gpu}) at ${c['price_per_hour']:.3f}/h")
    if c.get("in_use"):
        lines[-1] = (f"Machine in use: {c['in_use']} ({n}x {gpu}) at ${c['price_per_hour']:.3f}/h"
                     + (f", ${c['spent']:.2f} spent so far" if c.get("spent") is not None else ""))
    nodes = int(c.get("nodes") or 1)
    if nodes > 1:  # a fleet: what every node costs together
        what = (f"Machines in use: {c['in_use']} and {nodes - 1} other node(s)" if c.get("in_use")
                else f"Chosen offer: {offer.get('id', '?')} ({n}x {gpu}) for "
                + (f"{nodes - c['nodes_in_use']} new node(s), {c['nodes_in_use']} in use" if c.get("nodes_in_use")
                   else f"each of {nodes} nodes"))
        lines[-1] = (f"{what}: ${c['price_per_hour']:.3f}/h together"
                     + (f", ${c['spent']:.2f} spent so far" if c.get("in_use") and c.get("spent") is not None else ""))
    basis = f": {c['basis']}" if c.get("basis") else ""
    if c.get("stages", 1) == 0:
        lines.append("Estimated cost: under $0.01 (no stage runs)")
    elif c["total"] < 0.01:
        lines.append(f"Estimated cost: under $0.01 ({c['hours'] * 3600:.0f} s expected{basis})")
    else:
        lines.append(f"Estimated cost: ${c['total']:.2f} ({c['hours']:.2f} h expected{basis})")
    return lines
