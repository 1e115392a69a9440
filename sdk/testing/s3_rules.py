"""WSGI middlewares of the moto S3 stand-in (:mod:`runform.testing.s3`, whose docstring lists
the rules): :class:`B2Rules` answers what Backblaze B2 rejects, as B2 answers it;
:class:`Conditions` changes how conditional writes are answered (409 conflicts, or the
conditions ignored)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from runform.testing.s3_accounting import operation_of

_B2_NOT_IMPLEMENTED = "A header you provided implies functionality that is not implemented"


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> list[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<Error>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n</Error>\n"
    ).encode()
    start_response(status, [("Content-Type", "application/xml"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _checksum_header(environ: dict[str, Any]) -> str | None:
    """The flexible-checksum header B2 would complain about (B2 names the algorithm one)."""
    names = [k[5:].replace("_", "-").lower() for k in environ if k.startswith("HTTP_")]
    if "x-amz-sdk-checksum-algorithm" in names:
        return "x-amz-sdk-checksum-algorithm"
    for name in names:
        if name == "x-amz-trailer" or (name.startswith("x-amz-checksum-")
                                       and name != "x-amz-checksum-mode"):
            return name
    return None


class B2Rules:
    """WSGI middleware that rejects, as B2 does, what B2's S3 API does not implement. Each rule
    carries the date of the latest report it follows (storage.md §0, §2, §4)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        op = operation_of(method, path, query)
        writes = op in ("PutObject", "UploadPart", "CompleteMultipartUpload",
                        "CreateMultipartUpload", "DeleteObjects")
        # 2025-01 (Backblaze's "Use the AWS SDK for Python" page, boto3 >= 1.36 reports): the
        # flexible-checksum headers on uploads are rejected with 400 InvalidArgument.
        if writes and (name := _checksum_header(environ)):
            _drain(environ)
            return _error(start_response, "400 Bad Request", "InvalidArgument",
                          f"Unsupported header '{name}' received for this API call.")
        # 2025-03 report: x-amz-checksum-mode on GET (boto3's default response validation) is
        # rejected the same way.
        if op in ("GetObject", "HeadObject") and "HTTP_X_AMZ_CHECKSUM_MODE" in environ:
            return _error(start_response, "400 Bad Request", "InvalidArgument",
                          "Unsupported header 'x-amz-checksum-mode' received for this API call.")
        conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        # 2026-01 and 2026-07 reports: still no conditional writes (501 NotImplemented).
        if op in ("PutObject", "CompleteMultipartUpload") and conditional:
            _drain(environ)
            return _error(start_response, "501 Not Implemented", "NotImplemented",
                          _B2_NOT_IMPLEMENTED)
        # Unverified on B2 (MinIO and others reject it; storage.md §2): held to per-key deletes.
        if op == "DeleteObjects" and "HTTP_CONTENT_MD5" not in environ:
            _drain(environ)
            return _error(start_response, "400 Bad Request", "InvalidRequest",
                          "Missing required header for this request: Content-MD5")
        return self.app(environ, start_response)  # type: ignore[no-any-return]


_CONDITIONAL_WRITES = ("PutObject", "CompleteMultipartUpload", "DeleteObject")


class Conditions:
    """WSGI middleware: how conditional writes are answered (see the module's docstring).
    ``conflict_share`` and ``ignore_conditions`` may be changed while the server runs."""

    def __init__(self, app: Callable[..., Any], *, conflict_share: float = 0.0,
                 ignore_conditions: bool = False, seed: int = 12) -> None:
        import random

        self.app = app
        self.conflict_share = conflict_share
        self.ignore_conditions = ignore_conditions
        self.conflicts = 0  # 409s answered
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        op = operation_of(method, path, environ.get("QUERY_STRING", ""))
        conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        if op not in _CONDITIONAL_WRITES or not conditional:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if self.ignore_conditions:
            environ.pop("HTTP_IF_NONE_MATCH", None)
            environ.pop("HTTP_IF_MATCH", None)
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        with self._lock:
            busy = self._in_flight.get(path, 0) > 0
            refuse = self.conflict_share > 0 and (busy or self._random.random() < self.conflict_share)
            if refuse:
                self.conflicts += 1
            else:
                self._in_flight[path] = self._in_flight.get(path, 0) + 1
        if refuse:
            _drain(environ)
            return _error(start_response, "409 Conflict", "ConditionalRequestConflict",
                          "A conflicting conditional operation is currently in progress against this "
                          "resource. Please try again.")
        try:
            return list(self.app(environ, start_response))
        finally:
            with self._lock:
                self._in_flight[path] -= 1
                if not self._in_flight[path]:
                    del self._in_flight[path]

    def reset(self, *, conflict_share: float, ignore_conditions: bool) -> None:
        with self._lock:
            self.conflict_share, self.ignore_conditions, self.conflicts = conflict_share, ignore_conditions, 0


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body so the connection stays usable after an early answer."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        while length > 0 and (chunk := stream.read(min(length, 1 << 20))):
            length -= len(chunk)
    elif environ.get("wsgi.input_terminated"):
        while stream.read(1 << 20):
            pass
