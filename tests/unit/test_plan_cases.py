"""The plan as data: every ``tests/plan_cases/<kind>/*.yaml`` run against the differ directly.

A case is what the differ sees and what it must say (see ``tests/plan_cases/README.md``):
``desired`` (what the spec wants), ``prior`` (the state's records), ``observed`` (what the refresh
found), optional ``replace`` / ``replace_reason`` / ``destroy``, and ``expect``: per address, the
action, its code and its reason. No workspace, no provider, no machine: the pure function only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runform.interfaces import InstanceInfo
from runform.planning.desired import Desired
from runform.planning.diff import diff
from runform.planning.planner import destroy_actions
from runform.planning.refresh import Observed
from runform.state.model import ResourceState, State

CASES = next(p for p in Path(__file__).resolve().parents if p.name == "tests") / "plan_cases"
KINDS = ("instance", "secrets", "code", "dataset", "stage", "artifact", "tracker")
LABEL = "runform-demo-0000abcd"

# the world every case starts from (a case overrides it address by address; null removes one):
# a recorded instance running under the run's label, a machine whose agent answers with nothing
DEFAULT_DESIRED = {"instance.main": {"fingerprint": "compute-1", "attrs": {"label": LABEL, "compute": {}}}}
DEFAULT_PRIOR = {"instance.main": {"fingerprint": "compute-1", "attrs": {
    "label": LABEL, "instance": {"id": "101", "label": LABEL, "status": "running"}}}}
DEFAULT_INSTANCE = {"id": "101", "label": LABEL, "status": "running"}
DEFAULT_MACHINE: dict[str, Any] = {"stages": {}, "exists": {}, "datasets": {}}


def _files() -> list[Path]:
    return sorted(CASES.glob("*/*.yaml"))


def _merged(default: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(default)
    for address, value in (given or {}).items():
        if value is None:
            out.pop(address, None)
        else:
            out[address] = value
    return out


def _world(case: dict[str, Any]) -> tuple[dict[str, Desired], State, Observed]:
    desired = {a: Desired(a, d.get("fingerprint"), d.get("attrs") or {})
               for a, d in _merged(DEFAULT_DESIRED, case.get("desired")).items()}
    state = State.new("demo")
    for address, rec in _merged(DEFAULT_PRIOR, case.get("prior")).items():
        state.resources[address] = ResourceState(address, rec.get("attrs") or {}, rec.get("fingerprint"),
                                                 rec.get("status", "ok"), rec.get("revision", 3))
    seen = case.get("observed") or {}
    inst = seen.get("instance", DEFAULT_INSTANCE)
    nodes = {int(k): Observed(instance=InstanceInfo.from_json(n["instance"]) if n.get("instance") else None,
                              machine=n.get("machine"), refreshed=seen.get("refreshed", True))
             for k, n in (seen.get("nodes") or {}).items()}  # node K > 0 of a fleet
    observed = Observed(instance=InstanceInfo.from_json(inst) if inst is not None else None,
                        machine=seen.get("machine", DEFAULT_MACHINE), refreshed=seen.get("refreshed", True),
                        nodes=nodes)
    return desired, state, observed


def _actions(case: dict[str, Any]) -> dict[str, Any]:
    desired, state, observed = _world(case)
    if case.get("destroy"):
        live = observed.instance if observed.refreshed else None
        others = {k: n.instance for k, n in observed.nodes.items()} if observed.refreshed else {}
        actions = destroy_actions(state, live, refreshed=observed.refreshed, others=others)
    else:
        why = case.get("replace_reason")
        actions = diff(desired, state, observed, replace=case.get("replace", ()),
                       replace_reason=(lambda inst: why))
    return {a.address: a for a in actions}


@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_plan_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    actions = _actions(case)
    for address, want in case["expect"].items():
        got = actions.get(address)
        assert got is not None, f"{path.name}: no action for {address} (got {sorted(actions)})"
        shown = {"action": got.kind, "code": got.code, "reason": got.reason}
        for key in ("action", "code", "reason"):
            assert shown[key] == want[key], f"{path.name}: {address} {key}: {shown}"
        if "details" in want:
            assert list(got.details) == want["details"], f"{path.name}: {address} details"
        if "retry_failed" in want:
            assert got.retry_failed is want["retry_failed"], f"{path.name}: {address} retry_failed"
        if "revision" in want:
            assert got.revision == want["revision"], f"{path.name}: {address} revision"


def test_the_cases_cover_every_kind_and_reason() -> None:
    """At least 40 cases; every resource kind has its folder; every code the differ can give is
    expected by some case (a new reason in the differ needs a case here)."""
    files = _files()
    assert len(files) >= 40, len(files)
    assert {p.parent.name for p in files} == set(KINDS)
    codes = {want["code"] for p in files for want in yaml.safe_load(p.read_text())["expect"].values()}
    from runform.planning import diff as diff_module, planner

    source = Path(diff_module.__file__).read_text() + Path(planner.__file__).read_text()
    import re

    given = set(re.findall(r'"([a-z]+_(?:because|by)_[a-z_]+)"', source))
    given |= {"noop", "create", "update", "replace", "read", "forget"}  # the plain codes
    assert given - codes == set(), f"reasons no case covers: {sorted(given - codes)}"


def test_every_case_names_its_resource_under_its_kind() -> None:
    for path in _files():
        case = yaml.safe_load(path.read_text())
        assert case.get("description"), f"{path}: say what the case is about"
        assert any(a.split(".", 1)[0] == path.parent.name for a in case["expect"]), path
