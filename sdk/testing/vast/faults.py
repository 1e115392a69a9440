"""What the stand-in does wrong on purpose, and how fast its instances boot.

All probabilities are in [0, 1] and drawn from the stand-in's seeded RNG, so a test run is
reproducible up to the order of its requests.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

#: Per-instance failure kinds (``Faults.machine_faults`` values).
INSTANCE_FAULTS = ("oci", "exited", "stuck", "offline")

OCI_ERROR = ("Error response from daemon: failed to create task for container: failed to create shim task: "
             "OCI runtime create failed: runc create failed: unable to start container process: "
             "error during container init: nvidia-container-cli: initialization error: driver rpc error")


@attrs.frozen
class Lifecycle:
    """Seconds an instance spends in each phase: ``null`` (created_s), ``loading`` (loading_s),
    then ``running``. A destroyed instance still reads back for ``destroy_s`` (as real Vast
    does: ``cur_state`` ``unloaded``, ``actual_status`` ``destroyed`` or ``terminated``), in
    show and in the list; after that show answers ``{"instances": null}``. Log URLs answer 404
    for ``logs_delay_s``."""

    created_s: float = 0.05
    loading_s: float = 0.1
    destroy_s: float = 0.0  # a destroyed instance lingers this long: cur_state unloaded, destroyed/terminated
    logs_delay_s: float = 0.05


@attrs.frozen
class Faults:
    """Fault injection. ``script`` forces statuses (429, 500, 502, 503, 504) on the next API
    requests, in order, before any random draw; ``only`` (a regex on ``"METHOD /path"``)
    limits the HTTP faults (script, 429, 5xx) to matching requests."""

    rate_429: float = 0.0  # share of requests answered 429
    rate_5xx: float = 0.0  # share answered 500/502/503/504 (rate_429 + rate_5xx ≤ 1)
    retry_after: float | None = None  # Vast sends no Retry-After; set, injected 429s carry one (robustness)
    script: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    only: str | None = None
    search_quota_exceeded: bool = False  # every /bundles/ answers 429 search_quota_exceeded
    lost_create_rate: float = 0.0  # the instance is created but the answer is lost
    lost_create_mode: str = "500"  # "500": a 500 answer; "drop": the connection closes unanswered
    vanish_rate: float = 0.0  # the offer is rented by someone else just before our create
    vanish_next: int = 0  # the next N creates find their offer gone (deterministic)
    contract_on_failure_rate: float = 0.0  # create fails but leaves a stopped instance (new_contract)
    stuck_loading_rate: float = 0.0
    oci_error_rate: float = 0.0
    exited_rate: float = 0.0
    machine_faults: Mapping[int, str] = attrs.field(factory=dict)  # machine_id -> one of INSTANCE_FAULTS
    # the list endpoints lag: an instance created less than list_lag_s seconds ago is missing from
    # GET /api/v0/instances/ and GET /api/v1/instances/, yet it exists, shows, bills and takes its offer
    list_lag_s: float = 0.0
    # how a running instance's ``ports`` reads: "dict" (Docker-style), "list" (an int array) or
    # "absent" (null): with the last two only the proxy endpoint is known
    ports_style: str = "dict"
    # one SSH endpoint of running instances leads nowhere (a port nothing listens on): "direct"
    # (the mapped 22/tcp) or "proxy" (ssh_host/ssh_port); runform must fall back to the other
    dead_ssh: str | None = None
    # answer 429 (plain text, no Retry-After) to a caller that calls an endpoint again sooner
    # than its documented minimum interval (per endpoint and key), as Vast does
    enforce_intervals: bool = False
    # a legacy account (made before 2026-06-02): the deprecated v0 list answers instead of 410
    legacy_account: bool = False

    def __attrs_post_init__(self) -> None:
        if self.list_lag_s < 0:
            raise ValueError(f"list_lag_s must be >= 0, not {self.list_lag_s!r}")
        if self.lost_create_mode not in ("500", "drop"):
            raise ValueError(f"lost_create_mode must be '500' or 'drop', not {self.lost_create_mode!r}")
        if self.dead_ssh not in (None, "direct", "proxy"):
            raise ValueError(f"dead_ssh must be None, direct or proxy, not {self.dead_ssh!r}")
        if self.ports_style not in ("dict", "list", "absent"):
            raise ValueError(f"ports_style must be dict, list or absent, not {self.ports_style!r}")
        bad = {k: v for k, v in self.machine_faults.items() if v not in INSTANCE_FAULTS}
        if bad:
            raise ValueError(f"machine_faults values must be in {INSTANCE_FAULTS}: {bad}")
