"""``runform show`` and ``runform offers`` rendering."""

from __future__ import annotations

from typing import Any

import click


def render_show(data: dict[str, Any]) -> str:
    if not data.get("resources"):
        return f"The state of {data.get('run')} is empty."
    lines = [f"run {data['run']} (lineage {data.get('lineage', '?')[:8]}, serial {data.get('serial')})", ""]
    lines += _machine_lines(data)
    for r in data["resources"]:
        a = r["attrs"]
        status = "" if r.get("status") == "ok" else f"  [{r['status']}]"
        line = f"{r['address']}{status}"
        if r["address"].startswith("stage."):
            dur = a.get("duration")
            line += f"  exit {a.get('exit_code')}" + (f", {dur:.1f}s" if dur else "")
            metrics = a.get("metrics") or {}
            if metrics:
                shown = ", ".join(f"{k}={_num(v)}" for k, v in list(metrics.items())[:8])
                line += f"\n    metrics: {shown}"
        elif r["address"].startswith("artifact."):
            line += f"  -> {a.get('to')} ({a.get('objects', 0)} objects)"
            for rel, m in (a.get("manifests") or {}).items():
                line += f"\n    {rel}: {len(m.get('entries', []))} objects, {m.get('digest', '')[:19]}"
            # issue 12: a W&B push logged offline waits for `wandb sync` where it was logged
            for where in (a.get("pending_sync") or {}).values():
                line += f"\n    pending sync (logged offline): run `wandb sync {where}` on the machine"
        elif r["address"].split("[", 1)[0] == "instance.main":
            inst = a.get("instance", {})
            line += f"  {inst.get('id')} ({inst.get('status')})"
        elif r["address"] == "tracker.run":
            line += f"  {a.get('kind')} run {a.get('run_id')}"
        lines.append(line)
    return "\n".join(lines)


def _machine_lines(data: dict[str, Any]) -> list[str]:
    """What bills and what runs: the machine (a fleet: every node), its price, uptime and spend,
    its running jobs, how to get in."""
    from runform.durations import format_duration

    m = data.get("machine")
    nodes = data.get("nodes") or []
    if len(nodes) > 1:
        return _fleet_lines(data, nodes)
    if not m:
        return []
    gpu = f"{m.get('num_gpus') or 1}x {m['gpu']}" if m.get("gpu") else "no GPU info"
    price = f"${m['price_per_hour']:.3f}/h" if m.get("price_per_hour") is not None else "no price"
    up = format_duration(m["uptime"]) if m.get("uptime") is not None else "?"
    spend = data.get("spend") or {}
    spent = f", ${spend['spent']:.2f} spent so far" if m.get("price_per_hour") is not None else ""
    lines = [f"machine {m.get('id')}: {gpu}, {price}, up {up}{spent}"]
    for job in data.get("running") or []:
        lines.append(f"  running: {job['address']} ({format_duration(job['elapsed'])} elapsed, as the last apply left it)")
    if m.get("ssh_command"):
        lines.append(f"  ssh: {m['ssh_command']}")
    lines.append("")
    return lines


def _fleet_lines(data: dict[str, Any], nodes: list[dict[str, Any]]) -> list[str]:
    """A fleet: one line per node (address, host, state, $/h, uptime, spend, running jobs, ssh);
    a node that bills stands out."""
    from runform.durations import format_duration

    spend = data.get("spend") or {}
    total = spend.get("price_per_hour")
    money = (f", ${total:.3f}/h together, ${spend.get('spent', 0):.2f} spent so far" if total is not None
             else ", no price")
    lines = [f"fleet of {len(nodes)} nodes{money}"]
    for n in nodes:
        gpu = f"{n.get('num_gpus') or 1}x {n['gpu']}" if n.get("gpu") else "no GPU info"
        price = f"${n['price_per_hour']:.3f}/h, ${n['spent']:.2f} spent" if n.get("price_per_hour") is not None \
            else "no price"
        up = format_duration(n["uptime"]) if n.get("uptime") is not None else "?"
        where = n.get("host") or n.get("root") or "this computer"
        line = (f"  node {n['node']}  {n['address']}  {n.get('id')} on {where} ({n.get('status') or '?'}): "
                f"{gpu}, {price}, up {up}")
        lines.append(click.style(line, fg="yellow", bold=True) if n.get("billing") else line)
        for job in n.get("running") or []:
            lines.append(f"    running: {job['address']} ({format_duration(job['elapsed'])} elapsed, "
                         "as the last apply left it)")
        if n.get("ssh_command"):
            lines.append(f"    ssh: {n['ssh_command']}")
    lines.append("")
    return lines


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_offers(spec: Any, as_json: bool = False) -> None:
    from runform.errors import RunformError
    from runform.interfaces import RendersOffers, SupportsOffers
    from runform.state.model import State
    from runform.workspace import Workspace

    ws = Workspace(spec)
    if not isinstance(ws.provider, SupportsOffers):
        raise RunformError(f"provider {spec.compute.provider!r} has no offers to list",
                           hint="`runform offers` is for market providers such as vast")
    state = ws.read_state() or State.new(spec.run)
    rows = ws.provider.offers(spec.compute.config, ws.provider_context(state))
    if as_json:
        import json

        click.echo(json.dumps({"provider": spec.compute.provider, "offers": [dict(o) for o in rows]},
                              indent=1, default=str))
        return
    if isinstance(ws.provider, RendersOffers):
        from rich.console import Console

        Console(width=160).print(ws.provider.render_offers(rows))
        return
    for o in rows:
        mark = "*" if o.get("chosen") else " "
        click.echo(f"{mark} {o.get('id')}  {o.get('num_gpus')}x {o.get('gpu_name')}  ${o.get('dph_total')}/h")
