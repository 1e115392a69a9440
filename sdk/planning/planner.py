"""Make a plan: desired (from the spec) vs observed (refresh) vs recorded (state)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from runform.errors import PolicyError, RunformError
from runform.graph import INSTANCE, build_graph, kind_of
from runform.interfaces import InstanceInfo
from runform.nodes import at_node, node_compute, split_node
from runform.planning.desired import compute_desired
from runform.planning.diff import diff, on_machine
from runform.planning.model import Action, Plan
from runform.planning.refresh import refresh
from runform.state.model import State
from runform.workspace import Workspace


def make_plan(
    ws: Workspace,
    state: State | None,
    *,
    refresh_enabled: bool = True,
    targets: Iterable[str] = (),
    replace: Iterable[str] = (),
    destroy: bool = False,
    seed: dict | None = None,
) -> Plan:
    """``seed``: lineage and salt for a state not yet written (a saved plan's, when applying it)."""
    new_state = None
    if state is None:
        state = State(**seed) if seed else State.new(ws.spec.run)
        new_state = {"lineage": state.lineage, "salt": state.salt, "run": state.run}
    graph = build_graph(ws.spec)
    targets, replace = tuple(targets), set(replace)
    for addr in (*targets, *replace):
        if addr not in graph.deps and addr not in state.resources:
            raise RunformError(f"{addr}: no such resource", hint="see `runform state list` for addresses")
    warnings = []
    if state.pending:
        keys = ", ".join(f"{p.get('addr')} ({p.get('action')})" for p in state.pending.values())
        warnings.append(f"{len(state.pending)} pending operation(s) from an interrupted apply: {keys}. "
                        "This refresh reconciles them (found by label or job markers, never made twice).")
    if destroy:
        actions = _destroy_actions(ws, state, refresh_enabled)
        plan = Plan(run=ws.spec.run, lineage=state.lineage, serial=state.serial, actions=tuple(actions),
                    destroy=True, warnings=tuple(warnings), pending=tuple(state.pending),
                    spec_path=str(ws.spec.path), variables=dict(ws.spec.variables), new_state=new_state)
        ws.pm.hook.runform_plan_ready(plan=plan)
        return plan
    desired = compute_desired(ws, state, graph)
    observed = refresh(ws, state, desired, enabled=refresh_enabled)
    config = ws.spec.compute.config
    per_node = {ws.label(state, k): node_compute(config, k) for k in range(ws.spec.compute.nodes)} \
        if ws.spec.compute.nodes > 1 else {}  # each node against its own slice of the fleet
    actions = diff(desired, state, observed, order=graph.nodes, replace=replace,
                   replace_reason=lambda inst: ws.provider.replace_reason(inst, per_node.get(inst.label, config)))
    if targets:
        keep = set(targets) | graph.upstream(targets)
        actions = [a for a in actions if a.address in keep]
        warnings.append("Resource targeting is in effect: the plan may be incomplete. "
                        "--target is not for routine use.")
    teardown = None
    policy = ws.spec.compute.teardown
    if policy in ("on_success", "always") and any(a.changes for a in actions):
        more = f" and its {ws.spec.compute.nodes - 1} other node(s)" if ws.spec.compute.nodes > 1 else ""
        teardown = f"instance.main{more} will be destroyed after apply (teardown: {policy})"
    plan = Plan(run=ws.spec.run, lineage=state.lineage, serial=state.serial, actions=tuple(actions),
                teardown=teardown, warnings=tuple(warnings), pending=tuple(state.pending),
                cost=_estimate(ws, state, actions), targets=targets, spec_path=str(ws.spec.path),
                variables=dict(ws.spec.variables), new_state=new_state)
    ws.pm.hook.runform_plan_ready(plan=plan)
    return plan


def check_policy(ws: Workspace, plan: Plan) -> None:
    for reason in ws.pm.hook.runform_check_plan(plan=plan):
        if reason:
            raise PolicyError(f"the plan was rejected by a policy: {reason}",
                              hint="change the spec, or remove the policy plugin")
    max_cost = ws.spec.compute.config.get("max_cost")
    total = plan.cost.get("total")
    if max_cost is not None and total is not None and total > float(max_cost):
        raise PolicyError(f"estimated cost ${total:.2f} exceeds compute.max_cost ${float(max_cost):.2f}",
                          hint="raise max_cost, lower max_price_per_hour, or shorten the stages")


def _estimate(ws: Workspace, state: State, actions: list[Action]) -> dict:
    """Price × expected duration (from earlier runs when known, else max_duration). A fleet costs
    every node's price: the machine in use where it stays, else one chosen offer per node."""
    from runform.durations import parse_duration
    from runform.interfaces import ProviderContext, SupportsOffers

    provider = ws.provider
    nodes = ws.spec.compute.nodes
    if not any(a.changes for a in actions):
        return {}
    if not isinstance(provider, SupportsOffers):
        if nodes < 2:
            return {}
        # a fleet on a provider without prices (ssh): say so, rather than nothing or $0.00
        return {"nodes": nodes, "price_per_hour": None, "total": None,
                "basis": f"the {ws.spec.compute.provider} provider states no price for its machines"}
    # the machines in use, where they stay: their real price, not the market's best offer
    from runform import runs

    changing = {a.address for a in actions if kind_of(a.address) == "instance" and a.changes}
    in_use = {k: m for k in range(nodes) if at_node(INSTANCE, k) not in changing
              and (m := runs.machine_of(state.get(at_node(INSTANCE, k)))) is not None
              and m.get("price_per_hour") is not None}
    extra: dict[str, Any] = {"nodes": nodes} if nodes > 1 else {}
    price = sum(float(m["price_per_hour"]) for m in in_use.values())
    if len(in_use) == nodes:
        machine = in_use[0]
        offer = {"id": machine["id"], "gpu_name": machine.get("gpu"), "num_gpus": machine.get("num_gpus") or 1}
        entry = {**(runs.read(ws.spec.path, ws.spec.run) or {}), "machines": list(in_use.values())}
        extra.update(in_use=machine["id"], spent=runs.spend(entry)["spent"])
    else:
        ctx: ProviderContext = ws.provider_context(state)
        offers = provider.offers(ws.spec.compute.config, ctx)
        if not offers:
            return {}
        offer = dict(next((o for o in offers if o.get("chosen")), offers[0]))
        price += float(offer.get("dph_total") or 0) * (nodes - len(in_use))  # one such machine per new node
        if in_use:
            extra["nodes_in_use"] = len(in_use)
    known = 0.0
    seen = unknown = 0
    for a in actions:
        if a.address.startswith("stage.") and a.kind in ("create", "replace", "attach"):
            rec = state.get(a.address)  # the stage's last run (its record outlives a teardown)
            if rec and rec.attrs.get("duration"):
                known += float(rec.attrs["duration"])
                seen += 1
            else:
                unknown += 1
    hours = known / 3600
    basis = [f"{seen} stage(s) timed by their last run"] if seen else []
    if unknown:
        cap = ws.spec.compute.config.get("max_duration")
        hours = parse_duration(cap) / 3600 if cap else hours + unknown * 1.0
        basis.append(f"{unknown} never run: " + (f"max_duration {cap}" if cap else "1 h each"))
    return {"offer": offer, "price_per_hour": price, "hours": round(hours, 4),
            "total": round(price * hours, 2), "basis": "; ".join(basis), "stages": seen + unknown, **extra}


def _destroy_actions(ws: Workspace, state: State, refresh_enabled: bool) -> list[Action]:
    count = max([ws.spec.compute.nodes] + [split_node(a)[1] + 1 for a in state.addresses()
                                           if kind_of(a) == "instance"])
    live: dict[int, InstanceInfo | None] = {}
    if refresh_enabled:
        labels = {k: ws.label(state, k) for k in range(count)}
        found = ws.provider.find(list(labels.values()), ws.provider_context(state, ws.pins(state)))
        live = {k: found.get(label) for k, label in labels.items()}
    return destroy_actions(state, live.get(0), refreshed=refresh_enabled,
                           others={k: v for k, v in live.items() if k})


def destroy_actions(state: State, live: InstanceInfo | None, *, refreshed: bool = True,
                    others: Mapping[int, InstanceInfo | None] | None = None) -> list[Action]:
    """A destroy plan's actions, pure: the state's records and the live instances found by label
    (``live``: node 0's; ``others``: node K > 0's). Every node is given back, node 0 last."""
    actions: list[Action] = []
    for address, rec in reversed(list(state.resources.items())):
        if kind_of(address) == "instance":
            continue
        if on_machine(address):
            actions.append(Action(address, "delete", f"goes with {at_node(INSTANCE, split_node(address)[1])}",
                                  "delete_because_destroy", revision=rec.revision))
        else:
            actions.append(Action(address, "forget",
                                  "kept in storage; forgotten from state" if kind_of(address) == "artifact"
                                  else "forgotten from state", "forget", revision=rec.revision))
    nodes = {0: live, **(others or {})}
    for a in state.addresses():
        if kind_of(a) == "instance":
            nodes.setdefault(split_node(a)[1], None)
    for k in sorted(nodes, reverse=True):
        actions += _destroy_node(state, at_node(INSTANCE, k), nodes[k], refreshed)
    return actions


def _destroy_node(state: State, address: str, live: InstanceInfo | None, refreshed: bool) -> list[Action]:
    inst_rec = state.get(address)
    if inst_rec is None and live is None:
        return []
    why = "destroy requested"
    if inst_rec is None and live is not None:
        why = f"found instance {live.id} by its label (not in state): destroy it"
    elif refreshed and live is None:
        why = "already gone: remove it from state"
    return [Action(address, "delete", why, "delete_because_destroy",
                   revision=inst_rec.revision if inst_rec else None,
                   after={"instance": live.to_json()} if live is not None else {})]
