"""The stand-in's state: the market, the instances and their clock-driven lifecycle.

Every public method takes the lock and returns ``(status, body)`` the way the real endpoint
answers (reference §2-§6); the HTTP layer only routes and serialises. ``body`` is a dict, a
plain string, or :data:`DROP` (close the connection without answering).

The :class:`World` holds the state and answers the reads (instance rows, lists in pages, the
audit); its other parts live beside it: :mod:`.market` (search, create), :mod:`.changes`
(destroy, label, state, keys, logs, preempt, reboot), :mod:`.http_faults` (injected 429s and
5xx, call spacing), :mod:`.replies` (the reply shapes).
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from runform.testing.vast.audit import Audit, CreateRecord, RequestRecord
from runform.testing.vast.catalogue import generate_offers
from runform.testing.vast.changes import InstanceChanges
from runform.testing.vast.faults import Faults, Lifecycle
from runform.testing.vast.http_faults import HttpFaults
from runform.testing.vast.instance import Instance, instance_row
from runform.testing.vast.market import Market
from runform.testing.vast.query import QueryError, matches, order_rows
from runform.testing.vast.replies import DROP, Reply, err

__all__ = ["DROP", "Reply", "World"]

FIRST_INSTANCE_ID = 30_000_001
# columns stored on the contract record (a computed one such as dph_total or num_gpus is a 400)
INSTANCE_FILTER_COLS = ("id", "label", "machine_id", "host_id", "actual_status", "intended_status",
                        "cur_state", "gpu_name", "image_uuid", "start_date", "verification")


def _token(last_id: int) -> str:
    """An opaque keyset cursor, the way Vast's look (base64 JSON)."""
    return base64.urlsafe_b64encode(json.dumps({"values": {"id": last_id}}).encode()).decode()


def _read_token(token: Any) -> int | None:
    """The id a cursor from :func:`_token` names; ValueError for anything else."""
    if token is None or token == "":
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        return int(raw["values"]["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid after_token {token!r}") from exc


class World(HttpFaults, Market, InstanceChanges):
    """The market and the account, behind one lock."""

    def __init__(self, *, seed: int = 0, n_offers: int = 120, lifecycle: Lifecycle | None = None,
                 faults: Faults | None = None, ssh_host: str = "127.0.0.1", ssh_port: int = 22,
                 ssh_user: str | None = None, authorized_keys: Path | None = None,
                 root_dir: Path, base_url: str = "") -> None:
        self.lock = threading.RLock()
        # two streams: HTTP faults depend on how many requests polling makes (timing), while
        # the fate of the n-th create (vanish, lost answer, instance fault) must not
        self.rng = random.Random(f"{seed}-http")
        self.create_rng = random.Random(f"{seed}-create")
        self.offers: dict[int, dict[str, Any]] = {o["id"]: o for o in generate_offers(seed, n_offers)}
        self.lifecycle = lifecycle or Lifecycle()
        self.faults = faults or Faults()
        self.ssh_host, self.ssh_port, self.ssh_user = ssh_host, ssh_port, ssh_user
        self.authorized_keys = authorized_keys
        self.root_dir = root_dir
        self.base_url = base_url
        self.instances: dict[int, Instance] = {}
        self.gone: dict[int, Instance] = {}
        self.requests: list[RequestRecord] = []
        self.creates: list[CreateRecord] = []
        self.preempted: list[int] = []
        self.stop_requests: list[int] = []
        self.log_urls: dict[str, tuple[float, str]] = {}
        self._next_id = FIRST_INSTANCE_ID
        self._next_key_id = 1
        self._last_call: dict[tuple[str, str], float] = {}  # (endpoint, caller) -> when (enforce_intervals)
        self.contract_violations: list[str] = []  # replies that broke the published schema
        with socket.socket() as probe:  # a port nothing listens on (faults.dead_ssh)
            probe.bind((ssh_host, 0))
            self.dead_port = int(probe.getsockname()[1])

    def contract_violation(self, what: str) -> None:
        with self.lock:
            self.contract_violations.append(what)

    def record(self, method: str, path: str, status: int, at: float, fault: str | None) -> None:
        with self.lock:
            self.requests.append(RequestRecord(method, path, status, at, fault))

    # ------------------------------------------------------------------ read
    def row(self, inst: Instance, now: float) -> dict[str, Any]:
        """The instance as ``GET /instances/{id}/`` shows it."""
        dead = self.faults.dead_ssh
        return instance_row(inst, now, self.lifecycle, ssh_host=self.ssh_host,
                            ssh_port=self.dead_port if dead == "proxy" else self.ssh_port,
                            direct_port=self.dead_port if dead == "direct" else self.ssh_port,
                            ports_style=self.faults.ports_style, onstart_runs=self.authorized_keys is not None)

    def _visible(self, now: float) -> list[Instance]:
        return [i for i in self.instances.values()
                if i.destroyed_at is None or now - i.destroyed_at < self.lifecycle.destroy_s]

    def _listed(self, now: float) -> list[Instance]:
        """What the list endpoints show: the visible instances, less those younger than
        ``faults.list_lag_s`` (a list that lags behind creates)."""
        lag = self.faults.list_lag_s
        wall = time.time()
        return [i for i in self._visible(now) if wall - i.start_date >= lag]

    def list_legacy(self) -> Reply:
        """``GET /instances/``: deprecated; 410 unless ``faults.legacy_account``."""
        if not self.faults.legacy_account:
            return err(410, "deprecated", "GET /api/v0/instances/ is deprecated for this account: "
                        "use GET /api/v1/instances/")
        with self.lock:
            now = time.monotonic()
            rows = [self.row(i, now) for i in self._listed(now)]
        return 200, {"instances_found": len(rows), "instances": rows}

    def list_v1(self, params: dict[str, Any]) -> Reply:
        """``GET /api/v1/instances/``: filters on stored columns, ``order_by``, pages of ≤ 25."""
        filters = params.get("select_filters") or {}
        if not isinstance(filters, dict):
            return err(400, "invalid_args", "select_filters must be an object")
        try:
            limit = int(params.get("limit") if params.get("limit") is not None else 25)
            limit = 5 if limit <= 0 else min(limit, 25)
            after = _read_token(params.get("after_token"))
        except (TypeError, ValueError):
            return err(400, "invalid_args", "Error in query parameters: invalid limit or after_token")
        with self.lock:
            now = time.monotonic()
            rows = [self.row(i, now) for i in self._listed(now)]
        try:
            rows = [r for r in rows if matches(r, filters, fields=INSTANCE_FILTER_COLS)]
        except QueryError as exc:
            return err(400, "invalid_args", f"Error in query parameters: {exc}")
        rows = order_rows(sorted(rows, key=lambda r: r["id"]), params.get("order_by") or [{"col": "id", "dir": "asc"}])
        start = 0
        if after is not None:  # keyset: the row after the one the token names
            start = next((n + 1 for n, r in enumerate(rows) if r["id"] == after), len(rows))
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        labels: dict[str, int] = {}
        for r in rows:
            labels[r["label"] or ""] = labels.get(r["label"] or "", 0) + 1
        return 200, {"success": True, "instances_found": len(page), "total_instances": len(rows),
                     "label_counts": labels, "next_token": _token(page[-1]["id"]) if more else None,
                     "instances": page}

    def show(self, iid: int) -> Reply:
        """``GET /instances/{id}/``: ``{"instances": null}`` once gone."""
        with self.lock:
            inst = self._get(iid)
            return 200, {"instances": self.row(inst, time.monotonic()) if inst else None}

    def instance_key_allows(self, key: str, method: str, path: str, body: Any = None) -> bool:
        """Whether an instance's own API key (the container's ``CONTAINER_API_KEY``) may make
        this request. Vast documents its scope: it "can only start, stop, or destroy that
        specific instance": ``PUT {"state": ...}`` and ``DELETE`` of that instance, nothing else."""
        m = re.fullmatch(r"/api/v0/instances/(\d+)/?", path)
        if m is None or method not in ("PUT", "DELETE"):
            return False
        if method == "PUT" and not (isinstance(body, dict) and body and set(body) <= {"state"}):
            return False
        with self.lock:
            inst = self.instances.get(int(m[1]))
            return inst is not None and secrets.compare_digest(inst.api_key, key)

    def audit(self) -> Audit:
        with self.lock:
            now = time.monotonic()
            visible = {i.id for i in self._visible(now)}
            listed = {i.id for i in self._listed(now)}
            return Audit(
                requests=tuple(self.requests),
                creates=tuple(self.creates),
                live=tuple(sorted(i.id for i in self.instances.values() if i.destroyed_at is None)),
                destroyed=tuple(sorted(i.id for i in self.instances.values()
                                       if i.destroyed_at is not None and i.id not in self.preempted)),
                preempted=tuple(self.preempted),
                stop_requests=tuple(self.stop_requests),
                instances={i.id: {"label": i.label, "root": str(i.root), "machine_id": i.offer["machine_id"],
                                  "offer_id": i.offer["id"], "fault": i.fault, "visible": i.id in visible,
                                  "listed": i.id in listed,
                                  "status": i.phase(now, self.lifecycle)[0] if i.destroyed_at is None else "gone",
                                  "keys": [k["public_key"] for k in i.keys], "env": dict(i.env)}
                           for i in self.instances.values()},
            )
