"""moto's S3 server on 127.0.0.1, with a B2 mode and request accounting.

``start_s3_server(mode)`` runs moto's WSGI app in a threaded werkzeug server on a free
loopback port, behind two small WSGI middlewares:

- :class:`B2Rules` (``mode="b2"``) answers what Backblaze B2 rejects, the way B2 answers
  it (storage.md §2, §4):

  * ``If-None-Match`` / ``If-Match`` on PutObject or CompleteMultipartUpload → 501
    ``NotImplemented`` "A header you provided implies functionality that is not
    implemented";
  * the flexible-checksum headers (``x-amz-sdk-checksum-algorithm``, ``x-amz-checksum-*``,
    ``X-Amz-Trailer``) on PutObject, UploadPart or any POST → 400 ``InvalidArgument``
    "Unsupported header '<name>' received for this API call.";
  * ``x-amz-checksum-mode`` on GetObject / HeadObject → the same 400 (reported 2025-03);
  * DeleteObjects without ``Content-MD5`` → 400 ``InvalidRequest`` (what MinIO and others
    do; B2 is unverified, so runform deletes per key on B2 and this mode holds it to that);
  * buckets keep every version (B2's default): ``make_bucket`` turns versioning on, so a
    delete without a VersionId only adds a hide marker (a delete marker), as on B2.

- :class:`Conditions` (every mode) changes how conditional writes (``If-None-Match`` /
  ``If-Match`` on PutObject, CompleteMultipartUpload, DeleteObject) are answered:

  * ``conflict_share`` (mode ``s3-conflicts``: 0.3): that share of them, and any that arrives
    while another conditional write on the same key is in flight, are answered 409
    ``ConditionalRequestConflict``, as AWS does (storage.md §0); nothing is written;
  * ``ignore_conditions`` (mode ``s3-ignoring``): the headers are dropped before moto sees
    them, as some S3-compatible servers do (reported for Incus's S3; RustFS on DELETE).

- :class:`Accounting` records every request (operation, status, bytes in and out), so a
  test can assert that a re-apply downloads 0 bytes or lists once.

Fixtures (also through runform's pytest plugin): ``s3_server``, ``s3_server_b2``,
``s3_server_conflicts`` and ``s3_server_ignoring``. Each is its own server (its own
endpoint), all share one moto state per process, which is reset before each test.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import attrs
import pytest

ACCESS_KEY = "runform-test-key"
SECRET_KEY = "runform-test-secret"
B2_REGION = "us-west-004"

_B2_NOT_IMPLEMENTED = "A header you provided implies functionality that is not implemented"


# --------------------------------------------------------------------------- accounting


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
    test can interrupt a download half-way (``reset`` clears it)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.rate: float | None = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.rate = None

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


# --------------------------------------------------------------------------- B2 rules


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


# --------------------------------------------------------------------------- server


@attrs.define
class S3Server:
    """A running moto S3 server. ``endpoint`` is ``http://127.0.0.1:<port>``."""

    endpoint: str
    mode: str
    stats: Accounting
    conditions: Conditions
    _server: Any = attrs.field(repr=False)
    _thread: threading.Thread = attrs.field(repr=False)
    _clients: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def client(self, config: Any = None, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server. With no ``config`` it is boto3's default
        configuration (so in B2 mode it gets B2's rejections)."""
        import boto3.session

        session = boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                        aws_secret_access_key=SECRET_KEY,
                                        region_name=B2_REGION if self.mode == "b2" else "us-east-1")
        return session.client("s3", endpoint_url=self.endpoint, config=config, **kwargs)

    def runform_client(self) -> Any:
        """A (cached) client configured as runform configures its own: checksums only when
        required, path addressing."""
        from botocore.config import Config

        if "runform" not in self._clients:
            self._clients["runform"] = self.client(Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"}))
        return self._clients["runform"]

    def make_bucket(self, name: str | None = None, *, versioned: bool | None = None) -> str:
        """Create a bucket (a unique name when none is given); returns its name. ``versioned``
        None: as the store does by default (B2 keeps every version; S3 does not)."""
        if versioned is None:
            versioned = self.mode == "b2"
        name = name or f"rf-{uuid.uuid4().hex[:12]}"
        c = self.runform_client()
        if self.mode == "b2":
            c.create_bucket(Bucket=name,
                            CreateBucketConfiguration={"LocationConstraint": B2_REGION})
        else:
            c.create_bucket(Bucket=name)
        if versioned:
            c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def env(self, scheme: str | None = None) -> dict[str, str]:
        """The env a runform backend needs to reach this server (``s3`` or ``b2``)."""
        scheme = scheme or ("b2" if self.mode == "b2" else "s3")
        if scheme == "b2":
            return {"B2_KEY_ID": ACCESS_KEY, "B2_APP_KEY": SECRET_KEY,
                    "B2_S3_ENDPOINT": self.endpoint, "B2_S3_REGION": B2_REGION}
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def reset(self) -> None:
        """Forget every bucket (moto's reset, shared by all servers of the process) and the
        request log."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        self.stats.reset()
        self.conditions.reset(**_MODES[self.mode])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


_MODES: dict[str, dict[str, Any]] = {
    "s3": {"conflict_share": 0.0, "ignore_conditions": False},
    "b2": {"conflict_share": 0.0, "ignore_conditions": False},
    "s3-conflicts": {"conflict_share": 0.3, "ignore_conditions": False},
    "s3-ignoring": {"conflict_share": 0.0, "ignore_conditions": True},
}


def start_s3_server(mode: str = "s3") -> S3Server:
    """Start moto's S3 server on 127.0.0.1 (free port); ``mode`` is ``s3``, ``b2``,
    ``s3-conflicts`` (409 to a share of conditional writes) or ``s3-ignoring`` (conditional
    headers ignored)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, not {mode!r}")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass  # the accounting middleware keeps the log

    app: Callable[..., Any] = DomainDispatcherApplication(create_backend_app)
    if mode == "b2":
        app = B2Rules(app)
    conditions = Conditions(app, **_MODES[mode])
    stats = Accounting(conditions)
    server = make_server("127.0.0.1", 0, stats, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name=f"moto-{mode}", daemon=True)
    thread.start()
    return S3Server(f"http://127.0.0.1:{server.server_port}", mode, stats, conditions, server, thread)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _runform_s3_servers() -> Iterator[dict[str, S3Server]]:
    servers: dict[str, S3Server] = {}
    try:
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def _server(pool: dict[str, S3Server], mode: str) -> S3Server:
    if mode not in pool:
        pool[mode] = start_s3_server(mode)
    server = pool[mode]
    server.reset()
    return server


@pytest.fixture
def s3_server(_runform_s3_servers: dict[str, S3Server]) -> S3Server:
    """moto's S3 server (S3 semantics: conditional writes, flexible checksums accepted)."""
    return _server(_runform_s3_servers, "s3")


@pytest.fixture
def s3_server_b2(_runform_s3_servers: dict[str, S3Server]) -> S3Server:
    """moto's S3 server in B2 mode: rejects what Backblaze B2 rejects, as B2 does."""
    return _server(_runform_s3_servers, "b2")


@pytest.fixture
def s3_server_conflicts(_runform_s3_servers: dict[str, S3Server]) -> S3Server:
    """moto's S3 server answering 409 ConditionalRequestConflict to 30 % of conditional writes
    (and to any that overlaps another on the same key), as AWS does under contention."""
    return _server(_runform_s3_servers, "s3-conflicts")


@pytest.fixture
def s3_server_ignoring(_runform_s3_servers: dict[str, S3Server]) -> S3Server:
    """moto's S3 server that accepts conditional headers and ignores them."""
    return _server(_runform_s3_servers, "s3-ignoring")
