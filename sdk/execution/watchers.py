"""What runs beside a handler while it waits on the machine: the Ctrl-C watcher that aborts a
transfer, the reporter that turns the agent's progress file into ``transfer`` events, and the
stream of a running stage's log lines."""

from __future__ import annotations

import time
from typing import Any

from runform.agent.client import AgentClient
from runform.progress import Interrupted, ObservedRate
from runform.workspace import Workspace


class AbortOn:
    """While a transfer runs on a worker thread, watch ``stop`` (set by the first Ctrl-C): when
    it is set, abort the transport's transfers under way (within a fraction of a second) and
    report the action as interrupted rather than failed. Nothing half-sent has its final name,
    so the next apply moves only what is missing."""

    def __init__(self, stop: Any, transport: Any, address: str) -> None:
        import threading

        self.stop, self.transport, self.address = stop, transport, address
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="runform-abort")

    def _watch(self) -> None:
        while not self._done.is_set():
            if self.stop.wait(0.1):
                # again until the transfer gives up: a sync in batches opens a channel per batch
                while not self._done.is_set() and hasattr(self.transport, "abort"):
                    self.transport.abort()
                    self._done.wait(0.02)
                return

    def __enter__(self) -> AbortOn:
        if self.stop is not None:
            self._thread.start()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self._done.set()
        if exc is not None and self.stop is not None and self.stop.is_set() \
                and not isinstance(exc, Interrupted):
            raise Interrupted(f"{self.address}: transfer stopped (Ctrl-C); apply again to resume it") from exc


class ProgressReporter:
    """While a hydration (or, with ``kind="artifact"``, a push) runs on the machine, print
    bytes, rate and ETA every few seconds. The rate is what this process observed between its
    readings of the machine's count (:class:`ObservedRate`), never the machine's clock."""

    def __init__(self, ws: Workspace, agent: AgentClient, address: str, name: str, every: float = 5.0,
                 *, kind: str = "dataset", verb: str = "", ident: str | None = None) -> None:
        import threading

        self.ws, self.agent, self.address, self.name, self.every = ws, agent, address, name, every
        self.kind, self.verb, self.ident = kind, verb + " " if verb else "", ident
        self._said: Any = None  # the last count told (a count that has not moved is not told again)
        self._telling = threading.Lock()  # no line after __exit__: the caller's final one is last
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"progress-{name}")
        self.meter = ObservedRate()

    def __enter__(self) -> ProgressReporter:
        self.meter.update(0, time.monotonic())  # the transfer starts now, from nothing
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._telling:
            self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                p = self.agent.call("progress", name=self.name, kind=self.kind)
            except Exception:  # noqa: BLE001 - progress is best effort
                continue
            self.reading(p, time.monotonic())

    def reading(self, p: dict[str, Any], now: float) -> None:
        """One reading of the machine's progress file (``p``), taken at ``now`` (this process's
        monotonic clock): a ``transfer`` event when the count moved. The file's ``started`` (the
        machine's clock) only says that the transfer has begun."""
        from runform.durations import format_duration

        done, total, started = p.get("bytes", 0), p.get("total", 0), p.get("started")
        if not started or not total or (self.ident and p.get("id") != self.ident):  # not begun
            return
        rate = self.meter.update(done, now) or 0.0
        if done == self._said or (self.ident and done >= total):  # a push's final line says that
            return
        eta_s = self.meter.eta(done, total)
        eta = format_duration(eta_s) if eta_s is not None else "?"
        with self._telling:
            if self._stop.is_set():
                return
            self._said = done
            self.ws.tell("transfer", f"{self.address}: {self.verb}{done / 1e6:.1f}/{total / 1e6:.1f} MB "
                         f"({rate / 1e6:.1f} MB/s, ETA {eta})", address=self.address, bytes=done,
                         total=total, rate=round(rate, 1), eta=round(eta_s, 1) if eta_s is not None else None)


class LogStream:
    """A running stage's new log lines, each sent as a ``log`` event and printed with the
    stage's address in front (the partial last line waits for its end). With ``node`` (a stage
    on several nodes) the prefix names the node too (``stage.train node 1:``) and the event
    carries ``node``."""

    def __init__(self, ws: Workspace, agent: AgentClient, address: str, stage: str, fingerprint: str | None,
                 node: int | None = None) -> None:
        self.ws, self.agent, self.address, self.stage, self.fp = ws, agent, address, stage, fingerprint
        self.node, self.prefix = node, address if node is None else f"{address} node {node}"
        self.offset, self.partial, self.lines = 0, "", 0

    def pump(self) -> None:
        try:
            r = self.agent.call("tail", stage=self.stage, fingerprint=self.fp, offset=self.offset, limit=1 << 20)
        except Exception:  # noqa: BLE001 - streaming is best effort; `runform logs` reads it all
            return
        self.offset = r["offset"]
        text = self.partial + r["data"]
        *whole, self.partial = text.split("\n")
        if r.get("state") != "running" and self.partial:
            whole, self.partial = [*whole, self.partial], ""
        for line in whole:
            self.lines += 1
            extra = {} if self.node is None else {"node": self.node}
            self.ws.tell("log", f"{self.prefix}: {line.rstrip()}", address=self.address, stage=self.stage,
                         line=line.rstrip(), **extra)
