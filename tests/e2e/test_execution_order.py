"""The executor's order, seen in the events of a real apply (in-process, the local provider): no
action starts before every action it depends on has finished, the diamond's branches both run,
a destroy takes the instance last; after each, its plan is empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runform import api
from runform.graph import INSTANCE, build_graph

pytestmark = pytest.mark.slow  # an apply of the hello pipeline (several seconds)


def _order(events: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    started, finished = {}, {}
    for i, e in enumerate(events):
        if e.get("type") == "action_started":
            started.setdefault(e["address"], i)
        elif e.get("type") == "action_finished":
            assert e["status"] == "done", e
            finished[e["address"]] = i
    return started, finished


def test_apply_runs_each_action_after_what_it_depends_on(hello: Path) -> None:
    spec = api.load(hello / "runform.yaml")
    events: list[dict[str, Any]] = []
    result = api.apply(spec, on_event=events.append, stream_logs=False)
    assert result is not None and result.ok
    started, finished = _order(events)
    graph = build_graph(spec)
    assert set(started) == set(graph.nodes) == set(finished)
    for node, deps in graph.deps.items():
        for d in deps:
            assert finished[d] < started[node], f"{node} started before {d} finished"
    assert min(started, key=started.get) == INSTANCE
    assert not api.plan(api.load(hello / "runform.yaml")).has_changes

    events.clear()
    gone = api.apply(api.load(hello / "runform.yaml"), destroy=True, on_event=events.append, stream_logs=False)
    assert gone is not None and gone.ok
    started, finished = _order(events)
    assert max(started, key=started.get) == INSTANCE
    assert all(finished[a] < started[INSTANCE] for a in finished if a != INSTANCE)
    assert not api.plan(api.load(hello / "runform.yaml"), destroy=True).has_changes  # nothing left
