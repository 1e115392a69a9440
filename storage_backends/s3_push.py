"""The S3/B2 backend's push: files uploaded through s3transfer with a count that can stop them
(the agent's hang-up at Ctrl-C), no retry once stopped, and no multipart upload left open."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runform.errors import TransferStopped
from runform.storage.hydrate import Progress

from .s3_transfer import TransferSettings, _subscriber, classify_transfer_error, retry_listing


def _stoppable(progress: Callable[[int], None]) -> tuple[Callable[[int], None], threading.Event, Callable[..., None]]:
    """``progress`` for s3transfer's subscribers, the event set once it raised
    :class:`TransferStopped`, and a ``needs-retry`` handler for the client. The count runs inside
    each request body's read, so a stop fails every upload under way at its next chunk; botocore
    would take that for a connection error and retry it after a backoff, so once stopped, the
    handler raises instead of a retry (no wait). A single-part PUT cut short leaves no object; a multipart
    upload is aborted by s3transfer."""
    halted = threading.Event()

    def counted(n: int) -> None:
        try:
            progress(n)
        except TransferStopped:
            halted.set()
            raise

    def no_retry(response: Any = None, caught_exception: Any = None, **kwargs: Any) -> None:
        failed = caught_exception is not None or (response is not None and response[0].status_code >= 400)
        if halted.is_set() and failed:  # what succeeds after the stop (the clean-up's calls) stands
            raise TransferStopped("the push was stopped")

    return counted, halted, no_retry


def _upload(client: Any, settings: TransferSettings, bucket: str, folder: str,
            files: Mapping[str, Path], shas: Mapping[str, str], progress: Progress) -> None:
    from boto3.s3.transfer import create_transfer_manager

    manager = create_transfer_manager(client, settings.transfer_config(upload=True))
    try:
        futures = {
            rel: manager.upload(str(path), bucket, folder + rel,
                                extra_args={"Metadata": {"sha256": shas[rel]}},
                                subscribers=[_subscriber(progress)])
            for rel, path in files.items()
        }
        for rel, fut in futures.items():
            try:
                fut.result()
            except TransferStopped:
                for other in futures.values():  # the queued ones never start
                    other.cancel()
                raise
            except Exception as exc:
                raise classify_transfer_error(exc, f"upload of {rel} to {folder}{rel}") from exc
    finally:
        manager.shutdown()


def _abort_open_uploads(client: Any, bucket: str, keys: set[str]) -> None:
    """Abort the multipart uploads of ``keys`` still open after a stop. s3transfer aborts the
    ones it knows to have failed, but an upload whose CreateMultipartUpload returned after its
    transfer was cancelled is left open (its parts would bill until a lifecycle rule ends it)."""
    prefix = os.path.commonprefix(sorted(keys)) if keys else ""
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for up in page.get("Uploads") or []:
            if up["Key"] in keys:
                retry_listing(lambda up=up: client.abort_multipart_upload(Bucket=bucket, Key=up["Key"],
                                                                   UploadId=up["UploadId"]))
