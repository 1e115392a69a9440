"""Nodes: a run on several machines (``compute.nodes``), each its own resource.

Node 0 keeps the addresses a one-machine run has (``instance.main``, ``code.workdir``,
``dataset.NAME``); node K > 0 adds ``[K]`` (``instance.main[1]``, ``code.workdir[1]``), so a
one-node spec, its state and its plans are exactly what they were. Each node is rented, refreshed,
diffed and replaced on its own; a stage is one resource whose job runs on every node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEFAULT_RDZV_PORT = 29400  # torchrun's own default for the c10d rendezvous
_NODE = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<k>[0-9]{1,3})\]$")
_HOST_FIELDS = ("host", "port", "user", "key_file", "root")


def node_count(compute: Mapping[str, Any]) -> int:
    """``compute.nodes``; an ssh fleet (``hosts``) has as many nodes as hosts unless it says."""
    if compute.get("nodes") is not None:
        return int(compute["nodes"])
    hosts = compute.get("hosts")
    return len(hosts) if isinstance(hosts, list) and hosts else 1


def at_node(address: str, node: int) -> str:
    """The address of ``address``'s copy on ``node`` (node 0: the address itself)."""
    return address if node == 0 else f"{address}[{node}]"


def split_node(address: str) -> tuple[str, int]:
    """``(base address, node)``: ``code.workdir[2]`` -> ``("code.workdir", 2)``."""
    m = _NODE.match(address)
    return (m["base"], int(m["k"])) if m else (address, 0)


def node_label(label: str, node: int) -> str:
    """The provider label of ``node``: node 0 keeps the run's label."""
    return label if node == 0 else f"{label}-n{node}"


def node_compute(compute: Mapping[str, Any], node: int) -> dict[str, Any]:
    """The compute block one node's provider sees: a fleet entry's fields over the shared ones,
    without the fleet-wide fields (``hosts``, ``nodes``, rendezvous); node 0 of a one-node spec
    gets the block as it is (its fingerprint, hence its plan, is unchanged)."""
    out = {k: v for k, v in compute.items() if k not in ("hosts", "nodes", "rdzv_port", "rdzv_host")}
    hosts = compute.get("hosts")
    if isinstance(hosts, list) and node < len(hosts):
        out.update({k: v for k, v in hosts[node].items() if k in _HOST_FIELDS})
    return out


def rendezvous(compute: Mapping[str, Any], node0: Mapping[str, Any] | None, local: bool) -> str:
    """``host:port`` of the c10d rendezvous: ``rdzv_host``, else node 0's fleet ``address`` or
    ``host``, else what its provider says (``host``), else 127.0.0.1 (local nodes)."""
    hosts = compute.get("hosts")
    entry = hosts[0] if isinstance(hosts, list) and hosts else {}
    host = (compute.get("rdzv_host") or entry.get("address") or entry.get("host") or compute.get("host")
            or (None if local else (node0 or {}).get("host")) or "127.0.0.1")
    port = int(compute.get("rdzv_port") or DEFAULT_RDZV_PORT)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def node_address(compute: Mapping[str, Any], node: int, local: bool) -> str | None:
    """Where the other nodes reach ``node`` (torchrun's ``--local-addr``: rank 0's becomes the
    workers' MASTER_ADDR): its fleet ``address`` or ``host``; 127.0.0.1 for local nodes; None
    (torchrun uses the machine's FQDN) when nothing says."""
    hosts = compute.get("hosts")
    entry = hosts[node] if isinstance(hosts, list) and node < len(hosts) else {}
    return entry.get("address") or entry.get("host") or ("127.0.0.1" if local else None)


def check_nodes(compute: Mapping[str, Any]) -> tuple[tuple[Any, ...], str, str] | None:
    """A problem with the fleet's shape: ``(field under compute, what, fix)``, or None."""
    hosts = compute.get("hosts")
    if hosts is None:
        if node_count(compute) > 1 and compute.get("provider") == "ssh":
            return (("nodes",), f"{node_count(compute)} nodes need {node_count(compute)} hosts, "
                    "and the ssh provider has one (`host`)",
                    "list the machines under `compute.hosts` (host, port, user, key_file, root each)")
        return None
    if compute.get("provider") != "ssh":
        return (("hosts",), f"`hosts` is the ssh provider's fleet, and the provider is "
                f"{compute.get('provider')!r}", "remove `hosts`, or set `provider: ssh`")
    seen: dict[tuple[Any, ...], int] = {}
    for k in range(len(hosts)):
        c = node_compute(compute, k)
        where = (c.get("host"), c.get("port") or 22, c.get("root") or "~/runform/<run>")
        if where in seen:
            return (("hosts", k, "root"), f"nodes {seen[where]} and {k} share the same host, port and root",
                    "give each node on the same host a `root` of its own")
        seen[where] = k
    if compute.get("nodes") is not None and int(compute["nodes"]) != len(hosts):
        return (("nodes",), f"nodes is {compute['nodes']} and `hosts` lists {len(hosts)} machine(s)",
                "list one host per node, or remove `nodes` (it defaults to the number of hosts)")
    return None
