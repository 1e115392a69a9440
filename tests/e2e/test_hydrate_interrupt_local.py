"""Ctrl-C during a hydration on the local provider: the agent runs in-process, so there is no
channel to close; the transport's abort stops the fetch (as the hang-up does over SSH), nothing
fetched half-way gets its final name, and the next apply fetches only what is missing."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import interrupt_cli, run_cli

pytestmark = pytest.mark.slow

SIZES = {"a.bin": 1 << 20, "b.bin": 1 << 20, "c.bin": 8 << 20, "d.bin": 8 << 20}


def test_ctrl_c_during_a_local_hydration_stops_it_and_the_next_apply_fetches_only_the_rest(
    hello: Path, s3_server: Any
) -> None:
    bucket = s3_server.make_bucket()
    c = s3_server.client()
    bodies = {name: os.urandom(size) for name, size in SIZES.items()}
    for name, body in bodies.items():
        c.upload_fileobj(io.BytesIO(body), bucket, f"ds/{name}")
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["datasets"]["big"] = {"source": f"s3://{bucket}/ds/", "dest": "data/big"}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with open(hello / "hello.env", "a") as f:
        f.write("".join(f"{k}={v}\n" for k, v in s3_server.env("s3").items()))

    def landed() -> set[str]:
        return {p.name for p in hello.glob(".runform/machines/*/data/big/*") if p.name in bodies}

    s3_server.stats.rate = 2e6  # each GET's body at 2 MB/s: the 1 MiB objects land first
    code, out = interrupt_cli("apply", "--auto-approve", cwd=hello, when=landed, what="the first object to land",
                              sig=signal.SIGINT)
    assert code == 1, out
    assert "Traceback" not in out and "interrupted" in out.lower(), out
    assert "dataset.big: the fetch was stopped" in out, out
    assert "dataset.big: Creation complete" not in out, out
    first = landed()
    assert 0 < len(first) < len(SIZES), (first, out)
    (folder,) = {p.parent for p in hello.glob(".runform/machines/*/data/big/*") if p.name in bodies}
    for name in first:  # a file under its final name is whole
        assert (folder / name).read_bytes() == bodies[name], name
    s3_server.stats.reset()  # also lifts the pacing
    again = run_cli("apply", "--auto-approve", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    assert s3_server.stats.object_bytes_out == sum(SIZES[n] for n in SIZES if n not in first)
    for name, body in bodies.items():
        assert (folder / name).read_bytes() == body, name
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
