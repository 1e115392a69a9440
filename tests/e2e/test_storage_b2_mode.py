"""The S3 stand-in: B2 mode rejects what B2 rejects, with B2's error shape; S3 mode keeps
moto's S3 semantics; the request log counts what was served."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from runform.storage_backends.s3 import B2Backend
from runform.testing.s3 import S3Server, operation_of

B2_UNSUPPORTED = "Unsupported header 'x-amz-sdk-checksum-algorithm' received for this API call."


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def test_boto3_default_config_gets_b2s_checksum_error(s3_server_b2: S3Server):
    bucket = s3_server_b2.make_bucket()
    plain = s3_server_b2.client()  # boto3 >= 1.36 defaults: when_supported checksums
    with pytest.raises(ClientError) as exc:
        plain.put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert _error(exc) == (400, "InvalidArgument", B2_UNSUPPORTED)
    # runform's configuration goes through, PUT and GET.
    s3_server_b2.runform_client().put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert s3_server_b2.runform_client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"
    # boto3's default GET asks for checksum validation (x-amz-checksum-mode): rejected too
    # (a 2025-03 report), on GET and HEAD alike.
    with pytest.raises(ClientError) as exc:
        plain.get_object(Bucket=bucket, Key="k")
    assert _error(exc) == (400, "InvalidArgument",
                           "Unsupported header 'x-amz-checksum-mode' received for this API call.")
    with pytest.raises(ClientError) as head:
        plain.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_default_multipart_upload_is_rejected_and_runform_push_works(s3_server_b2, tmp_path):
    bucket = s3_server_b2.make_bucket()
    from boto3.s3.transfer import TransferConfig

    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(6 << 20))
    from boto3.exceptions import S3UploadFailedError

    with pytest.raises(S3UploadFailedError, match="InvalidArgument.*Unsupported header"):
        s3_server_b2.client().upload_file(
            str(f), bucket, "big.bin",
            Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    env = s3_server_b2.env("b2")
    m = B2Backend().push(f, f"b2://{bucket}/big.bin", env)
    assert m.entries[0].size == 6 << 20


@pytest.mark.parametrize("header", [{"IfNoneMatch": "*"}, {"IfMatch": '"abc"'}])
def test_conditional_put_not_implemented_on_b2(s3_server_b2, header):
    bucket = s3_server_b2.make_bucket()
    with pytest.raises(ClientError) as exc:
        s3_server_b2.runform_client().put_object(Bucket=bucket, Key="lock", Body=b"1", **header)
    assert _error(exc) == (501, "NotImplemented",
                           "A header you provided implies functionality that is not implemented")


def test_conditional_put_412_in_s3_mode(s3_server: S3Server):
    bucket = s3_server.make_bucket()
    c = s3_server.runform_client()
    c.put_object(Bucket=bucket, Key="lock", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        c.put_object(Bucket=bucket, Key="lock", Body=b"2", IfNoneMatch="*")
    assert _error(exc)[:2] == (412, "PreconditionFailed")


def test_delete_objects_rejected_on_b2(s3_server_b2):
    bucket = s3_server_b2.make_bucket()
    c = s3_server_b2.runform_client()
    c.put_object(Bucket=bucket, Key="a", Body=b"1")
    with pytest.raises(ClientError) as exc:
        # botocore marks DeleteObjects checksum-required: CRC32 headers even when_required.
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}]})
    assert _error(exc)[0] == 400
    assert c.get_object(Bucket=bucket, Key="a")["Body"].read() == b"1"


def test_versioned_bucket_in_b2_mode(s3_server_b2: S3Server):
    bucket = s3_server_b2.make_bucket()  # B2 keeps every version by default
    c = s3_server_b2.runform_client()
    first = c.put_object(Bucket=bucket, Key="state.lock", Body=b"a")["VersionId"]
    c.put_object(Bucket=bucket, Key="state.lock", Body=b"b")
    versions = c.list_object_versions(Bucket=bucket, Prefix="state.lock")["Versions"]
    assert len(versions) == 2
    c.delete_object(Bucket=bucket, Key="state.lock", VersionId=first)
    assert len(c.list_object_versions(Bucket=bucket, Prefix="state.lock")["Versions"]) == 1
    # a delete without a VersionId hides the file: its data version stays (and is billed)
    c.delete_object(Bucket=bucket, Key="state.lock")
    left = c.list_object_versions(Bucket=bucket, Prefix="state.lock")
    assert len(left["Versions"]) == 1 and len(left["DeleteMarkers"]) == 1


def test_conflicts_mode_answers_409_and_writes_nothing(s3_server_conflicts: S3Server):
    server = s3_server_conflicts
    bucket = server.make_bucket()
    c = server.runform_client()
    server.conditions.conflict_share = 1.0
    with pytest.raises(ClientError) as exc:
        c.put_object(Bucket=bucket, Key="lock", Body=b"1", IfNoneMatch="*")
    assert _error(exc)[:2] == (409, "ConditionalRequestConflict")
    assert "Contents" not in c.list_objects_v2(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="lock", Body=b"1")  # unconditional writes are never refused
    server.conditions.conflict_share = 0.3
    answers = []
    for _ in range(60):
        try:
            c.put_object(Bucket=bucket, Key="lock", Body=b"2", IfNoneMatch="*")
        except ClientError as err:
            answers.append(err.response["ResponseMetadata"]["HTTPStatusCode"])
    assert set(answers) == {409, 412} and 5 <= answers.count(409) <= 35, answers
    assert server.conditions.conflicts == 1 + answers.count(409)


def test_ignoring_mode_drops_the_conditions(s3_server_ignoring: S3Server):
    bucket = s3_server_ignoring.make_bucket()
    c = s3_server_ignoring.runform_client()
    c.put_object(Bucket=bucket, Key="lock", Body=b"1", IfNoneMatch="*")
    c.put_object(Bucket=bucket, Key="lock", Body=b"2", IfNoneMatch="*")  # no 412
    c.delete_object(Bucket=bucket, Key="lock", IfMatch='"0000"')  # no 412 either
    assert "Contents" not in c.list_objects_v2(Bucket=bucket)


def test_s3_mode_accepts_default_checksums(s3_server: S3Server):
    bucket = s3_server.make_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"x")
    s3_server.client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})


def test_request_log_counts_served_bytes(s3_server: S3Server):
    bucket = s3_server.make_bucket()
    c = s3_server.runform_client()
    c.put_object(Bucket=bucket, Key="d/x", Body=b"a" * 1000)
    s3_server.stats.reset()
    assert c.get_object(Bucket=bucket, Key="d/x")["Body"].read() == b"a" * 1000
    c.head_object(Bucket=bucket, Key="d/x")
    c.list_objects_v2(Bucket=bucket, Prefix="d/")
    assert s3_server.stats.operations() == {"GetObject": 1, "HeadObject": 1, "ListObjectsV2": 1}
    assert s3_server.stats.object_bytes_out == 1000


def test_fixture_resets_state_between_tests(s3_server: S3Server):
    assert s3_server.runform_client().list_buckets()["Buckets"] == []
    assert s3_server.stats.count() <= 1


@pytest.mark.parametrize("method,path,query,op", [
    ("GET", "/b", "list-type=2&prefix=x", "ListObjectsV2"),
    ("GET", "/b/k/x", "", "GetObject"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u", "UploadPart"),
    ("POST", "/b/k", "uploads", "CreateMultipartUpload"),
    ("POST", "/b/k", "uploadId=u", "CompleteMultipartUpload"),
    ("POST", "/b", "delete", "DeleteObjects"),
    ("DELETE", "/b/k", "", "DeleteObject"),
])
def test_operation_names(method, path, query, op):
    assert operation_of(method, path, query) == op


def test_env_for_both_schemes(s3_server: S3Server, tmp_path: Path):
    assert s3_server.env("b2")["B2_S3_ENDPOINT"] == s3_server.endpoint
    assert s3_server.env()["AWS_ENDPOINT_URL"] == s3_server.endpoint
