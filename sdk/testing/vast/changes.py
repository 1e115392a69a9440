"""Changes to rented instances in the stand-in: destroy, label and state, SSH keys (kept in the
sshd's ``authorized_keys``), log requests, and what the host does (preempt, reboot)."""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from runform.testing.vast.faults import Lifecycle
from runform.testing.vast.instance import Instance
from runform.testing.vast.replies import Reply, err


class InstanceChanges:
    """What changes an instance, for the :class:`~.world.World` (under its lock)."""

    lock: Any
    lifecycle: Lifecycle
    instances: dict[int, Instance]
    preempted: list[int]
    stop_requests: list[int]
    log_urls: dict[str, tuple[float, str]]
    authorized_keys: Path | None
    base_url: str
    _next_key_id: int

    def _get(self, iid: int) -> Instance | None:
        now = time.monotonic()
        inst = self.instances.get(iid)
        if inst is None or (inst.destroyed_at is not None and now - inst.destroyed_at >= self.lifecycle.destroy_s):
            return None
        return inst

    def destroy(self, iid: int) -> Reply:
        """``DELETE /instances/{id}/``."""
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None or inst.destroyed_at is not None:
                return err(404, "no_such_instance", "Instance not found")
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
                return err(404, "no_such_instance", "Instance not found")
            if "label" in body:
                if len(str(body["label"] or "")) > 256:
                    return err(400, "invalid_args", "label longer than 256 characters")
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
            return err(400, "invalid_args", "Invalid SSH key")
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return err(404, "no_such_instance", "Instance not found")
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
                return err(404, "no_such_instance", "Instance not found")
            return 200, {"success": True, "ssh_keys": json.dumps(inst.keys)}

    def detach_key(self, iid: int, key_id: int) -> Reply:
        with self.lock:
            inst = self._get(iid)
            if inst is None:
                return err(404, "no_such_instance", "Instance not found")
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
                return err(404, "invalid_id", "Invalid instance id")
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
