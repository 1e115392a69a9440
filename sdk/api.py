"""runform's Python API. The CLI is a thin shell over these functions.

    spec = runform.load("runform.yaml", variables={"size": "small"})
    p = runform.plan(spec)                  # refresh + diff; nothing changes
    result = runform.apply(spec)            # plan, then converge (journaled)
    runform.destroy(spec)                   # give back what was rented
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from runform.execution.executor import ApplyResult, Executor
from runform.planning.model import Plan
from runform.planning.planner import check_policy, make_plan
from runform.spec.load import check_sources, load_spec
from runform.spec.model import Spec
from runform.state.model import State
from runform.workspace import Workspace

Confirm = Callable[[Plan], bool]
Printer = Callable[[str], None]


def load(path: str | os.PathLike[str] = "runform.yaml", *, variables: Mapping[str, str] | None = None) -> Spec:
    """Load and validate a spec (raises :class:`runform.SpecError` with file:line:column)."""
    spec = load_spec(path, variables=variables)
    from runform.graph import build_graph

    build_graph(spec)  # reports cycles at load time
    return spec


def plan(spec: Spec, *, refresh: bool = True, targets: Iterable[str] = (), replace: Iterable[str] = (),
         destroy: bool = False, lock_timeout: float = 0.0, out: Printer | None = None,
         on_plan: Callable[[Plan], None] | None = None,
         save_to: str | os.PathLike[str] | None = None, verify_data: bool = False,
         rename_run: bool = False) -> Plan:
    """Refresh what exists and diff it against the spec. Changes nothing.

    The plan goes through the same policy check as apply (the ``runform_check_plan`` hooks, then
    ``compute.max_cost``): a rejected plan raises :class:`runform.PolicyError`, after
    ``on_plan(plan)`` has seen it. ``save_to``: write the plan there for ``apply(plan_file=...)``
    (checked before anything is planned; never written for a rejected plan). A saved plan is never
    part of the code tree, whatever its name or place. ``verify_data``: the refresh reads every
    hydrated file on the machine back (slow on big datasets); changed ones make ``~ dataset.X``.
    A state made for another ``run`` name is refused unless ``rename_run`` (the spec's run was
    renamed: the old run's resources are replaced under the new name).
    """
    if not destroy:
        check_sources(spec)
    if save_to is not None:
        from runform.planning.planfile import check_plan_path

        check_plan_path(save_to)
    ws = Workspace(_without_saved_plans(spec, save_to), out=out)
    ws.verify_data = verify_data
    ws.rename_run = rename_run
    ws.read_only = True  # the next apply pins a host key first seen by this plan's refresh
    with ws.locked("plan", lock_timeout):
        state = ws.read_state()
        p = _redacted(ws, make_plan(ws, state, refresh_enabled=refresh, targets=targets, replace=replace,
                                    destroy=destroy))
        if on_plan:
            on_plan(p)
        check_policy(ws, p)
        ws.digests.save()  # only a plan that succeeded leaves its digest cache behind
    if save_to is not None:
        from runform.planning.planfile import save_plan

        save_plan(p, Path(save_to))
    return p


def apply(spec: Spec, *, plan_file: str | os.PathLike[str] | None = None, refresh: bool = True,
          targets: Iterable[str] = (), replace: Iterable[str] = (), destroy: bool = False,
          confirm: Confirm | None = None, lock_timeout: float = 0.0, parallelism: int = 10,
          out: Printer | None = None, on_plan: Callable[[Plan], None] | None = None,
          accept_host_keys: Iterable[str] = (), verify_data: bool = False,
          on_event: Callable[[dict[str, Any]], None] | None = None, stream_logs: bool = True,
          progress_every: float = 10.0, rename_run: bool = False) -> ApplyResult | None:
    """Plan and converge. ``confirm(plan)`` may refuse (returns None then); a saved plan is checked
    for staleness per resource and applied as it is.

    ``on_event(event)`` hears every progress event (a JSON-able dict, see ``docs/events.md``):
    each line ``out`` prints, actions starting and finishing, ``action_progress`` every
    ``progress_every`` seconds while an action runs, the machine's readiness ``phase``, each
    ``log`` line of a running stage (``stream_logs=False``: none) and ``transfer`` progress.
    The run is recorded in the run registry (``runform status``) as it goes."""
    if not destroy:
        check_sources(spec)
    ws = Workspace(_without_saved_plans(spec, plan_file), out=out)
    ws.verify_data = verify_data
    ws.rename_run = rename_run
    ws.stream_logs = stream_logs
    ws.events.add(on_event)
    with ws.locked("destroy" if destroy else "apply", lock_timeout):
        state = ws.read_state()
        if state is not None and accept_host_keys:
            _unpin(ws, state, accept_host_keys)
        saved = None
        if plan_file is not None:
            from runform.graph import build_graph
            from runform.planning.planfile import check_addresses, check_origin, check_stale, load_plan

            saved = load_plan(Path(plan_file))
            check_origin(saved, spec.run, spec.path, Path(plan_file), explicit_spec=True)
            check_addresses(saved, [*build_graph(spec).deps, *(state.resources if state else ())],
                            Path(plan_file))
        fresh = make_plan(ws, state, refresh_enabled=refresh, targets=targets or (saved.targets if saved else ()),
                          replace=replace, destroy=destroy or bool(saved and saved.destroy),
                          seed=dict(saved.new_state) if saved and saved.new_state else None)
        if saved is not None:
            check_stale(saved, state, fresh)
            the_plan = saved
        else:
            the_plan = fresh
        check_policy(ws, the_plan)
        if on_plan:
            on_plan(_redacted(ws, the_plan))
        if not the_plan.has_changes:
            return ApplyResult(outcomes=(), added=0, changed=0, destroyed=0)
        if confirm is not None and plan_file is None and not confirm(the_plan):
            return None
        if state is None:
            ns = the_plan.new_state or {}
            state = State(lineage=ns["lineage"], run=ns["run"], salt=ns["salt"])
        from runform.runs import Recorder

        recorder = Recorder(ws, state)
        ws.events.add(recorder)
        result = Executor(ws, state, the_plan, parallelism=parallelism, progress_every=progress_every).run()
        return _with_spend(ws, recorder, result)


def _with_spend(ws: Workspace, recorder: Any, result: ApplyResult) -> ApplyResult:
    """The result with what the run has spent so far, also sent as a ``spend`` event."""
    import attrs

    from runform.runs import spend

    money = spend(recorder.entry)  # every node's machine: a fleet bills for all of them
    price = money["price_per_hour"]
    if not money["billing"] and not money["spent"] and price is None:
        return result  # a provider without prices (ssh, local): nothing to say
    machines = len(recorder.entry.get("machines") or [])
    result = attrs.evolve(result, spent=money["spent"], price_per_hour=price, machines=machines)
    ws.tell("spend", result.spent_line(), show=False, spent=money["spent"], price_per_hour=price,
            uptime=money["uptime"], billing=money["billing"])
    return result


def destroy(spec: Spec, **kwargs: Any) -> ApplyResult | None:
    """Destroy everything the state holds (and any instance found by the run's label)."""
    return apply(spec, destroy=True, **kwargs)


def show(spec: Spec) -> dict[str, Any]:
    """The state as JSON-able data: resources, their attributes and each stage's last metrics."""
    ws = Workspace(spec)
    state = ws.read_state()
    if state is None:
        return {"run": spec.run, "resources": [], "machine": None, "nodes": [], "running": [], "spend": None}
    out = state.to_json()
    for r in out["resources"]:
        r["attrs"].pop("manifest", None)
    out.update(_machine_view(spec, state))
    return out


def _redacted(ws: Workspace, plan: Plan) -> Plan:
    """The plan as shown and saved: every string through the redactor (a secret pasted into the
    spec as text, say). The plan itself when nothing is masked."""
    raw = plan.to_json()
    masked = ws.redactor.redact_json(raw)
    return plan if masked == raw else Plan.from_json(masked)


def _machine_view(spec: Spec, state: State) -> dict[str, Any]:
    """What bills and what runs: the machine (GPU, $/h, uptime, the ssh command), every node's
    of a fleet, the jobs the last apply left running (from the run registry) and the spend so
    far (price × uptime, summed over the nodes)."""
    import time

    from runform import runs

    machines = runs.machines_of(state)
    entry = runs.read(spec.path, spec.run) or {}
    now = time.time()
    money = runs.spend({**entry, "machines": machines}, now)
    started = sorted((entry.get("running") or {}).items()) if machines else []
    running = [{"address": a, "elapsed": round(now - float(t0), 1)} for a, t0 in started]
    nodes = []
    for m in machines:
        k = m["node"]
        uptime, cost = runs.machine_spend(m, now)
        m["uptime"] = round(uptime, 1) if uptime is not None else None
        flag = "" if k == 0 else f" --node {k}"
        m["ssh_command"] = f"runform ssh --spec {spec.path}{flag}" if m.get("ssh") else None
        nodes.append({"node": k, "address": m["address"], "id": m.get("id"), "status": m.get("status"),
                      "host": (m.get("ssh") or {}).get("host"), "root": m.get("root"),
                      "gpu": m.get("gpu"), "num_gpus": m.get("num_gpus"), "price_per_hour": m.get("price_per_hour"),
                      "uptime": m["uptime"], "spent": round(cost, 4),
                      "billing": (m.get("price_per_hour") or 0) > 0, "ssh_command": m["ssh_command"],
                      "running": [r for r in running if k == 0 or _on_every_node(spec, r["address"])]})
    machine = next(({k: v for k, v in m.items() if k not in ("node", "address", "root")} for m in machines
                    if m["node"] == 0), None)
    return {"machine": machine, "nodes": nodes, "running": running,
            "spend": {"spent": money["spent"], "billing": money["billing"],
                      "price_per_hour": money["price_per_hour"] if machines else None}}


def _on_every_node(spec: Spec, address: str) -> bool:
    """A stage whose job runs on every node of the fleet (``launcher: torchrun``), not node 0's only."""
    s = spec.stages.get(address.split(".", 1)[1]) if address.startswith("stage.") else None
    return s is not None and s.launcher == "torchrun" and spec.compute.nodes > 1


def _without_saved_plans(spec: Spec, also: str | os.PathLike[str] | None = None) -> Spec:
    """The spec with every saved plan in the code tree excluded from it (found by content, so that
    ``plan --out next.json`` then ``apply next.json`` sees the tree it planned), plus ``also`` (a
    plan about to be written there). Plan and apply both use it, so the planned code digest, the
    synced tree and the next plan agree."""
    import glob

    import attrs
    from runform.planning.desired import code_excludes
    from runform.planning.planfile import saved_plans_in

    root = spec.code.path
    rels = set(saved_plans_in(root, code_excludes(spec)))
    if also is not None:
        try:
            rels.add((Path(also).parent.resolve() / Path(also).name).relative_to(root).as_posix())
        except ValueError:
            pass  # outside the code tree: nothing to leave out
    extra = tuple(p for p in (f"/{glob.escape(r)}" for r in sorted(rels)) if p not in spec.code.exclude)
    if not extra:
        return spec
    return attrs.evolve(spec, code=attrs.evolve(spec.code, exclude=tuple(spec.code.exclude) + extra))


def _unpin(ws: Workspace, state: State, hosts: Iterable[str]) -> None:
    rec = state.get("instance.main")
    if rec is None:
        return
    pins = dict(rec.attrs.get("pins", {}))
    for h in hosts:
        pins.pop(h, None)
    rec.attrs["pins"] = pins
    # the next connection accepts the key it is shown and pins it (ProviderContext.pin)
    ws.journal(state, {"t": "put", "key": "accept-host-key", "record": rec.to_json()})
