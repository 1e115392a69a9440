"""The ``jsonl`` tracker (the local default): one JSON object per line in
``<state_dir>/runs/<run>/events.jsonl``.

Every line has ``ts`` (unix seconds) and ``type``::

    {"ts": ..., "type": "start", "run_id": ..., "name": ..., "config": {...}, "resumed": false}
    {"ts": ..., "type": "metrics", "stage": "train", "step": 3, "metrics": {"loss": 0.1}}
    {"ts": ..., "type": "image", "stage": "eval", "name": "rollout", "path": ..., "sha256": ...}
    {"ts": ..., "type": "artifact", "name": ..., "uri": ..., "version": ..., "digest": ...}
    {"ts": ..., "type": "<event type>", ...}          # log_event; "event" when untyped
    {"ts": ..., "type": "finish", "run_id": ...}

Lines are redacted, then appended with a single ``write`` on an ``O_APPEND`` descriptor,
so concurrent writers never interleave within a line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import runform.hookspecs
from runform.interfaces import Manifest, TrackerContext


class JsonlTracker:
    """Appends the run's events to a JSON-lines file."""

    def __init__(self, config: Mapping[str, Any], ctx: TrackerContext) -> None:
        self.config = dict(config or {})
        self.ctx = ctx
        self.path = Path(ctx.state_dir) / "runs" / _safe(ctx.run) / "events.jsonl"
        self.run_id: str | None = None
        self._lock = threading.Lock()

    def _write(self, doc: Mapping[str, Any]) -> None:
        line = json.dumps(self.ctx.redact({"ts": round(time.time(), 6), **doc}),
                          sort_keys=False, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        resumed = any(e.get("type") == "start" and e.get("run_id") == run_id for e in self.events())
        self.run_id = run_id
        self._write({"type": "start", "run_id": run_id, "name": name, "config": dict(config),
                     "resumed": resumed})
        return {"RUNFORM_RUN_ID": run_id, "RUNFORM_RUN_NAME": self.ctx.redact(name),
                "RUNFORM_TRACKER": "jsonl"}

    def log_metrics(self, metrics: Mapping[str, float], *, stage: str, step: int | None = None) -> None:
        self._write({"type": "metrics", "stage": stage, "step": step,
                     "metrics": {str(k): _number(v) for k, v in metrics.items()}})

    def log_image(self, name: str, path: Path, *, stage: str, source: str) -> None:
        """Record an image a stage made: its copy under ``.runform/media/`` and its digest."""
        import hashlib

        data = Path(path).read_bytes()
        self._write({"type": "image", "stage": stage, "name": name, "path": str(path), "source": source,
                     "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})

    def log_event(self, event: Mapping[str, Any]) -> None:
        doc = dict(event)
        doc["type"] = str(doc.get("type") or "event")
        doc.pop("ts", None)
        self._write(doc)

    def link_artifact(self, name: str, uri: str, manifest: Manifest) -> None:
        self._write({"type": "artifact", "name": name, "uri": uri, "version": manifest.version,
                     "digest": manifest.digest, "files": len(manifest.entries),
                     "bytes": manifest.total_bytes})

    def finish(self) -> None:
        self._write({"type": "finish", "run_id": self.run_id})

    def events(self) -> Iterator[dict[str, Any]]:
        """The events written so far (a torn last line is skipped)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except FileNotFoundError:
            return


def _number(v: Any) -> Any:
    try:
        return float(v) if not isinstance(v, bool | int) else v
    except (TypeError, ValueError):
        return str(v)


def _safe(run: str) -> str:
    """A run name as one path component."""
    return run.replace("/", "_").replace("\\", "_").strip(".") or "run"


@runform.hookspecs.hookimpl
def runform_register_trackers(register: Callable[..., None]) -> None:
    register("jsonl", JsonlTracker)
