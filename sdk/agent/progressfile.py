"""Hydration progress on the machine: the fetch writes it, the client's ``progress`` call reads it."""

from __future__ import annotations

import json
from typing import Any

from runform.agent.layout import dataset_record
from runform.atomic import atomic_write

class ProgressFile:
    """Counts bytes fetched and writes ``{"bytes", "total", "started"}`` at most twice a second,
    so the client can show bytes, rate and ETA while the hydration runs."""

    def __init__(self, path: str, total: int) -> None:
        import threading
        import time

        self.path, self.total, self.done = path, total, 0
        self.started = self._last = time.time()
        self._lock = threading.Lock()
        self._write()

    def __call__(self, n: int) -> None:
        import time

        with self._lock:
            self.done += n
            if time.time() - self._last >= 0.5:
                self._last = time.time()
                self._write()

    def _write(self) -> None:
        doc = {"bytes": self.done, "total": self.total, "started": self.started}
        atomic_write(self.path, json.dumps(doc).encode())


def progress(req: dict[str, Any]) -> dict[str, Any]:
    try:
        with open(dataset_record(req["root"], req["name"]) + ".progress") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {"bytes": 0, "total": 0, "started": None}
    except (OSError, ValueError, RecursionError):
        return {"bytes": 0, "total": 0, "started": None}
