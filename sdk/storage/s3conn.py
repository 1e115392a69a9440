"""Connecting to S3 and B2 with boto3: URIs, credentials, endpoint, client config.

- ``b2://bucket/prefix/`` uses ``B2_KEY_ID`` / ``B2_APP_KEY`` and ``B2_S3_ENDPOINT`` (or
  ``B2_S3_REGION``, giving ``https://s3.<region>.backblazeb2.com``).
- ``s3://bucket/prefix/`` uses boto3's own credential chain, with ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` / ``AWS_PROFILE``, ``AWS_REGION`` (or
  ``AWS_DEFAULT_REGION``) and ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) taken from the
  env mapping passed in when present there.

Both use ``when_required`` request/response checksums (B2 rejects the flexible-checksum
headers boto3 ≥ 1.36 sends by default) and path-style addressing whenever an endpoint is
set. The client is botocore's (boto3 itself is not imported for it), imported lazily:
importing this module costs nothing.
"""

from __future__ import annotations

import gc
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from runform.errors import RunformError

_B2_HOST = re.compile(r"^s3\.([a-z0-9-]+)\.backblazeb2\.com$")
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_GC_FREEZE = os.environ.get("RUNFORM_GC_FREEZE", "1") != "0"


@attrs.frozen
class Location:
    """``scheme://bucket/key``; ``key`` is a prefix when it is empty or ends with ``/``."""

    scheme: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        parts = urlsplit(uri)
        if parts.scheme not in ("s3", "b2") or not parts.netloc:
            raise RunformError(f"not an s3:// or b2:// URI with a bucket: {uri!r}",
                               hint="write it as s3://bucket/prefix/ or b2://bucket/prefix/")
        return cls(parts.scheme, parts.netloc, parts.path.lstrip("/"))

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    @property
    def folder(self) -> str:
        """The key prefix of the folder: the key itself, or the parent of an object key."""
        if self.is_prefix:
            return self.key
        return self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else ""

    def uri(self, key: str | None = None) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key if key is None else key}"


@attrs.frozen
class Connection:
    """Everything needed to build a client, read from an env mapping."""

    scheme: str
    endpoint_url: str | None
    region: str | None
    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    profile: str | None = None
    max_attempts: int = 5  # botocore's retries per request (AWS_MAX_ATTEMPTS overrides)

    @classmethod
    def from_env(cls, scheme: str, env: Mapping[str, str]) -> Connection:
        conn = cls._b2(env) if scheme == "b2" else cls._s3(env)
        if attempts := env.get("AWS_MAX_ATTEMPTS"):
            conn = attrs.evolve(conn, max_attempts=max(1, int(attempts)))
        return conn

    @classmethod
    def _s3(cls, env: Mapping[str, str]) -> Connection:
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return cls("s3", endpoint, region, env.get("AWS_ACCESS_KEY_ID"),
                   env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"),
                   env.get("AWS_PROFILE"))

    @classmethod
    def _b2(cls, env: Mapping[str, str]) -> Connection:
        key_id, app_key = env.get("B2_KEY_ID"), env.get("B2_APP_KEY")
        if not key_id or not app_key:
            raise RunformError("b2:// needs B2_KEY_ID and B2_APP_KEY",
                               hint="put an application key (not the master key) in the secrets env file")
        endpoint = env.get("B2_S3_ENDPOINT")
        region = env.get("B2_S3_REGION")
        if endpoint:
            if "://" not in endpoint:
                endpoint = "https://" + endpoint
            host = urlsplit(endpoint).hostname or ""
            if not region and (m := _B2_HOST.match(host)):
                region = m.group(1)
        elif region:
            endpoint = f"https://s3.{region}.backblazeb2.com"
        else:
            raise RunformError("b2:// needs B2_S3_ENDPOINT or B2_S3_REGION",
                               hint="e.g. B2_S3_REGION=us-west-004 (shown on the bucket's page)")
        return cls("b2", endpoint, region or "us-east-1", key_id, app_key)

    def client(self, *, pool: int = 32) -> Any:
        """A (cached, thread-safe) boto3 S3 client for this connection."""
        key = (attrs.astuple(self), pool)
        with _clients_lock:
            hit = _clients.get(key)
        if hit is not None:
            return hit
        client = self._build(pool)
        with _clients_lock:
            return _clients.setdefault(key, client)

    def _build(self, pool: int) -> Any:
        # boto3's import and its service model make a large object graph that lives as long
        # as the process: build it with the cyclic GC paused, then freeze it so that no
        # collection during a transfer rescans it (300 MB from moto: 1.6 s -> 1.0 s, see
        # docs/BENCHMARKS-storage.md). RUNFORM_GC_FREEZE=0 turns this off.
        paused = _GC_FREEZE and gc.isenabled()
        if paused:
            gc.disable()
        try:
            client = self._create(pool)
        finally:
            if paused:
                gc.enable()
        if _GC_FREEZE:
            gc.freeze()
        return client

    def _create(self, pool: int) -> Any:
        # botocore's own session: the same client (and credential chain) as boto3's, without
        # importing boto3 and s3transfer (~0.1-0.2 s); a listing and presigned URLs, what a
        # plan and an apply from presigned URLs need, use nothing else. Transfers that use
        # s3transfer import it when they run.
        import botocore.session
        from botocore.config import Config

        from runform.storage.botocore_models import s3_loader

        session = botocore.session.Session(profile=self.profile)
        if (loader := s3_loader()) is not None:  # S3's data only, parsed once (see there)
            session.register_component("data_loader", loader)
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=iso_timestamp)
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            signature_version="s3v4",  # presigned URLs too (botocore's default there is SigV2)
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            max_pool_connections=pool,
            connect_timeout=10,
            read_timeout=120,
        )
        return session.create_client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token)


def iso_timestamp(value: Any) -> Any:
    """botocore's timestamp parser for this client: S3's ISO 8601 times (a listing's
    ``LastModified``, one per object) by the standard library, ~10x faster than botocore's
    dateutil parser (8 ms per 64 objects here, 1.2 s per 10,000); anything else by botocore's."""
    from datetime import datetime

    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


_TRANSIENT = {"ResponseStreamingError", "IncompleteReadError", "ReadTimeoutError",
              "ConnectionClosedError", "ProtocolError", "IncompleteRead", "ChunkedEncodingError"}


def transient(exc: BaseException) -> bool:
    """An error in the middle of a response (a stream cut short), which botocore's own
    retries do not cover once the response started; everything else it retried already."""
    return type(exc).__name__ in _TRANSIENT or isinstance(exc, ConnectionResetError)


def unreachable(exc: BaseException) -> bool:
    """The endpoint could not be reached even after botocore's retries."""
    return type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError")


def credentials_missing(exc: BaseException) -> bool:
    """botocore found no (or half a) credential set: a retry cannot help."""
    return type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError")


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None
