"""The lease locks of the remote state (``s3://`` and ``b2://``), with a heartbeat and a fence.

This module holds what they share (the lease, the heartbeat, the fence, error handling); two
protocols behind one interface (``acquire``, ``release``, ``force_unlock``, ``current``,
``check``):

A 409 ``ConditionalRequestConflict`` (AWS: another conditional request on the same key was in
flight) is transient everywhere: read the ETag again, retry with a bounded backoff
(:func:`retry_conflicts`, tenacity). Only a 412 or a 404 on renewal means the lock was lost.

- :class:`~runform.state.lock_conditional.S3Lock`: ``PUT <key>.lock`` with ``If-None-Match: *`` (a 412 means it is held). The
  holder renews it every lease/3 with a PUT conditional on its ETag (``If-Match``); a lapsed
  lock is removed with a DELETE conditional on its ETag, then created again.
- :class:`~runform.state.lock_versioned.VersionedLock`: B2 has no conditional writes (storage.md §4), so the versioned-lock
  fallback: every contender PUTs a version of ``<key>.lock``, lists the versions of exactly
  that key, and the earliest live version (by ``LastModified``, then lock ID) wins, after a
  second listing ``settle`` seconds later. Losers delete their own version by ``VersionId``.
  The holder proves it is alive with ``<key>.lock.<id>.hb``, rewritten every lease/3.

Liveness is judged on the server's clock (the ``Date`` of the response that listed or read
the lock, against the lock's or its heartbeat's ``LastModified``), so the clocks of the
machines involved do not matter. A lock whose holder ran on this very boot of this machine
and whose process is gone is taken over at once.

botocore is imported lazily (only exceptions are inspected here), so importing this module
costs nothing.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs
from runform.errors import LockError, RunformError, StateError
from runform.state.lock import LockInfo, _alive, _user
from runform.storage.s3conn import credentials_missing, error_code, http_status, unreachable


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


T = TypeVar("T")
BOOT_ID = _boot_id()  # a holder with the same boot ID runs on this machine, this boot


# --------------------------------------------------------------------------- errors


def precondition_failed(exc: BaseException) -> bool:
    """A conditional request whose condition is false: 412 (the object is someone else's)."""
    return error_code(exc) == "PreconditionFailed" or http_status(exc) == 412


def conflict(exc: BaseException) -> bool:
    """AWS's 409 ``ConditionalRequestConflict``: another conditional request on the same key
    was in flight. Nothing was written; AWS says to read the ETag again and retry. It is never
    a lost lock (storage.md §0)."""
    return error_code(exc) == "ConditionalRequestConflict" or (
        http_status(exc) == 409 and error_code(exc) in (None, "409", "ConditionalRequestConflict"))


def retry_conflicts(fn: Callable[[], T], *, budget: float = 10.0, attempts: int = 10,
                    on_conflict: Callable[[], None] | None = None) -> T:
    """Call ``fn``, retrying it after a 409 with jittered exponential backoff (at most
    ``attempts`` tries within ``budget`` seconds). ``on_conflict`` runs before each retry (to
    read the object's ETag again; it may raise to stop). Anything else propagates at once;
    the last 409 propagates when the budget is spent."""
    import tenacity

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_conflict is not None:
            on_conflict()

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)) | tenacity.stop_after_delay(max(0.0, budget)),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        retry=tenacity.retry_if_exception(conflict),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


def not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound") or (
        http_status(exc) == 404 and code != "NoSuchBucket")


def _is_boto(exc: BaseException) -> bool:
    return type(exc).__module__.split(".", 1)[0] in ("botocore", "boto3", "s3transfer", "urllib3")


def translate(exc: BaseException, url: str, action: str) -> StateError:
    """A botocore error as a StateError naming the state and the fix (never a credential)."""
    scheme = url.split("://", 1)[0]
    creds = ("B2_KEY_ID / B2_APP_KEY (an application key with listFiles, readFiles, writeFiles and "
             "deleteFiles)") if scheme == "b2" else "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    code = error_code(exc)
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    if credentials_missing(exc):
        return StateError(f"{url}: no credentials to {action}", hint=f"set {creds} in the environment")
    if unreachable(exc):
        return StateError(f"{url}: cannot reach the endpoint to {action} ({exc})",
                          hint="check the endpoint (AWS_ENDPOINT_URL / B2_S3_ENDPOINT) and the network")
    if code == "NoSuchBucket":
        return StateError(f"{url}: bucket {bucket!r} does not exist",
                          hint="create it (with versioning enabled for b2://), or fix state.backend")
    if conflict(exc):
        return StateError(f"{url}: could not {action}: the endpoint kept answering 409 "
                          "ConditionalRequestConflict (other conditional requests on the same object "
                          "were in flight)", hint="retry; if it persists, check what else polls this state")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403",
                "InvalidToken", "ExpiredToken"):
        return StateError(f"{url}: access denied to {action} ({code})",
                          hint=f"check {creds} and the key's permissions on bucket {bucket!r}")
    msg = getattr(exc, "response", {}).get("Error", {}).get("Message") if code else str(exc)
    return StateError(f"{url}: could not {action}: {code or type(exc).__name__}: {msg}",
                      hint="retry; if it persists, check the bucket and the endpoint")


@contextlib.contextmanager
def translating(url: str, action: str) -> Iterator[None]:
    try:
        yield
    except RunformError:
        raise
    except Exception as exc:
        if _is_boto(exc):
            raise translate(exc, url, action) from None
        raise


# --------------------------------------------------------------------------- helpers


def server_now(response: Mapping[str, Any]) -> float:
    """The server's clock (its ``Date`` header, 1 s resolution), or ours when there is none."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


@attrs.frozen
class Held:
    """A lock as seen by a reader: its info, lease, and where its holder runs."""

    info: LockInfo
    lease: float
    boot: str

    @classmethod
    def parse(cls, body: bytes, default_lease: float) -> Held:
        try:
            raw = json.loads(body)
            return cls(LockInfo.from_json(raw), float(raw.get("lease", default_lease)), str(raw.get("boot", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            unknown = LockInfo(id="?", operation="?", who="? (unreadable lock object)", version="?",
                               created="?", path="", pid=0, host="", expires=0.0)
            return cls(unknown, default_lease, "")

    def lapsed(self, last_seen: float, now: float) -> bool:
        """Lapsed when the server has not seen a renewal for more than the lease (the +1 s covers
        the truncation of ``LastModified`` and ``Date`` to whole seconds), or when the holder ran
        on this boot of this machine and its process is gone."""
        if now - last_seen >= self.lease + 1.0:
            return True
        return bool(BOOT_ID and self.boot == BOOT_ID and self.info.pid and self.info.pid != os.getpid()
                    and not _alive(self.info.pid))


def busy(held: LockInfo) -> LockError:
    return LockError(
        "Error acquiring the state lock: the state is locked by "
        f"{held.who} (pid {held.pid}) for {held.operation}\n{held.describe()}",
        hint="wait for that operation to finish (or pass --lock-timeout 60s); if its holder "
        f"is gone for good: runform force-unlock {held.id}",
    )


# --------------------------------------------------------------------------- the common part


class LeaseLock:
    """What both kinds share: the lease, the heartbeat thread and the fence before each state
    write. A kind implements ``acquire``, ``release``, ``force_unlock``, ``current`` and ``_beat``."""

    def __init__(self, client: Callable[[], Any], bucket: str, key: str, url: str, lease: float) -> None:
        self._client = client
        self.bucket = bucket
        self.key = key + ".lock"
        self.url = url
        self.lease = float(lease)
        self.held: LockInfo | None = None
        self._renewed = 0.0  # monotonic time at which the last successful renewal was sent
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.RLock()

    @property
    def c(self) -> Any:
        return self._client()

    def _new_info(self, operation: str) -> LockInfo:
        from runform.version import __version__

        return LockInfo(
            id=str(uuid.uuid4()), operation=operation, who=f"{_user()}@{socket.gethostname()}",
            version=__version__, created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            path=self.url, pid=os.getpid(), host=socket.gethostname(), expires=time.time() + self.lease,
        )

    def _held(self, info: LockInfo) -> Held:
        return Held(info, self.lease, BOOT_ID)

    def _fresh(self, info: LockInfo) -> LockInfo:
        return attrs.evolve(info, expires=time.time() + self.lease)

    def _body(self, info: LockInfo) -> bytes:
        return json.dumps({**info.to_json(), "lease": self.lease, "boot": BOOT_ID}).encode()

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        stop = self._stop

        def run() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    with self._mutex:
                        if stop.is_set() or self.held is None or self._lost:
                            return
                        self._beat()
                except Exception:  # noqa: BLE001, S110 - a missed beat is retried; the fence sees a lapse
                    pass

        self._thread = threading.Thread(target=run, name="runform-remote-lock-heartbeat", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    def _beat(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ fence
    def check(self) -> None:
        """Raise unless this process still holds the lock (called before every state write)."""
        with self._mutex:
            if self.held is None:
                raise StateError(f"{self.url}: a state write without holding the state lock",
                                 hint="this is a bug in the caller: lock the state before writing it")
            if self._lost:
                raise LockError(f"{self.url}: the state lock {self.held.id} was lost: {self._lost}; "
                                "stopping before writing the state",
                                hint="another runform may be working on this state: check with "
                                "`runform plan`, then apply again")
            idle = time.monotonic() - self._renewed
            if idle > self.lease:
                raise LockError(f"{self.url}: the state lock's lease lapsed ({idle:.1f} s since the last "
                                f"renewal, lease {self.lease:g} s); stopping before writing the state",
                                hint="the storage endpoint was unreachable or slow; apply again "
                                "(or raise state.lock_lease)")
            self._extra_check()

    def _extra_check(self) -> None:
        pass


def wait(deadline: float, delay: float) -> float:
    """Sleep up to ``delay`` (with jitter) but not past ``deadline``; returns the next delay."""
    time.sleep(max(0.0, min(delay * random.uniform(0.5, 1.0), deadline - time.monotonic())))
    return min(delay * 2, 1.0)
