"""The planning core called directly, in-process: the graph, the desired fingerprints, the planner
and the destroy plan (the differ's cases are data: tests/plan_cases, run by test_plan_cases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runform import api
from runform.errors import SpecError
from runform.graph import CODE, INSTANCE, SECRETS, TRACKER, build_graph, kind_of, name_of, producers, toposort
from runform.interfaces import InstanceInfo
from runform.planning.planner import destroy_actions
from runform.spec.load import load_spec
from runform.state.model import ResourceState, State


def test_the_hello_graph(hello: Path) -> None:
    spec = api.load(hello / "runform.yaml")
    g = build_graph(spec)
    assert g.nodes[0] == INSTANCE
    order = {n: i for i, n in enumerate(g.nodes)}
    for node, deps in g.deps.items():
        assert all(order[d] < order[node] for d in deps), f"{node} before one of {deps}"
    assert set(g.deps["stage.join"]) == {INSTANCE, SECRETS, CODE, TRACKER, "stage.left", "stage.right"}
    assert g.deps[TRACKER] == () and g.deps[CODE] == (INSTANCE,)
    assert g.upstream(["stage.join"]) >= {"stage.prepare", "dataset.greetings", INSTANCE}
    assert "stage.left" in g.upstream(["stage.join"]) and "stage.join" not in g.upstream(["stage.left"])
    assert [n for n in g.nodes if kind_of(n) == "stage"] == \
        ["stage.prepare", "stage.left", "stage.right", "stage.join"]  # declaration order where free
    assert (kind_of("stage.left"), name_of("stage.left")) == ("stage", "left")
    assert producers(spec, ["out/left.txt"]) == ["stage.left"]
    assert producers(spec, ["nowhere/"]) == [f"stage.{s}" for s in spec.stages]  # none declares it


def test_toposort_names_the_cycle_and_where(tmp_path: Path) -> None:
    spec_file = tmp_path / "runform.yaml"
    spec_file.write_text("run: loop\nstages:\n  a:\n    run: echo a\n    needs: [stage.b]\n"
                         "  b:\n    run: echo b\n    needs: [stage.a]\n")
    with pytest.raises(SpecError) as err:
        build_graph(load_spec(spec_file))
    assert "dependency cycle: stage.a -> stage.b -> stage.a" in str(err.value)
    assert err.value.field == "stages.a.needs" and err.value.line == 5
    assert toposort({"x": [], "y": ["x"], "z": []}) == ["x", "z", "y"]


def _fingerprints(project: Path, **variables: str) -> dict[str, str | None]:
    """Stage, dataset and instance fingerprints (the code's follows every file, the secrets' is
    salted by the state, and there is none yet)."""
    spec = api.load(project / "runform.yaml", variables=variables)
    return {a.address: a.fingerprint for a in api.plan(spec).actions if a.address not in (CODE, SECRETS)}


def test_fingerprints_follow_inputs_not_comments(hello: Path) -> None:
    """A stage's fingerprint holds its command and its upstream fingerprints; the spec file is
    not code: a comment in it re-runs nothing."""
    base = _fingerprints(hello)
    other = _fingerprints(hello, greeting="hi")
    changed = {a for a in base if kind_of(a) == "stage" and base[a] != other[a]}
    assert changed == {"stage.prepare", "stage.left", "stage.right", "stage.join"}  # downstream too
    assert {a: f for a, f in base.items() if kind_of(a) != "stage"} == \
        {a: f for a, f in other.items() if kind_of(a) != "stage"}
    spec_file = hello / "runform.yaml"
    spec_file.write_text(spec_file.read_text() + "# a comment\n")
    assert _fingerprints(hello) == base
    (hello / "steps" / "join.py").write_text((hello / "steps" / "join.py").read_text() + "\n# edit\n")
    edited = _fingerprints(hello)
    assert {a for a in base if kind_of(a) == "stage" and base[a] != edited[a]} == {"stage.join"}


def test_a_first_plan_creates_everything_and_says_why(hello: Path) -> None:
    plan = api.plan(api.load(hello / "runform.yaml"))
    assert {a.address: a.code for a in plan.actions} == {a.address: "create" for a in plan.actions}
    assert plan.get(INSTANCE).reason == "no machine yet: rent/claim one"
    assert plan.get("stage.join").reason == "never ran"
    assert plan.summary().line() == f"Plan: {len(plan.actions)} to add, 0 to change, 0 to destroy."
    targeted = api.plan(api.load(hello / "runform.yaml"), targets=["stage.left"])
    assert {a.address for a in targeted.actions} == {"stage.left", "stage.prepare", "dataset.greetings",
                                                    INSTANCE, SECRETS, CODE, TRACKER}
    assert any("targeting" in w for w in targeted.warnings)


def test_destroy_actions_put_the_instance_last() -> None:
    st = State.new("demo")
    for address in (INSTANCE, CODE, "stage.train", "artifact.model", TRACKER):
        st.resources[address] = ResourceState(address, {}, None, "ok", 2)
    live = InstanceInfo("7", "runform-demo-00000000", "running")
    actions = destroy_actions(st, live)
    assert [a.address for a in actions][-1] == INSTANCE
    assert {a.address: a.kind for a in actions} == {
        TRACKER: "forget", "artifact.model": "forget", "stage.train": "delete", CODE: "delete",
        INSTANCE: "delete"}
    assert actions[-1].after == {"instance": live.to_json()}
    assert destroy_actions(State.new("demo"), None) == []
