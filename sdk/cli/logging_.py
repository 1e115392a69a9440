"""``runform logs STAGE [-f]``: stream a stage's log from the machine, re-attaching to running jobs."""

from __future__ import annotations

import codecs
import time
from typing import Any

import click


def stream_logs(spec: Any, stage: str, follow: bool, node: int = 0) -> None:
    """``node``: which node's job of a stage that runs on a fleet (0: the first)."""
    from runform.agent.client import AgentClient
    from runform.errors import RunformError
    from runform.workspace import Workspace

    if stage.startswith("stage."):
        stage = stage.split(".", 1)[1]
    if stage not in spec.stages:
        raise RunformError(f"no stage {stage!r} in {spec.path}", hint=f"stages: {', '.join(spec.stages)}")
    ws = Workspace(spec)
    state = ws.read_state()
    if state is None or state.get("instance.main") is None:
        raise RunformError("no machine in the state", hint="run `runform apply` first")
    if not 0 <= node < spec.compute.nodes:
        raise RunformError(f"--node {node}: the run has {spec.compute.nodes} node(s), numbered from 0",
                           hint=f"give --node 0 to {spec.compute.nodes - 1}")
    rec = state.get(f"stage.{stage}")
    agent = AgentClient(ws.machine(state, node))
    offset = 0
    delay = 0.05
    # the whole log, chunk after chunk, through one stream redactor: a secret split across two
    # chunks is masked too
    masker = ws.redactor.stream()
    text = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        r = agent.call("tail", stage=stage, fingerprint=rec.fingerprint if rec and not follow else None,
                       offset=offset)
        if r["data"]:
            click.echo(text.decode(masker.feed(r["data"].encode())), nl=False)
            delay = 0.05
        offset = r["offset"]
        if r["data"]:
            continue  # more may follow at once (a chunk is at most 1 MiB)
        if not follow or r.get("state") != "running":
            break
        rest = masker.flush()  # the job is quiet: what was held back is shown
        if rest:
            click.echo(text.decode(rest), nl=False)
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    click.echo(text.decode(masker.flush(), final=True), nl=False)
