"""Injected HTTP faults of the stand-in: the per-caller call spacing Vast enforces (a 429 for a
call that comes too soon) and the scripted or random 429s and 5xx (:class:`~.faults.Faults`)."""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any

import attrs

from runform.testing.vast.faults import Faults


class HttpFaults:
    """The :class:`~.world.World`'s fault injection, under its lock."""

    lock: threading.RLock
    faults: Faults
    rng: random.Random
    _last_call: dict[tuple[str, str], float]

    def interval_fault(self, endpoint: str | None, caller: str, min_interval: float) -> tuple[int, dict[str, str], Any] | None:
        """With ``faults.enforce_intervals``: a plain-text 429 for a caller that calls
        ``endpoint`` again sooner than ``min_interval`` seconds (no Retry-After, as Vast)."""
        if endpoint is None or min_interval <= 0:
            return None
        with self.lock:
            if not self.faults.enforce_intervals:
                return None
            now = time.monotonic()
            last = self._last_call.get((endpoint, caller))
            if last is not None and now - last < min_interval:
                return 429, {}, f"API requests too frequent: endpoint threshold={min_interval:g}"
            self._last_call[(endpoint, caller)] = now
            return None

    def http_fault(self, method: str, path: str) -> tuple[int, dict[str, str], Any] | None:
        """An injected error for this request, or None: (status, headers, body)."""
        with self.lock:
            f = self.faults
            if f.only and not re.search(f.only, f"{method} {path}"):
                return None
            status = None
            if f.script:
                status, rest = f.script[0], f.script[1:]
                self.faults = attrs.evolve(f, script=rest)
            elif f.rate_429 or f.rate_5xx:  # shares of all requests: 429s, then 5xx
                draw = self.rng.random()
                if draw < f.rate_429:
                    status = 429
                elif draw < f.rate_429 + f.rate_5xx:
                    status = self.rng.choice([500, 502, 503, 504])
            if status is None:
                return None
            if status == 429:
                headers = {"Retry-After": f"{f.retry_after:g}"} if f.retry_after is not None else {}
                body: Any = self.rng.choice([
                    "API requests too frequent: endpoint threshold=1.0",
                    {"detail": "API requests too frequent endpoint threshold=4.5"},
                    {"success": False, "error": "rate_limit_exceeded", "msg": "API requests too frequent"},
                ])
                return 429, headers, body
            text = {500: "Internal Server Error", 502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
                    503: "Service Temporarily Unavailable", 504: "<html><h1>504 Gateway Time-out</h1></html>"}
            return status, {}, text.get(status, "error")
