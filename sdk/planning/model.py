"""Plan and Action value objects, and Terraform's counting rule."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

FORMAT_VERSION = "1.0"

# kind -> (symbol, header verb)
SYMBOLS = {
    "create": ("  +", "will be created"),
    "update": ("  ~", "will be updated in-place"),
    "replace": ("-/+", "must be replaced"),
    "delete": ("  -", "will be destroyed"),
    "read": (" <=", "will be read during apply"),
    "attach": (" <~", "will be attached to (job still running)"),
    "forget": ("  .", "will be forgotten (kept where it is)"),
    "no-op": ("   ", "is up to date"),
}
JSON_ACTIONS = {
    "create": ["create"], "update": ["update"], "replace": ["delete", "create"], "delete": ["delete"],
    "read": ["read"], "attach": ["attach"], "forget": ["forget"], "no-op": ["no-op"],
}


@attrs.frozen
class Action:
    address: str
    kind: str
    reason: str
    code: str = ""  # machine-readable reason (Terraform's action_reason, extended)
    details: tuple[str, ...] = ()
    fingerprint: str | None = None
    revision: int | None = None  # the resource's revision in state when planned (stale check)
    after: Mapping[str, Any] = attrs.field(factory=dict)  # planned attributes (no secrets)
    retry_failed: bool = False

    @property
    def changes(self) -> bool:
        return self.kind != "no-op"

    def to_json(self) -> dict[str, Any]:
        kind, name = self.address.split(".", 1)
        return {
            "address": self.address, "type": kind, "name": name,
            "change": {"actions": JSON_ACTIONS[self.kind], "after": dict(self.after)},
            "action": self.kind, "action_reason": self.code, "reason": self.reason,
            "details": list(self.details), "fingerprint": self.fingerprint, "revision": self.revision,
            "retry_failed": self.retry_failed,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Action:
        return cls(address=raw["address"], kind=raw["action"], reason=raw["reason"],
                   code=raw.get("action_reason", ""), details=tuple(raw.get("details", ())),
                   fingerprint=raw.get("fingerprint"), revision=raw.get("revision"),
                   after=raw.get("change", {}).get("after", {}), retry_failed=bool(raw.get("retry_failed")))


@attrs.frozen
class Summary:
    add: int
    change: int
    destroy: int

    def line(self) -> str:
        return f"Plan: {self.add} to add, {self.change} to change, {self.destroy} to destroy."


@attrs.frozen
class Plan:
    run: str
    lineage: str
    serial: int
    actions: tuple[Action, ...]
    destroy: bool = False
    teardown: str | None = None  # "after apply" note when the policy gives the machine back
    warnings: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # idempotency keys of intents left by an interrupted apply
    cost: Mapping[str, Any] = attrs.field(factory=dict)
    targets: tuple[str, ...] = ()
    created: float = attrs.field(factory=time.time)
    spec_path: str = ""
    variables: Mapping[str, Any] = attrs.field(factory=dict)
    new_state: Mapping[str, Any] | None = None  # lineage/salt of a state not yet written

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.changes]

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def summary(self) -> Summary:
        add = sum(1 for a in self.actions if a.kind in ("create", "replace", "attach"))
        change = sum(1 for a in self.actions if a.kind == "update")
        destroy = sum(1 for a in self.actions if a.kind in ("delete", "replace"))
        return Summary(add, change, destroy)

    def get(self, address: str) -> Action | None:
        for a in self.actions:
            if a.address == address:
                return a
        return None

    def to_json(self) -> dict[str, Any]:
        from runform.version import __version__

        s = self.summary()
        return {
            "format_version": FORMAT_VERSION,
            "runform_version": __version__,
            "run": self.run,
            "lineage": self.lineage,
            "serial": self.serial,
            "destroy": self.destroy,
            "applyable": self.has_changes,
            "complete": True,
            "resource_changes": [a.to_json() for a in self.actions],
            "summary": {"add": s.add, "change": s.change, "destroy": s.destroy,
                        "read": sum(1 for a in self.actions if a.kind == "read")},
            "teardown": self.teardown,
            "warnings": list(self.warnings),
            "pending_operations": list(self.pending),
            "cost": dict(self.cost),
            "targets": list(self.targets),
            "timestamp": self.created,
            "spec_path": self.spec_path,
            "variables": dict(self.variables),
            "new_state": dict(self.new_state) if self.new_state else None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Plan:
        return cls(
            run=raw["run"], lineage=raw["lineage"], serial=int(raw["serial"]),
            actions=tuple(Action.from_json(a) for a in raw["resource_changes"]),
            destroy=bool(raw.get("destroy")), teardown=raw.get("teardown"),
            warnings=tuple(raw.get("warnings", ())), pending=tuple(raw.get("pending_operations", ())),
            cost=raw.get("cost") or {}, targets=tuple(raw.get("targets", ())),
            created=float(raw.get("timestamp", 0)), spec_path=raw.get("spec_path", ""),
            variables=raw.get("variables") or {}, new_state=raw.get("new_state"),
        )
