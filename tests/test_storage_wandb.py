"""wandb:// backend against the folder fake of the W&B artifact server."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from runform.errors import RunformError
from runform.storage_backends.wandb import ArtifactRef, WandbBackend
from runform.storage_backends.wandb_api import (
    DirArtifactStore,
    WandbArtifactAPI,
    WandbPublicAPI,
    api_from_env,
    artifact_digest,
    wandb_file_digest,
)


def _files(root: Path, content: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for rel, body in content.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        out[rel] = p
    return out


@pytest.fixture
def server(tmp_path: Path) -> DirArtifactStore:
    store = DirArtifactStore(tmp_path / "wandb-server")
    src = _files(tmp_path / "v0", {"train.h5": b"t" * 1000, "val/val.h5": b"v" * 300})
    assert store.upload("ent", "proj", "burgers", src, type="dataset") == "v0"
    return store


def test_digests_match_wandbs(tmp_path: Path):
    p = tmp_path / "hello"
    p.write_bytes(b"hello\n")
    assert wandb_file_digest(p) == "sZRqySSS0jR8YjW00mERhA=="  # storage.md §6
    expected = hashlib.md5(b"wandb-artifact-manifest-v1\nhello:sZRqySSS0jR8YjW00mERhA==\n")
    assert artifact_digest({"hello": "sZRqySSS0jR8YjW00mERhA=="}) == expected.hexdigest()


def test_resolve_pins_alias(server: DirArtifactStore):
    b = WandbBackend(server)
    assert isinstance(server, WandbArtifactAPI)
    m = b.resolve("wandb://ent/proj/burgers:latest", {})
    assert m.version == "v0"
    assert [(e.path, e.size) for e in m.entries] == [("train.h5", 1000), ("val/val.h5", 300)]
    assert m.entries[0].digest == "md5:" + hashlib.md5(b"t" * 1000).hexdigest()
    assert b.resolve("wandb://proj/burgers", {"WANDB_ENTITY": "ent"}) == m


def test_fetch_incremental_and_pinned(server: DirArtifactStore, tmp_path: Path):
    b = WandbBackend(server)
    m0 = b.resolve("wandb://ent/proj/burgers:latest", {})
    dest = tmp_path / "data"
    assert b.fetch(m0, dest, {}) == 1300
    assert b.fetch(m0, dest, {}) == 0 and server.downloads == 2

    src = _files(tmp_path / "v1", {"train.h5": b"t" * 1000, "val/val.h5": b"V" * 300})
    assert server.upload("ent", "proj", "burgers", src, type="dataset") == "v1"
    # The alias moved after the plan: the machine still gets what the plan pinned.
    assert b.fetch(m0, tmp_path / "pinned", {}) == 1300
    assert (tmp_path / "pinned" / "val/val.h5").read_bytes() == b"v" * 300

    m1 = b.resolve("wandb://ent/proj/burgers:latest", {})
    assert m1.version == "v1" and m1.digest != m0.digest
    before = server.downloads
    assert b.fetch(m1, dest, {}) == 300
    assert server.downloads == before + 1
    assert (dest / "val/val.h5").read_bytes() == b"V" * 300


def test_same_content_makes_no_new_version(server: DirArtifactStore, tmp_path: Path):
    src = _files(tmp_path / "again", {"train.h5": b"t" * 1000, "val/val.h5": b"v" * 300})
    assert server.upload("ent", "proj", "burgers", src, type="dataset") == "v0"


def test_push_logs_a_version_and_fake_works_across_processes(tmp_path: Path):
    env = {"RUNFORM_WANDB_FAKE_DIR": str(tmp_path / "srv")}
    b = WandbBackend()  # chooses the fake from the env, as an agent process would
    src = tmp_path / "ckpt"
    _files(src, {"model.pt": b"w" * 64})
    m = b.push(src, "wandb://ent/proj/ckpt:best", env)
    assert m.version == "v0"
    info = DirArtifactStore(tmp_path / "srv").info("ent", "proj", "ckpt", "best")
    assert info["type"] == "model"  # an artifact, not a dataset, unless the spec says so
    m2 = b.resolve("wandb://ent/proj/ckpt:best", env)
    assert m2.version == "v0" and m2.entries == m.entries
    assert b.fetch(m2, tmp_path / "d", env) == 64


def test_uri_errors():
    with pytest.raises(RunformError, match="entity/project/name"):
        ArtifactRef.parse("wandb://only-name")
    assert ArtifactRef.parse("wandb://e/p/n").alias == "latest"
    assert ArtifactRef.parse("wandb://e/p/n:v3") == ArtifactRef("e", "p", "n", "v3")


def test_missing_alias(server: DirArtifactStore):
    with pytest.raises(RunformError, match="not found"):
        WandbBackend(server).resolve("wandb://ent/proj/burgers:nope", {})


def test_real_api_is_lazy():
    api = api_from_env({"WANDB_API_KEY": "x" * 40})
    assert isinstance(api, WandbPublicAPI) and api._api is None


def test_b64_md5_conversion():
    from runform.storage_backends.wandb_api import b64_to_hex

    raw = hashlib.md5(b"hello\n").digest()
    assert b64_to_hex(base64.b64encode(raw).decode()) == raw.hex()
