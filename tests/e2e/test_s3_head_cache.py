"""The HEADs of multipart objects, kept between plans (runform.storage_backends.s3_heads):
against moto over HTTP, the HEADs counted on the server side."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from runform.storage_backends.s3 import S3Backend

MIB = 1 << 20


@pytest.fixture
def shards(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Three multipart objects nobody pushed with runform (no index), one carrying a sha256
    in its metadata, and one single-part object."""
    from boto3.s3.transfer import TransferConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RUNFORM_CACHE", raising=False)
    bucket = s3_server.make_bucket()
    c = s3_server.runform_client()
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    bodies = {f"shards/{i}.tar": os.urandom(6 * MIB) for i in range(3)}
    for key, body in bodies.items():
        extra = {"Metadata": {"sha256": hashlib.sha256(body).hexdigest()}} if key.endswith("0.tar") else {}
        c.upload_fileobj(io.BytesIO(body), bucket, key, ExtraArgs=extra, Config=cfg)
    c.put_object(Bucket=bucket, Key="shards/small.txt", Body=b"small")
    return s3_server, bucket, bodies, cfg


def test_a_second_plan_heads_nothing_that_did_not_change(shards, tmp_path: Path) -> None:
    server, bucket, bodies, cfg = shards
    env, uri = server.env("s3"), f"s3://{bucket}/shards/"
    server.stats.reset()
    first = S3Backend().resolve(uri, env)
    assert server.stats.operations() == {"ListObjectsV2": 1, "HeadObject": 3}
    by = first.by_path()
    assert by["0.tar"].digest == "sha256:" + hashlib.sha256(bodies["shards/0.tar"]).hexdigest()
    assert by["1.tar"].digest.startswith("etag:") and by["small.txt"].digest.startswith("etag:")
    assert list((tmp_path / "cache" / "runform" / "s3-heads").iterdir())

    server.stats.reset()
    assert S3Backend().resolve(uri, env) == first  # what the HEADs found, sha256 or none
    assert server.stats.operations() == {"ListObjectsV2": 1}

    body = os.urandom(6 * MIB)  # one shard replaced: a new ETag, one HEAD
    server.runform_client().upload_fileobj(io.BytesIO(body), bucket, "shards/1.tar", Config=cfg)
    server.stats.reset()
    third = S3Backend().resolve(uri, env)
    assert server.stats.operations() == {"ListObjectsV2": 1, "HeadObject": 1}
    assert [r.path for r in server.stats.of("HeadObject")] == [f"/{bucket}/shards/1.tar"]
    assert third.by_path()["1.tar"].digest != by["1.tar"].digest
    assert third.by_path()["0.tar"] == by["0.tar"]


def test_a_damaged_or_switched_off_cache_heads_again(shards, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    server, bucket, _, _ = shards
    env, uri = server.env("s3"), f"s3://{bucket}/shards/"
    first = S3Backend().resolve(uri, env)
    for f in (tmp_path / "cache" / "runform" / "s3-heads").iterdir():
        f.write_text("{not json")
    server.stats.reset()
    assert S3Backend().resolve(uri, env) == first
    assert server.stats.count("HeadObject") == 3
    monkeypatch.setenv("RUNFORM_CACHE", "0")
    server.stats.reset()
    assert S3Backend().resolve(uri, env) == first
    assert server.stats.count("HeadObject") == 3
