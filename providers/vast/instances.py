"""A Vast instance as the API shows it, its lifecycle phase, and its InstanceInfo form.

Lifecycle (reference §6): ``null``/``created``/``loading``/``rebooting`` are pending,
``running`` is a ready candidate, ``exited``/``offline``/``unknown``/``frozen``/``stopped``
are failures, and so is any ``status_msg`` that reads like an error (OCI runtime, pull
failures, tracebacks), whatever the status says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from runform.interfaces import InstanceInfo

FAILED_STATUSES = frozenset({"exited", "offline", "unknown", "frozen", "stopped"})
_ERROR_MSG = re.compile(r"error|failed|failure|exception|traceback|oci runtime|permission denied", re.IGNORECASE)


def failure_reason(instance_id: object, status: str, status_msg: str = "") -> str | None:
    """``instance 123 is exited (status_msg)`` for a failed status or an error message, else None."""
    msg = f" ({status_msg})" if status_msg else ""
    if status in FAILED_STATUSES or status == "gone":
        return f"instance {instance_id} is {status}{msg}"
    if status_msg and _ERROR_MSG.search(status_msg):
        return f"instance {instance_id} failed while {status}: {status_msg}"
    return None


def _int(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(float(v))
    except (TypeError, ValueError):
        return None


def _str(v: Any) -> str | None:
    return None if v is None else (str(v).strip() or None)


def _direct_ssh_port(ports: Any) -> int | None:
    """The host port that container port 22 maps to, when the row says: the Docker-style
    ``ports["22/tcp"][0]["HostPort"]`` (a string; None until running). Vast may also send
    ``ports`` as an int array (which ports, not where they map) or not at all: no direct port."""
    if not isinstance(ports, Mapping):
        return None
    binding = ports.get("22/tcp")
    if isinstance(binding, list):
        for b in binding:
            if isinstance(b, Mapping) and _int(b.get("HostPort")):
                return _int(b.get("HostPort"))
    return None


def _env(extra_env: Any) -> dict[str, str]:
    if isinstance(extra_env, Mapping):
        return {str(k): str(v) for k, v in extra_env.items()}
    if isinstance(extra_env, list):
        return {str(p[0]): str(p[1]) for p in extra_env if isinstance(p, list | tuple) and len(p) == 2}
    return {}


@attrs.frozen
class VastInstance:
    """The fields of an instance row that runform reads."""

    id: int
    label: str
    actual_status: str | None
    status_msg: str = ""
    intended_status: str | None = None
    cur_state: str | None = None
    next_state: str | None = None
    machine_id: int | None = None
    host_id: int | None = None
    gpu_name: str = ""
    num_gpus: int | None = None
    image: str = ""
    disk_gb: float | None = None
    dph_total: float | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    public_ip: str | None = None
    direct_ssh_port: int | None = None
    start_date: float | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VastInstance:
        """Build from a row of ``GET /instances/`` or ``GET /instances/{id}/`` (strings stripped)."""
        disk = raw.get("disk_space")
        return cls(
            id=int(raw["id"]),
            label=_str(raw.get("label")) or "",
            actual_status=_str(raw.get("actual_status")),
            status_msg=_str(raw.get("status_msg")) or "",
            intended_status=_str(raw.get("intended_status")),
            cur_state=_str(raw.get("cur_state")),
            next_state=_str(raw.get("next_state")),
            machine_id=_int(raw.get("machine_id")),
            host_id=_int(raw.get("host_id")),
            gpu_name=_str(raw.get("gpu_name")) or "",
            num_gpus=_int(raw.get("num_gpus")),
            image=_str(raw.get("image_uuid")) or "",
            disk_gb=float(disk) if disk is not None else None,
            dph_total=float(raw["dph_total"]) if raw.get("dph_total") is not None else None,
            ssh_host=_str(raw.get("ssh_host")),
            ssh_port=_int(raw.get("ssh_port")),
            public_ip=_str(raw.get("public_ipaddr")),
            direct_ssh_port=_direct_ssh_port(raw.get("ports")),
            start_date=float(raw["start_date"]) if raw.get("start_date") is not None else None,
            env=_env(raw.get("extra_env")),
        )

    @property
    def status(self) -> str:
        """``actual_status``, with null shown as ``created``."""
        return self.actual_status or "created"

    @property
    def running(self) -> bool:
        return self.actual_status == "running"

    def failure(self) -> str | None:
        """Why this instance will not become usable (None: pending or healthy)."""
        if self.cur_state == "unloaded" or self.status in ("destroyed", "terminated"):
            return f"instance {self.id} is gone ({self.status})"
        if self.cur_state == self.intended_status == self.next_state == "stopped":
            msg = f" ({self.status_msg})" if self.status_msg else ""
            return f"instance {self.id} was stopped (outbid or out of credit){msg}"
        return failure_reason(self.id, self.status, self.status_msg)

    def ssh_endpoints(self, via: str = "direct") -> list[tuple[str, int]]:
        """The (host, port) pairs to SSH to, best first: direct (``public_ipaddr`` + the
        ``22/tcp`` host port) and the proxy (``ssh_host``/``ssh_port``), ``via`` first; each
        is the other's fallback. Only those the row knows."""
        proxy = (self.ssh_host, self.ssh_port) if self.ssh_host and self.ssh_port else None
        direct = (self.public_ip, self.direct_ssh_port) if self.public_ip and self.direct_ssh_port else None
        first, second = (proxy, direct) if via == "proxy" else (direct, proxy)
        return list(dict.fromkeys(e for e in (first, second) if e is not None))  # type: ignore[misc]

    def ssh_endpoint(self, via: str = "direct") -> tuple[str, int] | None:
        """The first of :meth:`ssh_endpoints`, or None."""
        found = self.ssh_endpoints(via)
        return found[0] if found else None

    def to_info(self, *, root: str, key_file: str | None, via: str = "direct", user: str = "root",
                endpoint: tuple[str, int] | None = None) -> InstanceInfo:
        """The provider-neutral view kept in runform's state (JSON-serialisable attrs).
        ``endpoint`` is the SSH endpoint to use (default: the first of :meth:`ssh_endpoints`);
        the others are kept in ``attrs["ssh_fallbacks"]``."""
        endpoints = self.ssh_endpoints(via)
        endpoint = endpoint or (endpoints[0] if endpoints else None)
        fallbacks = [[h, p] for h, p in endpoints if (h, p) != endpoint]
        return InstanceInfo(
            id=str(self.id),
            label=self.label,
            status=self.status,
            attrs={
                "machine_id": self.machine_id, "host_id": self.host_id, "gpu_name": self.gpu_name,
                "num_gpus": self.num_gpus, "image": self.image, "disk_gb": self.disk_gb,
                "dph_total": self.dph_total, "status_msg": self.status_msg,
                "ssh_host": endpoint[0] if endpoint else None, "ssh_port": endpoint[1] if endpoint else None,
                "ssh_fallbacks": fallbacks, "ssh_user": user,
                "root": self.env.get("RUNFORM_ROOT") or root,
                "key_file": key_file, "start_date": self.start_date,
                # provider-neutral: where the host key is pinned, and what the machine costs
                "endpoint": _pin_key(*endpoint) if endpoint else None,
                "price_per_hour": self.dph_total,
                "failure": None if self.running else self.failure(),  # None while it starts
            },
        )


def _pin_key(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port``): where the host key is pinned, as ``reach.endpoint`` spells it."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
