"""``runform logs STAGE [-f]``: stream a stage's log from the machine, re-attaching to running jobs."""

from __future__ import annotations

import time
from typing import Any

import click


def stream_logs(spec: Any, stage: str, follow: bool) -> None:
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
    rec = state.get(f"stage.{stage}")
    agent = AgentClient(ws.machine(state))
    offset = 0
    delay = 0.05
    while True:
        r = agent.call("tail", stage=stage, fingerprint=rec.fingerprint if rec and not follow else None,
                       offset=offset)
        if r["data"]:
            click.echo(ws.redact(r["data"]), nl=False)
            delay = 0.05
        offset = r["offset"]
        if not follow or r.get("state") != "running":
            if follow and r.get("state") == "running":
                continue
            if follow and r["data"]:
                continue
            break
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
