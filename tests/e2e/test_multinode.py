"""Two nodes on loopback (local node folders, and an ssh fleet of two roots through the test
sshd) running a tiny DDP job under torchrun's c10d rendezvous and gloo: world size, all-reduce,
a client killed mid-stage (both jobs attached to, nothing re-run), one node's job killed (stage
failed, that node named, the other stopped), a node gone (only it is replaced), destroy."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import poll, run_cli

from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow  # end to end: torchrun starts, rendezvous, gloo (several seconds)

DDP = '''\
import json, os, pathlib, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
root = pathlib.Path(os.environ["RUNFORM_ROOT"])
with open(root / "runs.log", "a") as f:
    f.write(f"{rank} {os.environ['RUNFORM_NODE']}\\n")
release = os.environ.get("RELEASE")
if release:  # wait (with a deadline) until the test lets the job go on
    (root / "ready").write_text(str(os.getpid()))  # this rank's process
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {world}: all-reduce {t.item()}", flush=True)
if os.environ["RUNFORM_NODE"] == "0" and os.environ["LOCAL_RANK"] == "0":  # outputs on node 0
    os.makedirs("out", exist_ok=True)
    (root / "out" / "ddp.json").write_text(json.dumps({"world_size": world, "sum": t.item()}))
if rank == 0:  # metrics from rank 0, whichever node the rendezvous gave it
    with open(os.environ["RUNFORM_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"step": 1, "world_size": world, "sum": t.item()}) + "\\n")
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(tmp_path: Path, compute: dict, release: Path | None = None) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "ddp.py").write_text(DDP)
    stage = {"run": f"{sys.executable} ddp.py", "launcher": "torchrun", "outputs": ["out/ddp.json"],
             "metrics": "out/ddp.json", "timeout": "5m"}
    if release is not None:
        stage["env"] = {"RELEASE": str(release)}
    spec = {"run": "mn", "compute": {**compute, "rdzv_port": _free_port()}, "code": {"path": ".", "exclude": ["out/"]},
            "stages": {"ddp": stage}, "tracker": {"kind": "none"}}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


def _roots(project: Path) -> list[Path]:
    machines = project / ".runform" / "machines"
    return sorted(p for p in machines.iterdir() if p.is_dir() and not p.name.endswith(".deleting"))


def _job(root: Path) -> Path:
    return next((root / ".runform" / "jobs" / "ddp").glob("*/"))


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _plan(project: Path) -> dict[str, dict]:
    p = run_cli("plan", "--json", cwd=project)
    assert p.returncode == 0, p.stderr
    return {c["address"]: c for c in json.loads(p.stdout)["resource_changes"]}


def test_two_local_nodes_ddp_then_a_node_gone_then_destroy(tmp_path: Path) -> None:
    project = _project(tmp_path, {"provider": "local", "nodes": 2})
    plan = run_cli("plan", cwd=project)
    assert plan.returncode == 0, plan.stderr
    for line in ("+ instance.main: no machine yet", "+ instance.main[1]: no machine yet",
                 "+ code.workdir[1]: sync 2 files", "+ stage.ddp: never ran"):
        assert line in plan.stdout, plan.stdout
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stdout + a.stderr
    for k in (0, 1):  # every node's log streams, each line named by its node: 1 + 2
        assert re.search(rf"stage.ddp node {k}: rank [01] of 2: all-reduce 3.0", a.stderr), a.stderr
    roots = _roots(project)
    assert len(roots) == 2
    assert sorted(line.split()[1] for r in roots for line in (r / "runs.log").read_text().splitlines()) == ["0", "1"]
    node0 = next(r for r in roots if not r.name.endswith("-n1"))
    assert json.loads((node0 / "out" / "ddp.json").read_text()) == {"world_size": 2, "sum": 3.0}
    again = run_cli("plan", "--detailed-exitcode", cwd=project)
    assert again.returncode == 0, again.stdout
    assert "instance.main[1]: instance runform-mn-" in again.stdout

    show = json.loads(run_cli("show", "--json", cwd=project).stdout)
    _check_schema("show", show)
    stage = next(r for r in show["resources"] if r["address"] == "stage.ddp")
    assert stage["attrs"]["metrics"]["world_size"] == 2  # from rank 0's node
    assert set(stage["attrs"]["nodes"]) == {"0", "1"}
    assert [(n["node"], n["address"], n["root"]) for n in show["nodes"]] == \
        [(0, "instance.main", str(node0)), (1, "instance.main[1]", str(next(r for r in roots if r != node0)))]
    assert all(n["price_per_hour"] is None and not n["billing"] for n in show["nodes"])
    text = run_cli("show", cwd=project).stdout
    assert "fleet of 2 nodes, no price" in text and "node 1  instance.main[1]" in text, text
    status = json.loads(run_cli("status", "--json", cwd=project).stdout)
    _check_schema("status", status)
    row = next(r for r in status["runs"] if r["run"] == "mn")
    assert [n["node"] for n in row["nodes"]] == [0, 1] and row["price_per_hour"] is None
    assert "   node 1 " in run_cli("status", cwd=project).stdout

    # node 1 given back outside runform: only node 1 is planned again; the stage is done
    node1 = next(r for r in roots if r.name.endswith("-n1"))
    import shutil

    shutil.rmtree(node1)
    changes = _plan(project)
    moving = {a: c["action"] for a, c in changes.items() if c["action"] != "no-op"}
    assert moving == {"instance.main[1]": "replace", "code.workdir[1]": "replace"}, moving
    assert "is gone" in changes["instance.main[1]"]["reason"]
    assert changes["code.workdir[1]"]["reason"] == "instance.main[1] will be replaced"
    assert run_cli("apply", "--auto-approve", cwd=project).returncode == 0
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0

    d = run_cli("destroy", "--auto-approve", cwd=project)
    assert d.returncode == 0, d.stdout + d.stderr
    assert "instance.main[1]: Destruction complete" in d.stderr, d.stderr
    assert _roots(project) == []  # both nodes given back


def test_client_killed_mid_stage_reattaches_to_both_nodes(tmp_path: Path) -> None:
    release = tmp_path / "release"
    project = _project(tmp_path, {"provider": "local", "nodes": 2}, release=release)
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: len([r for r in _roots(project) if (r / "ready").exists()]) == 2
             if (project / ".runform" / "machines").exists() else False,
             "both ranks to be past the rendezvous", timeout=120, step=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    changes = _plan(project)
    assert changes["stage.ddp"]["action"] == "attach", changes["stage.ddp"]
    show = json.loads(run_cli("show", "--json", cwd=project).stdout)  # the job left running, on each node
    _check_schema("show", show)
    assert [[j["address"] for j in n["running"]] for n in show["nodes"]] == [["stage.ddp"], ["stage.ddp"]]
    release.write_text("go")
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stdout + a.stderr
    assert a.stderr.count("attached to its running job") == 2, a.stderr
    for r in _roots(project):  # each node's job ran once
        assert len((r / "runs.log").read_text().splitlines()) == 1
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0
    assert run_cli("destroy", "--auto-approve", cwd=project).returncode == 0


@pytest.mark.parametrize("what", ["job", "rank"])
def test_one_node_killed_fails_the_stage_and_stops_the_other(tmp_path: Path, what: str) -> None:
    """``job``: node 1's whole job (torchrun and its shell) is killed, its rank (in a session of
    its own) is reaped; ``rank``: node 1's training process dies, its torchrun fails."""
    release = tmp_path / "release"
    project = _project(tmp_path, {"provider": "local", "nodes": 2}, release=release)
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        poll(lambda: len([r for r in _roots(project) if (r / "ready").exists()]) == 2
             if (project / ".runform" / "machines").exists() else False,
             "both ranks to be past the rendezvous", timeout=120, step=0.05)
        node1 = next(r for r in _roots(project) if r.name.endswith("-n1"))
        if what == "job":
            os.killpg(int((_job(node1) / "child").read_text()), signal.SIGKILL)
        else:
            os.kill(int((node1 / "ready").read_text()), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "stage.ddp failed on node 1" in out, out
    assert "stopped node(s) 0" in out, out
    assert "its log is above (`runform logs ddp --node 1`)" in out, out  # streamed, not printed twice
    node0 = next(r for r in _roots(project) if not r.name.endswith("-n1"))
    assert (_job(node0) / "stopped").read_text() == "node 1 failed"
    assert (_job(node0) / "exit_code").read_text() != "0"
    assert (_job(node1) / "exit_code").read_text() != "0"
    rank = int((node1 / "ready").read_text())  # node 1's rank is gone too (reaped or dead)
    poll(lambda: not Path(f"/proc/{rank}").exists() or "zombie" in _proc_state(rank), "node 1's rank to end")
    changes = _plan(project)
    assert changes["stage.ddp"]["action"] == "replace"
    assert "failed on node" in changes["stage.ddp"]["reason"], changes["stage.ddp"]
    logs = run_cli("logs", "ddp", "--node", "1", cwd=project)
    assert logs.returncode == 0 and logs.stdout, logs.stderr
    release.write_text("go")  # the retry runs through
    assert run_cli("apply", "--auto-approve", cwd=project).returncode == 0
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0
    assert run_cli("destroy", "--auto-approve", cwd=project).returncode == 0


def test_teardown_on_success_gives_back_both_nodes(tmp_path: Path) -> None:
    project = _project(tmp_path, {"provider": "local", "nodes": 2, "teardown": "on_success"})
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stdout + a.stderr
    assert "instance.main and 1 other node(s) destroyed (teardown: on_success)" in a.stdout, a.stdout
    assert _roots(project) == []
    again = run_cli("plan", "--detailed-exitcode", cwd=project)
    assert again.returncode == 0, again.stdout  # the run completed: no node is rented again
    assert "instance.main[1]: not needed: the run completed" in again.stdout


@pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")
def test_ssh_fleet_of_two_roots(sshd: SSHD, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    hosts = [{"host": sshd.host, "root": str(remote / f"node{k}")} for k in range(2)]
    compute = {**sshd.compute, "hosts": hosts}
    compute.pop("host")
    project = _project(tmp_path, compute)
    plan = run_cli("plan", cwd=project)
    assert plan.returncode == 0, plan.stderr
    assert "+ instance.main[1]: no machine yet" in plan.stdout, plan.stdout
    # the ssh provider states no price: the plan says so, not $0.00
    assert "Estimated cost: unknown for 2 nodes (the ssh provider states no price for its machines)" in plan.stdout
    assert "$0.00" not in plan.stdout
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stdout + a.stderr
    assert re.search(r"stage.ddp node [01]: rank [01] of 2: all-reduce 3.0", a.stderr), a.stderr
    assert all((remote / f"node{k}" / "runs.log").exists() for k in range(2))
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0
    d = run_cli("destroy", "--auto-approve", cwd=project)
    assert d.returncode == 0, d.stdout + d.stderr
    assert not (remote / "node0").exists() and not (remote / "node1").exists()


def test_the_torchrun_flags_runform_gives_exist_in_the_installed_torch() -> None:
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"], capture_output=True,
                         text=True, timeout=120).stdout
    for flag in ("--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint",
                 "--rdzv-id", "--rdzv-conf", "--max-restarts", "--local-addr"):
        assert flag in out, flag


RANK0 = '''\
import base64, json, os, pathlib
import torch.distributed as dist
dist.init_process_group("gloo")
rank, node = dist.get_rank(), os.environ["RUNFORM_NODE"]
root = pathlib.Path(os.environ["RUNFORM_ROOT"])
(root / "rank.txt").write_text(f"{rank} {node}")
if rank == 0:  # what rank 0 writes, on whichever node it ran: the artifact's file, an image, metrics
    os.makedirs("out", exist_ok=True)
    pathlib.Path("out/model.txt").write_text(f"rank 0 ran on node {node}")
    os.makedirs("reports", exist_ok=True)
    pathlib.Path("reports/curve.png").write_bytes(base64.b64decode(PNG))
if node == "0" and os.environ["LOCAL_RANK"] == "0":  # written the old way: on node 0, whatever its rank
    os.makedirs("out", exist_ok=True)
    pathlib.Path("out/node0.txt").write_text("written on node 0")
if rank == 0 and os.environ.get("METRICS"):  # without them, runform finds rank 0 by its outputs
    with open(os.environ["RUNFORM_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"step": 1, "node": int(node), "images": {"curve": "reports/curve.png"}}) + "\\n")
dist.barrier()
dist.destroy_process_group()
'''
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _rank0_project(tmp_path: Path, compute: dict, metrics: bool = True) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "rank0.py").write_text(f"PNG = {PNG!r}\n" + RANK0)
    spec = {"run": "mn", "compute": {**compute, "rdzv_port": _free_port()},
            "code": {"path": ".", "exclude": ["out/", "reports/"]},
            "stages": {"train": {"run": f"{sys.executable} rank0.py", "launcher": "torchrun",
                                 "outputs": ["out/model.txt"], "timeout": "5m",
                                 "env": {"METRICS": "1" if metrics else ""}}},
            "artifacts": {"model": {"paths": ["out/model.txt"], "to": f"file://{tmp_path / 'store'}/"},
                          "legacy": {"paths": ["out/node0.txt"], "to": f"file://{tmp_path / 'legacy'}/"}},
            "tracker": {"kind": "jsonl"}}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return project


@pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")
@pytest.mark.parametrize("metrics", [True, False], ids=["found-by-metrics", "found-by-outputs"])
def test_artifact_and_images_come_from_the_node_where_rank_0_ran(sshd: SSHD, tmp_path: Path, metrics: bool) -> None:
    """c10d gives rank 0 to the node whose ``--local-addr`` sorts first: node 0 reached at
    127.0.0.2 and node 1 at 127.0.0.1 puts rank 0 on node 1, every time. Only rank 0 writes the
    artifact's file and the image; both must come from node 1, and ``pull`` finds them there.
    runform finds rank 0's node by its metrics, or (none written) by the stage's outputs."""
    remote = tmp_path / "remote"
    hosts = [{"host": sshd.host, "address": addr, "root": str(remote / f"node{k}")}
             for k, addr in enumerate(["127.0.0.2", "127.0.0.1"])]
    compute = {**sshd.compute, "hosts": hosts}
    compute.pop("host")
    project = _rank0_project(tmp_path, compute, metrics)
    a = run_cli("apply", "--auto-approve", cwd=project)
    assert a.returncode == 0, a.stdout + a.stderr
    assert (remote / "node1" / "rank.txt").read_text() == "0 1"  # rank 0 on node 1, as c10d sorts
    assert not (remote / "node0" / "out" / "model.txt").exists()
    assert (tmp_path / "store" / "out" / "model.txt").read_text() == "rank 0 ran on node 1"
    # a file written on node 0 (not by rank 0) is still found: taken from the node that has it
    assert (tmp_path / "legacy" / "out" / "node0.txt").read_text() == "written on node 0"
    assert "artifact.legacy: its paths are on node 0, not on node 1 where rank 0 ran" in a.stderr, a.stderr
    show = json.loads(run_cli("show", "--json", cwd=project).stdout)
    stage = next(r for r in show["resources"] if r["address"] == "stage.train")
    assert stage["attrs"]["rank0_node"] == 1
    if metrics:  # the image rank 0 named reached the tracker, from node 1
        assert "image 'curve' not logged" not in a.stdout + a.stderr
        assert (project / ".runform" / "media" / "train" / "curve.png").exists()
        assert stage["attrs"]["metrics"]["node"] == 1 and stage["attrs"]["metrics_node"] == 1
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0

    # pull and ssh reach any node; an artifact is pulled from where it was pushed from
    dest = tmp_path / "back"
    p = run_cli("pull", "artifact.model", f"{dest}/", cwd=project)
    assert p.returncode == 0, p.stderr
    assert (dest / "model.txt").read_text() == "rank 0 ran on node 1"
    legacy = run_cli("pull", "artifact.legacy", f"{dest}/", cwd=project)
    assert legacy.returncode == 0 and (dest / "node0.txt").read_text() == "written on node 0", legacy.stderr
    p0 = run_cli("pull", "rank.txt", str(tmp_path / "r0.txt"), "--node", "0", cwd=project)
    assert p0.returncode == 0, p0.stderr
    assert (tmp_path / "r0.txt").read_text() == "1 0"
    s = run_cli("ssh", "--node", "1", "--", "cat", "rank.txt", cwd=project)
    assert s.returncode == 0 and s.stdout == "0 1", s.stderr
    assert run_cli("ssh", "--", "pwd", cwd=project).stdout.strip() == str(remote / "node0")
    for cmd in (["ssh", "--node", "2", "--", "true"], ["pull", "rank.txt", "--node", "5"]):
        bad = run_cli(*cmd, cwd=project)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert "nodes 0-1" in bad.stderr, bad.stderr
    assert run_cli("destroy", "--auto-approve", cwd=project).returncode == 0


class _PricedLocal:
    """The local provider with a market: node 0's machine costs $0.50/h, the others $0.25/h; the
    chosen offer $0.40/h (a plugin provider with prices: Vast refuses fleets)."""

    def __init__(self) -> None:
        from runform.providers.local import LocalProvider

        self.local = LocalProvider()
        self.name = "priced"

    @staticmethod
    def _priced(info: Any) -> Any:
        import attrs as attrs_

        price = 0.25 if re.search(r"-n[0-9]+$", info.label) else 0.5
        return attrs_.evolve(info, attrs={**info.attrs, "price_per_hour": price, "gpu_name": "CPU", "num_gpus": 1})

    def find(self, labels: Any, ctx: Any) -> dict[str, Any]:
        return {k: self._priced(v) for k, v in self.local.find(labels, ctx).items()}

    def create(self, request: Any, ctx: Any) -> Any:
        return self._priced(self.local.create(request, ctx))

    def destroy(self, instance: Any, ctx: Any) -> None:
        self.local.destroy(instance, ctx)

    def connect(self, instance: Any, ctx: Any) -> Any:
        return self.local.connect(instance, ctx)

    def replace_reason(self, instance: Any, compute: Any) -> str | None:
        return None

    def offers(self, compute: Any, ctx: Any) -> list[dict[str, Any]]:
        return [{"id": "offer-1", "gpu_name": "CPU", "num_gpus": 1, "dph_total": 0.4, "chosen": True}]


def _check_schema(name: str, doc: Any) -> None:
    import jsonschema
    from helpers import REPO

    schema = json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())
    jsonschema.validate(doc, schema)


def test_a_priced_fleet_counts_every_node_in_plan_show_status_and_spend(tmp_path: Path) -> None:
    """A fleet's money: the plan prices one offer per node (then every node's machine in use),
    the apply summary, ``show`` and ``status`` sum every node, and list each one."""
    import runform
    from runform import api
    from runform.cli.showing import render_show
    from runform.cli.status import render_status, status_rows
    from runform.planning.render import render_plan
    from runform.plugins import get_plugin_manager

    class Plugin:
        @runform.hookimpl
        def runform_register_providers(self, register: Any) -> None:
            register("priced", _PricedLocal)

    pm = get_plugin_manager()
    pm.register(Plugin(), name="priced-fleet")
    try:
        project = tmp_path / "project"
        project.mkdir()
        (project / "step.py").write_text("print('step ran')\n")
        spec_file = project / "runform.yaml"
        spec_file.write_text(yaml.safe_dump({
            "run": "fleet", "compute": {"provider": "priced", "nodes": 2, "teardown": "never", "max_duration": "2h"},
            "code": {"path": "."}, "stages": {"step": {"run": f"{sys.executable} step.py"}},
            "tracker": {"kind": "none"}}, sort_keys=False))
        spec = runform.load(spec_file)
        plan = runform.plan(spec)
        assert plan.cost["price_per_hour"] == pytest.approx(0.8) and plan.cost["total"] == pytest.approx(1.6)
        assert "Chosen offer: offer-1 (1x CPU) for each of 2 nodes: $0.800/h together" in render_plan(plan)

        result = runform.apply(spec)
        assert result is not None and result.ok
        assert result.price_per_hour == pytest.approx(0.75) and result.machines == 2
        assert "its 2 machines still bill $0.750/h together" in result.spent_line()

        show = api.show(spec)
        _check_schema("show", json.loads(json.dumps(show, default=str)))
        assert [(n["node"], n["address"], n["price_per_hour"], n["billing"]) for n in show["nodes"]] == \
            [(0, "instance.main", 0.5, True), (1, "instance.main[1]", 0.25, True)]
        assert show["spend"]["price_per_hour"] == pytest.approx(0.75)
        assert show["spend"]["spent"] == pytest.approx(sum(n["spent"] for n in show["nodes"]), abs=1e-3)
        text = render_show(show)
        assert "fleet of 2 nodes, $0.750/h together" in text and "node 1  instance.main[1]" in text, text

        rows = status_rows()
        _check_schema("status", {"runs": json.loads(json.dumps(rows, default=str))})
        row = next(r for r in rows if r["run"] == "fleet")
        assert row["price_per_hour"] == pytest.approx(0.75) and [n["node"] for n in row["nodes"]] == [0, 1]
        assert row["billing"] and all(n["billing"] for n in row["nodes"])
        table = render_status(rows)
        assert "+1 node(s)" in table and "   node 1 " in table, table

        # the machines in use stay: the estimate prices both of them, not the offer
        (project / "step.py").write_text("print('step ran again')\n")
        again = runform.plan(spec)
        assert again.cost["in_use"] and again.cost["price_per_hour"] == pytest.approx(0.75)
        assert "and 1 other node(s): $0.750/h together" in render_plan(again)
        assert runform.apply(spec).ok
        assert runform.plan(spec).has_changes is False
        d = runform.destroy(spec)
        assert d is not None and d.ok
        gone = next(r for r in status_rows() if r["run"] == "fleet")
        assert gone["nodes"] == [] and not gone["billing"] and gone["spent"] > 0
    finally:
        pm.unregister("priced-fleet")
