"""The state: what runform knows exists. Rebuilt from a snapshot plus the journal.

Journal entry types (one JSON object per line, ``seq`` increasing):

- ``meta``: lineage, run and salt of a new state.
- ``intent``: an action is about to mutate something (``key`` is its idempotency key).
- ``put``: a resource's new record (bumps the serial).
- ``rm``: a resource is gone (bumps the serial).
- ``done``: an intent ended without a state change (failure, nothing to record).
- ``reconciled``: pending intents were resolved by a refresh.

A secret value is never part of any record: the secrets resource keeps a salted digest.
"""

from __future__ import annotations

import json
import re
import secrets as _secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from runform.errors import StateError

STATE_VERSION = 1
_SNAPSHOT_HINT = "restore the state from state.json.bak (or correct that field by hand)"


class FieldError(ValueError):
    """A field of a state record is missing or of the wrong type; the message names the field."""


_REQUIRED: Any = object()


def _field(raw: Mapping[str, Any], name: str, conv: Any, expected: str, default: Any = _REQUIRED) -> Any:
    """``conv(raw[name])``, or ``default`` when it is absent; a FieldError naming the field."""
    if name not in raw:
        if default is _REQUIRED:
            raise FieldError(f"field {name!r} is missing")
        return default
    value = raw[name]
    try:
        return conv(value)
    except (TypeError, ValueError):
        shown = json.dumps(value, default=str)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise FieldError(f"field {name!r}: expected {expected}, got {shown}") from None


# The state is untrusted input (a shared bucket, a hand edit): what is used as a name or a path is
# checked against the grammar the spec and runform itself use.
_ADDRESS = re.compile(r"[a-z_]{1,32}\.[A-Za-z0-9_-]{1,64}(\[[0-9]{1,3}\])?\Z")  # [K]: node K > 0
_LINEAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")  # a UUID (a label holds its first 8)
_RUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(what)
        return value
    return conv


_NUMBER = (int, float)
# attributes runform computes with, by kind: their JSON types (None is always allowed)
_TYPED: dict[str, dict[str, tuple[type, ...]]] = {
    "stage": {"duration": _NUMBER, "started": _NUMBER, "ended": _NUMBER, "exit_code": (int,),
              "metrics": (dict,), "inputs": (dict,)},
    "instance": {"pins": (dict,), "compute": (dict,)},
    "dataset": {"manifest": (dict,), "bytes_moved": _NUMBER},
    "code": {"manifest": (dict,), "files": (int,), "bytes": _NUMBER},
    "artifact": {"manifests": (dict,), "inputs": (dict,)},
}


def _check_attrs(address: str, attrs: dict[str, Any]) -> None:
    """The attributes used as names or paths (labels: a machine folder is named by one), and those
    runform computes with (their JSON types)."""
    for key, types in _TYPED.get(address.split(".", 1)[0], {}).items():
        value = attrs.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            names = "a number" if types == _NUMBER else {dict: "an object", int: "an integer"}[types[0]]
            raise FieldError(f"field 'attrs.{key}': expected {names}, got {json.dumps(value, default=str)[:40]}")
    pins = attrs.get("pins")
    if isinstance(pins, Mapping) and not all(isinstance(k, str) and isinstance(v, str) for k, v in pins.items()):
        raise FieldError("field 'attrs.pins': expected host -> key strings")
    if "label" in attrs and attrs["label"] is not None:
        _field(attrs, "label", _matching(_LABEL, "a label"), "a label (letters, digits, '.', '_', '-')")
    if address.split("[", 1)[0] == "instance.main" and "instance" in attrs:
        inst = attrs["instance"]
        if not isinstance(inst, Mapping):
            raise FieldError("field 'attrs.instance': expected an object")
        try:
            _field(inst, "label", _matching(_LABEL, "a label"), "a label (letters, digits, '.', '_', '-')")
            _field(inst, "id", lambda v: v if isinstance(v, (str, int)) and not isinstance(v, bool)
                   else int("x"), "a string or an integer")
            _field(inst, "status", str, "a string", "")
            _field(inst, "attrs", _object, "an object", {})
        except FieldError as exc:
            raise FieldError(f"attrs.instance: {exc}") from None


def _object(value: Any) -> dict[str, Any]:
    if not value:  # null, or an empty list/string from a hand edit: no attributes
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(value)
    return dict(value)


@attrs.define
class ResourceState:
    address: str
    attrs: dict[str, Any]
    fingerprint: str | None = None
    status: str = "ok"  # ok | tainted | partial (an artifact pushed in part before a teardown)
    revision: int = 0  # the serial at which this record last changed
    updated: float = 0.0

    def instance(self) -> dict[str, Any]:
        """``attrs.instance`` of the instance record (what the provider knows of the machine)."""
        inst = self.attrs.get("instance")
        if not isinstance(inst, Mapping):
            raise StateError(f"{self.address}: the state has no attrs.instance (what the provider knows of "
                             "the machine)",
                             hint="restore .runform/ from a copy (state.json.bak); the state was edited "
                             "or damaged")
        return dict(inst)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "attrs": self.attrs,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "revision": self.revision,
            "updated": self.updated,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ResourceState:
        if not isinstance(raw, Mapping):
            raise FieldError(f"expected an object, got {type(raw).__name__}")
        rec = cls(
            address=_field(raw, "address", _matching(_ADDRESS, "an address"), "an address KIND.NAME"),
            attrs=_field(raw, "attrs", _object, "an object", {}),
            fingerprint=_field(raw, "fingerprint", _optional_str, "a string or null", None),
            status=_field(raw, "status", _matching(re.compile(r"(ok|tainted|partial)\Z"), "a status"),
                          "ok, tainted or partial", "ok"),
            revision=_field(raw, "revision", _int, "an integer", 0),
            updated=_field(raw, "updated", float, "a number", 0.0),
        )
        _check_attrs(rec.address, rec.attrs)
        return rec


@attrs.define
class State:
    lineage: str
    run: str
    salt: str
    serial: int = 0
    seq: int = 0  # the last journal entry folded in
    resources: dict[str, ResourceState] = attrs.field(factory=dict)
    pending: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # key -> intent entry
    version: int = STATE_VERSION

    @classmethod
    def new(cls, run: str) -> State:
        return cls(lineage=str(uuid.uuid4()), run=run, salt=_secrets.token_hex(16))

    def get(self, address: str) -> ResourceState | None:
        return self.resources.get(address)

    # ------------------------------------------------------------------ journal folding
    def fold(self, entry: Mapping[str, Any]) -> None:
        t = entry.get("t")
        seq = int(entry.get("seq", 0))
        if seq and seq <= self.seq:
            return  # already in the snapshot
        if t == "intent":
            self.pending[entry["key"]] = dict(entry)
        elif t == "put":
            self.serial += 1
            rec = ResourceState.from_json(entry["record"])
            rec.revision = self.serial
            self.resources[rec.address] = rec
            self.pending.pop(entry.get("key", ""), None)
        elif t == "rm":
            self.serial += 1
            self.resources.pop(entry["addr"], None)
            self.pending.pop(entry.get("key", ""), None)
        elif t == "done":
            self.pending.pop(entry.get("key", ""), None)
        elif t == "reconciled":
            for k in entry.get("keys", ()):
                self.pending.pop(k, None)
        elif t == "meta":
            pass
        else:
            raise StateError(f"unknown journal entry type {t!r}",
                             hint="this journal was written by a newer runform: use that version, "
                             "or restore the state from a backup")
        if seq:
            self.seq = seq

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "lineage": self.lineage,
            "run": self.run,
            "salt": self.salt,
            "serial": self.serial,
            "seq": self.seq,
            "written": time.time(),
            "resources": [r.to_json() for r in self.resources.values()],
            "pending": list(self.pending.values()),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> State:
        if not isinstance(raw, Mapping):
            raise StateError(f"the state is a JSON {type(raw).__name__}, not an object",
                             hint="restore the state from state.json.bak")
        version = raw.get("version")
        if version != STATE_VERSION:
            newer = isinstance(version, int) and version > STATE_VERSION
            raise StateError(
                f"state format version {version!r} is not supported (expected {STATE_VERSION})",
                hint="this state was written by a newer runform: use that version" if newer
                else "restore the state from state.json.bak",
            )
        try:
            st = cls(
                lineage=_field(raw, "lineage", _matching(_LINEAGE, "a lineage"), "a lineage (a UUID)"),
                run=_field(raw, "run", _matching(_RUN, "a run name"), "a run name (as the spec's `run`)"),
                salt=_field(raw, "salt", str, "a string"),
                serial=_field(raw, "serial", _int, "an integer"),
                seq=_field(raw, "seq", _int, "an integer", 0),
            )
            resources = _field(raw, "resources", _list, "a list", [])
            pending = _field(raw, "pending", _list, "a list", [])
        except FieldError as exc:
            raise StateError(str(exc), hint=_SNAPSHOT_HINT) from None
        for i, r in enumerate(resources):
            try:
                rec = ResourceState.from_json(r)
            except FieldError as exc:
                raise StateError(f"resources[{i}]: {exc}", hint=_SNAPSHOT_HINT) from None
            st.resources[rec.address] = rec
        for i, p in enumerate(pending):
            if not isinstance(p, Mapping):
                raise StateError(f"pending[{i}]: expected an object, got {type(p).__name__}",
                                 hint=_SNAPSHOT_HINT)
            try:
                st.pending[_field(p, "key", str, "a string")] = dict(p)
            except FieldError as exc:
                raise StateError(f"pending[{i}]: {exc}", hint=_SNAPSHOT_HINT) from None
        return st

    def addresses(self) -> Iterable[str]:
        return self.resources.keys()


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(value)
    return int(value)


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(value)
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(value)
    return value


def replay_entry(state: State | None, entry: Mapping[str, Any], where: str, *, reset_hint: str) -> State:
    """Fold one journal entry into ``state`` (a ``meta`` entry starts a new state).

    ``where`` names the entry in errors (``file:line`` or an object URI); ``reset_hint`` says how
    to discard a journal that has no header. Shared by every state backend.
    """
    if entry.get("t") == "meta" and state is None:
        try:
            return State(
                lineage=_field(entry, "lineage", _matching(_LINEAGE, "a lineage"), "a lineage (a UUID)"),
                run=_field(entry, "run", _matching(_RUN, "a run name"), "a run name (as the spec's `run`)"),
                salt=_field(entry, "salt", str, "a string"))
        except FieldError as exc:
            raise StateError(f"{where}: meta entry: {exc}",
                             hint="restore the state from a backup (a new state would not "
                             "know what this one rented)") from None
    if state is None:
        raise StateError(f"{where}: journal without a state header", hint=reset_hint)
    try:
        state.fold(entry)
    except StateError as exc:
        raise StateError(f"{where}: {exc.message}", hint=exc.hint) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = str(exc) if isinstance(exc, FieldError) else f"field {exc}"
        raise StateError(f"{where}: malformed journal entry ({detail})",
                         hint="restore the state from a backup; if this is the last entry written, "
                         "remove it") from None
    return state
