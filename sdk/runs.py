"""The run registry behind ``runform status``: one small JSON file per run of this user on this
machine, in ``$XDG_STATE_HOME/runform/runs/`` (``~/.local/state/runform/runs/``), written by
apply and destroy as their events happen. It is a convenience index, never the truth: the
state is. Nothing secret goes in it (no env, no keys; the key file's path only).

Spend is price × uptime: ``spent`` adds up machines already given back; a live machine adds
``price_per_hour × (now - created_at)``. A fleet (``compute.nodes``) lists every node's machine
under ``machines`` (``machine`` stays node 0's), and its spend is the sum over them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from runform.atomic import atomic_write
from runform.nodes import at_node, split_node
from runform.progress import Event

_LOCK = threading.Lock()


def registry_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runform" / "runs"


def run_key(spec_path: Path, run: str) -> str:
    return hashlib.sha256(f"{Path(spec_path).resolve()}\0{run}".encode()).hexdigest()[:16]


def read_all() -> list[dict[str, Any]]:
    """Every registered run, the most recently updated first (unreadable files are skipped)."""
    out = []
    d = registry_dir()
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                out.append(data)
    return sorted(out, key=lambda r: -float(r.get("updated") or 0))


def read(spec_path: Path, run: str) -> dict[str, Any] | None:
    f = registry_dir() / f"{run_key(spec_path, run)}.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(f.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    return None


def write(entry: dict[str, Any]) -> None:
    d = registry_dir()
    atomic_write(d / f"{entry['key']}.json", json.dumps(entry, indent=1, sort_keys=True, default=str))


def machine_of(instance_record: Any) -> dict[str, Any] | None:
    """What the registry and ``show`` say about a machine, from its ``instance.main`` record."""
    if instance_record is None:
        return None
    a = instance_record.attrs
    inst = a.get("instance") or {}
    ia = inst.get("attrs") or {}
    host = ia.get("ssh_host") or ia.get("host")
    port = ia.get("ssh_port") or ia.get("port")
    user = ia.get("ssh_user") or ia.get("user")
    price = ia.get("price_per_hour")
    return {"id": inst.get("id"), "status": inst.get("status"), "gpu": ia.get("gpu_name"),
            "num_gpus": ia.get("num_gpus"), "price_per_hour": float(price) if price is not None else None,
            "created_at": a.get("created_at") or instance_record.updated,
            "ssh": {"host": host, "port": port, "user": user, "key_file": ia.get("key_file"),
                    "root": ia.get("root")} if host else None}


def machines_of(state: Any) -> list[dict[str, Any]]:
    """Every node's machine in ``state`` (``machine_of`` plus its ``node`` and ``address``), node 0 first."""
    out = []
    for address, rec in (state.resources.items() if state is not None else ()):
        base, k = split_node(address)
        if base == "instance.main" and (m := machine_of(rec)) is not None:
            root = ((rec.attrs.get("instance") or {}).get("attrs") or {}).get("root")
            out.append({**m, "node": k, "address": at_node("instance.main", k), "root": root})
    return sorted(out, key=lambda m: m["node"])


def live_machines(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The machines a registry entry says are still there: ``machines`` (every node), or the
    ``machine`` of an entry written before fleets."""
    if "machines" in entry:
        return [m for m in entry.get("machines") or [] if m]
    return [entry["machine"]] if entry.get("machine") else []


def machine_spend(m: dict[str, Any], now: float) -> tuple[float | None, float]:
    """One machine's uptime (s; None when unknown) and its spend so far (USD)."""
    if not m.get("created_at"):
        return None, 0.0
    uptime = max(0.0, now - float(m["created_at"]))
    return uptime, (float(m["price_per_hour"]) * uptime / 3600 if m.get("price_per_hour") is not None else 0.0)


def spend(entry: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``uptime`` (s) of the live machine (a fleet: its longest-lived node), and ``spent`` (USD)
    so far, given-back machines and every node included; ``billing``: a machine is still there
    and costs money; ``price_per_hour``: what the live machines cost together (None: no price)."""
    now = time.time() if now is None else now
    spent = float(entry.get("spent_before") or 0.0)
    uptimes, prices = [], []
    for m in live_machines(entry):
        uptime, cost = machine_spend(m, now)
        spent += cost
        if uptime is not None:
            uptimes.append(uptime)
        if m.get("price_per_hour") is not None:
            prices.append(float(m["price_per_hour"]))
    return {"uptime": round(max(uptimes), 1) if uptimes else None, "spent": round(spent, 4),
            "billing": sum(prices) > 0, "price_per_hour": sum(prices) if prices else None}


class Recorder:
    """An event sink that keeps this run's registry entry up to date during an apply."""

    def __init__(self, ws: Any, state: Any) -> None:
        self.ws, self.state = ws, state
        spec = ws.spec
        self.entry = read(spec.path, spec.run) or {}
        self.entry.update({"key": run_key(spec.path, spec.run), "run": spec.run, "spec": str(spec.path),
                           "dir": str(spec.dir), "provider": spec.compute.provider,
                           "lineage": getattr(state, "lineage", None) if state is not None else None})
        self.entry.setdefault("running", {})
        self.entry.setdefault("spent_before", 0.0)

    def __call__(self, event: Event) -> None:
        t = event.get("type")
        e = self.entry
        if t == "apply_start":
            e["phase"] = "destroying" if event.get("destroy") else "applying"
        elif t == "phase":
            e["phase"] = f"instance: {event.get('phase')}"
        elif t == "action_started" and str(event.get("address", "")).startswith("stage."):
            e["running"][event["address"]] = time.time()
        elif t == "action_finished":
            addr = str(event.get("address", ""))
            if addr.startswith("stage.") and event.get("status") != "interrupted":
                e["running"].pop(addr, None)  # an interrupted stage's job goes on
            if split_node(addr)[0] == "instance.main":
                self._machine()
        elif t == "apply_finished":
            self._machine()
            if event.get("interrupted"):
                e["phase"] = "interrupted"
            elif not event.get("ok"):
                e["phase"] = "failed"
            else:
                e["phase"] = "destroyed" if not e.get("machines") and e.get("phase") == "destroying" else "idle"
            if not e.get("machines"):
                e["running"] = {}
            e["last"] = event.get("@message")
        else:
            return
        self.save()

    def _machine(self) -> None:
        """Follow every node's ``instance.main[K]`` in the state: a machine given back (or
        replaced) adds its spend to ``spent_before``."""
        now = machines_of(self.state)
        ids = {m.get("id") for m in now}
        for old in live_machines(self.entry):
            if old.get("id") not in ids:
                self.entry["spent_before"] = spend({"machines": [old],
                                                    "spent_before": self.entry.get("spent_before")})["spent"]
        self.entry["machines"] = now
        self.entry["machine"] = next((m for m in now if m["node"] == 0), None)

    def save(self) -> None:
        self.entry["updated"] = time.time()
        with _LOCK, contextlib.suppress(OSError):
            write(self.entry)
