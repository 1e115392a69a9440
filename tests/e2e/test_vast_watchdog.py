"""The max_duration guard, run for real.

runform's onstart script runs in its own PID and mount namespace (a container, as far as the
script can tell: PID 1, /proc, /etc/profile.d and sshd are its own), with a deadline already
past. Its watchdog must end the workload and give the instance back to the Vast stand-in over
HTTP with the container's own key. Nothing but the script runs inside; no secret is in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from helpers import poll

from runform.providers.vast.onstart import build_onstart
from runform.testing.vast import VastStandIn


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--kill-child", "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare (PID and mount namespaces)")


def _rent(standin: VastStandIn, onstart: str, env: dict[str, str]) -> tuple[int, str]:
    offer = next(o for o in standin.world.offers.values() if o.get("rentable"))
    reply = httpx.put(f"{standin.url}/api/v0/asks/{offer['id']}/",
                      headers={"Authorization": f"Bearer {standin.api_key}"},
                      json={"image": "pytorch/pytorch:2.2.0-cuda12.1-cudnn8-runtime", "disk": 10,
                            "label": "runform-watchdog", "runtype": "ssh", "onstart": onstart, "env": env})
    reply.raise_for_status()
    return int(reply.json()["new_contract"]), str(reply.json()["instance_api_key"])


_wait_for = partial(poll, timeout=60.0, step=0.05)


def test_watchdog_ends_the_workload_and_gives_the_instance_back(vast_standin: VastStandIn,
                                                                tmp_path: Path) -> None:
    onstart = build_onstart()
    root = tmp_path / "root"
    state = root / ".runform" / "vast"
    env = {"RUNFORM_ROOT": str(root), "RUNFORM_MAX_DURATION_S": "3600", "RUNFORM_VAST_URL": vast_standin.url}
    iid, container_key = _rent(vast_standin, onstart, env)
    state.mkdir(parents=True)
    (state / "deadline").write_text(f"{int(time.time()) - 1}\n")  # the run's 3600 s are over
    (tmp_path / "onstart.sh").write_text(onstart)
    profile = tmp_path / "profile.d"
    profile.mkdir()
    workload_out = tmp_path / "workload.out"
    # PID 1 of the "container" outlives everything; the workload is what max_duration must end
    container = f"""
mount --bind {profile} /etc/profile.d
mount --bind /bin/true /usr/sbin/sshd
bash -c 'trap "echo ended-by-TERM > {workload_out}; exit 0" TERM; while :; do sleep 0.1; done' &
bash {tmp_path / 'onstart.sh'}
exec sleep 600
"""
    container_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CONTAINER_ID": str(iid),
                     "CONTAINER_API_KEY": container_key, **env}
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private",
                             "--kill-child", "bash", "-c", container],
                            env=container_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: vast_standin.world.instances[iid].destroyed_at is not None, "the instance to be given back")
        _wait_for(lambda: "DELETE ok" in (state / "watchdog.log").read_text(), "the watchdog to log the outcome")
        assert (state / "max_duration_reached").exists()
        assert workload_out.read_text().strip() == "ended-by-TERM"
        assert (state / "onstart.done").exists()
        log = (state / "watchdog.log").read_text()
        assert "max_duration reached" in log
        for text in (log, (state / "onstart.log").read_text(), onstart, (profile / "runform.sh").read_text()):
            assert container_key not in text
        shown = httpx.get(f"{vast_standin.url}/api/v0/instances/{iid}/",
                          headers={"Authorization": f"Bearer {vast_standin.api_key}"}).json()
        assert shown["instances"] is None
    finally:
        proc.kill()  # --kill-child: the namespace's PID 1, and with it everything inside, goes too
        proc.wait(timeout=30)


def test_the_container_key_reaches_its_own_instance_only(vast_standin: VastStandIn) -> None:
    first, first_key = _rent(vast_standin, "", {})
    second, _ = _rent(vast_standin, "", {})
    bearer = {"Authorization": f"Bearer {first_key}"}
    # Vast's documented scope: it "can only start, stop, or destroy that specific instance"
    assert httpx.get(f"{vast_standin.url}/api/v0/instances/{first}/", headers=bearer).status_code == 401
    assert httpx.get(f"{vast_standin.url}/api/v1/instances/", headers=bearer).status_code == 401
    assert httpx.put(f"{vast_standin.url}/api/v0/instances/{first}/", headers=bearer,
                     json={"label": "x"}).status_code == 401
    assert httpx.put(f"{vast_standin.url}/api/v0/instances/{first}/", headers=bearer,
                     json={"state": "running"}).status_code == 200
    assert httpx.delete(f"{vast_standin.url}/api/v0/instances/{second}/", headers=bearer).status_code == 401
    assert vast_standin.world.instances[second].destroyed_at is None
    assert httpx.delete(f"{vast_standin.url}/api/v0/instances/{first}/", headers=bearer).status_code == 200
    assert vast_standin.world.instances[first].destroyed_at is not None
