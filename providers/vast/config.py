"""The ``compute`` block of a ``provider: vast`` spec, parsed into one frozen value.

Spec fields: ``gpus``, ``num_gpus``, ``image``, ``disk_gb``, ``max_price_per_hour``,
``min_reliability``, ``min_cuda``, ``max_duration``, ``ready_timeout``, ``root``, ``env``.
Vast-only knobs live under ``options`` (``verified``, ``max_attempts``, ``max_offers``,
``ssh_via``, ``ssh_user``, ``min_inet_down``).

``image`` must name a tag or digest (``repo:tag``, ``repo@sha256:...``): Vast can fail a
create with an untagged reference as a ``server_error`` (:func:`image_problem`).
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
#: Offers whose download bandwidth is below this are skipped: images take long to pull on a slow
#: link (Vast: "an hour or more"); dstack filters with ``inet_down > 128`` too.
DEFAULT_MIN_INET_DOWN = 128.0
DEFAULT_SSH_USER = "root"  # the container user on Vast
_CUDA_IN_TAG = re.compile(r"cuda[-_]?(\d+)\.(\d+)", re.IGNORECASE)


def cuda_of_image(image: str) -> float | None:
    """The CUDA version an image tag names (``...-cuda12.1-cudnn8-...`` → 12.1), if any."""
    m = _CUDA_IN_TAG.search(image.rsplit("/", 1)[-1])
    return float(f"{m.group(1)}.{m.group(2)}") if m else None


def image_problem(image: str) -> str | None:
    """Why ``image`` cannot be rented as given (no tag or digest), or None."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or not last.split(":", 1)[1]:
        return (f"image {image!r} has no tag: Vast can fail the create with server_error for an untagged "
                "reference")
    return None


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
    min_inet_down: float | None = DEFAULT_MIN_INET_DOWN
    max_attempts: int = 3  # instances that failed to become ready, each on another host
    max_offers: int = 10  # offers tried in all (gone offers count too)
    ssh_via: str = "direct"  # "direct" (public_ipaddr + 22/tcp; Vast's preferred) or "proxy"
    ssh_user: str = DEFAULT_SSH_USER

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
        problem = image_problem(str(image))
        if problem:
            raise ProviderError(f"compute.image: {problem}",
                                hint=f"name a tag, e.g. image: {image}:latest (better: a fixed version)")
        disk = float(compute.get("disk_gb", DEFAULT_DISK_GB))
        if disk < MIN_DISK_GB:
            raise ProviderError(f"compute.disk_gb: Vast needs at least {MIN_DISK_GB:g} GB, got {disk:g}")
        min_cuda = compute.get("min_cuda")
        ssh_via = str(opts.get("ssh_via", "direct"))
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
                min_inet_down=_opt_float(opts.get("min_inet_down", DEFAULT_MIN_INET_DOWN)) or None,
                max_attempts=max(1, int(opts.get("max_attempts", 3))),
                max_offers=max(1, int(opts.get("max_offers", 10))),
                ssh_via=ssh_via,
                ssh_user=str(opts.get("ssh_user") or DEFAULT_SSH_USER),
            )
        except ValueError as exc:
            raise ProviderError(f"compute: {exc}") from None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _env_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
