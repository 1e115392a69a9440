"""``runform ssh`` (a shell, or a command, in the run's folder on its machine) and ``runform pull``
(bring files back from it, incrementally, with progress)."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import click
from runform.errors import RunformError
from runform.nodes import at_node


def _instance(spec: Any, node: int = 0) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """``node``'s instance record: the workspace, the state, the instance's attributes, its pins."""
    from runform.workspace import Workspace

    ws = Workspace(spec)
    state = ws.read_state()
    check_node(spec, state, node)
    address = at_node("instance.main", node)
    rec = state.get(address) if state is not None else None
    if rec is None:
        raise RunformError(f"run {spec.run} has no machine ({address} is not in the state)",
                           hint="run `runform apply` first; `runform status` lists every run")
    inst = rec.attrs.get("instance") or {}
    # nodes on one host share its host key: pinned in whichever node's record met it first
    return ws, state, dict(inst.get("attrs") or {}), {**ws.pins(state), **dict(rec.attrs.get("pins") or {})}


def check_node(spec: Any, state: Any, node: int) -> None:
    """``--node K`` names a node of the fleet (the spec's, or one the state still holds)."""
    from runform.nodes import split_node

    held = [split_node(a)[1] for a in (state.resources if state is not None else ())
            if split_node(a)[0] == "instance.main"]
    count = max([spec.compute.nodes, *(k + 1 for k in held)])
    if not 0 <= node < count:
        valid = "node 0 only" if count == 1 else f"nodes 0-{count - 1}"
        raise RunformError(f"--node {node}: run {spec.run} has {count} node(s) ({valid})",
                           hint=f"pass --node between 0 and {count - 1}" if count > 1 else "leave out --node")


def ssh_argv(spec: Any, command: tuple[str, ...], forwards: tuple[str, ...], node: int = 0) -> list[str]:
    """The ``ssh`` command line to ``node``: the run's key, the host key pinned in state (nothing
    else is accepted), ``-L`` forwards, and a shell (or ``command``) in the run's folder."""
    ws, state, a, pins = _instance(spec, node)
    host = a.get("ssh_host") or a.get("host")
    port = int(a.get("ssh_port") or a.get("port") or 22)
    user = a.get("ssh_user") or a.get("user")
    key_file = a.get("key_file")
    root = a.get("root")
    if not host or not user:
        here = ws.machine(state, node).root if spec.compute.provider == "local" else None
        raise RunformError(f"{at_node('instance.main', node)} of run {spec.run} has no SSH address (provider "
                           f"{spec.compute.provider})",
                           hint=f"the local provider's machine is this computer: `cd {shlex.quote(here)}`" if here
                           else "`runform ssh` needs a machine reached over SSH")
    endpoint = a.get("endpoint") or (f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}")
    pinned = pins.get(endpoint) or a.get("host_key")
    if not pinned:
        raise RunformError(f"no host key pinned for {endpoint} in the state",
                           hint="run `runform apply` (it pins the key on first connection)")
    known = spec.state_dir / "ssh_known_hosts"
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    name = host if port == 22 else f"[{host}]:{port}"
    known.write_text(f"{name} {pinned}\n", encoding="utf-8")
    argv = ["ssh", "-p", str(port), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    if key_file:
        argv += ["-i", str(key_file), "-o", "IdentitiesOnly=yes"]
    for f in forwards:
        local, _, remote = f.partition(":")
        if not local.isdigit() or (remote and not remote.isdigit()):
            raise RunformError(f"-L {f}: expected PORT or LOCAL:REMOTE (ports)", hint="e.g. -L 6006 for TensorBoard")
        argv += ["-L", f"{local}:localhost:{remote or local}"]
    cd = f"cd {shlex.quote(str(root))} && " if root else ""
    if command:
        argv += [f"{user}@{host}", cd + " ".join(shlex.quote(c) for c in command)]
    else:
        argv += ["-t", f"{user}@{host}", cd + 'exec "${SHELL:-/bin/sh}" -l']
    return argv


def run_ssh(spec: Any, command: tuple[str, ...], forwards: tuple[str, ...], node: int = 0) -> int:
    return subprocess.call(ssh_argv(spec, command, forwards, node))


_LIST = r"""
import hashlib, json, os, sys
root, rel = sys.argv[1], sys.argv[2]
base = os.path.realpath(os.path.join(root, rel))
if os.path.commonpath([base, os.path.realpath(root)]) != os.path.realpath(root):
    print(json.dumps({"error": "outside the run's folder"})); sys.exit(0)
def digest(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
out = []
if os.path.isfile(base):
    out.append(["", os.path.getsize(base), digest(base)])
elif os.path.isdir(base):
    for d, dirs, files in os.walk(base):
        dirs.sort()
        for n in sorted(files):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append([os.path.relpath(p, base), os.path.getsize(p), digest(p)])
else:
    print(json.dumps({"error": "no such file or folder"})); sys.exit(0)
print(json.dumps({"files": out, "dir": os.path.isdir(base)}))
"""


def _safe_rel(path: str) -> str:
    p = posixpath.normpath(path.strip())
    if p.startswith("/") or p == ".." or p.startswith("../"):
        raise RunformError(f"{path}: not a path inside the run's folder",
                           hint="name a path relative to the run's folder, e.g. outputs/model.pt")
    return "" if p == "." else p


def pull(spec: Any, what: str, dest: str | None, node: int | None = None) -> None:
    """Copy ``what`` (a path in the run's folder, or ``artifact.NAME``: its paths) from ``node``
    to ``dest``; only files whose content differs move. Prints each file and the rate. ``node``
    None: node 0, or for an artifact the node it is pushed from (where rank 0 ran)."""
    if what.startswith("artifact."):
        name = what.split(".", 1)[1]
        art = spec.artifacts.get(name)
        if art is None:
            raise RunformError(f"no artifact {name!r} in {spec.path}",
                               hint=f"artifacts: {', '.join(spec.artifacts) or '(none)'}")
        paths = [_safe_rel(p) for p in art.paths]
    else:
        paths = [_safe_rel(what)]
    if node is None:
        node = _artifact_node(spec, what.split(".", 1)[1]) if what.startswith("artifact.") else 0
    ws, state, _, _ = _instance(spec, node)
    machine = ws.machine(state, node)
    target = Path(dest or ".")
    moved = files = 0
    t0 = time.monotonic()
    for rel in paths:
        r = machine.transport.run([machine.python, "-c", _LIST, machine.root, rel or "."], timeout=600)
        listing = json.loads(r.stdout.decode() or "{}") if r.ok else {"error": r.stderr.decode()[-300:]}
        if listing.get("error"):
            raise RunformError(f"{rel or '.'}: {listing['error']} on the machine" + (f" (node {node})" if node else ""),
                               hint=f"`runform ssh{f' --node {node}' if node else ''} -- ls` shows what is there")
        # a folder lands under DEST with its own name (pull out/model → ./model/...), a file as DEST/name
        base = target / posixpath.basename(rel)
        if not listing.get("dir") and dest and not target.is_dir() and not dest.endswith("/"):
            base = target
        todo = [(f, size, digest) for f, size, digest in listing["files"]
                if _local_digest((base / f) if f else base) != digest]
        total = sum(size for _, size, _ in todo)
        click.echo(f"{rel or '.'}: {len(listing['files'])} file(s), {len(todo)} to fetch ({total / 1e6:.1f} MB)", err=True)
        meter = _Meter(total, t0)
        for f, size, digest in todo:
            local = (base / f) if f else base
            local.parent.mkdir(parents=True, exist_ok=True)
            remote = posixpath.join(machine.root, rel, f) if f else posixpath.join(machine.root, rel)
            tmp = local.with_name(f".{local.name}.runform-tmp")
            try:
                got = _fetch(machine.transport, remote, tmp, meter)
                if got != digest:
                    raise RunformError(f"{posixpath.join(rel, f)} changed on the machine while it was pulled",
                                       hint="run `runform pull` again once the job wrote it")
                os.replace(tmp, local)
            finally:
                tmp.unlink(missing_ok=True)
            moved += size
            files += 1
            click.echo(f"  {local}  {size / 1e6:.2f} MB  {meter.line()}", err=True)
    ws.forget_machine()
    click.echo(f"Pulled {files} file(s), {moved / 1e6:.1f} MB; the rest was up to date.")


def _artifact_node(spec: Any, name: str) -> int:
    """Where ``artifact.NAME`` is taken from: the node apply pushes it from (a fleet: rank 0's)."""
    if spec.compute.nodes < 2:
        return 0
    from runform.agent.client import AgentClient
    from runform.execution.multinode import node_holding

    ws, state, _, _ = _instance(spec, 0)
    try:
        return node_holding(spec, state, name, lambda k: AgentClient(ws.machine(state, k)),
                            lambda line: click.echo(line, err=True))
    finally:
        ws.forget_machine()


class _Meter:
    """Bytes so far of a pull, its rate and ETA; a line every few seconds during a big file."""

    def __init__(self, total: int, t0: float) -> None:
        self.total, self.t0, self.done, self.shown = total, t0, 0, time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.shown >= 5:
            self.shown = time.monotonic()
            click.echo(f"  ... {self.line()}", err=True)

    def line(self) -> str:
        from runform.durations import format_duration

        rate = self.done / max(1e-6, time.monotonic() - self.t0)
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        return f"({self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB, {rate / 1e6:.1f} MB/s, ETA {eta})"


def _fetch(transport: Any, remote: str, tmp: Path, meter: _Meter) -> str:
    """Stream ``remote`` into ``tmp`` (``cat`` over the transport where it can stream, else one
    read); its sha256."""
    h = hashlib.sha256()
    from runform.interfaces import StreamsOutput

    stream = transport.run_stream if isinstance(transport, StreamsOutput) else None
    with open(tmp, "wb") as out:
        if stream is not None:
            def take(chunk: bytes) -> None:
                out.write(chunk)
                h.update(chunk)
                meter.add(len(chunk))

            r = stream(["cat", "--", remote], take)
            if not r.ok:
                raise RunformError(f"{remote}: could not be read on the machine (exit {r.exit_code})",
                                   hint="`runform ssh -- ls -l PATH` shows what is there")
        else:
            data = transport.get_bytes(remote)
            out.write(data)
            h.update(data)
            meter.add(len(data))
    return h.hexdigest()


def _local_digest(p: Path) -> str | None:
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
