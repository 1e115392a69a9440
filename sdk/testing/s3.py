"""moto's S3 server on 127.0.0.1, with a B2 mode and request accounting.

``start_s3_server(mode)`` runs moto's WSGI app in a threaded werkzeug server on a free
loopback port, behind two small WSGI middlewares:

- :class:`~runform.testing.s3_rules.B2Rules` (``mode="b2"``) answers what Backblaze B2 rejects, the way B2 answers
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

- :class:`~runform.testing.s3_rules.Conditions` (every mode) changes how conditional writes (``If-None-Match`` /
  ``If-Match`` on PutObject, CompleteMultipartUpload, DeleteObject) are answered:

  * ``conflict_share`` (mode ``s3-conflicts``: 0.3): that share of them, and any that arrives
    while another conditional write on the same key is in flight, are answered 409
    ``ConditionalRequestConflict``, as AWS does (storage.md §0); nothing is written;
  * ``ignore_conditions`` (mode ``s3-ignoring``): the headers are dropped before moto sees
    them, as some S3-compatible servers do (reported for Incus's S3; RustFS on DELETE).

- :class:`~runform.testing.s3_accounting.Accounting` records every request (operation, status, bytes in and out), so a
  test can assert that a re-apply downloads 0 bytes or lists once.

Fixtures (also through runform's pytest plugin): ``s3_server``, ``s3_server_b2``,
``s3_server_conflicts`` and ``s3_server_ignoring``. Each is its own server (its own
endpoint), all share one moto state per process, which is reset before each test.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from runform.testing.s3_accounting import Accounting, Request, operation_of
from runform.testing.s3_rules import B2Rules, Conditions

__all__ = ["ACCESS_KEY", "B2_REGION", "SECRET_KEY", "Accounting", "B2Rules", "Conditions", "Request",
           "S3Server", "operation_of", "start_s3_server"]

ACCESS_KEY = "runform-test-key"
SECRET_KEY = "runform-test-secret"
B2_REGION = "us-west-004"


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
