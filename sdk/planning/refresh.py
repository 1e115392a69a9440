"""Refresh: what exists now. One provider call for the instance, one agent call for the machine."""

from __future__ import annotations

from typing import Any

import attrs

from runform.agent.client import AgentClient
from runform.graph import INSTANCE
from runform.interfaces import InstanceInfo
from runform.planning.desired import Desired
from runform.state.model import State
from runform.workspace import Workspace


@attrs.frozen
class Observed:
    instance: InstanceInfo | None  # the live instance found by label (None: gone or never made)
    machine: dict[str, Any] | None  # the agent's status answer (None: no machine to ask)
    refreshed: bool = True


def refresh(ws: Workspace, state: State, desired: dict[str, Desired], *, enabled: bool = True) -> Observed:
    if not enabled:
        return Observed(instance=None, machine=None, refreshed=False)
    label = ws.label(state)
    rec = state.get(INSTANCE)
    pins = dict(rec.attrs.get("pins", {})) if rec else {}
    found = ws.provider.find([label], ws.provider_context(state, pins))
    instance = found.get(label)
    if instance is None or instance.status not in ("running",):
        return Observed(instance=instance, machine=None)
    if rec is None:
        return Observed(instance=instance, machine=None)  # adopt first, then look inside
    machine = ws.machine(state)
    stages = {a.split(".", 1)[1]: d.fingerprint for a, d in desired.items() if a.startswith("stage.")}
    paths = sorted({p for a, d in desired.items() if a.startswith("stage.") for p in d.attrs["outputs"]})
    datasets = {a.split(".", 1)[1]: {"dest": d.attrs["dest"], "links": d.attrs["links"]}
                for a, d in desired.items() if a.startswith("dataset.")}
    status = AgentClient(machine).call("status", stages=stages, paths=paths, datasets=datasets, salt=state.salt,
                                       verify_data=ws.verify_data)
    return Observed(instance=instance, machine=status)
