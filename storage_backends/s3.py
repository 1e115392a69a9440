"""``s3://`` and ``b2://`` storage on boto3 (B2 through its S3-compatible API).

- ``resolve``: one ListObjectsV2 listing per prefix (+ runform's index object when present)
  into a manifest; see :mod:`._s3index` for how digests are chosen.
- ``fetch``: incremental, parallel, multipart through boto3's transfer manager; every file
  verified and renamed into place (see :mod:`runform.storage.hydrate`). A no-change fetch makes no request.
- ``push``: uploads only files whose size or sha256 differ, storing the sha256 in the
  object's metadata and in the index object (written last: a push stopped before it is
  continued from the objects that are whole). Its ``progress`` raising ``TransferStopped``
  (Ctrl-C) stops every upload under way at its next chunk, without botocore's retries.
- ``delete``: DeleteObjects batches on S3, per-key DeleteObject on B2.
- B2 version hygiene: what runform replaces or deletes in ``b2://`` goes by VersionId (see
  :class:`B2Backend`), so no older version stays billed.

Credentials and client settings: :mod:`runform.storage.s3conn`. Nothing heavy is imported at module
import; boto3 loads on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import runform.hookspecs
from runform.errors import RunformError, TransferStopped
from runform.interfaces import Manifest, ManifestEntry
from runform.storage import digest as _digest
from runform.storage.record import walk_files
from runform.storage.s3conn import (
    Connection,
    Location,
    error_code,
    http_status,
)
from runform.storage.verify import VerifyReport, verify

from runform.storage.hydrate import HydrateOptions, PermanentError, Progress, hydrate
from ._s3index import INDEX_NAME, IndexEntry, Snapshot, index_body
from .s3_push import _abort_open_uploads, _stoppable, _upload
from .s3_transfer import (
    MIB,
    TransferFailed,
    TransferSettings,
    _object_changed,
    _subscriber,
    classify_transfer_error,
    retry_listing,
)

__all__ = ["MIB", "B2Backend", "S3Backend", "TransferFailed", "TransferSettings", "classify_transfer_error"]


class S3Backend:
    """``s3://bucket/prefix/``: AWS S3 or any S3-compatible endpoint."""

    schemes: tuple[str, ...] = ("s3",)
    scheme = "s3"
    checksum_mode = True  # GETs ask for S3's stored checksums (x-amz-checksum-mode)

    def __init__(self, settings: TransferSettings | None = None) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ plumbing
    def _settings(self, env: Mapping[str, str]) -> TransferSettings:
        return self.settings or TransferSettings.from_env(env)

    def _client(self, env: Mapping[str, str], settings: TransferSettings | None = None) -> Any:
        s = settings or self._settings(env)
        return Connection.from_env(self.scheme, env).client(pool=s.max_concurrency + 8)

    def _location(self, uri: str) -> Location:
        loc = Location.parse(uri)
        if loc.scheme != self.scheme:
            raise PermanentError(f"{uri}: expected a {self.scheme}:// URI")
        return loc

    # ------------------------------------------------------------------ protocol
    def resolve(self, uri: str, env: Mapping[str, str]) -> Manifest:
        """What ``uri`` holds now. A prefix URI is normalised to end with ``/``."""
        client = self._client(env)
        snap = retry_listing(lambda: Snapshot.take(client, self._location(uri)))
        return snap.manifest(client)

    def fetch(self, manifest: Manifest, dest: Path, env: Mapping[str, str], *,
              progress: Callable[[int], None] | None = None) -> int:
        """Make ``dest`` hold ``manifest``; returns the bytes downloaded."""
        loc = self._location(manifest.uri)
        folder = loc.key if loc.is_prefix else loc.folder
        settings = self._settings(env)
        manager = _LazyManager(lambda: self._client(env, settings), settings.transfer_config)

        def transfer(entry: ManifestEntry, tmp: Path, report: Progress) -> _digest.CheckResult | None:
            key = folder + entry.path
            etag = entry.digest[5:] if entry.digest.startswith("etag:") else None
            # The digest is computed as the transfer manager writes, in order (see
            # HashingWriter); the file is read back only if a multipart ETag needs a second
            # guess at the uploader's part size.
            hasher = _digest.StreamHasher(entry.digest, entry.size)
            try:
                with open(tmp, "wb") as raw:
                    manager.get().download(
                        loc.bucket, key, _digest.HashingWriter(raw, hasher),
                        subscribers=[_subscriber(report, entry.size, etag,
                                                 settings.multipart_threshold)],
                    ).result()
            except Exception as exc:
                raise classify_transfer_error(exc, loc.uri(key), changed=lambda: _object_changed(
                    manager.client(), loc.bucket, key, entry)) from exc
            return hasher.result()

        try:
            return hydrate(manifest, Path(dest), transfer=transfer, progress=progress,
                           options=HydrateOptions(workers=settings.file_workers))
        finally:
            manager.shutdown()

    def presign(self, manifest: Manifest, env: Mapping[str, str], *, ttl_s: int = 3600) -> dict[str, Any]:
        """Presigned GET URLs for every object of ``manifest`` (signed here, on the client:
        the machine downloads without credentials; see :mod:`runform.storage.urlfetch`), when they
        expire (``expires_at``, epoch seconds) and the ``headers`` every GET must send (S3:
        ``x-amz-checksum-mode``, so that the machine checks the bytes against S3's CRC32
        rather than computing their MD5)."""
        import time

        from runform.storage.urlfetch import CHECKSUM_MODE, presign

        loc = self._location(manifest.uri)
        folder = loc.key if loc.is_prefix else loc.folder
        expires_at = time.time() + ttl_s
        urls = presign(self._client(env), loc.bucket, folder, list(manifest.entries), ttl_s,
                       checksums=self.checksum_mode)
        return {"urls": urls, "expires_at": expires_at,
                "headers": dict(CHECKSUM_MODE) if self.checksum_mode else {}}

    def verify(self, manifest: Manifest, dest: Path) -> VerifyReport:
        """Read ``dest`` back; corrupted or missing files are fetched again next time."""
        return verify(manifest, dest)

    def push(self, src: Path, uri: str, env: Mapping[str, str], *,
             prior: Manifest | None = None) -> Manifest:
        """Upload what changed under ``src`` to ``uri``; return the manifest of ``uri``.

        The listing is authoritative, so ``prior`` is accepted for the protocol but not
        trusted: one listing tells what is there even if someone else changed it.
        """
        return self.push_with_progress(src, uri, env, prior=prior, progress=lambda n: None)

    def push_with_progress(self, src: Path, uri: str, env: Mapping[str, str], *,
                           progress: Callable[[int], None], prior: Manifest | None = None) -> Manifest:
        """``push`` counting its bytes (``runform.interfaces.ReportsPushProgress``): the files
        already there at once, then what s3transfer reports as it sends (a retry counts back)."""
        src = Path(src)
        if not src.exists():
            raise RunformError(f"nothing to push: {src} does not exist",
                               hint="check the artifact's paths (relative to the run's root)")
        loc = self._location(uri)
        settings = self._settings(env)
        client = self._client(env, settings)
        progress, halted, no_retry = _stoppable(progress)
        client.meta.events.register_first("needs-retry.s3", no_retry)  # the client is shared: undone below
        try:
            return self._push(src, loc, env, settings, client, progress, halted)
        finally:
            client.meta.events.unregister("needs-retry.s3", no_retry)

    def _push(self, src: Path, loc: Location, env: Mapping[str, str], settings: TransferSettings, client: Any,
              progress: Callable[[int], None], halted: threading.Event) -> Manifest:
        single = src.is_file() and not loc.is_prefix  # one file to one exact key
        if single:
            root = attrs.evolve(loc, key=loc.folder)
            local = {loc.key[len(loc.folder):]: src}
        else:
            root = loc if loc.is_prefix else attrs.evolve(loc, key=loc.key + "/")
            local = dict(walk_files(src))
        before = retry_listing(lambda: Snapshot.take(client, root))
        shas = _hash_all(local)
        todo = [rel for rel in local if not _same(before, rel, local[rel], shas[rel])]
        todo = [rel for rel in todo if not _whole_unindexed(client, before, rel, local[rel], shas[rel])]
        if already := sum(local[rel].stat().st_size for rel in local if rel not in todo):
            progress(already)
        if todo:
            try:
                _upload(client, settings, root.bucket, root.key, {r: local[r] for r in todo}, shas, progress)
            finally:
                if halted.is_set():  # every request has ended: nothing may stay open and bill
                    _abort_open_uploads(client, root.bucket, {root.key + r for r in todo})
        if halted.is_set():  # the count stopped the push after the last upload: no index, no record
            raise TransferStopped("the push was stopped")
        after = retry_listing(lambda: Snapshot.take(client, root, read_idx=False))
        index = _merge_index(before, after, shas)
        if index != before.index or not before.index_listed:
            client.put_object(Bucket=root.bucket, Key=root.key + INDEX_NAME,
                              Body=index_body(index), ContentType="application/json")
        written = [root.key + rel for rel in todo]
        if index != before.index or not before.index_listed:
            written.append(root.key + INDEX_NAME)
        self._after_overwrite(client, root.bucket, root.key, written, env)
        now = attrs.evolve(after, index=index)
        if single:
            (name,) = local
            now = attrs.evolve(now, location=loc, single=True, objects={name: now.objects[name]})
        return now.manifest(client)

    def delete(self, uri: str, env: Mapping[str, str], paths: Iterable[str] | None = None) -> int:
        """Delete ``paths`` (manifest paths) under ``uri``, or everything there; returns the
        number of objects deleted. B2 gets one DeleteObject per key (see storage.md §2)."""
        loc = self._location(uri)
        client = self._client(env)
        snap = retry_listing(lambda: Snapshot.take(client, loc, read_idx=False))
        wanted = set(paths) if paths is not None else set(snap.objects)
        keys = [snap.objects[p].key for p in sorted(wanted) if p in snap.objects]
        if paths is None and snap.index_listed:
            keys.append(snap.folder + INDEX_NAME)
        self._delete_keys(client, loc.bucket, keys, env=env, folder=snap.folder)
        return len(keys)

    def _after_overwrite(self, client: Any, bucket: str, folder: str, keys: list[str],
                         env: Mapping[str, str]) -> None:
        """Nothing to do on S3 (a versioned AWS bucket keeps history by the owner's choice)."""

    def _delete_keys(self, client: Any, bucket: str, keys: list[str], *,
                     env: Mapping[str, str] | None = None, folder: str = "") -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            resp = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in batch], "Quiet": True})
            if errors := resp.get("Errors"):
                raise PermanentError(f"delete failed for {len(errors)} objects: {errors[:3]}")


class B2Backend(S3Backend):
    """``b2://bucket/prefix/``: Backblaze B2 through its S3-compatible API.

    B2 keeps every version of every file, and a delete without a VersionId only hides a file
    (storage.md §0): its data stays billed. So what runform replaces or deletes here it removes
    by VersionId: after a push, the older versions (and hide markers) of each key it wrote; on
    a delete, every version of each key. One ListObjectVersions listing of the folder per push
    or delete. ``RUNFORM_B2_KEEP_VERSIONS=1`` turns this off (plain deletes, which hide), for a
    bucket whose lifecycle rule keeps history ("Keep prior versions for this number of days")."""

    schemes = ("b2",)
    scheme = "b2"
    checksum_mode = False  # B2 has rejected x-amz-checksum-mode on GET (storage.md §0)

    @staticmethod
    def _keep(env: Mapping[str, str] | None) -> bool:
        return str((env or {}).get("RUNFORM_B2_KEEP_VERSIONS", "")).lower() in ("1", "true", "yes")

    def _versions(self, client: Any, bucket: str, folder: str, keys: set[str]) -> dict[str, list[tuple[str, bool]]]:
        """key -> [(VersionId, is latest)] of its data versions and hide markers."""
        out: dict[str, list[tuple[str, bool]]] = {}
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=folder):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                vid = v.get("VersionId")
                if v["Key"] in keys and vid and vid != "null":
                    out.setdefault(v["Key"], []).append((vid, bool(v.get("IsLatest"))
                                                         and v in page.get("Versions", [])))
        return out

    def _delete_versions(self, client: Any, bucket: str, targets: list[tuple[str, str | None]]) -> None:
        if not targets:
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(target: tuple[str, str | None]) -> None:
            key, vid = target
            try:
                if vid:
                    client.delete_object(Bucket=bucket, Key=key, VersionId=vid)
                else:
                    client.delete_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if error_code(exc) not in ("NoSuchKey", "NoSuchVersion", "404") and http_status(exc) != 404:
                    raise classify_transfer_error(exc, f"b2://{bucket}/{key}") from exc

        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            list(pool.map(one, targets))

    def _after_overwrite(self, client: Any, bucket: str, folder: str, keys: list[str],
                         env: Mapping[str, str]) -> None:
        if not keys or self._keep(env):
            return
        versions = self._versions(client, bucket, folder, set(keys))
        self._delete_versions(client, bucket, [(key, vid) for key, vs in versions.items()
                                               for vid, latest in vs if not latest])

    def _delete_keys(self, client: Any, bucket: str, keys: list[str], *,
                     env: Mapping[str, str] | None = None, folder: str = "") -> None:
        if not keys:
            return
        if self._keep(env):
            self._delete_versions(client, bucket, [(k, None) for k in keys])
            return
        versions = self._versions(client, bucket, folder, set(keys))
        self._delete_versions(client, bucket, [(key, vid) for key in keys
                                               for vid, _ in versions.get(key, [(None, False)])])


# ---------------------------------------------------------------------- helpers


class _LazyManager:
    """One boto3 transfer manager per fetch, created only when a file must move."""

    def __init__(self, client: Callable[[], Any], config: Callable[[], Any]) -> None:
        self._client, self._config = client, config
        self._manager: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._manager is None:
                from boto3.s3.transfer import create_transfer_manager

                self._manager = create_transfer_manager(self._client(), self._config())
            return self._manager

    def client(self) -> Any:
        return self._client()

    def shutdown(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()


def _hash_all(files: Mapping[str, Path]) -> dict[str, str]:
    """sha256 hex of every file, in parallel (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, max(1, len(files)))) as pool:
        hexes = pool.map(lambda p: _digest.sha256_file(p)[7:], files.values())
        return dict(zip(files, hexes, strict=True))


def _same(snap: Snapshot, rel: str, path: Path, sha: str) -> bool:
    """Whether the object at ``rel`` already holds the local file's bytes."""
    obj = snap.objects.get(rel)
    if obj is None or obj.size != path.stat().st_size:
        return False
    idx = snap.index.get(rel)
    if idx is not None and idx.etag == obj.etag and idx.size == obj.size:
        return idx.sha256 == sha
    if not obj.multipart and len(obj.etag) == 32:
        return _digest.md5_hex(path) == obj.etag.lower()
    return False


def _whole_unindexed(client: Any, snap: Snapshot, rel: str, path: Path, sha: str) -> bool:
    """Whether a multipart object the index does not vouch for (a push stopped before it wrote
    its index, after this object was whole) holds the local bytes: the sha256 runform stored in
    its metadata says so (one HeadObject, only for such objects)."""
    obj = snap.objects.get(rel)
    idx = snap.index.get(rel)
    if obj is None or not obj.multipart or obj.size != path.stat().st_size or \
            (idx is not None and idx.etag == obj.etag):
        return False
    head = retry_listing(lambda: client.head_object(Bucket=snap.location.bucket, Key=obj.key))
    return bool((head.get("Metadata") or {}).get("sha256") == sha)


def _merge_index(before: Snapshot, after: Snapshot, shas: Mapping[str, str]) -> dict[str, IndexEntry]:
    """The index after a push: every object whose sha256 is known and still current."""
    out: dict[str, IndexEntry] = {}
    for rel, obj in after.objects.items():
        old = before.index.get(rel)
        if rel in shas:
            out[rel] = IndexEntry(obj.size, obj.etag, shas[rel])
        elif old is not None and old.etag == obj.etag and old.size == obj.size:
            out[rel] = old
    return out


@runform.hookspecs.hookimpl
def runform_register_storage_backends(register: Callable[..., None]) -> None:
    register("s3", S3Backend)
    register("b2", B2Backend)
