"""Progress events: what apply and destroy report while they work, as JSON-able dicts.

One :class:`Events` per apply fans each event out to its sinks: the CLI's renderer (plain
lines, or one JSON object per line with ``--json``), the Python API's ``on_event`` callback
and the run registry behind ``runform status``. Every event has ``type``, ``@message`` (what a
person reads) and ``@timestamp``; the types and their fields are documented in
``docs/events.md`` and checked against ``docs/schemas/event.schema.json``.

A sink that raises is dropped from nothing and never fails the apply: progress is reporting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from runform.errors import RunformError

Event = dict[str, Any]
Sink = Callable[[Event], None]

_VERBS = {"create": "creating", "update": "modifying", "replace": "replacing", "delete": "destroying",
          "read": "reading", "attach": "attaching", "forget": "forgetting"}


def still_line(address: str, kind: str, elapsed: float, phase: str | None = None) -> str:
    """Terraform's ``Still creating... [10s elapsed]``, with the phase when one is known."""
    from runform.durations import format_duration

    what = f" ({phase})" if phase else ""
    shown = format_duration(round(elapsed) if elapsed >= 10 else elapsed)
    return f"{address}: Still {_VERBS.get(kind, kind)}...{what} [{shown} elapsed]"


class Events:
    """Fans events out to sinks; thread-safe (actions run in threads)."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks = [s for s in sinks if s is not None]
        self._lock = threading.Lock()
        self.phases: dict[str, str] = {}  # address -> its last reported phase

    def add(self, sink: Sink | None) -> None:
        if sink is not None:
            self._sinks.append(sink)

    def emit(self, type_: str, message: str, **fields: Any) -> Event:
        event: Event = {"type": type_, "@message": message,
                        "@timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        **fields}
        if type_ == "phase" and "address" in fields:
            self.phases[fields["address"]] = str(fields.get("phase"))
        with self._lock:
            for sink in list(self._sinks):
                try:
                    sink(event)
                except Exception:  # noqa: BLE001 - reporting never fails the work it reports
                    pass
        return event


class Ticker:
    """While actions run, emit ``action_progress`` for each every ``every`` seconds of its own
    (with the elapsed time and its last phase), so that no action is ever silent for long."""

    def __init__(self, events: Events, every: float = 10.0) -> None:
        self.events, self.every = events, max(0.05, every)
        self._running: dict[str, tuple[str, float, int]] = {}  # address -> kind, start, ticks said
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="runform-progress")

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def begin(self, address: str, kind: str) -> None:
        with self._lock:
            self._running[address] = (kind, time.monotonic(), 0)

    def end(self, address: str) -> None:
        with self._lock:
            self._running.pop(address, None)

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.every / 5)):
            due = []
            with self._lock:
                now = time.monotonic()
                for address, (kind, t0, said) in self._running.items():
                    ticks = int((now - t0) / self.every)
                    if ticks > said:
                        self._running[address] = (kind, t0, ticks)
                        due.append((address, kind, now - t0))
            for address, kind, elapsed in due:
                phase = self.events.phases.get(address)
                self.events.emit("action_progress", still_line(address, kind, elapsed, phase),
                                 address=address, action=kind, elapsed=round(elapsed, 1), phase=phase)


class ObservedRate:
    """A transfer's rate as this process sees it, from counts read off the machine: the bytes
    between two readings over this process's own clock between them, smoothed (exponentially,
    over about ``tau`` seconds). The machine's clock is never used, so a skew between the two
    cannot distort the rate or the ETA. A count that steps back (a retry, a newer transfer's
    file) starts again from that reading and keeps the rate so far."""

    def __init__(self, tau: float = 10.0) -> None:
        self.tau = tau
        self.rate: float | None = None  # B/s, None until two readings
        self._last: tuple[float, int] | None = None

    def update(self, done: int, now: float) -> float | None:
        """Take a reading (``done`` bytes at ``now``, this process's monotonic clock)."""
        import math

        if self._last is None or done < self._last[1]:
            self._last = (now, done)
            return self.rate
        then, before = self._last
        dt = now - then
        if dt <= 0:
            return self.rate
        seen = (done - before) / dt
        self.rate = seen if self.rate is None else self.rate + (1 - math.exp(-dt / self.tau)) * (seen - self.rate)
        self._last = (now, done)
        return self.rate

    def eta(self, done: int, total: int) -> float | None:
        """Seconds left at the current rate (None while the rate is unknown or nil)."""
        return max(0, total - done) / self.rate if self.rate else None


class Interrupted(RunformError):
    """Apply was interrupted while waiting; a remote job goes on and is attached to next time."""


class SendMeter:
    """A transfer's ``progress`` callback: a ``transfer`` event (bytes, total, rate, ETA) every few
    seconds for a transfer over a few MB, printed as a line. ``ws`` is the workspace (its
    ``tell``); ``total`` may be set later (a code sync sets it to the bytes it will send), and
    ``resumed`` (bytes an interrupted transfer already left there, not counted in ``total``)."""

    def __init__(self, ws: Any, address: str, total: int, every: float = 5.0) -> None:
        self.ws, self.address, self.total, self.every = ws, address, total, every
        self.done = self.resumed = 0
        self.started = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.total < (8 << 20) or now - self._last < self.every:
            return
        self._last = now
        from runform.durations import format_duration

        rate = self.done / max(1e-6, now - self.started)
        left = max(0, self.total - self.done)
        eta = format_duration(left / rate) if rate > 0 else "?"
        done = min(self.done, self.total)
        more = {"resumed": self.resumed} if self.resumed else {}
        was = f"resumed at {self.resumed / 1e6:.1f} MB, " if self.resumed else ""
        self.ws.tell("transfer", f"{self.address}: sent {done / 1e6:.1f}/{self.total / 1e6:.1f} MB "
                     f"({was}{rate / 1e6:.1f} MB/s, ETA {eta})", address=self.address, bytes=done,
                     total=self.total, rate=round(rate, 1), eta=round(left / rate, 1) if rate > 0 else None,
                     **more)
