"""Transfer rate and ETA from what the client observed (bytes between two readings of the
machine's count over the client's own clock), whatever the machine's clock says."""

from __future__ import annotations

import time
from typing import Any

import pytest

from runform.execution.watchers import ProgressReporter
from runform.progress import ObservedRate

MB = 1_000_000


class _Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def tell(self, type_: str, message: str, **fields: Any) -> dict[str, Any]:
        self.events.append({"type": type_, "@message": message, **fields})
        return self.events[-1]


def test_a_steady_rate_is_measured_between_readings() -> None:
    meter = ObservedRate()
    meter.update(0, 100.0)
    for i in range(1, 6):
        assert meter.update(10 * MB * i, 100.0 + i) == pytest.approx(10 * MB)
    assert meter.eta(50 * MB, 80 * MB) == pytest.approx(3.0)


def test_the_rate_follows_a_change_smoothly_and_a_count_stepping_back_starts_again() -> None:
    meter = ObservedRate(tau=10.0)
    meter.update(0, 0.0)
    meter.update(50 * MB, 5.0)  # 10 MB/s
    slower = meter.update(60 * MB, 10.0)  # 2 MB/s seen over the last 5 s
    assert slower is not None and 2 * MB < slower < 10 * MB  # smoothed, not jumping
    assert meter.update(5 * MB, 15.0) == slower  # a retry sent bytes again: a new baseline, same rate
    faster = meter.update(55 * MB, 20.0)  # 10 MB/s since the new baseline
    assert faster is not None and slower < faster < 10 * MB
    assert ObservedRate().eta(1, 2) is None  # no rate yet: no ETA


@pytest.mark.parametrize("skew_s", [-3600.0, 0.0, 3600.0, 86400.0])
def test_a_skewed_machine_clock_does_not_change_rate_or_eta(skew_s: float) -> None:
    """The machine's ``started`` is an hour behind, in time, an hour or a day ahead of the
    client's clock: the transfer events say the same 8 MB/s and the same ETA."""
    sink = _Sink()
    reporter = ProgressReporter(sink, agent=None, address="artifact.model", name="model",  # type: ignore[arg-type]
                                kind="artifact", verb="pushed", ident="p1")
    started = time.time() + skew_s  # the machine's clock
    t0 = 1000.0  # the client's monotonic clock when the push began
    reporter.meter.update(0, t0)
    total = 100 * MB
    for i in range(1, 5):
        reporter.reading({"bytes": 8 * MB * 2 * i, "total": total, "started": started, "id": "p1"}, t0 + 2.0 * i)
    transfers = [e for e in sink.events if e["type"] == "transfer"]
    assert len(transfers) == 4
    for e in transfers:
        assert e["rate"] == pytest.approx(8 * MB, rel=1e-6)
        assert e["eta"] == pytest.approx((total - e["bytes"]) / (8 * MB), abs=0.1)
    assert "(8.0 MB/s, ETA 4.5s)" in transfers[-1]["@message"], transfers[-1]["@message"]


def test_a_reading_of_another_push_or_an_unchanged_count_tells_nothing() -> None:
    sink = _Sink()
    reporter = ProgressReporter(sink, agent=None, address="artifact.model", name="model",  # type: ignore[arg-type]
                                kind="artifact", verb="pushed", ident="p2")
    reporter.meter.update(0, 0.0)
    reporter.reading({"bytes": 5 * MB, "total": 10 * MB, "started": 1.0, "id": "older"}, 1.0)
    assert sink.events == []
    reporter.reading({"bytes": 5 * MB, "total": 10 * MB, "started": 1.0, "id": "p2"}, 1.0)
    reporter.reading({"bytes": 5 * MB, "total": 10 * MB, "started": 1.0, "id": "p2"}, 2.0)
    assert len(sink.events) == 1 and sink.events[0]["rate"] == pytest.approx(5 * MB)
