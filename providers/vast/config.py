"""The ``compute`` block of a ``provider: vast`` spec, parsed into one frozen value.

Spec fields: ``gpus``, ``num_gpus``, ``image``, ``disk_gb``, ``max_price_per_hour``,
``min_reliability``, ``min_cuda``, ``max_duration``, ``ready_timeout``, ``root``, ``env``.
Vast-only knobs live under ``options`` (``verified``, ``max_attempts``, ``max_offers``,
``ssh_via``, ``min_inet_down``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from runform.durations import parse_duration
from runform.errors import ProviderError
from runform.providers.vast.gpu_names import normalise_gpu_names

DEFAULT_ROOT = "/root/runform"
DEFAULT_READY_TIMEOUT_S = 20 * 60.0
DEFAULT_MIN_RELIABILITY = 0.9
DEFAULT_DISK_GB = 50.0
MIN_DISK_GB = 8.0
_CUDA_IN_TAG = re.compile(r"cuda[-_]?(\d+)\.(\d+)", re.IGNORECASE)


def cuda_of_image(image: str) -> float | None:
    """The CUDA version an image tag names (``...-cuda12.1-cudnn8-...`` → 12.1), if any."""
    m = _CUDA_IN_TAG.search(image.rsplit("/", 1)[-1])
    return float(f"{m.group(1)}.{m.group(2)}") if m else None


@attrs.frozen
class VastCompute:
    """What the provider needs from the spec, validated and with defaults applied."""

    gpus: tuple[str, ...]
    image: str
    num_gpus: int = 1
    disk_gb: float = DEFAULT_DISK_GB
    max_price_per_hour: float | None = None
    min_reliability: float = DEFAULT_MIN_RELIABILITY
    min_cuda: float | None = None
    max_duration_s: float | None = None
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    root: str = DEFAULT_ROOT
    env: Mapping[str, str] = attrs.field(factory=dict)
    verified: bool = True
    min_inet_down: float | None = None
    max_attempts: int = 3  # instances that failed to become ready, each on another host
    max_offers: int = 10  # offers tried in all (gone offers count too)
    ssh_via: str = "proxy"  # "proxy" (ssh_host/ssh_port) or "direct" (public_ipaddr + 22/tcp)

    @classmethod
    def from_compute(cls, compute: Mapping[str, Any]) -> VastCompute:
        """Parse a spec's ``compute`` block; raises ProviderError naming the bad field."""
        opts = dict(compute.get("options") or {})
        gpus = compute.get("gpus")
        if not gpus:
            raise ProviderError("compute.gpus: the vast provider needs at least one GPU name",
                                hint='e.g. gpus: ["RTX 4090", "H200"]')
        image = compute.get("image")
        if not image:
            raise ProviderError("compute.image: the vast provider needs a container image",
                                hint="e.g. image: pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime")
        disk = float(compute.get("disk_gb", DEFAULT_DISK_GB))
        if disk < MIN_DISK_GB:
            raise ProviderError(f"compute.disk_gb: Vast needs at least {MIN_DISK_GB:g} GB, got {disk:g}")
        min_cuda = compute.get("min_cuda")
        ssh_via = str(opts.get("ssh_via", "proxy"))
        if ssh_via not in ("proxy", "direct"):
            raise ProviderError(f"compute.options.ssh_via: expected proxy or direct, got {ssh_via!r}")
        try:
            return cls(
                gpus=normalise_gpu_names(gpus),
                image=str(image),
                num_gpus=int(compute.get("num_gpus", 1)),
                disk_gb=disk,
                max_price_per_hour=_opt_float(compute.get("max_price_per_hour")),
                min_reliability=float(compute.get("min_reliability", DEFAULT_MIN_RELIABILITY)),
                min_cuda=float(min_cuda) if min_cuda is not None else cuda_of_image(str(image)),
                max_duration_s=(parse_duration(compute["max_duration"])
                                if compute.get("max_duration") is not None else None),
                ready_timeout_s=(parse_duration(compute["ready_timeout"])
                                 if compute.get("ready_timeout") is not None else DEFAULT_READY_TIMEOUT_S),
                root=str(compute.get("root") or DEFAULT_ROOT),
                env={str(k): _env_str(v) for k, v in (compute.get("env") or {}).items()},
                verified=bool(opts.get("verified", True)),
                min_inet_down=_opt_float(opts.get("min_inet_down")),
                max_attempts=max(1, int(opts.get("max_attempts", 3))),
                max_offers=max(1, int(opts.get("max_offers", 10))),
                ssh_via=ssh_via,
            )
        except ValueError as exc:
            raise ProviderError(f"compute: {exc}") from None

    @property
    def duration_hours(self) -> float | None:
        return self.max_duration_s / 3600.0 if self.max_duration_s is not None else None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _env_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
