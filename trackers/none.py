"""The ``none`` tracker: records nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import runform.hookspecs
from runform.interfaces import Manifest, TrackerContext


class NoneTracker:
    """Satisfies :class:`runform.interfaces.Tracker` and does nothing."""

    def __init__(self, config: Mapping[str, Any] | None = None,
                 ctx: TrackerContext | None = None) -> None:
        self.config = dict(config or {})

    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        return {"RUNFORM_RUN_ID": run_id}

    def log_metrics(self, metrics: Mapping[str, float], *, stage: str, step: int | None = None) -> None:
        pass

    def log_event(self, event: Mapping[str, Any]) -> None:
        pass

    def link_artifact(self, name: str, uri: str, manifest: Manifest) -> None:
        pass

    def finish(self) -> None:
        pass


@runform.hookspecs.hookimpl
def runform_register_trackers(register: Callable[..., None]) -> None:
    register("none", NoneTracker)
