"""The Vast client's HTTP plumbing: settings (retry policy, key and URL from the environment,
call spacing), error wording that never shows the key, and the per-endpoint throttle."""

from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

log = logging.getLogger("runform.providers.vast")

DEFAULT_URL = "https://console.vast.ai"
API_PREFIX = "/api/v0"
LIST_PATH = "/api/v1/instances/"
LIST_PAGE = 25  # the v1 list's maximum page size
CONNECT_TIMEOUT = 4.0  # seconds; two tries stay under 10 s when the host cannot be reached
CONNECT_ATTEMPTS = 2

#: Vast's documented minimum seconds between calls to one endpoint (its per-endpoint specs'
#: ``x-rate-limit`` thresholds; ``/bundles/`` is "low-volume burst", about 2 s).
VAST_MIN_INTERVALS: Mapping[str, float] = {
    "POST /api/v0/bundles/": 2.0,
    "PUT /api/v0/asks/{id}/": 4.5,
    "GET /api/v0/instances/{id}/": 2.0,
    "GET /api/v1/instances/": 1.0,
    "DELETE /api/v0/instances/{id}/": 3.0,
    "PUT /api/v0/instances/{id}/": 1.0,
    "POST /api/v0/instances/{id}/ssh/": 2.0,
}

#: What a row or a show says when the instance is gone (a destroyed one may linger a while).
GONE_STATES = frozenset({"destroyed", "terminated"})


class _Transient(Exception):
    """A retryable failure inside one attempt (not raised to callers)."""

    def __init__(self, what: str, *, status: int | None = None, retry_after: float | None = None,
                 unreachable: bool = False) -> None:
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after
        self.unreachable = unreachable


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# --------------------------------------------------------------------------- config


@attrs.frozen
class RetryPolicy:
    """How hard to retry 429/5xx: ``attempts`` in all, backoff from ``initial`` up to ``max_wait``."""

    attempts: int = 10
    initial: float = 0.5
    max_wait: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After is reported, not waited out
    max_elapsed: float = 600.0


def resolve_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The API key from ``VAST_API_KEY``, else the vastai CLI's key file; None when absent."""
    env = os.environ if environ is None else environ
    if env.get("VAST_API_KEY"):
        return env["VAST_API_KEY"].strip()
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for path in (config_home / "vastai" / "vast_api_key", Path.home() / ".vast_api_key"):
        if path.is_file():
            key = path.read_text(encoding="utf-8").strip()
            if key:
                return key
    return None


def resolve_base_url(environ: Mapping[str, str] | None = None) -> str:
    """``VAST_API_URL`` (an ``/api/v0`` suffix is tolerated) or the default console URL."""
    env = os.environ if environ is None else environ
    url = (env.get("VAST_API_URL") or DEFAULT_URL).rstrip("/")
    return url[: -len(API_PREFIX)] if url.endswith(API_PREFIX) else url


def _is_vast_host(host: str) -> bool:
    return host == "vast.ai" or host.endswith(".vast.ai")


def spacing_wanted(host: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether calls are spaced by :data:`VAST_MIN_INTERVALS`: on for ``*.vast.ai``, or as
    ``RUNFORM_VAST_SPACING`` (``on``/``off``) says."""
    env = os.environ if environ is None else environ
    setting = (env.get("RUNFORM_VAST_SPACING") or "auto").strip().lower()
    if setting in ("on", "1", "true", "yes"):
        return True
    if setting in ("off", "0", "false", "no"):
        return False
    return _is_vast_host(host)


def is_gone(row: Mapping[str, Any] | None) -> bool:
    """Whether an instance row means "gone": absent, ``cur_state`` unloaded, or
    ``actual_status`` destroyed/terminated (Vast keeps destroyed rows around for a while)."""
    if not row:
        return True
    status = str(row.get("actual_status") or "").strip().lower()
    return status in GONE_STATES or str(row.get("cur_state") or "").strip().lower() == "unloaded"


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def _endpoint(method: str, path: str) -> str:
    """``PUT /asks/123/`` → ``PUT /asks/{id}/`` (the key for per-endpoint limits)."""
    return method + " " + _ID_SEGMENT.sub("/{id}", path)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _describe(resp: httpx.Response, secret: str | None = None) -> str:
    """``404 not_found: Instance not found`` from whatever shape the error body has."""
    body = _json(resp)
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "msg", "detail", "message") if body.get(k)]
        text = ": ".join(parts) if parts else str(body)
    else:
        text = " ".join(resp.text.split())[:200]
    if secret:
        text = text.replace(secret, "***")
    return f"{resp.status_code} {text}".strip()


class _Throttle:
    """Keeps a minimum interval between calls to the same endpoint, across every runform process
    of this user with the same API key (Vast counts per key, and each command is a new process):
    the last call per endpoint is kept in ``shared`` (a small JSON file, under an flock) when
    given. A 50 ms margin absorbs the difference between when a call leaves and when it lands."""

    MARGIN_S = 0.05

    def __init__(self, intervals: Mapping[str, float], sleep: Callable[[float], None],
                 shared: Path | None = None) -> None:
        self._intervals = dict(intervals)
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sleep = sleep
        self._shared = shared

    def wait(self, endpoint: str) -> None:
        gap = self._intervals.get(endpoint, 0.0)
        if gap <= 0:
            return
        gap += self.MARGIN_S
        with self._lock:
            now = time.time()
            if self._shared is not None:
                due = self._claim_shared(endpoint, gap, now)
            else:
                due = self._last.get(endpoint, -1e12) + gap
                self._last[endpoint] = max(now, due)
        if due > now:
            self._sleep(due - now)

    def _claim_shared(self, endpoint: str, gap: float, now: float) -> float:
        """When this call may go, read and written under an exclusive lock on the shared file."""
        import fcntl
        import json

        try:
            self._shared.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            fd = os.open(self._shared, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # no writable cache: this process's own spacing still holds
            self._shared = None
            due = self._last.get(endpoint, -1e12) + gap
            self._last[endpoint] = max(now, due)
            return due
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                last = json.loads(f.read() or "{}")
            except ValueError:
                last = {}
            if not isinstance(last, dict):
                last = {}
            prev = last.get(endpoint)
            due = (float(prev) if isinstance(prev, (int, float)) else -1e12) + gap
            last[endpoint] = max(now, due)
            f.seek(0)
            f.truncate()
            f.write(json.dumps(last))
        return due


def shared_spacing_file(api_key: str) -> Path:
    """Where the spacing of calls made with ``api_key`` is shared between processes: the user's
    cache folder, named by a hash of the key (never the key itself)."""
    import hashlib

    from runform.cachedir import cache_dir

    return cache_dir(f"vast-spacing-{hashlib.sha256(api_key.encode()).hexdigest()[:16]}.json")
