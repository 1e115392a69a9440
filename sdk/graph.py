"""The resource graph: addresses, dependencies, topological order, cycles named."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from runform.errors import SpecError
from runform.nodes import at_node
from runform.spec.model import Spec

INSTANCE = "instance.main"
SECRETS = "secrets.env"
CODE = "code.workdir"
TRACKER = "tracker.run"

# Kinds whose objects live on the machine: a replaced machine re-creates them.
ON_MACHINE = ("secrets", "code", "dataset", "stage")


def kind_of(address: str) -> str:
    return address.split(".", 1)[0]


def name_of(address: str) -> str:
    return address.split(".", 1)[1]


@attrs.frozen
class Graph:
    nodes: tuple[str, ...]  # topological order
    deps: Mapping[str, tuple[str, ...]]  # address -> what it depends on

    def upstream(self, roots: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            n = todo.pop()
            for m in self.deps.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen


_GRAPHS: dict[int, Graph] = {}  # id(spec) -> its graph, while the spec lives


def build_graph(spec: Spec) -> Graph:
    """The dependency graph of ``spec``, built once per spec object: loading (the cycle check),
    planning and applying the same spec share it (a Graph is immutable)."""
    graph = _GRAPHS.get(id(spec))
    if graph is None:
        graph = _GRAPHS[id(spec)] = _build_graph(spec)
        weakref.finalize(spec, _GRAPHS.pop, id(spec), None)
    return graph


def _build_graph(spec: Spec) -> Graph:
    """Per node: its instance, then what lives on it (secrets, code, datasets); a stage needs
    every node's (a torchrun stage runs on each), an artifact node 0's (where it is pushed from)."""
    deps: dict[str, tuple[str, ...]] = {}
    nodes = range(spec.compute.nodes)
    every: list[str] = []  # what a stage waits for, on every node
    for k in nodes:
        inst = at_node(INSTANCE, k)
        deps[inst] = ()
        if spec.env_file is not None:
            deps[at_node(SECRETS, k)] = (inst,)
        deps[at_node(CODE, k)] = (inst,)
        if k == 0 and spec.tracker.kind != "none":
            deps[TRACKER] = ()
        node_base = [inst] + ([at_node(SECRETS, k)] if spec.env_file is not None else [])
        for d in spec.datasets.values():
            deps[at_node(d.address, k)] = tuple(node_base)
        every += node_base + [at_node(CODE, k)]
    base = [INSTANCE] + ([SECRETS] if spec.env_file is not None else [])
    for s in spec.stages.values():
        needs = [at_node(n, k) for n in s.needs for k in (nodes if n.startswith("dataset.") else (0,))]
        extra = [TRACKER] if spec.tracker.kind != "none" else []
        deps[s.address] = tuple(dict.fromkeys(every + extra + needs))
    for a in spec.artifacts.values():
        deps[a.address] = tuple(dict.fromkeys(base + list(producers(spec, a.paths))))
    return Graph(nodes=tuple(toposort(deps, spec)), deps=deps)


def producers(spec: Spec, paths: Iterable[str]) -> list[str]:
    """The stages whose outputs cover (or live under) ``paths``; all stages when none declare them."""
    found = []
    for s in spec.stages.values():
        for out in s.outputs:
            o = out.rstrip("/")
            if any(p.rstrip("/") == o or p.startswith(o + "/") or o.startswith(p.rstrip("/") + "/") for p in paths):
                found.append(s.address)
                break
    return found or [s.address for s in spec.stages.values()]


def toposort(deps: Mapping[str, Iterable[str]], spec: Spec | None = None) -> list[str]:
    """Kahn's algorithm in declaration order; a cycle is reported by naming it."""
    indeg = {n: 0 for n in deps}
    rev: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            indeg[n] += 1
            rev[d].append(n)
    ready = [n for n in deps if indeg[n] == 0]
    out: list[str] = []
    i = 0
    while i < len(ready):
        n = ready[i]
        i += 1
        out.append(n)
        for m in rev[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(out) != len(deps):
        cycle = find_cycle({n: list(ds) for n, ds in deps.items() if indeg[n] > 0})
        where = {}
        if spec is not None and cycle:
            first = name_of(cycle[0])
            where = {"file": _shown(spec.path), "field": f"stages.{first}.needs"}
            line = spec.locations.get(("stages", first, "needs"))
            if line:
                where.update(line=line[0], column=line[1])
        raise SpecError(
            "dependency cycle: " + " -> ".join(cycle + cycle[:1]),
            hint="remove one of these `needs` so the stages form a DAG",
            **where,
        )
    return out


def find_cycle(deps: Mapping[str, list[str]]) -> list[str]:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in deps.get(n, ()):
            if m not in deps:
                continue
            if color.get(m) == 1:
                return stack[stack.index(m):]
            if color.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in deps:
        if color.get(n) is None:
            found = visit(n)
            if found:
                # a stage `needs` its dependency: print in the order of `needs` arrows
                return list(found)
    return []


def _shown(path: Any) -> str:
    """``path`` as the user would write it: relative to the current folder when inside it."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel
