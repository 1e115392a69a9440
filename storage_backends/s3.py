"""``s3://`` and ``b2://`` storage on boto3 (B2 through its S3-compatible API).

- ``resolve``: one ListObjectsV2 listing per prefix (+ runform's index object when present)
  into a manifest; see :mod:`._s3index` for how digests are chosen.
- ``fetch``: incremental, parallel, multipart through boto3's transfer manager; every file
  verified and renamed into place (see :mod:`._hydrate`). A no-change fetch makes no request.
- ``push``: uploads only files whose size or sha256 differ, storing the sha256 in the
  object's metadata and in the index object.
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
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry

from runform.storage import digest as _digest
from ._hydrate import DigestMismatch, HydrateOptions, PermanentError, Progress, hydrate
from runform.storage.record import walk_files
from runform.storage.s3conn import (
    Connection,
    Location,
    credentials_missing,
    error_code,
    http_status,
    transient,
    unreachable,
)
from ._s3index import INDEX_NAME, IndexEntry, Snapshot, index_body
from runform.storage.verify import VerifyReport, verify

MIB = 1 << 20
_PERMANENT = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
              "SignatureDoesNotMatch", "InvalidArgument", "NotImplemented", "404", "403"}


@attrs.frozen
class TransferSettings:
    """Knobs of boto3's transfer manager and of runform's file-level parallelism."""

    max_concurrency: int = 16  # concurrent requests (ranges of large objects, whole files)
    file_workers: int = 8  # files in flight
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    upload_chunksize: int = 16 * MIB
    io_chunksize: int = 1 * MIB  # bytes per read/write/hash step (s3transfer's is 256 KiB)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TransferSettings:
        """Defaults, overridden by ``RUNFORM_S3_CONCURRENCY`` (requests; files in flight are
        half of it) and ``RUNFORM_S3_MULTIPART_MB``. The defaults suit a few cores; raise the
        concurrency for many small objects over a long-latency link."""
        out = cls()
        if v := env.get("RUNFORM_S3_CONCURRENCY"):
            out = attrs.evolve(out, max_concurrency=int(v), file_workers=max(1, int(v) // 2))
        if v := env.get("RUNFORM_S3_MULTIPART_MB"):
            out = attrs.evolve(out, multipart_threshold=int(v) * MIB)
        return out

    def transfer_config(self, *, upload: bool = False) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.upload_chunksize if upload else self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            io_chunksize=self.io_chunksize,
            use_threads=True,
        )


def _subscriber(progress: Progress, size: int | None = None, etag: str | None = None,
                threshold: int = 0) -> Any:
    """A transfer subscriber that reports progress and, for a download, tells s3transfer
    the size and ETag from the manifest so that it skips its HeadObject."""
    from s3transfer.subscribers import BaseSubscriber

    class Known(BaseSubscriber):  # type: ignore[misc]  # untyped base
        def on_queued(self, future: Any, **kwargs: Any) -> None:
            if size is None:
                return
            future.meta.provide_transfer_size(size)
            # The ETag only guards ranged GETs (If-Match). A small object is fetched with one
            # GET and needs none; a large one without an ETag in the manifest (its digest is
            # a sha256) is left to s3transfer, which HEADs it for one.
            if etag is not None:
                future.meta.provide_object_etag(f'"{etag}"')
            elif size < threshold:
                future.meta.provide_object_etag("")

        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            progress(bytes_transferred)

    return Known()


class TransferFailed(RunformError):
    """A transfer error of boto3/botocore/s3transfer that a retry may fix (reported, after the
    retries, as runform's own error naming the object)."""


def _families() -> tuple[type[BaseException], ...]:
    """The exception families of the transfer stack, by their base classes (so that a new
    class in a later botocore or s3transfer is still caught): botocore's ``BotoCoreError`` and
    ``ClientError``, boto3's ``Boto3Error``, every exception s3transfer defines, urllib3's
    ``HTTPError``, and the cancellations s3transfer raises."""
    import concurrent.futures

    import boto3.exceptions
    import botocore.exceptions
    import s3transfer.exceptions

    out: list[type[BaseException]] = [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                                      boto3.exceptions.Boto3Error, concurrent.futures.CancelledError]
    out += [c for c in vars(s3transfer.exceptions).values()
            if isinstance(c, type) and issubclass(c, BaseException) and c.__module__.startswith("s3transfer")]
    try:
        import urllib3.exceptions

        out.append(urllib3.exceptions.HTTPError)
    except ImportError:  # pragma: no cover - botocore brings urllib3
        pass
    return tuple(out)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``__cause__``, ``__context__``, s3transfer's
    ``last_exception``), outermost first."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out) or len(out) > 16:
            continue
        out.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "last_exception", None)]
    return out


def classify_transfer_error(exc: BaseException, what: str, *,
                            changed: Callable[[], bool] | None = None) -> BaseException:
    """Any error of a transfer as runform's own: :class:`DigestMismatch` (the object changed
    since the plan), :class:`PermanentError` (a retry cannot help) or :class:`TransferFailed`
    (retried, then reported); the object is named and the fix given. ``changed`` tells, when the
    error itself does not, whether the object changed since the plan (a HEAD)."""
    if isinstance(exc, RunformError):
        return exc
    chain = _chain(exc)
    for e in chain:
        if credentials_missing(e):
            return PermanentError(f"{what}: no credentials", hint="see the storage credentials in the docs")
        if unreachable(e):
            return PermanentError(f"{what}: cannot reach the endpoint: {e}",
                                  hint="check B2_S3_ENDPOINT / AWS_ENDPOINT_URL and the network")
        code, status = error_code(e), http_status(e)
        if code is None and status is None:
            continue
        if code in ("PreconditionFailed", "412") or status == 412:
            return _changed(what)
        if code in _PERMANENT or (status is not None and 400 <= status < 500 and status not in (408, 409, 429)):
            return PermanentError(f"{what}: {code or status}: {_message(e)}",
                                  hint="the object is gone or not readable with these credentials; "
                                       "run plan again or check the key's rights")
    families = _families()
    if not any(isinstance(e, families) or isinstance(e, ConnectionError | TimeoutError) for e in chain):
        if isinstance(exc, OSError):
            return PermanentError(f"{what}: {exc.strerror or exc}",
                                  hint="check the free space and permissions of the destination")
        return exc
    if changed is not None:
        try:
            if changed():
                return _changed(what)
        except Exception:  # noqa: BLE001 - the HEAD is a second opinion; the first error stands
            pass
    return TransferFailed(f"{what}: the transfer failed: {type(exc).__name__}: {exc}",
                          hint="apply again (the fetch resumes); if it persists, check the endpoint "
                               "(B2_S3_ENDPOINT / AWS_ENDPOINT_URL) and the network")


def _changed(what: str) -> DigestMismatch:
    return DigestMismatch(f"{what}: the object changed since the plan was made (its ETag no longer matches)",
                          hint="run `runform plan` again to see the new version, then apply")


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message") or exc)
    return str(exc)


def _object_changed(client: Any, bucket: str, key: str, entry: ManifestEntry) -> bool:
    """Whether the object no longer is what the manifest says (HEAD: size, ETag, sha256)."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound") or http_status(exc) == 404:
            return True
        raise
    if int(head.get("ContentLength", -1)) != entry.size:
        return True
    kind, _, value = entry.digest.partition(":")
    if kind == "etag":
        return str(head.get("ETag", "")).strip('"') != value
    if kind == "sha256":
        return (head.get("Metadata") or {}).get("sha256", value) != value
    return False


class S3Backend:
    """``s3://bucket/prefix/``: AWS S3 or any S3-compatible endpoint."""

    schemes: tuple[str, ...] = ("s3",)
    scheme = "s3"

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
        snap = _retry(lambda: Snapshot.take(client, self._location(uri)))
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

    def verify(self, manifest: Manifest, dest: Path) -> VerifyReport:
        """Read ``dest`` back; corrupted or missing files are fetched again next time."""
        return verify(manifest, dest)

    def push(self, src: Path, uri: str, env: Mapping[str, str], *,
             prior: Manifest | None = None) -> Manifest:
        """Upload what changed under ``src`` to ``uri``; return the manifest of ``uri``.

        The listing is authoritative, so ``prior`` is accepted for the protocol but not
        trusted: one listing tells what is there even if someone else changed it.
        """
        src = Path(src)
        if not src.exists():
            raise RunformError(f"nothing to push: {src} does not exist",
                               hint="check the artifact's paths (relative to the run's root)")
        loc = self._location(uri)
        settings = self._settings(env)
        client = self._client(env, settings)
        single = src.is_file() and not loc.is_prefix  # one file to one exact key
        if single:
            root = attrs.evolve(loc, key=loc.folder)
            local = {loc.key[len(loc.folder):]: src}
        else:
            root = loc if loc.is_prefix else attrs.evolve(loc, key=loc.key + "/")
            local = dict(walk_files(src))
        before = _retry(lambda: Snapshot.take(client, root))
        shas = _hash_all(local)
        todo = [rel for rel in local if not _same(before, rel, local[rel], shas[rel])]
        if todo:
            _upload(client, settings, root.bucket, root.key, {r: local[r] for r in todo}, shas)
        after = _retry(lambda: Snapshot.take(client, root, read_idx=False))
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
        snap = _retry(lambda: Snapshot.take(client, loc, read_idx=False))
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


def _retry(fn: Callable[[], Any]) -> Any:
    """Retry a listing cut off mid-response; botocore already retried each request (throttling,
    5xx, connection errors) and an unreachable endpoint becomes a clear error."""
    try:
        import tenacity

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8),
            retry=tenacity.retry_if_exception(transient),
            reraise=True,
        )(fn)
    except Exception as exc:
        if unreachable(exc):
            raise RunformError(f"cannot reach the storage endpoint: {exc}",
                               hint="check B2_S3_ENDPOINT / AWS_ENDPOINT_URL and the network") from exc
        raise


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


def _upload(client: Any, settings: TransferSettings, bucket: str, folder: str,
            files: Mapping[str, Path], shas: Mapping[str, str]) -> None:
    from boto3.s3.transfer import create_transfer_manager

    manager = create_transfer_manager(client, settings.transfer_config(upload=True))
    try:
        futures = {
            rel: manager.upload(str(path), bucket, folder + rel,
                                extra_args={"Metadata": {"sha256": shas[rel]}},
                                subscribers=[_subscriber(lambda n: None)])
            for rel, path in files.items()
        }
        for rel, fut in futures.items():
            try:
                fut.result()
            except Exception as exc:
                raise classify_transfer_error(exc, f"upload of {rel} to {folder}{rel}") from exc
    finally:
        manager.shutdown()


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
