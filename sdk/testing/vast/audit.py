"""What happened inside the stand-in: requests, creates, live and destroyed instances."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class RequestRecord:
    method: str
    path: str
    status: int  # 0 when the connection was dropped unanswered
    at: float  # time.monotonic() when the request arrived
    fault: str | None = None  # what was injected, if anything


@attrs.frozen
class CreateRecord:
    instance_id: int
    offer_id: int
    machine_id: int
    label: str
    answered: str  # "ok", "lost-500", "lost-drop", "failed-with-contract"


@attrs.frozen
class Audit:
    """A snapshot. ``instances`` maps every instance ever made to its details (``visible``:
    show still answers it; ``listed``: the list endpoints show it, see ``Faults.list_lag_s``)."""

    requests: tuple[RequestRecord, ...]
    creates: tuple[CreateRecord, ...]
    live: tuple[int, ...]
    destroyed: tuple[int, ...]
    preempted: tuple[int, ...]
    stop_requests: tuple[int, ...]  # instance ids someone asked to stop (runform never should)
    instances: Mapping[int, Mapping[str, Any]]

    def creates_for(self, label: str) -> list[CreateRecord]:
        """Instances made for one label (an intent): runform should make exactly one."""
        return [c for c in self.creates if c.label == label]

    def live_for(self, label: str) -> list[int]:
        return [i for i in self.live if self.instances[i]["label"] == label]

    def requests_to(self, method: str, path_prefix: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": [attrs.asdict(r) for r in self.requests],
            "creates": [attrs.asdict(c) for c in self.creates],
            "live": list(self.live),
            "destroyed": list(self.destroyed),
            "preempted": list(self.preempted),
            "stop_requests": list(self.stop_requests),
            "instances": {str(k): dict(v) for k, v in self.instances.items()},
        }
