"""How the S3/B2 backend moves bytes: transfer settings (s3transfer's), the progress
subscriber that hashes a download in flight, and every transfer error classified as runform's
own (changed since the plan, permanent, or worth a retry)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from runform.errors import RunformError
from runform.interfaces import ManifestEntry
from runform.storage.s3conn import credentials_missing, error_code, http_status, transient, unreachable

from runform.storage.hydrate import DigestMismatch, PermanentError, Progress

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


def retry_listing(fn: Callable[[], Any]) -> Any:
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
