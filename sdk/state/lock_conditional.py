"""The conditional lease lock (:class:`S3Lock`, alias ``ConditionalLock``; ``s3://``): ``PUT <key>.lock`` with
``If-None-Match: *`` (a 412 means it is held); the holder renews it every lease/3 with a PUT
conditional on its ETag (``If-Match``); a lapsed lock is removed with a DELETE conditional on
its ETag, then created again. The shared part is :mod:`runform.state.lease`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from typing import Any

from runform.atomic import atomic_write
from runform.errors import LockError, StateError
from runform.state.lease import (
    Held,
    LeaseLock,
    busy,
    not_found,
    precondition_failed,
    retry_conflicts,
    server_now,
    translating,
    wait,
)
from runform.state.lock import LockInfo
from runform.storage.s3conn import error_code


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
        doc = {**_probe_cache_read(path), endpoint: ok}
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True))


class S3Lock(LeaseLock):
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
                    delay = wait(time.monotonic() + delay, delay)  # released in between: again, soon
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
                delay = wait(deadline, delay)

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


ConditionalLock = S3Lock  # the name for what it is, on any endpoint that honours If-None-Match
