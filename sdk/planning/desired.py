"""What the spec wants, per resource: attributes and fingerprints, computed from local files.

A stage's fingerprint hashes its command, non-secret env, launcher, the digests of its ``deps``
(the whole code tree when absent, the spec file left out: the spec is not code), the digests of
what it needs and its upstream fingerprints.
"""

from __future__ import annotations

from typing import Any

import attrs

from runform.digests import salted_digest
from runform.codesync import local_manifest
from runform.digests import match_globs
from runform.graph import CODE, INSTANCE, SECRETS, TRACKER, Graph, producers
from runform.interfaces import Manifest, digest_of
from runform.nodes import at_node, node_compute
from runform.state.model import State
from runform.workspace import Workspace


@attrs.frozen
class Desired:
    address: str
    fingerprint: str | None
    attrs: dict[str, Any]


def compute_desired(ws: Workspace, state: State, graph: Graph) -> dict[str, Desired]:
    spec = ws.spec
    out: dict[str, Desired] = {}
    nodes = spec.compute.nodes
    out.update(_instances(ws, state))
    if spec.env_file is not None:
        from runform.envfile import parse_env
        from runform.machine_secrets import machine_secrets

        data = machine_secrets(spec, spec.env_file.read_bytes())  # what the machine gets
        d = salted_digest(state.salt, data)
        out[SECRETS] = Desired(SECRETS, d, {"digest": d, "keys": len(parse_env(data.decode("utf-8")))})
    code_m = local_manifest(spec.code.path, code_excludes(spec), cache=ws.digests, never=[spec.env_file])
    if not ws.read_only:
        ws.digests.save()  # a plan saves its cache only once it succeeded (api.plan)
    manifest = {e.path: (e.size, e.digest) for e in code_m.entries}
    code_digest = code_m.digest
    out[CODE] = Desired(CODE, code_digest, {"digest": code_digest, "files": len(manifest),
                                            "bytes": code_m.total_bytes,
                                            "manifest": {p: d for p, (_, d) in manifest.items()}})
    if TRACKER in graph.deps:
        out[TRACKER] = Desired(TRACKER, None, {"kind": spec.tracker.kind})
    for d in spec.datasets.values():
        m = resolve_dataset(ws, d.source)
        ws.listed[d.address] = m
        out[d.address] = Desired(d.address, m.digest, {
            "source": d.source, "dest": d.dest, "links": dict(d.links), "manifest": m.to_json(),
            "digest": m.digest, "objects": len(m.entries), "bytes": m.total_bytes})
    files = list(manifest)
    stage_tree = _tree_without_spec(spec, code_m)
    for address in graph.nodes:
        if not address.startswith("stage."):
            continue
        s = spec.stages[address.split(".", 1)[1]]
        if s.deps is None:
            deps: dict[str, Any] = {"tree": stage_tree}
        else:
            deps = {p: manifest[p][1] for p in match_globs(spec.code.path, s.deps, files)
                    if p != _spec_rel(spec)}
        needs = {}
        for n in s.needs:
            needs[n] = out[n].fingerprint
        inputs = {"run": s.run, "env": dict(s.env), "launcher": s.launcher, "nproc": s.nproc,
                  "deps": deps, "needs": needs}
        if nodes > 1 and s.launcher == "torchrun":  # one node: the fingerprint it always had
            inputs["nodes"] = nodes
        fp = digest_of(inputs)
        out[address] = Desired(address, fp, {
            "inputs": inputs, "outputs": list(s.outputs), "metrics": s.metrics,
            "timeout": s.timeout})
    for k in range(1, nodes):  # what lives on node 0 lives on every node
        for address in [SECRETS, CODE, *(d.address for d in spec.datasets.values())]:
            if address in out:
                out[at_node(address, k)] = attrs.evolve(out[address], address=at_node(address, k))
    for a in spec.artifacts.values():
        prod = producers(spec, a.paths)
        inputs = {"paths": list(a.paths), "to": a.to, "stages": {p: out[p].fingerprint for p in prod}}
        out[a.address] = Desired(a.address, digest_of(inputs), {"inputs": inputs, "to": a.to,
                                                                 "paths": list(a.paths)})
    return out


def _instances(ws: Workspace, state: State) -> dict[str, Desired]:
    """Each node's machine: its own slice of the fleet (one node: the block as it always was)."""
    out = {}
    nodes = ws.spec.compute.nodes
    for k in range(nodes):
        compute = {key: v for key, v in ws.spec.compute.config.items() if key not in ("teardown",)}
        if nodes > 1:
            compute = node_compute(compute, k)
        out[at_node(INSTANCE, k)] = Desired(at_node(INSTANCE, k), digest_of(compute),
                                            {"label": ws.label(state, k), "compute": compute})
    return out


def _spec_rel(spec: Any) -> str | None:
    """The spec file's path in the code tree (None: it lies outside)."""
    try:
        return spec.path.resolve().relative_to(spec.code.path.resolve()).as_posix()
    except ValueError:
        return None


def _tree_without_spec(spec: Any, code_m: Manifest) -> str:
    """The code tree's digest without the spec file: the spec is not code. What a stage uses from
    it (command, env, launcher, needs) is in its fingerprint already, so a comment or another
    stage's key never re-runs it. The file is still synced (``code.workdir`` follows it)."""
    rel = _spec_rel(spec)
    if rel is None or rel not in {e.path for e in code_m.entries}:
        return code_m.digest
    return Manifest(uri=code_m.uri, entries=tuple(e for e in code_m.entries if e.path != rel)).digest


def code_excludes(spec: Any) -> tuple[str, ...]:
    """The spec's excludes, plus the env file when it lies in the code tree (never synced as code)."""
    extra: tuple[str, ...] = ()
    if spec.env_file is not None:
        try:
            extra = ("/" + spec.env_file.relative_to(spec.code.path).as_posix(),)
        except ValueError:
            pass
    return tuple(spec.code.exclude) + extra


def resolve_dataset(ws: Workspace, uri: str) -> Manifest:
    scheme = uri.split("://", 1)[0]
    backend = ws.pm.get("storage_backends", scheme).factory()
    env = {**_os_environ(), **ws.secrets}
    if scheme == "file":
        env.setdefault("RUNFORM_BASE_DIR", str(ws.spec.dir))
    return backend.resolve(uri, env)


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)
