"""The market side of the stand-in: searching offers (``POST /bundles/``) and renting one
(``PUT /asks/{id}/``), with the create's checks, lost answers and instance faults."""

from __future__ import annotations

import random
import re
import secrets
import time
from pathlib import Path
from typing import Any

import attrs

from runform.testing.vast.audit import CreateRecord
from runform.testing.vast.catalogue import priced
from runform.testing.vast.faults import Faults
from runform.testing.vast.instance import Instance
from runform.testing.vast.query import CONTROL_KEYS, OFFER_TYPES, QueryError, matches, order_rows
from runform.testing.vast.replies import DROP, Reply, err

ONSTART_LIMIT = 4048
#: search filter keys that are not row fields: how the server applies them
SEARCH_ALIASES = {"verified": lambda r: r.get("verification") == "verified",
                  "datacenter": lambda r: r.get("hosting_type") == 1}
_TAGGED = re.compile(r"(@sha256:[0-9a-f]{64}|:[\w][\w.-]{0,127})$")


def check_create(body: dict[str, Any], offer: dict[str, Any]) -> str | None:
    """Why Vast would refuse this create body for ``offer`` (400 invalid_args), or None."""
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


class Market:
    """Search and create, for the :class:`~.world.World` (under its lock)."""

    lock: Any
    faults: Faults
    create_rng: random.Random
    offers: dict[int, dict[str, Any]]
    instances: dict[int, Instance]
    creates: list[CreateRecord]
    root_dir: Path
    _next_id: int

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
            return err(400, "invalid_args", f"Invalid offer type {kind!r}")
        try:
            storage = float(control.get("allocated_storage", 5.0))
            limit = int(control.get("limit") or 1000)
        except (TypeError, ValueError):
            return err(400, "invalid_args", "allocated_storage and limit must be numbers")
        with self.lock:
            rows = [priced(o, storage, bid=kind in ("bid", "interruptible")) for o in self.offers.values()]
        fields = set(rows[0]) if rows else set()
        try:
            rows = [r for r in rows if matches(r, q, fields=fields)]
            for key, cond in aliases.items():
                rows = [r for r in rows
                        if matches({key: SEARCH_ALIASES[key](r)}, {key: cond}, fields=(key,))]
        except QueryError as exc:
            return err(400, "invalid_args", f"Error in query parameters: {exc}")
        rows = order_rows(rows, control.get("order", [["score", "desc"]]))
        return 200, {"offers": rows[:limit]}

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
                return err(404, "invalid_args",
                            f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.")
            if body.get("image") and not _TAGGED.search(str(body["image"]).rsplit("/", 1)[-1]):
                # what Vast has been seen to do with an untagged reference (not a lost create)
                return 500, {"success": False, "error": "server_error",
                             "msg": f"Internal server error while creating the instance for ask {ask_id}"}
            problem = check_create(body, offer)
            if problem:
                return err(400, "invalid_args", f"error 400/3467: Invalid args: {problem}", ask_id=ask_id)
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
