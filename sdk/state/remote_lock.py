"""Lease locks for the remote state (``s3://`` and ``b2://``), with a heartbeat and a fence.

Two protocols behind one interface (``acquire``, ``release``, ``force_unlock``, ``current``,
``check``):

A 409 ``ConditionalRequestConflict`` (AWS: another conditional request on the same key was in
flight) is transient everywhere: read the ETag again, retry with a bounded backoff
(:func:`retry_conflicts`, tenacity). Only a 412 or a 404 on renewal means the lock was lost.

- :class:`S3Lock`: ``PUT <key>.lock`` with ``If-None-Match: *`` (a 412 means it is held). The
  holder renews it every lease/3 with a PUT conditional on its ETag (``If-Match``); a lapsed
  lock is removed with a DELETE conditional on its ETag, then created again.
- :class:`B2Lock`: B2 has no conditional writes (storage.md §4), so the versioned-lock
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


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


T = TypeVar("T")
BOOT_ID = _boot_id()  # a holder with the same boot ID runs on this machine, this boot


# --------------------------------------------------------------------------- errors


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


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
    from runform.storage_backends._s3conn import credentials_missing, unreachable

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


class _LeaseLock:
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
        from runform import __version__

        return LockInfo(
            id=str(uuid.uuid4()), operation=operation, who=f"{_user()}@{socket.gethostname()}",
            version=__version__, created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            path=self.url, pid=os.getpid(), host=socket.gethostname(), expires=time.time() + self.lease,
        )

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


def _wait(deadline: float, delay: float) -> float:
    """Sleep up to ``delay`` (with jitter) but not past ``deadline``; returns the next delay."""
    time.sleep(max(0.0, min(delay * random.uniform(0.5, 1.0), deadline - time.monotonic())))
    return min(delay * 2, 1.0)


# --------------------------------------------------------------------------- S3


class _NotOurs(Exception):
    """Raised from a conflict retry when the re-read shows the lock is not ours any more."""


def _is_aws(endpoint: str | None) -> bool:
    host = (endpoint or "").split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return not endpoint or host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


_PROBED: dict[str, bool] = {}  # endpoint -> it honours If-None-Match (this process)
_PROBED_LOCK = threading.Lock()


def _probe_cache_read(path: str | None) -> dict[str, bool]:
    if not path:
        return {}
    try:
        with open(path) as f:
            raw = json.load(f)
        return {str(k): bool(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _probe_cache_write(path: str | None, endpoint: str, ok: bool) -> None:
    if not path:
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        doc = {**_probe_cache_read(path), endpoint: ok}
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


class S3Lock(_LeaseLock):
    """``If-None-Match: *`` create, ``If-Match`` renew and release (AWS S3, MinIO, moto).

    A 409 ``ConditionalRequestConflict`` anywhere is transient: the ETag is read again and the
    request retried with a bounded backoff (:func:`retry_conflicts`). Only a 412 or a 404 on a
    renewal means the lock was lost, and not even then when the object is provably our own
    renewal whose answer went missing.

    On an endpoint that is not AWS, conditional writes are probed once before the lock is
    trusted (two ``If-None-Match: *`` PUTs to a scratch key, the second must answer 412; a
    DELETE with a wrong ``If-Match`` must answer 412 too). The answer is cached per endpoint
    (in this process and in ``probe_cache``, a JSON file)."""

    def __init__(self, *args: Any, probe_cache: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._etag: str | None = None
        self._vid: str | None = None  # the current version, in a versioned bucket
        self.probe_cache = probe_cache

    def _read(self) -> tuple[Held, str, float, float] | None:
        """(holder, ETag, last renewal, server now) of the lock object, or None."""
        try:
            r = self.c.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if not_found(exc):
                return None
            raise
        held = Held.parse(r["Body"].read(), self.lease)
        return held, r["ETag"], r["LastModified"].timestamp(), server_now(r)

    # ------------------------------------------------------------------ the probe
    def _not_implemented(self) -> StateError:
        return StateError(
            f"{self.url}: this endpoint does not implement conditional writes (If-None-Match / "
            "If-Match), which the s3:// state lock needs",
            hint="for Backblaze B2 write the backend as b2://bucket/key; for another S3-compatible "
            f"store use the versioned lock: state.backend: s3://{self.bucket}/{self.key[:-5]}?lock=versioned "
            "(with versioning on for the bucket)")

    def _ignored(self, endpoint: str, what: str) -> StateError:
        return StateError(
            f"{self.url}: the endpoint {endpoint} accepts conditional requests but ignores them "
            f"({what}), so the s3:// state lock would exclude nobody",
            hint=f"use the versioned lock, which needs no conditional writes: state.backend: "
            f"s3://{self.bucket}/{self.key[:-5]}?lock=versioned (turn on versioning for bucket "
            f"{self.bucket!r})")

    def ensure_conditions(self) -> None:
        """Probe a non-AWS endpoint once (cached) before trusting conditional writes."""
        endpoint = str(getattr(getattr(self.c, "meta", None), "endpoint_url", "") or "")
        if _is_aws(endpoint):
            return
        with _PROBED_LOCK:
            known = _PROBED.get(endpoint)
            if known is None:
                known = _probe_cache_read(self.probe_cache).get(endpoint)
            if known is None:
                what = self._probe()
                known = what is None
                _probe_cache_write(self.probe_cache, endpoint, known)
                if what is not None:
                    _PROBED[endpoint] = False
                    raise self._ignored(endpoint, what)
            _PROBED[endpoint] = known
        if not known:
            raise self._ignored(endpoint, "found by an earlier probe, cached in "
                                f"{self.probe_cache or 'this process'}")

    def _probe(self) -> str | None:
        """None when conditions hold, else what showed that they are ignored."""
        key = f"{self.key}.probe-{uuid.uuid4().hex[:12]}"
        vids: list[str] = []

        def put() -> Any:
            return self.c.put_object(Bucket=self.bucket, Key=key, Body=b"runform conditional-write probe",
                                     IfNoneMatch="*")

        try:
            try:
                r = retry_conflicts(put)
            except Exception as exc:
                if error_code(exc) == "NotImplemented":
                    raise self._not_implemented() from None
                raise
            vids.append(r.get("VersionId") or "")
            try:
                r = retry_conflicts(put)
            except Exception as exc:
                if precondition_failed(exc):
                    pass
                elif error_code(exc) == "NotImplemented":
                    raise self._not_implemented() from None
                else:
                    raise
            else:
                vids.append(r.get("VersionId") or "")
                return "a second If-None-Match: * PUT of the same key succeeded"
            try:
                retry_conflicts(lambda: self.c.delete_object(Bucket=self.bucket, Key=key,
                                                             IfMatch='"00000000000000000000000000000000"'))
            except Exception as exc:
                if precondition_failed(exc):
                    return None
                if error_code(exc) == "NotImplemented":
                    raise self._not_implemented() from None
                raise
            return "a DELETE with a wrong If-Match removed the object"
        finally:
            with contextlib.suppress(Exception):
                self._remove_scratch(key, vids)

    def _remove_scratch(self, key: str, vids: list[str]) -> None:
        real = [v for v in vids if v and v != "null"]
        if not real:
            self.c.delete_object(Bucket=self.bucket, Key=key)
            return
        for page in self.c.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if v["Key"] == key:
                    self.c.delete_object(Bucket=self.bucket, Key=key, VersionId=v["VersionId"])

    # ------------------------------------------------------------------ acquire
    def acquire(self, operation: str, *, timeout: float = 0.0) -> LockInfo:
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.05
        info = self._new_info(operation)
        with translating(self.url, "take the state lock"):
            self.ensure_conditions()
            while True:
                sent = time.monotonic()
                info = self._fresh(info)
                body = self._body(info)
                try:
                    r = retry_conflicts(lambda body=body: self.c.put_object(
                        Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*",
                        ContentType="application/json"))
                    return self._won(info, r["ETag"], r.get("VersionId"), sent)
                except Exception as exc:
                    if error_code(exc) == "NotImplemented":
                        raise self._not_implemented() from None
                    if not precondition_failed(exc):
                        raise
                cur = self._read()
                if cur is None:
                    delay = _wait(time.monotonic() + delay, delay)  # released in between: again, soon
                    continue
                held, etag, last, now = cur
                if held.info.id == info.id:  # our own create, retried after a lost response
                    return self._won(info, etag, None, sent)
                if held.lapsed(last, now):
                    try:
                        retry_conflicts(lambda etag=etag: self.c.delete_object(
                            Bucket=self.bucket, Key=self.key, IfMatch=etag))
                    except Exception as exc:
                        if not (precondition_failed(exc) or not_found(exc)):
                            raise
                    continue
                if time.monotonic() >= deadline:
                    raise busy(held.info)
                delay = _wait(deadline, delay)

    def _won(self, info: LockInfo, etag: str, vid: str | None, sent: float) -> LockInfo:
        with self._mutex:
            self.held, self._etag, self._vid = info, etag, vid if vid and vid != "null" else None
            self._renewed, self._lost = sent, None
        self._start_heartbeat()
        return info

    def _reread_ours(self) -> None:
        """After a 409: take the lock object's current ETag if it is still ours, else stop."""
        assert self.held is not None
        cur = self._read()
        if cur is None or cur[0].info.id != self.held.id:
            raise _NotOurs
        self._etag = cur[1]

    # ------------------------------------------------------------------ holding
    def _beat(self) -> None:
        assert self.held is not None
        sent = time.monotonic()
        held = self._fresh(self.held)
        body = self._body(held)
        budget = max(0.5, self._renewed + self.lease - sent - 0.5)  # never past our own lease
        try:
            r = retry_conflicts(lambda: self.c.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self._etag,
                ContentType="application/json"), budget=budget, on_conflict=self._reread_ours)
        except _NotOurs:
            self._lost = "the lock object was replaced or removed (force-unlock, or a takeover after a lapse)"
            return
        except Exception as exc:
            if not (precondition_failed(exc) or not_found(exc)):
                raise  # a 409 past the budget, or the endpoint: a missed beat, retried next time
            cur = None if not_found(exc) else self._read()
            if cur is not None and cur[0].info.id == held.id and cur[0].info.expires == held.expires:
                r = {"ETag": cur[1]}  # our own renewal landed; its answer went missing
            else:
                self._lost = "the lock object was replaced or removed (force-unlock, or a takeover after a lapse)"
                return
        old, self._etag, self._renewed, self.held = self._vid, r["ETag"], sent, held
        vid = r.get("VersionId")
        self._vid = vid if vid and vid != "null" else None
        if old and old != self._vid:  # versioned bucket: drop our previous (now noncurrent) version
            with contextlib.suppress(Exception):
                self.c.delete_object(Bucket=self.bucket, Key=self.key, VersionId=old)

    def release(self) -> None:
        self._stop_heartbeat()
        with self._mutex:
            if self.held is None:
                return
            vid = self._vid
        with translating(self.url, "release the state lock"):
            try:
                retry_conflicts(lambda: self.c.delete_object(Bucket=self.bucket, Key=self.key,
                                                             IfMatch=self._etag),
                                on_conflict=self._reread_ours)
            except _NotOurs:
                return
            except Exception as exc:
                if precondition_failed(exc) or not_found(exc):
                    return  # not ours any more
                raise
            finally:
                with self._mutex:
                    self.held = None
            if vid:  # versioned: the DELETE left a marker over our version; drop the version
                with contextlib.suppress(Exception):
                    self.c.delete_object(Bucket=self.bucket, Key=self.key, VersionId=vid)

    def current(self) -> LockInfo | None:
        with translating(self.url, "read the state lock"):
            cur = self._read()
        return cur[0].info if cur else None

    def force_unlock(self, lock_id: str) -> None:
        with translating(self.url, "remove the state lock"):
            cur = self._read()
            if cur is None:
                raise LockError("the state is not locked", hint="nothing to unlock")
            held, etag, _, _ = cur
            if held.info.id != lock_id:
                raise LockError(f"lock ID {lock_id!r} does not match the current lock\n{held.info.describe()}",
                                hint=f"pass the ID shown above: runform force-unlock {held.info.id}")
            current = [etag]

            def reread() -> None:
                again = self._read()
                if again is None or again[0].info.id != lock_id:
                    raise _NotOurs
                current[0] = again[1]

            try:
                retry_conflicts(lambda: self.c.delete_object(Bucket=self.bucket, Key=self.key,
                                                             IfMatch=current[0]), on_conflict=reread)
            except _NotOurs:
                raise LockError("the lock changed while removing it", hint="run force-unlock again") from None
            except Exception as exc:
                if not (precondition_failed(exc) or not_found(exc)):
                    raise
                raise LockError("the lock changed while removing it", hint="run force-unlock again") from None


# --------------------------------------------------------------------------- B2


@attrs.frozen
class _Version:
    vid: str
    modified: float  # LastModified, server clock
    held: Held
    last_seen: float  # the later of the version's and its heartbeat's LastModified


@attrs.frozen
class _Scan:
    now: float  # the server's clock at the listing
    live: tuple[_Version, ...]  # earliest first: the first one holds the lock
    lapsed: tuple[_Version, ...]
    heartbeats: Mapping[str, tuple[tuple[str, str], ...]]  # lock id -> (key, version) of its heartbeat
    coarse: bool  # some LastModified was a whole second: timestamps may have 1 s resolution

    def first(self) -> _Version | None:
        return self.live[0] if self.live else None

    def find(self, vid: str | None) -> _Version | None:
        return next((v for v in self.live if v.vid == vid), None)


class B2Lock(_LeaseLock):
    """The versioned-lock fallback for stores without conditional writes (storage.md §4): the
    lock of ``b2://``, and of ``s3://...?lock=versioned`` for any S3-compatible endpoint.

    ``settle``: how long after its PUT a contender lists again before it declares a win; it
    bounds how late a version written before ours may become visible in a listing. When the
    server's ``LastModified`` has whole-second resolution, a second more is waited (two versions
    in the same second are ordered by lock ID, so any version that could sort before ours must
    be visible before we decide)."""

    def __init__(self, *args: Any, settle: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settle = float(settle)
        self._vid: str | None = None
        self._hb_vids: list[str] = []
        self._verified = 0.0
        self._bodies: dict[str, Held | None] = {}

    def _hb_key(self, lock_id: str) -> str:
        return f"{self.key}.{lock_id}.hb"

    # ------------------------------------------------------------------ reading
    def _body_of(self, vid: str) -> Held | None:
        if vid in self._bodies:
            return self._bodies[vid]
        try:
            r = self.c.get_object(Bucket=self.bucket, Key=self.key, VersionId=vid)
            held: Held | None = Held.parse(r["Body"].read(), self.lease)
        except Exception as exc:
            if not not_found(exc) and error_code(exc) not in ("InvalidArgument",):
                raise
            held = None  # deleted since the listing
        if len(self._bodies) > 256:
            self._bodies.clear()
        self._bodies[vid] = held
        return held

    def _scan(self) -> _Scan:
        versions: list[tuple[str, float]] = []
        hb_seen: dict[str, float] = {}
        hb_all: dict[str, list[tuple[str, str]]] = {}
        now: float | None = None
        coarse = False
        hb_prefix = self.key + "."
        for page in self.c.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self.key):
            if now is None:
                now = server_now(page)
            for v in page.get("Versions", []):
                modified = v["LastModified"].timestamp()
                if v["Key"] == self.key:
                    if v.get("VersionId") in (None, "null"):
                        raise self._unversioned()
                    versions.append((v["VersionId"], modified))
                    coarse = coarse or modified == int(modified)
                elif v["Key"].startswith(hb_prefix) and v["Key"].endswith(".hb"):
                    lock_id = v["Key"][len(hb_prefix):-3]
                    hb_seen[lock_id] = max(hb_seen.get(lock_id, 0.0), modified)
                    hb_all.setdefault(lock_id, []).append((v["Key"], v["VersionId"]))
            for m in page.get("DeleteMarkers", []):
                if m["Key"].startswith(hb_prefix) and m["Key"].endswith(".hb"):
                    hb_all.setdefault(m["Key"][len(hb_prefix):-3], []).append((m["Key"], m["VersionId"]))
        now = time.time() if now is None else now
        live: list[_Version] = []
        lapsed: list[_Version] = []
        for vid, modified in versions:
            held = self._body_of(vid)
            if held is None:
                continue
            seen = max(modified, hb_seen.get(held.info.id, 0.0))
            ver = _Version(vid, modified, held, seen)
            if vid == self._vid and self.held is not None:
                live.append(ver)  # ours: alive by definition (the fence judges our own lease)
            elif held.lapsed(seen, now):
                lapsed.append(ver)
            else:
                live.append(ver)
        live.sort(key=lambda v: (v.modified, v.held.info.id))
        return _Scan(now, tuple(live), tuple(lapsed), {k: tuple(v) for k, v in hb_all.items()}, coarse)

    def _unversioned(self) -> StateError:
        return StateError(
            f"{self.url}: bucket {self.bucket!r} does not keep object versions, which the versioned "
            "state lock needs (it uses no conditional writes; contenders are ordered by version)",
            hint=f"enable versioning on the bucket {self.bucket!r} (B2: Lifecycle Settings -> 'Keep all "
            "versions of the file'; S3 API: put-bucket-versioning Status=Enabled)")

    def _delete(self, key: str, vid: str) -> None:
        try:
            self.c.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)
        except Exception as exc:
            if not not_found(exc):
                raise

    def _drop(self, versions: tuple[_Version, ...], scan: _Scan) -> None:
        """Delete versions whose lease lapsed (anyone may), with their heartbeats."""
        for v in versions:
            self._delete(self.key, v.vid)
            for key, hvid in scan.heartbeats.get(v.held.info.id, ()):
                self._delete(key, hvid)

    # ------------------------------------------------------------------ acquire
    def acquire(self, operation: str, *, timeout: float = 0.0) -> LockInfo:
        if self.lease < self.settle + 1.5:
            raise StateError(
                f"{self.url}: state.lock_lease {self.lease:g}s is too short for the versioned lock, which "
                f"takes {self.settle + 1.0:g} s or more to decide",
                hint="use a lease of a few seconds at least (the default is 30s)")
        deadline = time.monotonic() + max(0.0, timeout)
        info = self._new_info(operation)
        undecided = 0
        with translating(self.url, "take the state lock"):
            self.c  # noqa: B018 - build the client first: from our PUT to the decision must be quick
            while True:
                sent = time.monotonic()
                info = self._fresh(info)
                r = self.c.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(info),
                                      ContentType="application/json")
                put_done = time.monotonic()
                vid = r.get("VersionId")
                if not vid or vid == "null":
                    with contextlib.suppress(Exception):
                        self.c.delete_object(Bucket=self.bucket, Key=self.key)
                    raise self._unversioned()
                self._bodies[vid] = Held(info, self.lease, BOOT_ID)
                outcome, holder = self._decide(vid, put_done)
                # a win counts only inside our own lease: past it, others may judge our version lapsed
                if outcome == "won":
                    if time.monotonic() - sent < self.lease and self._take(info, vid, sent):
                        return info
                    outcome = "undecided"
                self._delete(self.key, vid)  # take our version back
                self._bodies.pop(vid, None)
                if outcome == "undecided" and holder is None:
                    undecided += 1
                    if undecided > 3:
                        raise StateError(
                            f"{self.url}: could not settle the state lock: our lock version was not "
                            "listed in time, or deciding took longer than the lease "
                            f"({self.lease:g} s)",
                            hint="raise state.lock_lease; check that the endpoint is not overloaded")
                    continue
                assert holder is not None
                if time.monotonic() >= deadline:
                    raise busy(holder.held.info)
                self._wait_free(deadline)

    def _decide(self, vid: str, put_done: float) -> tuple[str, _Version | None]:
        """("won", None), ("lost", the holder) or ("undecided", a holder or None) for our
        version ``vid``."""
        scan = self._scan()
        own = scan.find(vid)
        if own is not None and scan.live[0].vid != vid:
            return "lost", scan.live[0]  # an earlier live version: no need to wait
        wait = self.settle + (1.0 if scan.coarse or own is None else 0.0) - (time.monotonic() - put_done)
        if wait > 0:
            time.sleep(wait)
        scan = self._scan()
        if scan.lapsed:
            with contextlib.suppress(Exception):
                self._drop(scan.lapsed, scan)
        first = scan.first()
        if scan.find(vid) is None:
            return "undecided", first
        assert first is not None
        return ("won", None) if first.vid == vid else ("lost", first)

    def _take(self, info: LockInfo, vid: str, sent: float) -> bool:
        """Hold the lock: a first heartbeat at once (the version alone ages during the settle)."""
        with self._mutex:
            self.held, self._vid, self._hb_vids = info, vid, []
            self._renewed = self._verified = sent
            self._lost = None
            try:
                self._beat()
            except BaseException:
                self._abandon()
                raise
            if self._lost:
                self._abandon()
                return False
        self._start_heartbeat()
        return True

    def _abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.release()
        self._lost = None

    def _wait_free(self, deadline: float) -> None:
        """Poll until no live version holds the lock (or the deadline)."""
        delay = 0.1
        while time.monotonic() < deadline:
            delay = _wait(deadline, delay)
            scan = self._scan()
            if scan.lapsed:
                with contextlib.suppress(Exception):
                    self._drop(scan.lapsed, scan)
            if not scan.live:
                return

    # ------------------------------------------------------------------ holding
    def _beat(self) -> None:
        """Rewrite the heartbeat, then check that our version still holds the lock. A renewal
        counts only if all of it ends inside the current lease: once lapsed, never revived
        (someone may have judged it lapsed and taken over meanwhile)."""
        assert self.held is not None
        sent = time.monotonic()
        valid_until = self._renewed + self.lease
        key = self._hb_key(self.held.id)
        r = self.c.put_object(Bucket=self.bucket, Key=key, ContentType="application/json",
                              Body=json.dumps({"ID": self.held.id, "at": time.time()}).encode())
        if vid := r.get("VersionId"):
            self._hb_vids.append(vid)
        while len(self._hb_vids) > 1:  # keep one heartbeat version
            with contextlib.suppress(Exception):
                self._delete(key, self._hb_vids[0])
            self._hb_vids.pop(0)
        if self._verify(sent) and not self._lost:
            if time.monotonic() >= valid_until:
                self._lost = (f"a renewal came too late (the lease of {self.lease:g} s lapsed first), "
                              "so another runform may have taken the lock over")
            else:
                self._renewed = sent

    def _verify(self, sent: float) -> bool:
        scan = self._scan()
        first = scan.first()
        if scan.find(self._vid) is None:
            self._lost = "its lock version was removed (force-unlock, or a takeover after a lapse)"
            return False
        if first is not None and first.vid != self._vid:
            self._lost = f"an earlier lock version holds it ({first.held.info.who}, ID {first.held.info.id})"
            return False
        self._verified = sent
        return True

    def _extra_check(self) -> None:
        # re-list at most every lease/3: the heartbeat normally did it already
        if time.monotonic() - self._verified > self.lease / 3:
            with translating(self.url, "check the state lock"):
                self._verify(time.monotonic())
            if self._lost:
                self.check()

    def release(self) -> None:
        self._stop_heartbeat()
        with self._mutex:
            if self.held is None:
                return
            info, vid, hb = self.held, self._vid, list(self._hb_vids)
            self.held, self._vid, self._hb_vids = None, None, []
        with translating(self.url, "release the state lock"):
            if vid:
                self._delete(self.key, vid)
            for hvid in hb:
                self._delete(self._hb_key(info.id), hvid)

    def current(self) -> LockInfo | None:
        """The holder: the earliest live version with a heartbeat (a winner writes one at once);
        else the earliest live version (a contender deciding)."""
        with translating(self.url, "read the state lock"):
            scan = self._scan()
        beating = [v for v in scan.live if v.held.info.id in scan.heartbeats]
        first = beating[0] if beating else scan.first()
        return first.held.info if first else None

    def force_unlock(self, lock_id: str) -> None:
        with translating(self.url, "remove the state lock"):
            scan = self._scan()
            mine = [v for v in scan.live + scan.lapsed if v.held.info.id == lock_id]
            if not mine:
                first = scan.first()
                if first is None:
                    raise LockError("the state is not locked", hint="nothing to unlock")
                raise LockError(f"lock ID {lock_id!r} does not match the current lock\n"
                                f"{first.held.info.describe()}",
                                hint=f"pass the ID shown above: runform force-unlock {first.held.info.id}")
            self._drop(tuple(mine), scan)


VersionedLock = B2Lock  # the name for what it is, on any S3-compatible endpoint
