"""The stand-in's state: the market, the instances and their clock-driven lifecycle.

Every public method takes the lock and returns ``(status, body)`` the way the real endpoint
answers (reference §2-§6); the HTTP layer only routes and serialises. ``body`` is a dict, a
plain string, or :data:`DROP` (close the connection without answering).
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

import attrs

from runform.testing.vast.audit import Audit, CreateRecord, RequestRecord
from runform.testing.vast.catalogue import generate_offers, priced
from runform.testing.vast.faults import Faults, Lifecycle
from runform.testing.vast.instance import Instance, instance_row
from runform.testing.vast.query import CONTROL_KEYS, OFFER_TYPES, QueryError, matches, order_rows

DROP = object()
Reply = tuple[Any, ...]  # (status, body) or (status, body, headers)
ONSTART_LIMIT = 4048
FIRST_INSTANCE_ID = 30_000_001
# columns stored on the contract record (a computed one such as dph_total or num_gpus is a 400)
INSTANCE_FILTER_COLS = ("id", "label", "machine_id", "host_id", "actual_status", "intended_status",
                        "cur_state", "gpu_name", "image_uuid", "start_date", "verification")
#: search filter keys that are not row fields: how the server applies them
SEARCH_ALIASES = {"verified": lambda r: r.get("verification") == "verified",
                  "datacenter": lambda r: r.get("hosting_type") == 1}
_TAGGED = re.compile(r"(@sha256:[0-9a-f]{64}|:[\w][\w.-]{0,127})$")


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


def _err(status: int, error: str, msg: str, **extra: Any) -> Reply:
    return status, {"success": False, "error": error, "msg": msg, **extra}


class World:
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

    # ------------------------------------------------------------------ intervals
    def interval_fault(self, endpoint: str | None, caller: str, min_interval: float) -> tuple[int, dict[str, str], Any] | None:
        """With ``faults.enforce_intervals``: a plain-text 429 for a caller that calls
        ``endpoint`` again sooner than ``min_interval`` seconds (no Retry-After, as Vast)."""
        if endpoint is None or min_interval <= 0:
            return None
        with self.lock:
            if not self.faults.enforce_intervals:
                return None
            now = time.monotonic()
            last = self._last_call.get((endpoint, caller))
            if last is not None and now - last < min_interval:
                return 429, {}, f"API requests too frequent: endpoint threshold={min_interval:g}"
            self._last_call[(endpoint, caller)] = now
            return None

    # ------------------------------------------------------------------ faults
    def http_fault(self, method: str, path: str) -> tuple[int, dict[str, str], Any] | None:
        """An injected error for this request, or None: (status, headers, body)."""
        with self.lock:
            f = self.faults
            if f.only and not re.search(f.only, f"{method} {path}"):
                return None
            status = None
            if f.script:
                status, rest = f.script[0], f.script[1:]
                self.faults = attrs.evolve(f, script=rest)
            elif f.rate_429 or f.rate_5xx:  # shares of all requests: 429s, then 5xx
                draw = self.rng.random()
                if draw < f.rate_429:
                    status = 429
                elif draw < f.rate_429 + f.rate_5xx:
                    status = self.rng.choice([500, 502, 503, 504])
            if status is None:
                return None
            if status == 429:
                headers = {"Retry-After": f"{f.retry_after:g}"} if f.retry_after is not None else {}
                body: Any = self.rng.choice([
                    "API requests too frequent: endpoint threshold=1.0",
                    {"detail": "API requests too frequent endpoint threshold=4.5"},
                    {"success": False, "error": "rate_limit_exceeded", "msg": "API requests too frequent"},
                ])
                return 429, headers, body
            text = {500: "Internal Server Error", 502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
                    503: "Service Temporarily Unavailable", 504: "<html><h1>504 Gateway Time-out</h1></html>"}
            return status, {}, text.get(status, "error")

    def record(self, method: str, path: str, status: int, at: float, fault: str | None) -> None:
        with self.lock:
            self.requests.append(RequestRecord(method, path, status, at, fault))

    # ------------------------------------------------------------------ search
    def search(self, query: dict[str, Any]) -> Reply:
        """``POST /bundles/``."""
        if self.faults.search_quota_exceeded:
            reset = int(time.time() // 86400 + 1) * 86400
            return 429, {"error": "search_quota_exceeded", "msg": "Daily search quota exceeded"}, \
                {"X-RateLimit-Reset": str(reset)}
        q = dict(query)
        control = {k: q.pop(k) for k in CONTROL_KEYS if k in q}
        aliases = {k: q.pop(k) for k in list(q) if k in SEARCH_ALIASES}
        kind = str(control.get("type", "on-demand"))
        if kind not in OFFER_TYPES:
            return _err(400, "invalid_args", f"Invalid offer type {kind!r}")
        try:
            storage = float(control.get("allocated_storage", 5.0))
            limit = int(control.get("limit") or 1000)
        except (TypeError, ValueError):
            return _err(400, "invalid_args", "allocated_storage and limit must be numbers")
        with self.lock:
            rows = [priced(o, storage, bid=kind in ("bid", "interruptible")) for o in self.offers.values()]
        fields = set(rows[0]) if rows else set()
        try:
            rows = [r for r in rows if matches(r, q, fields=fields)]
            for key, cond in aliases.items():
                rows = [r for r in rows
                        if matches({key: SEARCH_ALIASES[key](r)}, {key: cond}, fields=(key,))]
        except QueryError as exc:
            return _err(400, "invalid_args", f"Error in query parameters: {exc}")
        rows = order_rows(rows, control.get("order", [["score", "desc"]]))
        return 200, {"offers": rows[:limit]}

    # ------------------------------------------------------------------ create
    def create(self, ask_id: int, body: dict[str, Any]) -> Reply:
        """``PUT /asks/{id}/``."""
        with self.lock:
            f = self.faults
            vanish, answer, fault = (self.create_rng.random() for _ in range(3))
            cancel = bool(body.get("cancel_unavail"))
            offer = self.offers.get(ask_id)
            if offer is not None and not offer["rented"]:
                if f.vanish_next or vanish < f.vanish_rate:
                    if f.vanish_next:
                        self.faults = attrs.evolve(f, vanish_next=f.vanish_next - 1)
                    offer.update(rented=True, rentable=False, vanished=True)  # someone else got it
            if offer is None or offer["rented"]:
                if cancel:
                    return 410, {"error": "no_such_ask",
                                 "msg": f"error 410/3907: no_such_ask Instance type {ask_id} is no longer available."}
                return _err(404, "invalid_args",
                            f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.")
            if body.get("image") and not _TAGGED.search(str(body["image"]).rsplit("/", 1)[-1]):
                # what Vast has been seen to do with an untagged reference (not a lost create)
                return 500, {"success": False, "error": "server_error",
                             "msg": f"Internal server error while creating the instance for ask {ask_id}"}
            problem = self._check_create(body, offer)
            if problem:
                return _err(400, "invalid_args", f"error 400/3467: Invalid args: {problem}", ask_id=ask_id)
            inst = self._make_instance(offer, body, fault)
            answered = "ok"
            if answer < f.contract_on_failure_rate:
                inst.override, inst.override_msg = "stopped", "scheduling failed: not enough capacity"
                answered = "failed-with-contract"
            elif answer < f.contract_on_failure_rate + f.lost_create_rate:
                answered = f"lost-{f.lost_create_mode}"
            self.creates.append(CreateRecord(inst.id, ask_id, offer["machine_id"], inst.label, answered))
            if answered == "failed-with-contract":
                return 200, {"success": False, "error": "insufficient_capacity",
                             "msg": "Unable to start the instance on this machine", "new_contract": inst.id}
            if answered == "lost-drop":
                return 0, DROP
            if answered == "lost-500":
                return 500, "Internal Server Error"
            return 200, {"success": True, "new_contract": inst.id, "instance_api_key": inst.api_key}

    def _check_create(self, body: dict[str, Any], offer: dict[str, Any]) -> str | None:
        if not body.get("image") and not body.get("template_hash_id"):
            return "image is required"
        if len(str(body.get("image") or "")) > 1024:
            return "image longer than 1024 characters"
        try:
            disk = float(body.get("disk", 10))
        except (TypeError, ValueError):
            return "disk must be a number"
        if disk < 8:
            return "disk must be at least 8 GB"
        if disk > offer["disk_space"]:
            return f"disk {disk:g} GB is more than the machine offers ({offer['disk_space']:g} GB)"
        if len(str(body.get("label") or "")) > 256:
            return "label longer than 256 characters"
        onstart = body.get("onstart") or ""
        if len(onstart) + len(str(body.get("args_str") or "")) > ONSTART_LIMIT:
            return f"len(args) > {ONSTART_LIMIT}"
        env = body.get("env") or {}
        if not isinstance(env, dict):
            return "env must be an object"
        total = 0
        for k, v in env.items():
            size = len(str(k)) + len(str(v)) + 1
            if size > 256:
                return f"env entry {k!r} longer than 256 characters"
            total += size
        if total > 32768:
            return "env longer than 32768 characters"
        return None

    def _make_instance(self, offer: dict[str, Any], body: dict[str, Any], draw: float) -> Instance:
        iid = self._next_id
        self._next_id += 1
        root = self.root_dir / f"instance-{iid}"
        root.mkdir(parents=True, exist_ok=True)
        f = self.faults
        fault = f.machine_faults.get(offer["machine_id"])
        if fault is None:
            for name, rate in (("stuck", f.stuck_loading_rate), ("oci", f.oci_error_rate), ("exited", f.exited_rate)):
                if draw < rate:
                    fault = name
                    break
                draw -= rate
        offer.update(rented=True, rentable=False)
        inst = Instance(
            id=iid, offer=offer, label=str(body.get("label") or ""), image=str(body.get("image") or ""),
            disk=float(body.get("disk", 10)), env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            onstart=str(body.get("onstart") or ""), runtype=str(body.get("runtype") or "ssh"),
            created_at=time.monotonic(), start_date=time.time(), root=root,
            api_key=secrets.token_hex(16), fault=fault,
        )
        inst.log.append(f"instance {iid} created on machine {offer['machine_id']}")
        self.instances[iid] = inst
        return inst

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
            return _err(410, "deprecated", "GET /api/v0/instances/ is deprecated for this account: "
                        "use GET /api/v1/instances/")
        with self.lock:
            now = time.monotonic()
            rows = [self.row(i, now) for i in self._listed(now)]
        return 200, {"instances_found": len(rows), "instances": rows}

    def list_v1(self, params: dict[str, Any]) -> Reply:
        """``GET /api/v1/instances/``: filters on stored columns, ``order_by``, pages of ≤ 25."""
        filters = params.get("select_filters") or {}
        if not isinstance(filters, dict):
            return _err(400, "invalid_args", "select_filters must be an object")
        try:
            limit = int(params.get("limit") if params.get("limit") is not None else 25)
            limit = 5 if limit <= 0 else min(limit, 25)
            after = _read_token(params.get("after_token"))
        except (TypeError, ValueError):
            return _err(400, "invalid_args", "Error in query parameters: invalid limit or after_token")
        with self.lock:
            now = time.monotonic()
            rows = [self.row(i, now) for i in self._listed(now)]
        try:
            rows = [r for r in rows if matches(r, filters, fields=INSTANCE_FILTER_COLS)]
        except QueryError as exc:
            return _err(400, "invalid_args", f"Error in query parameters: {exc}")
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

    def _get(self, iid: int) -> Instance | None:
        now = time.monotonic()
        inst = self.instances.get(iid)
        if inst is None or (inst.destroyed_at is not None and now - inst.destroyed_at >= self.lifecycle.destroy_s):
            return None
        return inst

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

    # ------------------------------------------------------------------ change
    def destroy(self, iid: int) -> Reply:
        """``DELETE /instances/{id}/``."""
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None or inst.destroyed_at is not None:
                return _err(404, "no_such_instance", "Instance not found")
            self._end(inst)
            return 200, {"success": True}

    def _end(self, inst: Instance) -> None:
        inst.destroyed_at = time.monotonic()
        inst.log.append("destroyed")
        if not inst.offer.get("vanished"):
            inst.offer.update(rented=False, rentable=True)  # the machine is back on the market
        self._sync_authorized_keys()

    def update(self, iid: int, body: dict[str, Any]) -> Reply:
        """``PUT /instances/{id}/``: label, or state stopped/running."""
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return _err(404, "no_such_instance", "Instance not found")
            if "label" in body:
                if len(str(body["label"] or "")) > 256:
                    return _err(400, "invalid_args", "label longer than 256 characters")
                inst.label = str(body["label"] or "")
            if body.get("state") == "stopped":
                self.stop_requests.append(iid)
                inst.override, inst.override_msg = "stopped", "stopped by user"
            elif body.get("state") == "running" and inst.override == "stopped":
                inst.override, inst.override_msg = None, ""
            return 200, {"success": True}

    def attach_key(self, iid: int, body: dict[str, Any]) -> Reply:
        """``POST /instances/{id}/ssh/``."""
        key = str(body.get("ssh_key") or "").strip()
        if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-\S+) [A-Za-z0-9+/=]+", key):
            return _err(400, "invalid_args", "Invalid SSH key")
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return _err(404, "no_such_instance", "Instance not found")
            if any(k["public_key"] == key for k in inst.keys):
                return 200, {"success": False, "msg": "SSH key already associated with this instance"}
            inst.keys.append({"id": self._next_key_id, "public_key": key, "created_at": time.time()})
            self._next_key_id += 1
            self._sync_authorized_keys()
            return 200, {"success": True, "msg": "SSH key attached successfully"}

    def list_keys(self, iid: int) -> Reply:
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return _err(404, "no_such_instance", "Instance not found")
            return 200, {"success": True, "ssh_keys": json.dumps(inst.keys)}

    def detach_key(self, iid: int, key_id: int) -> Reply:
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return _err(404, "no_such_instance", "Instance not found")
            inst.keys = [k for k in inst.keys if k["id"] != key_id]
            self._sync_authorized_keys()
            return 200, {"success": True}

    def _sync_authorized_keys(self) -> None:
        """Keep the sshd's authorized_keys holding exactly the keys of live instances (plus
        whatever lines were there that the stand-in did not write)."""
        if self.authorized_keys is None:
            return
        ours = {k["public_key"] for i in self.instances.values() for k in i.keys}
        live = [k["public_key"] for i in self.instances.values() if i.destroyed_at is None for k in i.keys]
        path = self.authorized_keys
        old = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in old if line.strip() and line.strip() not in ours]
        path.write_text("".join(f"{line}\n" for line in kept + list(dict.fromkeys(live))))
        path.chmod(0o600)

    def request_logs(self, iid: int, body: dict[str, Any]) -> Reply:
        """``PUT /instances/request_logs/{id}/``: a ``result_url`` that answers 404 for a moment."""
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None:
                return _err(404, "invalid_id", "Invalid instance id")
            try:
                tail = int(body.get("tail") or 1000)
            except (TypeError, ValueError):
                tail = 1000
            status, msg = inst.phase(time.monotonic(), self.lifecycle)
            lines = inst.log + [f"status {status or 'created'}" + (f": {msg}" if msg else "")]
            token = secrets.token_hex(12)
            self.log_urls[token] = (time.monotonic() + self.lifecycle.logs_delay_s, "\n".join(lines[-tail:]) + "\n")
            return 200, {"success": True, "result_url": f"{self.base_url}/_standin/logs/{token}.log"}

    def fetch_log(self, token: str) -> Reply:
        with self.lock:
            ready_at, text = self.log_urls.get(token, (None, ""))
        if ready_at is None or time.monotonic() < ready_at:
            return 404, "<Error><Code>NoSuchKey</Code></Error>"
        return 200, text

    def preempt(self, iid: int, mode: str = "gone") -> None:
        """The host takes the instance away: ``gone`` (it vanishes), ``exited``, ``offline`` or
        ``stopped`` (outbid)."""
        with self.lock:
            inst = self.instances[iid]
            self.preempted.append(iid)
            if mode == "gone":
                inst.destroyed_at = time.monotonic() - self.lifecycle.destroy_s
                inst.offer.update(vanished=True)
                self._sync_authorized_keys()
            elif mode in ("exited", "offline", "stopped"):
                msgs = {"exited": "container exited: host reclaimed the machine", "offline": "host went offline",
                        "stopped": "outbid"}
                inst.override, inst.override_msg = mode, msgs[mode]
            else:
                raise ValueError(f"preempt mode must be gone, exited, offline or stopped, not {mode!r}")

    def reboot(self, iid: int) -> None:
        """The instance restarts: it goes through ``loading`` again (for the lifecycle's
        ``loading_s``), then runs; nothing else about it changes."""
        with self.lock:
            inst = self.instances[iid]
            inst.created_at = time.monotonic() - self.lifecycle.created_s
            inst.log.append("rebooting")

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
