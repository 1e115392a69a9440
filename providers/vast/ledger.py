"""The provider's own record of the create calls it sent, one small JSON file per label.

Vast's instance list can lag behind a create. An apply killed right after a create (before
runform's state learned the instance id) would otherwise leave the next plan with nothing
but one lagging list call to go on, and the next apply would rent a second machine. So every
create call is written here *before* it is sent (``instance`` null), and its instance id as
soon as the answer says it. Lookups by label (:meth:`VastProvider.find`, the adoption in
``create``, ``destroy``) read this record: an instance it names is shown directly (show does
not lag), and a call whose answer never came is waited for (the list polled) until
``settle_s`` seconds after it was sent. Entries are dropped once the list shows their instance,
the instance is gone, or (answer never came) the wait is over.

File: ``<state_dir>/vast/creates/<label>.json``; written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from runform.atomic import atomic_write

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class CreateLedger:
    """The create calls sent for one label. Entries: ``{"sent": epoch s, "offer": id,
    "instance": id or None}``."""

    def __init__(self, state_dir: Path, label: str) -> None:
        name = _SAFE.sub("_", label)[:200] or "_"
        self.path = Path(state_dir) / "vast" / "creates" / f"{name}.json"
        self.label = label

    def load(self) -> list[dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        entries = raw.get("creates") if isinstance(raw, dict) and raw.get("label") == self.label else None
        if not isinstance(entries, list):
            return []
        out = []
        for e in entries:
            if isinstance(e, dict) and isinstance(e.get("sent"), int | float):
                inst = e.get("instance")
                out.append({"sent": float(e["sent"]), "offer": e.get("offer"),
                            "instance": int(inst) if isinstance(inst, int) else None})
        return out

    def save(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        atomic_write(self.path, json.dumps({"label": self.label, "creates": entries}))

    def sent(self, offer_id: int) -> float:
        """Record a create call about to be sent; returns its key (the send time)."""
        entries = self.load()
        key = time.time()
        while any(e["sent"] == key for e in entries):
            key += 1e-6
        entries.append({"sent": key, "offer": int(offer_id), "instance": None})
        self.save(entries)
        return key

    def answered(self, key: float, instance_id: int) -> None:
        """The create call ``key`` made ``instance_id``."""
        entries = self.load()
        for e in entries:
            if e["sent"] == key:
                e["instance"] = int(instance_id)
        self.save(entries)

    def drop(self, *, key: float | None = None, instances: set[int] | frozenset[int] = frozenset()) -> None:
        """Forget the call ``key`` (answered: it made nothing) and every entry naming one of
        ``instances`` (gone, or shown by the list)."""
        entries = self.load()
        kept = [e for e in entries if e["sent"] != key and e["instance"] not in instances]
        if len(kept) != len(entries):
            self.save(kept)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
