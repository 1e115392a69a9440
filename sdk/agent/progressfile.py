"""Transfer progress on the machine: a hydration (or an artifact's push) writes it, the client's
``progress`` call reads it (``kind: artifact`` for a push)."""

from __future__ import annotations

import json
from typing import Any

from runform.agent.layout import dataset_record, push_progress_path
from runform.atomic import atomic_write

class ProgressFile:
    """Counts bytes moved and writes ``{"bytes", "total", "started"}`` at most twice a second,
    so the client can show bytes, rate and ETA while the transfer runs."""

    def __init__(self, path: str, total: int, ident: str | None = None) -> None:
        import threading
        import time

        self.path, self.total, self.done, self.ident = path, total, 0, ident
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
        if self.ident:  # which transfer this is (a reader skips an older one's file)
            doc["id"] = self.ident
        import os

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write(self.path, json.dumps(doc).encode())


def progress(req: dict[str, Any]) -> dict[str, Any]:
    try:
        path = push_progress_path(req["root"], req["name"]) if req.get("kind") == "artifact" \
            else dataset_record(req["root"], req["name"]) + ".progress"
        with open(path) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {"bytes": 0, "total": 0, "started": None}
    except (OSError, ValueError, RecursionError):
        return {"bytes": 0, "total": 0, "started": None}
