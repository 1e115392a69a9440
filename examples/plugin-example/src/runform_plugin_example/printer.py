"""The ``printer`` tracker: the run's events and metrics as JSON lines in one file.

Spec::

    tracker:
      kind: printer
      path: events.jsonl      # default .runform/printer-events.jsonl; relative to the spec's folder

Each line is one JSON object with ``ts`` (unix seconds) and ``type``::

    {"ts": ..., "type": "start", "run_id": ..., "name": ..., "config": {...}}
    {"ts": ..., "type": "metrics", "stage": "train", "step": 3, "metrics": {"loss": 0.25}}
    {"ts": ..., "type": "artifact", "name": ..., "uri": ..., "version": ..., "files": 2, "bytes": 10}
    {"ts": ..., "type": "<event type>", ...}      # runform's events: plan, apply_start, ...
    {"ts": ..., "type": "finish", "run_id": ...}

Every line passes through the context's redactor first, so secrets never reach the file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runform.errors import RunformError

DEFAULT_FILE = "printer-events.jsonl"  # inside the state folder (.runform/) when `path` is absent


class PrinterTracker:
    """Satisfies :class:`runform.interfaces.Tracker`.

    :param config: the spec's ``tracker`` block (``kind``, ``path``).
    :param ctx: a :class:`runform.interfaces.TrackerContext` (``run``, ``lineage``,
        ``state_dir``, ``spec_dir``, ``redactor``).
    """

    def __init__(self, config: Mapping[str, Any], ctx: Any) -> None:
        raw = (config or {}).get("path")
        if raw is None:
            self.path = Path(ctx.state_dir) / DEFAULT_FILE
        elif isinstance(raw, str) and raw.strip():
            path = Path(raw).expanduser()
            self.path = path if path.is_absolute() else Path(ctx.spec_dir) / path
        else:
            raise RunformError(
                f"tracker.path: expected a file name, got {raw!r}",
                hint="write e.g. `path: events.jsonl` (relative to the spec's folder)",
            )
        self.ctx = ctx
        self.run_id: str | None = None
        self._lock = threading.Lock()  # apply runs actions on several threads

    # ------------------------------------------------------------------ Tracker protocol
    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        """Start (or resume: same ``run_id``) the run. Stage code may append to the same file."""
        self.run_id = run_id
        self._write({"type": "start", "run_id": run_id, "name": name, "config": dict(config)})
        return {"RUNFORM_RUN_ID": run_id, "RUNFORM_PRINTER_PATH": str(self.path)}

    def log_metrics(
        self, metrics: Mapping[str, float], *, stage: str, step: int | None = None
    ) -> None:
        self._write(
            {
                "type": "metrics",
                "stage": stage,
                "step": step,
                "metrics": {str(k): _number(v) for k, v in metrics.items()},
            }
        )

    def log_event(self, event: Mapping[str, Any]) -> None:
        doc = {k: v for k, v in event.items() if k != "ts"}
        doc["type"] = str(doc.get("type") or "event")
        self._write(doc)

    def link_artifact(self, name: str, uri: str, manifest: Any) -> None:
        entries = tuple(getattr(manifest, "entries", ()))
        self._write(
            {
                "type": "artifact",
                "name": name,
                "uri": uri,
                "version": getattr(manifest, "version", None),
                "files": len(entries),
                "bytes": sum(int(e.size) for e in entries),
            }
        )

    def finish(self) -> None:
        self._write({"type": "finish", "run_id": self.run_id})

    # ------------------------------------------------------------------ helpers
    def events(self) -> list[dict[str, Any]]:
        """Every event written so far (a torn last line is skipped)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def _write(self, doc: Mapping[str, Any]) -> None:
        line = json.dumps(self._redact({"ts": round(time.time(), 6), **doc}), default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write on an O_APPEND descriptor: concurrent writers never interleave in a line.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def _redact(self, value: Any) -> Any:
        redact = getattr(self.ctx, "redact", None)  # TrackerContext.redact
        if callable(redact):
            return redact(value)
        redactor = getattr(self.ctx, "redactor", None)  # any context with a redactor callable
        return redactor(value) if callable(redactor) else value


def _number(v: Any) -> Any:
    if isinstance(v, bool | int):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
