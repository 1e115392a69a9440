"""The S3 client's data loader (runform.storage.botocore_models): S3's data only, parsed once
and kept in marshal form; the same client as botocore's own loader makes; botocore's own
loader wherever anything is unusual."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from runform.storage import botocore_models as bm
from runform.storage.s3conn import Connection


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    monkeypatch.delenv("RUNFORM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.aws/models
    return tmp_path / "xdg" / "runform" / "botocore"


def _client(loader: object = None, region: str = "eu-central-1", endpoint: str | None = None,
            style: str = "auto") -> object:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session()
    if loader is not None:
        session.register_component("data_loader", loader)
    return session.create_client(
        "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": style}))


def test_the_loader_sees_s3_alone_and_keeps_each_parsed_file(cache: Path) -> None:
    loader = bm.s3_loader()
    assert loader is not None
    assert loader.list_available_services("service-2") == ["s3"]
    _client(loader=loader)
    kept = [p for p in cache.iterdir() if p.is_file()]
    assert len(kept) >= 4  # S3's model and rules, endpoints, partitions, ...
    assert all(isinstance(marshal.loads(p.read_bytes()), dict) for p in kept)
    links = next(p for p in cache.iterdir() if p.is_dir())
    assert (links / "s3").is_dir() and not (links / "ec2").exists()


@pytest.mark.parametrize("where", [
    {"region": "eu-central-1"}, {"region": "us-east-1"}, {"region": "us-west-2", "style": "path"},
    {"region": "us-west-004", "endpoint": "https://s3.us-west-004.backblazeb2.com", "style": "path"},
    {"region": "us-east-1", "endpoint": "http://127.0.0.1:9000", "style": "path"},
], ids=["aws-eu", "aws-us-east-1", "aws-path", "b2", "loopback"])
def test_a_client_from_the_cache_signs_exactly_as_botocores_own(cache: Path, where: dict) -> None:
    own = _client(**where)
    _client(bm.s3_loader(), **where)  # fills the cache
    again = _client(bm.s3_loader(), **where)  # reads it
    strip = lambda u: u.split("X-Amz-Date=")[0]  # noqa: E731 - the time differs by a second at most
    for op, params in [("get_object", {"Bucket": "data", "Key": "train/x y.h5"}),
                       ("put_object", {"Bucket": "data", "Key": "k"}),
                       ("list_objects_v2", {"Bucket": "data", "Prefix": "train/"}),
                       ("head_object", {"Bucket": "data", "Key": "k"})]:
        mine = again.generate_presigned_url(op, Params=params, ExpiresIn=60)
        assert strip(mine) == strip(own.generate_presigned_url(op, Params=params, ExpiresIn=60)), op
    assert again.meta.endpoint_url == own.meta.endpoint_url
    assert again.meta.region_name == own.meta.region_name
    assert again.can_paginate("list_objects_v2")


def test_a_damaged_cache_file_is_parsed_again(cache: Path) -> None:
    _client(loader=bm.s3_loader())
    for p in cache.iterdir():
        if p.is_file():
            p.write_bytes(b"\x00not marshal")
    _client(loader=bm.s3_loader())
    assert all(isinstance(marshal.loads(p.read_bytes()), dict) for p in cache.iterdir() if p.is_file())


def test_botocores_own_loader_where_anything_is_unusual(cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFORM_CACHE", "0")
    assert bm.s3_loader() is None
    monkeypatch.delenv("RUNFORM_CACHE")
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    assert bm.s3_loader() is None
    monkeypatch.delenv("AWS_DATA_PATH")
    (tmp_path / "home" / ".aws" / "models").mkdir(parents=True)
    assert bm.s3_loader() is None
    (tmp_path / "home" / ".aws" / "models").rmdir()
    cache.parent.parent.mkdir(parents=True)
    cache.parent.write_text("not a folder")  # the cache cannot be made
    assert bm.s3_loader() is None


def test_runforms_s3_connection_uses_it(cache: Path) -> None:
    client = Connection("s3", "http://127.0.0.1:9", "us-east-1", "AKIDEXAMPLE", "secret").client()
    assert client.meta.service_model.service_name == "s3"
    assert any(p.is_file() for p in cache.iterdir())


@pytest.mark.parametrize("text", ["2026-12-06T09:01:41.000Z", "2026-12-06T09:01:41Z",
                                  "2026-12-06T09:01:41.123456Z", "Sun, 06 Dec 2026 09:01:41 GMT",
                                  "1796547701", 1796547701])
def test_timestamps_parse_as_botocore_parses_them(text: object) -> None:
    from botocore.utils import parse_timestamp

    from runform.storage.s3conn import iso_timestamp

    assert iso_timestamp(text).timestamp() == parse_timestamp(text).timestamp()
    if str(text).endswith("Z"):
        assert iso_timestamp(text).utcoffset().total_seconds() == 0


def test_two_processes_making_the_links_folder_at_once(cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "s3").mkdir(parents=True)
    (data / "ec2").mkdir()
    (data / "endpoints.json").write_text("{}")
    folder = tmp_path / "links"
    real = Path.symlink_to

    def racing(self: Path, target: Path) -> None:  # the other process lands its folder first
        if not folder.exists():
            folder.mkdir()
            real(folder / "s3", data / "s3")
        real(self, target)

    monkeypatch.setattr(Path, "symlink_to", racing)
    assert bm._links(folder, data) == folder
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folder left
    assert (folder / "s3").resolve() == (data / "s3").resolve()
    monkeypatch.undo()
    other = tmp_path / "fresh"
    assert bm._links(other, data) == other
    assert sorted(p.name for p in other.iterdir()) == ["endpoints.json", "s3"]
