"""Nodes: addresses per node, each node's slice of a fleet, the rendezvous endpoint, the fleet's
shape checked, and the graph a fleet builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from runform.nodes import at_node, check_nodes, node_address, node_compute, node_count, rendezvous, split_node

FLEET = {"provider": "ssh", "user": "ubuntu", "key_file": "~/.ssh/k", "port": 2222, "rdzv_port": 29500,
         "hosts": [{"host": "a.example", "address": "10.0.0.5", "root": "/w/a"},
                   {"host": "b.example", "port": 22, "root": "/w/b"}]}


def test_node_addresses_round_trip_and_node_0_keeps_the_one_machine_address() -> None:
    assert at_node("instance.main", 0) == "instance.main"
    assert at_node("code.workdir", 2) == "code.workdir[2]"
    assert split_node("dataset.burgers[12]") == ("dataset.burgers", 12)
    assert split_node("stage.train") == ("stage.train", 0)


def test_each_node_sees_its_fleet_entry_over_the_shared_fields() -> None:
    assert node_count(FLEET) == 2
    one = node_compute(FLEET, 1)
    assert one == {"provider": "ssh", "user": "ubuntu", "key_file": "~/.ssh/k", "port": 22,
                   "host": "b.example", "root": "/w/b"}
    assert node_compute(FLEET, 0)["port"] == 2222  # inherited
    assert node_count({"provider": "local", "nodes": 3}) == 3 and node_count({"provider": "local"}) == 1


def test_the_rendezvous_is_on_node_0_at_its_private_address() -> None:
    assert rendezvous(FLEET, None, local=False) == "10.0.0.5:29500"
    assert rendezvous({**FLEET, "rdzv_host": "head"}, None, local=False) == "head:29500"
    assert rendezvous({"provider": "local", "nodes": 2}, None, local=True) == "127.0.0.1:29400"
    assert rendezvous({"provider": "x", "nodes": 2}, {"host": "fd00::1"}, local=False) == "[fd00::1]:29400"
    assert node_address(FLEET, 0, local=False) == "10.0.0.5" and node_address(FLEET, 1, local=False) == "b.example"
    assert node_address({"provider": "x"}, 1, local=False) is None


@pytest.mark.parametrize("compute, field, words", [
    ({"provider": "ssh", "host": "a", "nodes": 2}, ("nodes",), "need 2 hosts"),
    ({"provider": "local", "hosts": [{"host": "a"}]}, ("hosts",), "ssh provider's fleet"),
    ({**FLEET, "nodes": 3}, ("nodes",), "nodes is 3"),
    ({"provider": "ssh", "hosts": [{"host": "a"}, {"host": "a"}]}, ("hosts", 1, "root"), "same host"),
])
def test_a_fleet_of_the_wrong_shape_names_the_field(compute: dict, field: tuple, words: str) -> None:
    problem = check_nodes(compute)
    assert problem is not None and problem[0] == field and words in problem[1], problem


def test_a_good_fleet_passes() -> None:
    assert check_nodes(FLEET) is None
    assert check_nodes({"provider": "local", "nodes": 4}) is None


def test_a_fleet_graph_gives_every_node_its_resources_and_the_stage_all_of_them(tmp_path: Path) -> None:
    from runform.graph import build_graph
    from runform.spec.load import load_spec

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    (tmp_path / "runform.yaml").write_text(
        "run: g\ncompute: {provider: local, nodes: 2}\n"
        "datasets: {d: {source: 'file://data', dest: data/d}}\n"
        "stages:\n  t: {run: python t.py, launcher: torchrun, needs: [dataset.d]}\n"
        "artifacts: {a: {paths: [out/], to: 'file://pushed/'}}\ntracker: {kind: none}\n")
    graph = build_graph(load_spec(tmp_path / "runform.yaml"))
    assert graph.deps["code.workdir[1]"] == ("instance.main[1]",)
    assert graph.deps["dataset.d[1]"] == ("instance.main[1]",)
    assert set(graph.deps["stage.t"]) == {"instance.main", "code.workdir", "dataset.d",
                                          "instance.main[1]", "code.workdir[1]", "dataset.d[1]"}
    assert graph.deps["artifact.a"] == ("instance.main", "stage.t")  # pushed from node 0
