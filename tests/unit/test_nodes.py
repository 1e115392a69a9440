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


def test_a_fleets_spend_is_every_nodes_and_an_old_registry_entry_still_reads() -> None:
    from runform.runs import live_machines, spend

    t0 = 1_700_000_000.0
    fleet = {"spent_before": 1.0, "machines": [{"id": "a", "price_per_hour": 2.0, "created_at": t0},
                                               {"id": "b", "price_per_hour": 1.0, "created_at": t0 + 1800},
                                               {"id": "c", "price_per_hour": None, "created_at": t0}]}
    money = spend(fleet, now=t0 + 3600)
    assert money["spent"] == pytest.approx(1.0 + 2.0 + 0.5)  # before + node a's hour + node b's half
    assert money["price_per_hour"] == 3.0 and money["billing"] and money["uptime"] == 3600.0
    old = {"machine": {"id": "a", "price_per_hour": 2.0, "created_at": t0}}  # written before fleets
    assert live_machines(old) == [old["machine"]] and spend(old, now=t0 + 1800)["spent"] == pytest.approx(1.0)
    assert spend({"machines": []}, now=1.0) == {"uptime": None, "spent": 0.0, "billing": False, "price_per_hour": None}


def test_the_plan_says_a_fleet_without_prices_has_no_estimate_and_prices_each_node() -> None:
    from runform.planning.render import cost_lines

    assert cost_lines({"nodes": 2, "price_per_hour": None, "total": None,
                        "basis": "the ssh provider states no price for its machines"}) == \
        ["Estimated cost: unknown for 2 nodes (the ssh provider states no price for its machines)"]
    offer = {"id": 7, "gpu_name": "H100", "num_gpus": 8}
    lines = cost_lines({"offer": offer, "price_per_hour": 40.0, "hours": 2.0, "total": 80.0, "basis": "",
                         "stages": 1, "nodes": 2})
    assert lines == ["Chosen offer: 7 (8x H100) for each of 2 nodes: $40.000/h together",
                     "Estimated cost: $80.00 (2.00 h expected)"]
    mixed = cost_lines({"offer": offer, "price_per_hour": 39.0, "hours": 1.0, "total": 39.0, "stages": 1,
                         "nodes": 3, "nodes_in_use": 1})
    assert mixed[0] == "Chosen offer: 7 (8x H100) for 2 new node(s), 1 in use: $39.000/h together"
    one = cost_lines({"offer": offer, "price_per_hour": 20.0, "hours": 1.0, "total": 20.0, "stages": 1})
    assert one[0] == "Chosen offer: 7 (8x H100) at $20.000/h"  # one machine: as before


def test_node_out_of_the_fleet_names_the_valid_range(tmp_path: Path) -> None:
    import runform
    from runform.cli.remote import check_node
    from runform.errors import RunformError

    (tmp_path / "runform.yaml").write_text("run: r\ncompute: {provider: local, nodes: 2}\nstages: {s: {run: 'true'}}\n")
    spec = runform.load(tmp_path / "runform.yaml")
    check_node(spec, None, 1)
    for bad in (2, -1):
        with pytest.raises(RunformError, match=r"--node .*: run r has 2 node\(s\) \(nodes 0-1\)"):
            check_node(spec, None, bad)
