"""Remote state backends: ``state: {backend: s3://bucket/key}`` and ``b2://bucket/key``.

The same interface and guarantees as the local backend, over an object store:

- the snapshot at ``<key>`` (the State as JSON, with its ``seq``);
- the journal as immutable objects ``<key>.journal/<seq:012d>.json``, one PUT per
  ``append`` batch, named by the batch's last ``seq``: O(1) per action, never a whole-state
  rewrite. A PUT returns only once the object is stored, so journal-before-mutation holds;
- ``compact`` writes the snapshot, then deletes the journal objects it covers (per key on
  B2). A crash in between is harmless: replay skips entries the snapshot already holds;
- reading fetches the snapshot and lists the journal prefix once;
- the lock at ``<key>.lock`` (:mod:`runform.state.lease`, :mod:`~runform.state.lock_conditional`, :mod:`~runform.state.lock_versioned`): ``If-None-Match`` on S3
  (probed once per non-AWS endpoint), the versioned lock on B2 and on any S3-compatible store
  with ``s3://bucket/key?lock=versioned``. Every write is fenced: it first checks that the lock
  is still ours (and with the conditional lock the journal PUT itself is conditional, so two
  writers can never both write the same entry). A 409 ``ConditionalRequestConflict`` on any
  conditional write is retried with a bounded backoff (it wrote nothing).

Credentials come from the process environment (and ``use_env``): ``AWS_*`` for ``s3://``,
``B2_KEY_ID`` / ``B2_APP_KEY`` / ``B2_S3_ENDPOINT`` or ``B2_S3_REGION`` for ``b2://``
(:mod:`runform.storage.s3conn`). The backend stores only what the core gives it,
which never holds a secret value; the lock holds who/host/pid, as the local one does.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from runform.errors import StateError
from runform.hookspecs import hookimpl
from runform.state.lease import not_found, precondition_failed, retry_conflicts, translating
from runform.state.lock import LockInfo
from runform.state.lock_conditional import S3Lock
from runform.state.lock_versioned import VersionedLock
from runform.state.model import State, replay_entry
from runform.storage.s3conn import Connection, Location

_LOCKS = ("conditional", "versioned")

_JOURNAL_NAME = re.compile(r"^(\d{12})\.json$")
T = TypeVar("T")
R = TypeVar("R")


class RemoteStateBackend:
    """The state in an S3 or B2 bucket. ``url`` is ``s3://bucket/key`` or ``b2://bucket/key``.

    ``env`` adds to (and overrides) ``os.environ`` for credentials and the endpoint; ``client``
    is a ready boto3 client (tests); ``settle`` is the B2 lock's settle time (seconds)."""

    def __init__(self, url: str, *, lease: float = 30.0, env: Mapping[str, str] | None = None,
                 client: Any = None, settle: float = 0.5, probe_cache: str | Path | None = None) -> None:
        url, lock_kind = _lock_choice(url)
        loc = Location.parse(url)
        if loc.is_prefix:
            raise StateError(f"state.backend: {url!r} names a folder, not an object key",
                             hint=f"name the state object, e.g. {loc.uri((loc.key or '') + 'runform.state')}")
        self.url = url
        self.loc = loc
        self.scheme = loc.scheme
        self.bucket = loc.bucket
        self.key = loc.key
        self.journal_prefix = loc.key + ".journal/"
        self.lease = float(lease)
        self._env: dict[str, str] = dict(env or {})
        self._client = client
        self._client_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = 0
        self._loaded = False
        self._snapshot_etag: str | None = None  # the snapshot we read or wrote last (None: none)
        self.lock_kind = lock_kind
        self._versioned = lock_kind == "versioned"  # the versioned lock needs versioning; else learnt
        self.last_cleanup_error: str | None = None
        args = (self._get_client, self.bucket, self.key, url, self.lease)
        self._lock: S3Lock | VersionedLock = (
            VersionedLock(*args, settle=settle) if lock_kind == "versioned"
            else S3Lock(*args, probe_cache=str(probe_cache) if probe_cache else None))

    @property
    def _conditional(self) -> bool:
        """Whether writes may carry If-None-Match / If-Match (the conditional lock's stores)."""
        return isinstance(self._lock, S3Lock)

    # -------------------------------------------------------------------------- plumbing
    def use_env(self, env: Mapping[str, str]) -> None:
        """Take credentials from ``env`` too (e.g. the spec's secrets env file)."""
        with self._client_lock:
            self._env.update(env)
            self._client = None

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                env = {**os.environ, **self._env}
                self._client = Connection.from_env(self.scheme, env).client(pool=16)
            return self._client

    @property
    def client(self) -> Any:
        return self._get_client()

    def _uri(self, key: str) -> str:
        return self.loc.uri(key)

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="runform-state") as pool:
            return list(pool.map(fn, items))

    def _journal_keys(self) -> list[tuple[int, str]]:
        """(last seq, key) of every journal object, in order (one paginated listing)."""
        out: list[tuple[int, str]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.journal_prefix):
            for obj in page.get("Contents", []):
                m = _JOURNAL_NAME.match(obj["Key"][len(self.journal_prefix):])
                if m:
                    out.append((int(m.group(1)), obj["Key"]))
        out.sort()
        return out

    def _get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]

    # -------------------------------------------------------------------------- reading
    def read(self) -> State | None:
        with translating(self.url, "read the state"):
            state = self._read_snapshot()
            keys = self._journal_keys()
            base = state.seq if state is not None else 0
            keys = [(seq, key) for seq, key in keys if seq > base]  # older: already in the snapshot
            bodies = self._map(self._get_journal, [key for _, key in keys])
        seq = base
        for (_, key), body in zip(keys, bodies):
            if body is None:
                continue  # compacted away between the listing and the read
            for entry in self._entries(key, body):
                state = replay_entry(state, entry, self._uri(key),
                                     reset_hint=f"remove the objects under {self._uri(self.journal_prefix)}")
                seq = max(seq, int(entry.get("seq", 0)))
        if state is not None:
            seq = max(seq, state.seq)
        self._seq = max(self._seq, seq)
        self._loaded = True
        return state

    def _read_snapshot(self) -> State | None:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if not_found(exc):
                self._snapshot_etag = None
                return None
            raise
        body = r["Body"].read()
        self._snapshot_etag = r.get("ETag")
        where = self._uri(self.key)
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise StateError(f"{where}: state snapshot is not valid JSON ({exc.args[0].split(':')[0]})",
                             hint="restore an earlier version of the object (bucket versioning) or "
                             "remove it to start over") from None
        try:
            return State.from_json(raw)
        except StateError as exc:
            raise StateError(f"{where}: {exc.message}", hint=exc.hint) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where}: field {exc} is missing or malformed",
                             hint="restore an earlier version of the object (bucket versioning)") from None

    def _get_journal(self, key: str) -> bytes | None:
        try:
            return self._get(key)
        except Exception as exc:
            if not_found(exc):
                return None
            raise

    def _entries(self, key: str, body: bytes) -> list[dict[str, Any]]:
        try:
            raw = json.loads(body)
            entries = raw["entries"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("entries is not a list of objects")
        except (ValueError, KeyError, TypeError):
            raise StateError(f"{self._uri(key)}: corrupt journal object",
                             hint="restore it from an earlier version (bucket versioning), or remove it "
                             "if it was written by hand") from None
        return entries

    # -------------------------------------------------------------------------- writing
    def append(self, entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not entries:
            return []
        with self._write_lock:
            self._lock.check()  # the fence: still our lock, lease not lapsed
            if not self._loaded:
                self.read()  # learn the last seq before writing after it
            first = self._seq + 1
            written = [{"seq": first + i, **e} for i, e in enumerate(entries)]
            last = written[-1]["seq"]
            # the seq is spent even if the PUT fails (its outcome may be unknown): a gap is harmless
            self._seq = last
            held = self._lock.held
            body = json.dumps({"lock": held.id if held else None, "nonce": uuid.uuid4().hex,
                               "entries": written}, separators=(",", ":"), default=str).encode()
            key = f"{self.journal_prefix}{last:012d}.json"
            with translating(self.url, "append to the state journal"):
                self._put_journal(key, body)
            return written

    def _put_journal(self, key: str, body: bytes) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body,
                                  "ContentType": "application/json"}
        if self._conditional:
            kwargs["IfNoneMatch"] = "*"  # a second writer of this seq fails instead of overwriting
        try:
            r = retry_conflicts(lambda: self.client.put_object(**kwargs))  # a 409 wrote nothing
        except Exception as exc:
            if not precondition_failed(exc):
                raise
            if self._get_journal(key) == body:
                return  # our own PUT, retried after a lost response
            raise StateError(
                f"{self._uri(key)}: another runform wrote this journal entry: the state lock was lost",
                hint="stop, check with `runform plan` what exists, then apply again") from None
        self._note_version(r)

    def _note_version(self, response: Mapping[str, Any]) -> None:
        vid = response.get("VersionId")
        if vid and vid != "null":
            self._versioned = True

    def compact(self, state: State) -> None:
        with self._write_lock:
            self._lock.check()
            state.seq = max(state.seq, self._seq)
            body = json.dumps(state.to_json(), indent=1, default=str).encode()
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Body": body,
                                      "ContentType": "application/json"}
            if self._conditional and self._loaded:
                # fenced too: the snapshot must be the one we read (or still absent)
                if self._snapshot_etag:
                    kwargs["IfMatch"] = self._snapshot_etag
                else:
                    kwargs["IfNoneMatch"] = "*"
            with translating(self.url, "write the state snapshot"):
                try:
                    r = retry_conflicts(lambda: self.client.put_object(**kwargs))  # a 409 wrote nothing
                except Exception as exc:
                    if not (precondition_failed(exc) or (not_found(exc) and "IfMatch" in kwargs)):
                        raise
                    mine = self._snapshot_if(body)
                    if mine is not None:  # our own write, retried after its answer went missing
                        r = {"ETag": mine}
                    else:
                        raise StateError(
                            f"{self._uri(self.key)}: the state snapshot changed since this runform read it: "
                            "another runform wrote it (the state lock was lost)",
                            hint="stop, check with `runform plan` what exists, then apply again") from None
            self._snapshot_etag = r.get("ETag")
            self._note_version(r)
            self._loaded = True
            self._drop_journal(state.seq)
            self._prune_snapshots()

    def _prune_snapshots(self) -> None:
        """On B2 (every version kept and billed): keep the snapshot just written and the one
        before it (the local backend's ``state.json.bak``), delete older versions by VersionId.
        ``RUNFORM_B2_KEEP_VERSIONS=1`` leaves them to the bucket's lifecycle rule. Best effort."""
        env = {**os.environ, **self._env}
        if self.scheme != "b2" or env.get("RUNFORM_B2_KEEP_VERSIONS", "").lower() in ("1", "true", "yes"):
            return
        try:
            with translating(self.url, "delete old state snapshot versions"):
                found: list[tuple[float, str]] = []
                for page in self.client.get_paginator("list_object_versions").paginate(
                        Bucket=self.bucket, Prefix=self.key):
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                        if v["Key"] == self.key and v.get("VersionId") not in (None, "null"):
                            found.append((v["LastModified"].timestamp(), v["VersionId"]))
                found.sort(reverse=True)
                self._map(self._delete_one, [(self.key, vid) for _, vid in found[2:]])
        except StateError as exc:
            self.last_cleanup_error = str(exc)

    def _snapshot_if(self, body: bytes) -> str | None:
        """The snapshot's ETag when it holds exactly ``body``, else None."""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if not_found(exc):
                return None
            raise
        return str(r["ETag"]) if r["Body"].read() == body else None

    def _drop_journal(self, upto: int) -> None:
        """Delete the journal objects the snapshot covers. Best effort: leftovers are skipped on
        replay and deleted by the next compaction."""
        try:
            with translating(self.url, "delete compacted journal objects"):
                if self._versioned:
                    targets = self._journal_versions(upto)
                else:
                    targets = [(key, None) for seq, key in self._journal_keys() if seq <= upto]
                if self.scheme == "b2" or self._versioned or len(targets) <= 1:
                    self._map(self._delete_one, targets)  # B2: per key (no DeleteObjects)
                else:
                    for i in range(0, len(targets), 1000):
                        objects = [{"Key": k, **({"VersionId": v} if v else {})} for k, v in targets[i:i + 1000]]
                        self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
            self.last_cleanup_error = None
        except StateError as exc:
            self.last_cleanup_error = str(exc)

    def _journal_versions(self, upto: int) -> list[tuple[str, str | None]]:
        """Every version (and delete marker) of the covered journal objects: deleting by version
        removes them for good in a versioned bucket."""
        out: list[tuple[str, str | None]] = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.journal_prefix):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                m = _JOURNAL_NAME.match(v["Key"][len(self.journal_prefix):])
                if m and int(m.group(1)) <= upto:
                    vid = v.get("VersionId")
                    out.append((v["Key"], vid if vid and vid != "null" else None))
        return out

    def _delete_one(self, target: tuple[str, str | None]) -> None:
        key, vid = target
        try:
            if vid:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=vid)
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if not not_found(exc):
                raise

    def close(self) -> None:
        if self._lock.held is not None:
            self._lock.release()

    # -------------------------------------------------------------------------- locking
    def lock(self, operation: str, *, timeout: float = 0.0) -> LockInfo:
        info = self._lock.acquire(operation, timeout=timeout)
        self._loaded = False  # re-read the seq under the lock before any write
        return info

    def unlock(self, lock_id: str) -> None:
        held = self._lock.held
        if held is not None and held.id == lock_id:
            self._lock.release()

    def force_unlock(self, lock_id: str) -> None:
        self._lock.force_unlock(lock_id)

    def lock_info(self) -> LockInfo | None:
        return self._lock.current()


def _lock_choice(url: str) -> tuple[str, str]:
    """Split ``?lock=conditional|versioned`` off the URL: (url, lock kind). ``b2://`` always
    uses the versioned lock (B2 has no conditional writes); ``s3://`` the conditional one
    unless told otherwise."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme
    query = parse_qs(parts.query, keep_blank_values=True)
    base = url.split("?", 1)[0]
    unknown = sorted(set(query) - {"lock"})
    if unknown:
        raise StateError(f"state.backend: {url!r}: unknown option {unknown[0]!r}",
                         hint=f"the only option is lock=versioned or lock=conditional, e.g. {base}?lock=versioned")
    kind = (query.get("lock") or ["versioned" if scheme == "b2" else "conditional"])[-1]
    if kind not in _LOCKS:
        raise StateError(f"state.backend: {url!r}: lock={kind!r} is not a lock kind",
                         hint=f"write {base}?lock=versioned (any S3-compatible store with versioning) or "
                         "lock=conditional (If-None-Match; AWS S3 and stores that honour it)")
    if scheme == "b2" and kind != "versioned":
        raise StateError(f"state.backend: {url!r}: B2 has no conditional writes",
                         hint=f"drop the option: {base} uses the versioned lock")
    return base, kind


def _factory(url: str, spec_dir: Path, *, lease: float = 30.0,
             env: Mapping[str, str] | None = None) -> RemoteStateBackend:
    # the probe of an S3-compatible endpoint's conditional writes is cached beside the state
    cache = Path(spec_dir) / ".runform" / "s3-conditional-writes.json"
    return RemoteStateBackend(url, lease=lease, env=env, probe_cache=cache)


@hookimpl
def runform_register_state_backends(register: Any) -> None:
    register("s3", _factory)
    register("b2", _factory)
