"""s3:// and b2:// backends against moto over real HTTP (S3 mode and B2 mode).

Bytes moved are counted on the server side (the request log of the stand-in)."""

from __future__ import annotations

import hashlib
import os

import pytest
from runform.storage.record import RECORD_NAME
from runform.storage_backends.s3 import B2Backend, S3Backend, TransferSettings
from runform.testing.s3 import S3Server

MIB = 1 << 20
SMALL = TransferSettings(max_concurrency=8, file_workers=8, multipart_threshold=5 * MIB,
                         multipart_chunksize=5 * MIB, upload_chunksize=5 * MIB)


@pytest.fixture(params=["s3", "b2"])
def store(request: pytest.FixtureRequest) -> tuple[S3Server, S3Backend, str, dict[str, str]]:
    """(server, backend, bucket, env) for each scheme; b2 runs against B2 mode."""
    scheme = request.param
    server = request.getfixturevalue("s3_server_b2" if scheme == "b2" else "s3_server")
    backend = B2Backend(SMALL) if scheme == "b2" else S3Backend(SMALL)
    return server, backend, server.make_bucket(), server.env(scheme)


def _put(server: S3Server, bucket: str, files: dict[str, bytes], **extra: object) -> None:
    c = server.runform_client()
    for key, body in files.items():
        c.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def _dataset() -> dict[str, bytes]:
    return {f"ds/{name}": os.urandom(size) for name, size in
            [("a.h5", 3000), ("b.h5", 70_000), ("sub/c.bin", 1), ("sub/d.bin", 12_345)]}


def test_resolve_lists_once_with_sizes_and_digests(store):
    server, backend, bucket, env = store
    files = _dataset()
    _put(server, bucket, files)
    _put(server, bucket, {"ds.bak/x": b"not mine", "ds/folder/": b""})
    server.stats.reset()
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds", env)
    assert server.stats.operations() == {"ListObjectsV2": 1}
    assert m.uri == f"{backend.scheme}://{bucket}/ds/"
    assert [e.path for e in m.entries] == ["a.h5", "b.h5", "sub/c.bin", "sub/d.bin"]
    by = m.by_path()
    assert by["b.h5"].size == 70_000
    assert by["b.h5"].digest == "etag:" + hashlib.md5(files["ds/b.h5"]).hexdigest()
    assert m.version and m.version.startswith("listing:")
    assert backend.resolve(f"{backend.scheme}://{bucket}/ds/", env) == m


def test_resolve_single_object(store):
    server, backend, bucket, env = store
    _put(server, bucket, {"models/m.pt": b"weights", "models/m.pt.bak": b"old"})
    m = backend.resolve(f"{backend.scheme}://{bucket}/models/m.pt", env)
    assert [(e.path, e.size) for e in m.entries] == [("m.pt", 7)]
    assert m.uri.endswith("/models/m.pt")


def test_fetch_is_incremental_and_counts_from_the_server(store, tmp_path):
    server, backend, bucket, env = store
    files = _dataset()
    _put(server, bucket, files)
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    dest = tmp_path / "data"

    server.stats.reset()
    seen: list[int] = []
    moved = backend.fetch(m, dest, env, progress=seen.append)
    assert moved == m.total_bytes == sum(seen)
    assert server.stats.object_bytes_out == m.total_bytes
    assert server.stats.count("HeadObject") == 0  # sizes and ETags come from the manifest
    for key, body in files.items():
        assert (dest / key[3:]).read_bytes() == body
    assert (dest / RECORD_NAME).exists()

    server.stats.reset()
    assert backend.fetch(m, dest, env) == 0
    assert server.stats.count() == 0  # no request at all: record + stat

    # One object replaced upstream: only it moves.
    new = os.urandom(5000)
    _put(server, bucket, {"ds/sub/d.bin": new})
    m2 = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    assert m2.version != m.version
    server.stats.reset()
    assert backend.fetch(m2, dest, env) == 5000
    assert server.stats.object_bytes_out == 5000
    assert [r.path for r in server.stats.of("GetObject")] == [f"/{bucket}/ds/sub/d.bin"]
    assert (dest / "sub/d.bin").read_bytes() == new


def test_corrupted_file_is_detected_and_fetched_again(store, tmp_path):
    server, backend, bucket, env = store
    files = _dataset()
    _put(server, bucket, files)
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    dest = tmp_path / "data"
    backend.fetch(m, dest, env)

    # Silent corruption: same size, same mtime. Only a full verify can see it.
    target = dest / "b.h5"
    st = target.stat()
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    # A truncated file: the cheap check in fetch sees it by its size.
    (dest / "sub/d.bin").write_bytes(b"short")

    report = backend.verify(m, dest)
    assert report.corrupted == ("b.h5", "sub/d.bin")
    assert not report.clean
    server.stats.reset()
    assert backend.fetch(m, dest, env) == 70_000 + 12_345
    assert server.stats.object_bytes_out == 70_000 + 12_345
    assert target.read_bytes() == files["ds/b.h5"]
    assert backend.verify(m, dest).clean


def test_changed_mtime_rehashes_instead_of_refetching(store, tmp_path):
    server, backend, bucket, env = store
    _put(server, bucket, _dataset())
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    dest = tmp_path / "data"
    backend.fetch(m, dest, env)
    os.utime(dest / "a.h5", (1, 1))  # touched, content intact
    server.stats.reset()
    assert backend.fetch(m, dest, env) == 0
    assert server.stats.count() == 0


def test_existing_correct_files_are_adopted(store, tmp_path):
    server, backend, bucket, env = store
    files = _dataset()
    _put(server, bucket, files)
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    dest = tmp_path / "data"
    for key, body in files.items():  # e.g. hydrated by an earlier tool, no record
        (dest / key[3:]).parent.mkdir(parents=True, exist_ok=True)
        (dest / key[3:]).write_bytes(body)
    (dest / "a.h5").write_bytes(b"x" * 3000)  # right size, wrong bytes
    server.stats.reset()
    assert backend.fetch(m, dest, env) == 3000
    assert server.stats.object_bytes_out == 3000


def test_multipart_object_is_fetched_in_ranges_and_verified(store, tmp_path):
    server, backend, bucket, env = store
    body = os.urandom(11 * MIB + 123)
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "big.bin"
    src.write_bytes(body)
    server.runform_client().upload_file(  # a plain multipart upload, 5 MiB parts, no sha256
        str(src), bucket, "mp/big.bin",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    m = backend.resolve(f"{backend.scheme}://{bucket}/mp/", env)
    (entry,) = m.entries
    assert entry.digest.startswith("etag:") and entry.digest.endswith("-3")
    server.stats.reset()
    dest = tmp_path / "out"
    assert backend.fetch(m, dest, env) == len(body)
    gets = server.stats.of("GetObject")
    assert len(gets) == 3 and {r.status for r in gets} == {206}
    etag = entry.digest[5:]
    for r in gets:  # ranged GETs guarded by the manifest's ETag (If-Match), no HEAD first
        headers = dict(r.headers)
        assert headers["range"].startswith("bytes=") and headers["if-match"] == f'"{etag}"'
    assert server.stats.count("HeadObject") == 0
    assert (dest / "big.bin").read_bytes() == body
    record = (dest / RECORD_NAME).read_text()
    assert "mpetag:5242880:" in record  # the multipart ETag was checked, not only the size


def test_ranged_download_is_hashed_in_flight(store, tmp_path, monkeypatch):
    server, backend, bucket, env = store
    body = os.urandom(11 * MIB)
    server.runform_client().put_object(Bucket=bucket, Key="r/one.bin", Body=body)
    m = backend.resolve(f"{backend.scheme}://{bucket}/r/", env)
    from runform.storage import digest as _digest

    def no_reread(*args, **kwargs):
        raise AssertionError("the file was read back instead of hashed in flight")

    monkeypatch.setattr(_digest, "check", no_reread)
    server.stats.reset()
    assert backend.fetch(m, tmp_path / "d", env) == len(body)
    assert server.stats.count("GetObject") == 3  # ranged, out of order, still hashed in order
    assert (tmp_path / "d" / "one.bin").read_bytes() == body


def test_multipart_digest_mismatch_is_an_error(store, tmp_path):
    server, backend, bucket, env = store
    _put(server, bucket, {"x/f.bin": b"a" * 1000})
    m = backend.resolve(f"{backend.scheme}://{bucket}/x/", env)
    _put(server, bucket, {"x/f.bin": b"b" * 1000})  # changed after the plan, same size
    from runform.storage.hydrate import DigestMismatch

    with pytest.raises(DigestMismatch, match="changed since the plan"):
        backend.fetch(m, tmp_path / "d", env)
    assert not (tmp_path / "d" / "f.bin").exists()
    assert not [p for p in (tmp_path / "d").iterdir() if "runform-tmp" in p.name]


def test_sha256_from_object_metadata(store, tmp_path):
    server, backend, bucket, env = store
    body = os.urandom(6 * MIB)
    sha = hashlib.sha256(body).hexdigest()
    src = tmp_path / "w.bin"
    src.write_bytes(body)
    from boto3.s3.transfer import TransferConfig

    server.runform_client().upload_file(
        str(src), bucket, "meta/w.bin", ExtraArgs={"Metadata": {"sha256": sha}},
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    server.stats.reset()
    m = backend.resolve(f"{backend.scheme}://{bucket}/meta/", env)
    assert m.entries[0].digest == f"sha256:{sha}"
    assert server.stats.operations() == {"ListObjectsV2": 1, "HeadObject": 1}
    backend.fetch(m, tmp_path / "d", env)
    assert (tmp_path / "d" / "w.bin").read_bytes() == body


def test_push_is_incremental(store, tmp_path):
    server, backend, bucket, env = store
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "a.pt").write_bytes(os.urandom(2000))
    (src / "sub" / "b.pt").write_bytes(os.urandom(7 * MIB))  # multipart with 5 MiB parts
    uri = f"{backend.scheme}://{bucket}/runs/r1/ckpt/"
    server.stats.reset()
    m = backend.push(src, uri, env)
    assert [e.path for e in m.entries] == ["a.pt", "sub/b.pt"]
    assert all(e.digest.startswith("sha256:") for e in m.entries)
    assert m == backend.resolve(uri, env)

    server.stats.reset()
    assert backend.push(src, uri, env, prior=m) == m
    ops = server.stats.operations()
    assert "UploadPart" not in ops and "PutObject" not in ops

    (src / "a.pt").write_bytes(b"changed")
    server.stats.reset()
    m2 = backend.push(src, uri, env, prior=m)
    ops = server.stats.operations()
    assert ops.get("PutObject") == 2 and "UploadPart" not in ops  # a.pt + the index
    assert m2.by_path()["a.pt"].size == 7
    dest = tmp_path / "back"
    backend.fetch(m2, dest, env)
    assert (dest / "a.pt").read_bytes() == b"changed"
    head = server.runform_client().head_object(Bucket=bucket, Key="runs/r1/ckpt/sub/b.pt")
    assert head["Metadata"]["sha256"] == m2.by_path()["sub/b.pt"].digest[7:]


def test_a_push_stopped_before_its_index_is_continued_without_sending_whole_objects_again(store, tmp_path):
    """A push stopped after some objects were whole but before it wrote its index (Ctrl-C):
    the next push sends only what is missing; a whole multipart object is recognised by the
    sha256 in its metadata (one HeadObject), a single-part one by its ETag."""
    server, backend, bucket, env = store
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "small.pt").write_bytes(os.urandom(3000))
    (src / "big.pt").write_bytes(os.urandom(7 * MIB))  # multipart with 5 MiB parts
    uri = f"{backend.scheme}://{bucket}/runs/r2/ckpt/"
    backend.push(src, uri, env)
    c = server.runform_client()
    c.delete_object(Bucket=bucket, Key="runs/r2/ckpt/.runform-index.json")  # as if stopped before it
    (src / "late.pt").write_bytes(os.urandom(1000))  # never got there
    server.stats.reset()
    m = backend.push(src, uri, env)
    ops = server.stats.operations()
    assert "UploadPart" not in ops and ops.get("HeadObject") == 1, ops
    assert sorted(r.path.rsplit("/", 1)[-1] for r in server.stats.of("PutObject")) == [".runform-index.json",
                                                                                       "late.pt"]
    assert [e.path for e in m.entries] == ["big.pt", "late.pt", "small.pt"]
    server.stats.reset()
    assert backend.push(src, uri, env, prior=m) == m  # the index vouches for all of it now: no request but the listing
    assert "HeadObject" not in server.stats.operations()


def test_a_count_that_raises_transfer_stopped_stops_the_push_without_retries(store, tmp_path):
    """The agent's count raises ``TransferStopped`` at Ctrl-C: every upload stops at its next
    chunk, botocore does not retry, nothing is left half-written or indexed, and the next push
    (same process, same cached client) works and sends only what is missing."""
    from runform.errors import TransferStopped

    server, backend, bucket, env = store
    src = tmp_path / "ckpt"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.pt").write_bytes(os.urandom(3 * MIB))  # single PUTs
    (src / "big.pt").write_bytes(os.urandom(12 * MIB))  # multipart with 5 MiB parts
    uri = f"{backend.scheme}://{bucket}/runs/r3/ckpt/"
    seen = [0]

    def count(n: int) -> None:
        seen[0] += n
        if seen[0] > 2 * MIB:
            raise TransferStopped("stop")

    server.stats.reset()
    with pytest.raises(TransferStopped):
        backend.push_with_progress(src, uri, env, progress=count)
    ops = server.stats.operations()
    assert ops.get("PutObject", 0) <= 3 and ops.get("UploadPart", 0) <= 3, ops  # none sent twice
    c = server.runform_client()
    there = {o["Key"].rsplit("/", 1)[-1]: o["Size"] for o in
             c.list_objects_v2(Bucket=bucket, Prefix="runs/r3/").get("Contents", [])}
    assert ".runform-index.json" not in there
    assert all(size == (src / name).stat().st_size for name, size in there.items()), there  # whole or absent
    assert not c.list_multipart_uploads(Bucket=bucket).get("Uploads"), "a multipart upload left open"
    m = backend.push_with_progress(src, uri, env, progress=lambda n: None)
    assert sorted(e.path for e in m.entries) == ["big.pt", "f0.pt", "f1.pt", "f2.pt"]
    assert m == backend.resolve(uri, env)


def test_push_missing_source(store, tmp_path):
    _server, backend, bucket, env = store
    from runform.errors import RunformError

    with pytest.raises(RunformError, match="nothing to push"):
        backend.push(tmp_path / "nope", f"{backend.scheme}://{bucket}/x/", env)


def test_push_single_file_to_key(store, tmp_path):
    server, backend, bucket, env = store
    f = tmp_path / "model.pt"
    f.write_bytes(b"w" * 100)
    m = backend.push(f, f"{backend.scheme}://{bucket}/models/final.pt", env)
    assert [(e.path, e.size) for e in m.entries] == [("final.pt", 100)]
    assert m.entries[0].digest.startswith("sha256:")
    assert m == backend.resolve(f"{backend.scheme}://{bucket}/models/final.pt", env)
    keys = [o["Key"] for o in server.runform_client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["models/.runform-index.json", "models/final.pt"]
    backend.fetch(m, tmp_path / "d", env)
    assert (tmp_path / "d" / "final.pt").read_bytes() == b"w" * 100


def test_delete(store):
    server, backend, bucket, env = store
    _put(server, bucket, _dataset())
    server.stats.reset()
    assert backend.delete(f"{backend.scheme}://{bucket}/ds/", env, ["a.h5", "sub/c.bin"]) == 2
    ops = server.stats.operations()
    if backend.scheme == "b2":
        assert ops.get("DeleteObject") == 2 and "DeleteObjects" not in ops
    else:
        assert ops.get("DeleteObjects") == 1
    left = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    assert [e.path for e in left.entries] == ["b.h5", "sub/d.bin"]


def test_missing_bucket_is_a_clear_error(store):
    _server, backend, _bucket, env = store
    from runform.errors import RunformError

    with pytest.raises(RunformError, match="case-sensitive"):
        backend.resolve(f"{backend.scheme}://No-Such-Bucket/x/", env)


def test_missing_credentials_fail_fast(s3_server, monkeypatch):
    from runform.errors import RunformError

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.raises(RunformError, match="no credentials"):
        S3Backend().resolve("s3://any/x/", env)


def test_unreachable_endpoint_fails_with_a_hint():
    import socket

    from runform.errors import RunformError
    from runform.storage import s3conn as _s3conn

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}
    assert _s3conn.Connection.from_env("s3", env).max_attempts == 1
    with pytest.raises(RunformError, match="cannot reach"):
        S3Backend().resolve("s3://b/x/", env)


def test_unsafe_keys_are_refused(store):
    server, backend, bucket, env = store
    _put(server, bucket, {"ds/../../etc/passwd": b"x"})
    from runform.errors import RunformError

    with pytest.raises(RunformError, match="unsafe path"):
        backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)


def test_b2_endpoint_from_region_and_missing_keys():
    from runform.errors import RunformError
    from runform.storage.s3conn import Connection

    c = Connection.from_env("b2", {"B2_KEY_ID": "k", "B2_APP_KEY": "s", "B2_S3_REGION": "us-west-004"})
    assert c.endpoint_url == "https://s3.us-west-004.backblazeb2.com" and c.region == "us-west-004"
    c = Connection.from_env("b2", {"B2_KEY_ID": "k", "B2_APP_KEY": "s",
                                   "B2_S3_ENDPOINT": "s3.eu-central-003.backblazeb2.com"})
    assert c.region == "eu-central-003" and c.endpoint_url.startswith("https://")
    assert "s" not in repr(c).split("secret_key")[-1][:5]  # credentials are not in the repr
    with pytest.raises(RunformError, match="B2_KEY_ID"):
        Connection.from_env("b2", {"B2_S3_REGION": "us-west-004"})
    s3 = Connection.from_env("s3", {"AWS_ENDPOINT_URL": "http://x:1", "AWS_REGION": "eu-west-1"})
    assert (s3.endpoint_url, s3.region, s3.access_key) == ("http://x:1", "eu-west-1", None)


def test_client_config_is_b2_safe(s3_server_b2):
    client = B2Backend()._client(s3_server_b2.env("b2"))
    cfg = client.meta.config
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"
    assert cfg.s3["addressing_style"] == "path"


def test_single_get_is_verified_while_streaming(store, tmp_path, monkeypatch):
    server, backend, bucket, env = store
    files = _dataset()
    _put(server, bucket, files)
    m = backend.resolve(f"{backend.scheme}://{bucket}/ds/", env)
    from runform.storage import digest as _digest

    def no_reread(*args, **kwargs):
        raise AssertionError("the file was read back instead of hashed in flight")

    monkeypatch.setattr(_digest, "check", no_reread)
    assert backend.fetch(m, tmp_path / "d", env) == m.total_bytes


def test_every_transfer_error_becomes_runforms_own():
    """Errors of today's s3transfer/botocore, whatever their class names: runform's own errors
    naming the object and the fix (the CLI prints them without a traceback, exit 1)."""
    import s3transfer.exceptions as s3x
    from botocore.exceptions import ClientError, ReadTimeoutError
    from runform.errors import RunformError
    from runform.storage.hydrate import DigestMismatch, PermanentError
    from runform.storage_backends.s3 import TransferFailed, classify_transfer_error

    what = "s3://b/x/f.bin"
    assert isinstance(classify_transfer_error(s3x.S3DownloadFailedError("did not match"), what, changed=lambda: True),
                      DigestMismatch)
    try:  # raised while handling a 412, as s3transfer 0.19 does: the chain tells
        try:
            raise ClientError({"Error": {"Code": "PreconditionFailed"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject")
        except ClientError:
            raise s3x.S3DownloadFailedError("Contents of stored object did not match expected ETag.")  # noqa: B904
    except s3x.S3DownloadFailedError as exc:
        got = classify_transfer_error(exc, what)
    assert isinstance(got, DigestMismatch) and what in str(got) and "runform plan" in str(got)
    timeout = s3x.RetriesExceededError(ReadTimeoutError(endpoint_url="http://x"))
    failed = classify_transfer_error(timeout, what, changed=lambda: False)
    assert isinstance(failed, TransferFailed) and what in str(failed) and "apply again" in str(failed)
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    assert isinstance(classify_transfer_error(s3x.S3DownloadFailedError("x").with_traceback(None), what), RunformError)
    assert isinstance(classify_transfer_error(denied, what), PermanentError)
    full = OSError(28, "No space left on device")
    assert isinstance(classify_transfer_error(full, what), PermanentError) and "free space" in str(classify_transfer_error(full, what))
    other = KeyError("not ours")
    assert classify_transfer_error(other, what) is other  # a bug stays a bug


def _versions(server: S3Server, bucket: str, prefix: str) -> tuple[dict[str, int], int]:
    r = server.runform_client().list_object_versions(Bucket=bucket, Prefix=prefix)
    counts: dict[str, int] = {}
    for v in r.get("Versions", []):
        counts[v["Key"]] = counts.get(v["Key"], 0) + 1
    return counts, len(r.get("DeleteMarkers", []))


def test_b2_keeps_no_older_version_billed(s3_server_b2, tmp_path):
    """B2 keeps every version; a re-push and a delete remove what they replace by VersionId."""
    server, backend = s3_server_b2, B2Backend(SMALL)
    bucket, env = server.make_bucket(), server.env("b2")  # versioned, as B2 buckets are
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "a.pt").write_bytes(b"1" * 100)
    (src / "b.pt").write_bytes(b"2" * 100)
    uri = f"b2://{bucket}/runs/r1/ckpt/"
    backend.push(src, uri, env)
    for body in (b"changed once", b"changed twice"):
        (src / "a.pt").write_bytes(body)
        backend.push(src, uri, env)
    counts, markers = _versions(server, bucket, "runs/r1/ckpt/")
    assert counts == {"runs/r1/ckpt/a.pt": 1, "runs/r1/ckpt/b.pt": 1,
                      "runs/r1/ckpt/.runform-index.json": 1} and markers == 0
    assert backend.delete(uri, env, ["a.pt"]) == 1
    counts, markers = _versions(server, bucket, "runs/r1/ckpt/")
    assert "runs/r1/ckpt/a.pt" not in counts and markers == 0  # gone for good, not hidden
    backend.delete(uri, env)
    assert _versions(server, bucket, "runs/r1/ckpt/") == ({}, 0)


def test_b2_keep_versions_leaves_history_to_the_lifecycle_rule(s3_server_b2, tmp_path):
    server, backend = s3_server_b2, B2Backend(SMALL)
    bucket = server.make_bucket()
    env = {**server.env("b2"), "RUNFORM_B2_KEEP_VERSIONS": "1"}
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "a.pt").write_bytes(b"1")
    uri = f"b2://{bucket}/ckpt/"
    backend.push(src, uri, env)
    (src / "a.pt").write_bytes(b"22")
    backend.push(src, uri, env)
    backend.delete(uri, env, ["a.pt"])
    counts, markers = _versions(server, bucket, "ckpt/a.pt")
    assert counts == {"ckpt/a.pt": 2} and markers == 1  # hidden; the bucket's rule decides
