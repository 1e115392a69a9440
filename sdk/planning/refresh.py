"""Refresh: what exists now. One provider call for the instances (every node's label at once),
one agent call per machine (the nodes' in parallel)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from runform.agent.client import AgentClient
from runform.graph import INSTANCE
from runform.interfaces import InstanceInfo
from runform.nodes import at_node, split_node
from runform.planning.desired import Desired
from runform.state.model import State
from runform.workspace import Workspace


@attrs.frozen
class Observed:
    instance: InstanceInfo | None  # the live instance found by label (None: gone or never made)
    machine: dict[str, Any] | None  # the agent's status answer (None: no machine to ask)
    refreshed: bool = True
    nodes: Mapping[int, Observed] = attrs.field(factory=dict)  # node K > 0 -> what it holds

    def at(self, node: int) -> Observed:
        """What node ``node`` holds (node 0: this)."""
        if node == 0:
            return self
        return self.nodes.get(node) or Observed(instance=None, machine=None, refreshed=self.refreshed)


def refresh(ws: Workspace, state: State, desired: dict[str, Desired], *, enabled: bool = True) -> Observed:
    if not enabled:
        return Observed(instance=None, machine=None, refreshed=False)
    count = ws.spec.compute.nodes
    labels = {k: ws.label(state, k) for k in range(count)}
    found = ws.provider.find(list(labels.values()), ws.provider_context(state, ws.pins(state)))

    def one(k: int) -> Observed:
        instance = found.get(labels[k])
        if instance is None or instance.status not in ("running",) or state.get(at_node(INSTANCE, k)) is None:
            return Observed(instance=instance, machine=None)  # gone, starting, or to adopt first
        return Observed(instance=instance, machine=_status(ws, state, desired, k))

    with ThreadPoolExecutor(max_workers=min(8, count), thread_name_prefix="runform-refresh") as pool:
        seen = dict(zip(range(count), pool.map(one, range(count))))
    if count > 1:
        seen[0] = _merge_stages(seen, desired)
    return attrs.evolve(seen[0], nodes={k: v for k, v in seen.items() if k})


def _status(ws: Workspace, state: State, desired: dict[str, Desired], node: int) -> dict[str, Any]:
    """The agent's answer on ``node``: its jobs, the stages' outputs, its datasets."""
    machine = ws.machine(state, node)
    stages = {a.split(".", 1)[1]: d.fingerprint for a, d in desired.items() if a.startswith("stage.")}
    paths = sorted({p for a, d in desired.items() if a.startswith("stage.") for p in d.attrs["outputs"]})
    datasets = {split_node(a)[0].split(".", 1)[1]: {"dest": d.attrs["dest"], "links": d.attrs["links"]}
                for a, d in desired.items() if a.startswith("dataset.") and split_node(a)[1] == node}
    return AgentClient(machine).call("status", stages=stages, paths=paths, datasets=datasets, salt=state.salt,
                                     verify_data=ws.verify_data)


def _merge_stages(seen: dict[int, Observed], desired: dict[str, Desired]) -> Observed:
    """Node 0's view with each torchrun stage's job state taken over every node: running while
    one runs, failed when one failed (the node named), succeeded when node 0's did and no node's
    failed (a node replaced after the run keeps no record, and need not re-run it)."""
    first = seen[0]
    if first.machine is None:
        return first
    stages = dict(first.machine.get("stages") or {})
    for address, d in desired.items():
        if not address.startswith("stage.") or "nodes" not in (d.attrs.get("inputs") or {}):
            continue
        name = address.split(".", 1)[1]
        jobs = {k: ((o.machine or {}).get("stages") or {}).get(name, {"state": "none"}) for k, o in seen.items()}
        stages[name] = merge_jobs(jobs)
    # an output is there when some node has it: rank 0 (which writes it) may sit on any node
    exists = {p: any(((o.machine or {}).get("exists") or {}).get(p) for o in seen.values())
              for p in (first.machine.get("exists") or {})}
    return attrs.evolve(first, machine={**first.machine, "stages": stages, "exists": exists})


def merge_jobs(jobs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One job state for a stage's jobs on every node (see :func:`_merge_stages`)."""
    by_state: dict[str, list[int]] = {}
    for k, job in sorted(jobs.items()):
        by_state.setdefault(job.get("state", "none"), []).append(k)
    for state in ("running", "failed", "lost"):
        if state in by_state:
            k = next((n for n in by_state[state] if not jobs[n].get("stopped")), by_state[state][0])  # not the stopped
            return {**jobs[k], "node": k, "nodes": {str(n): j.get("state") for n, j in jobs.items()}}
    if jobs.get(0, {}).get("state") == "succeeded":
        return {**jobs[0], "node": 0}
    return {"state": "none"}
