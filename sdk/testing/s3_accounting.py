"""Request accounting for the moto S3 stand-in (:mod:`runform.testing.s3`): every request's S3
operation, status and bytes in and out, so a test can assert that a re-apply downloads 0 bytes
or lists once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import attrs


@attrs.frozen
class Request:
    """One request the server answered."""

    method: str
    path: str
    query: str
    operation: str
    status: int
    bytes_in: int
    bytes_out: int
    headers: tuple[tuple[str, str], ...] = ()


def operation_of(method: str, path: str, query: str) -> str:
    """The S3 operation name of a path-style request (enough for test assertions)."""
    q = parse_qs(query, keep_blank_values=True)
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if path.startswith("/moto-api"):
        return "MotoApi"
    if not has_key:
        if method == "GET":
            return "ListObjectsV2" if q.get("list-type") == ["2"] else (
                "ListObjectVersions" if "versions" in q else "ListBucket")
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        return {"PUT": "CreateBucket" if not q else "PutBucketConfig", "HEAD": "HeadBucket",
                "DELETE": "DeleteBucket"}.get(method, method)
    if method == "GET":
        return "ListParts" if "uploadId" in q else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        return "UploadPart" if "partNumber" in q else "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return method


class Accounting:
    """WSGI middleware that records each request and counts the bytes it sent back. With
    ``rate`` (bytes per second) each object's body is sent no faster than that, so that a
    test can interrupt a download half-way; with ``upload_rate`` each upload's body (PutObject,
    UploadPart) is read no faster than that, so that a test can interrupt a push half-way
    (``reset`` clears both)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.rate: float | None = None
        self.upload_rate: float | None = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.rate = self.upload_rate = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")

        def capture(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            # Recorded here, before any byte goes out, so a client never sees a response
            # that the log does not hold yet. bytes_out is the declared Content-Length.
            if not path.startswith("/moto-api"):
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                hdrs = tuple((k[5:].replace("_", "-").lower(), str(v))
                             for k, v in environ.items() if k.startswith("HTTP_"))
                rec = Request(method, path, query, operation_of(method, path, query),
                              int(status_line.split(" ", 1)[0]),
                              int(environ.get("CONTENT_LENGTH") or 0),
                              0 if method == "HEAD" else length, hdrs)
                with self._lock:
                    self.requests.append(rec)
            return start_response(status_line, headers, exc_info)

        if self.upload_rate and operation_of(method, path, query) in ("PutObject", "UploadPart"):
            environ["wsgi.input"] = _PacedInput(environ["wsgi.input"], self.upload_rate)
        body = self.app(environ, capture)
        if self.rate and operation_of(method, path, query) == "GetObject":
            return _paced(body, self.rate)
        return body  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ queries
    def of(self, operation: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if operation is None or r.operation == operation]

    def count(self, operation: str | None = None) -> int:
        return len(self.of(operation))

    @property
    def object_bytes_out(self) -> int:
        """Bytes of object content served (GetObject bodies, errors excluded)."""
        return sum(r.bytes_out for r in self.of("GetObject") if r.status < 300)

    @property
    def bytes_in(self) -> int:
        """Bytes of request bodies received (uploads)."""
        return sum(r.bytes_in for r in self.of())

    def operations(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.of():
            out[r.operation] = out.get(r.operation, 0) + 1
        return out


def _paced(body: Iterable[bytes], rate: float) -> Iterator[bytes]:
    """``body`` in 64 KiB pieces, no faster than ``rate`` bytes per second."""
    import time

    start, sent = time.monotonic(), 0
    try:
        for chunk in body:
            for i in range(0, len(chunk), 1 << 16):
                piece = chunk[i:i + (1 << 16)]
                sent += len(piece)
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                yield piece
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class _PacedInput:
    """A request body read no faster than ``rate`` bytes per second, in 64 KiB pieces (the
    client's sends back up behind it, as over a slow link)."""

    def __init__(self, raw: Any, rate: float) -> None:
        import time

        self.raw, self.rate, self.got, self.start = raw, rate, 0, time.monotonic()

    def _hold(self, n: int) -> None:
        import time

        self.got += n
        ahead = self.got / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)

    def read(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            want = 1 << 16 if size is None or size < 0 else min(1 << 16, size - len(out))
            piece = self.raw.read(want)
            if not piece:
                break
            out += piece
            self._hold(len(piece))
        return bytes(out)

    def readline(self, size: int = -1) -> bytes:
        line = self.raw.readline(size)
        self._hold(len(line))
        return line  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
