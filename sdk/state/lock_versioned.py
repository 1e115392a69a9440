"""The versioned lease lock (:class:`B2Lock`, alias ``VersionedLock``; ``b2://`` and ``s3://...?lock=versioned``):
for stores without conditional writes (storage.md §4) every contender PUTs a version of
``<key>.lock``, lists the versions of exactly that key, and the earliest live version (by
``LastModified``, then lock ID) wins, after a second listing ``settle`` seconds later. Losers
delete their own version by ``VersionId``. The holder proves it is alive with
``<key>.lock.<id>.hb``, rewritten every lease/3. The shared part is :mod:`runform.state.lease`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

import attrs
from runform.errors import LockError, StateError
from runform.state.lease import Held, LeaseLock, busy, not_found, server_now, translating, wait
from runform.state.lock import LockInfo
from runform.storage.s3conn import error_code


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


class B2Lock(LeaseLock):
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
                self._bodies[vid] = self._held(info)
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
            delay = wait(deadline, delay)
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
