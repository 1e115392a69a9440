"""One stand-in instance: its clock-driven phase and the JSON row the API shows for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from runform.testing.vast.catalogue import priced
from runform.testing.vast.faults import OCI_ERROR, Lifecycle

SENTINEL = ".runform/vast/onstart.done"  # what runform's onstart touches when it is done


@attrs.define
class Instance:
    """One rented instance (mutable, guarded by the world's lock)."""

    id: int
    offer: dict[str, Any]
    label: str
    image: str
    disk: float
    env: dict[str, str]
    onstart: str
    runtype: str
    created_at: float
    start_date: float
    root: Path
    api_key: str
    fault: str | None = None  # "oci", "exited", "stuck", "offline"
    override: str | None = None  # a status forced by preemption or stop
    override_msg: str = ""
    destroyed_at: float | None = None
    keys: list[dict[str, Any]] = attrs.field(factory=list)
    log: list[str] = attrs.field(factory=list)

    def phase(self, now: float, life: Lifecycle) -> tuple[str | None, str]:
        """(actual_status, status_msg) at ``now``."""
        if self.destroyed_at is not None:  # a destroyed row that lingers
            return ("terminated" if self.id % 2 else "destroyed"), ""
        if self.override:
            return self.override, self.override_msg
        t = now - self.created_at
        if t < life.created_s:
            return None, ""
        if self.fault == "oci":
            return "created", OCI_ERROR
        if self.fault == "stuck" or t < life.created_s + life.loading_s:
            return "loading", f"Pulling image {self.image}: downloading layers"
        if self.fault == "exited":
            return "exited", "container exited with code 1"
        if self.fault == "offline":
            return "offline", "host stopped responding"
        return "running", f"success, running {self.image}/ssh"


def instance_row(inst: Instance, now: float, life: Lifecycle, *, ssh_host: str, ssh_port: int,
                 direct_port: int | None = None, ports_style: str = "dict",
                 onstart_runs: bool = False) -> dict[str, Any]:
    """The instance as ``GET /instances/{id}/`` shows it at ``now``: only fields Vast publishes
    (``schemas/_defs.json``). ``ports`` is Docker-style (``ports_style="dict"``), an int array
    (``"list"``) or null (``"absent"``). With ``onstart_runs`` (a real sshd behind the
    instance), runform's onstart "runs" when the instance does: its sentinel appears under the
    ``RUNFORM_ROOT`` the create's env named (the stand-in's own folder for the instance when
    none), as the real onstart would write it."""
    status, msg = inst.phase(now, life)
    if status == "running" and onstart_runs:
        sentinel = Path(inst.env.get("RUNFORM_ROOT") or inst.root) / SENTINEL
        if not sentinel.exists():
            sentinel.parent.mkdir(parents=True, exist_ok=True)
            sentinel.touch()
            inst.log.append("onstart finished")
    o = inst.offer
    gone = inst.destroyed_at is not None
    stopped = status == "stopped"
    started = status is not None and not gone
    running = status == "running"
    if running and ports_style == "dict":
        ports: Any = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(direct_port or ssh_port)}]}
    elif ports_style == "list":
        ports = [22]
    elif ports_style == "dict" and started:
        ports = {"22/tcp": None}  # known, not mapped until running
    else:
        ports = None
    state = "unloaded" if gone else ("stopped" if stopped else "running")
    return {
        "id": inst.id, "label": inst.label or None, "machine_id": o["machine_id"], "host_id": o["host_id"],
        "actual_status": status,
        "intended_status": "stopped" if stopped or gone else "running",
        "cur_state": state, "next_state": state,
        "status_msg": msg or None,
        "image_uuid": inst.image, "image_runtype": inst.runtype, "image_args": [],
        "onstart": inst.onstart,
        "gpu_name": o["gpu_name"], "num_gpus": o["num_gpus"], "gpu_ram": o["gpu_ram"],
        "gpu_totalram": o["gpu_total_ram"], "gpu_arch": o["gpu_arch"], "gpu_frac": o["gpu_frac"],
        "cpu_name": o["cpu_name"], "cpu_cores": o["cpu_cores"], "cpu_cores_effective": o["cpu_cores_effective"],
        "cpu_ram": o["cpu_ram"], "cpu_arch": o["cpu_arch"],
        "disk_space": inst.disk, "geolocation": o["geolocation"], "reliability2": o["reliability2"],
        "verification": o["verification"], "direct_port_count": o["direct_port_count"],
        "dph_base": o["dph_base"], "storage_cost": o["storage_cost"],
        "dph_total": priced(o, inst.disk)["dph_total"],
        "storage_total_cost": o["storage_cost"] * inst.disk * (now - inst.created_at) / (30 * 24 * 3600),
        "public_ipaddr": f"{ssh_host}\n",
        "ssh_idx": "4", "ssh_host": ssh_host if started else None,
        "ssh_port": ssh_port if started else None,
        "ports": ports,
        "direct_port_start": direct_port or ssh_port, "direct_port_end": direct_port or ssh_port,
        "extra_env": [[k, v] for k, v in inst.env.items()],
        "start_date": inst.start_date, "end_date": inst.start_date + o["duration"],
        "duration": o["duration"],
        "template_hash_id": None, "is_bid": False, "min_bid": o["min_bid"],
    }
