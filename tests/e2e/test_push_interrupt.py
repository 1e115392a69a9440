"""Ctrl-C during an artifact push: the real CLI, moto's S3 reading each upload's body slowly,
over the real sshd (the agent on the machine sees the hang-up) and on the local provider (the
agent runs in-process; the transport's abort stops it). The first SIGINT stops the push's
uploads, nothing half-pushed is recorded, and the next apply pushes only what is missing."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import interrupt_cli, poll, run_cli

from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow

SIZES = {"a.bin": 1 << 20, "b.bin": 1 << 20, "c.bin": 24 << 20, "d.bin": 24 << 20}  # single PUTs each
INDEX = ".runform-index.json"

TRAIN = """\
import os
os.makedirs("out", exist_ok=True)
for name, size in {sizes}.items():
    with open(os.path.join("out", name), "wb") as f:
        f.write(os.urandom(size))
"""


def _objects(server: Any, bucket: str) -> dict[str, int]:
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix="runs/out/").get("Contents", [])
    return {o["Key"][len("runs/out/"):]: o["Size"] for o in listed}


_SSHD = pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")


@pytest.mark.parametrize(("provider", "sig"), [
    pytest.param("ssh", signal.SIGINT, marks=_SSHD, id="ssh-SIGINT"),
    pytest.param("ssh", signal.SIGHUP, marks=_SSHD, id="ssh-SIGHUP"),
    pytest.param("local", signal.SIGTERM, id="local-SIGTERM")])
def test_ctrl_c_during_a_push_stops_it_and_the_next_apply_pushes_only_the_rest(
    provider: str, sig: int, s3_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGTERM and SIGHUP behave as Ctrl-C (SIGINT) does."""
    bucket = s3_server.make_bucket()
    project, root = tmp_path / "pushy", tmp_path / "remote" / "pushy"
    project.mkdir()
    if provider == "ssh":
        sshd: SSHD = request.getfixturevalue("sshd")
        compute: dict[str, Any] = {**sshd.compute, "root": str(root)}
    else:
        compute = {"provider": "local"}
    spec = {
        "run": "pushy",
        "compute": compute,
        "secrets": {"env_file": "pushy.env"},
        "code": {"path": ".", "exclude": ["out/"]},
        "stages": {"train": {"run": "python train.py", "deps": ["train.py"], "outputs": ["out/"]}},
        "artifacts": {"model": {"paths": ["out/"], "to": f"s3://{bucket}/runs/"}},
    }
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (project / "train.py").write_text(TRAIN.format(sizes=SIZES))
    (project / "pushy.env").write_text("".join(f"{k}={v}\n" for k, v in s3_server.env("s3").items()))
    progress_files = [root / ".runform" / "artifacts" / "model.progress"] if provider == "ssh" else []

    def landed() -> list[str]:
        return [r.path for r in s3_server.stats.of("PutObject") if r.status == 200]

    def said() -> dict[str, Any]:
        found = progress_files or list(project.glob(".runform/machines/*/.runform/artifacts/model.progress"))
        try:
            return dict(json.loads(found[0].read_text())) if found else {}
        except (OSError, ValueError):
            return {}

    s3_server.stats.upload_rate = 4e6  # each PUT's body is read at 4 MB/s: the 1 MiB ones land first
    code, out = interrupt_cli("apply", "--auto-approve", cwd=project, when=landed, what="the first object to land",
                              sig=sig)
    assert code == 1, out
    assert "Traceback" not in out and "interrupted" in out.lower(), out
    assert "artifact.model: transfer stopped (Ctrl-C)" in out, out
    assert "artifact.model: Creation complete" not in out, out
    # the agent saw the hang-up (or, in-process, the abort) and let go of its uploads (written after they ended)
    poll(lambda: said().get("stopped") is True, "the agent's push to stop", timeout=120, step=0.05)
    there = _objects(s3_server, bucket)
    assert INDEX not in there, there  # the push never got to its end
    assert 0 < len(there) < len(SIZES), there
    for name, size in there.items():  # what is under a key is whole
        assert SIZES[name] == size, (name, size)
    plan = run_cli("plan", "--detailed-exitcode", cwd=project)  # not recorded as pushed
    assert plan.returncode == 2 and "+ artifact.model" in plan.stdout, plan.stdout + plan.stderr

    s3_server.stats.reset()  # also lifts the pacing
    again = run_cli("apply", "--auto-approve", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    uploaded = {r.path.rsplit("/", 1)[-1]: r.bytes_in for r in s3_server.stats.of("PutObject")
                if r.status == 200 and not r.path.endswith(INDEX)}
    assert uploaded == {n: s for n, s in SIZES.items() if n not in there}  # only what was missing
    assert _objects(s3_server, bucket) == {**SIZES, INDEX: _objects(s3_server, bucket)[INDEX]}
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0
