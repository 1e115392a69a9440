"""wandb:// backend against the folder fake of the W&B artifact server."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from runform.errors import RunformError
from runform.storage_backends.wandb import ArtifactRef, WandbBackend
from runform.storage_backends.wandb_api import (
    WandbArtifactAPI,
    WandbPublicAPI,
    api_from_env,
    artifact_digest,
    wandb_file_digest,
)
from runform.testing.fakes import DirArtifactStore


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


# ---------------------------------------------------------------------- real wandb artifacts


class _Served:
    """What ``wandb.Api().artifact()`` hands back, for an artifact wandb itself built offline:
    its real manifest (parsed from the JSON wandb wrote, as a fetched one is), its real entries,
    each downloading through wandb's own code from a presigned URL (a loopback HTTP server
    serving the files, as W&B's storage would)."""

    def __init__(self, art, base_url: str, version: str = "v0") -> None:  # type: ignore[no-untyped-def]
        from wandb.sdk.artifacts.artifact_manifest import ArtifactManifest

        self.manifest = ArtifactManifest.from_manifest_json(art.manifest.to_manifest_json())
        for path, entry in self.manifest.entries.items():
            entry._parent_artifact = art  # noqa: SLF001 - what a fetched artifact sets
            entry._download_url = f"{base_url}/{path}"  # noqa: SLF001 - the server's directUrl
        self.version, self.digest = version, art.digest

    def get_entry(self, path: str):  # type: ignore[no-untyped-def]
        return self.manifest.entries[path]


@pytest.fixture
def file_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("algorithm", ["XXH128", "MD5", None])  # None: wandb's default
def test_artifacts_wandb_builds_hydrate_and_verify(algorithm, file_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch):
    import os

    import wandb
    from runform.storage.hydrate import DigestMismatch

    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    served, base_url = file_server
    files = _files(served, {"train.h5": os.urandom(3000), "val/val.h5": b"v" * 300})
    art = wandb.Artifact("burgers", type="dataset", **({"digest_algorithm": algorithm} if algorithm else {}))
    for rel, p in files.items():
        art.add_file(str(p), name=rel)
    expected = "xxh128" if algorithm == "XXH128" else "md5"
    assert {e.extra.get("alg", "MD5") for e in art.manifest.entries.values()} == {algorithm or "MD5"}

    class Api(WandbPublicAPI):
        def _artifact(self, entity, project, name, alias):  # type: ignore[no-untyped-def]
            return _Served(art, base_url)

    b = WandbBackend(Api())
    m = b.resolve("wandb://ent/proj/burgers:latest", {})
    assert m.version == "v0" and all(e.digest.startswith(expected + ":") for e in m.entries)
    assert m.by_path()["val/val.h5"].digest == (
        f"md5:{hashlib.md5(b'v' * 300).hexdigest()}" if expected == "md5"
        else f"xxh128:{__import__('xxhash').xxh128(b'v' * 300).hexdigest()}")
    dest = tmp_path / "data"
    assert b.fetch(m, dest, {}) == 3300
    assert (dest / "train.h5").read_bytes() == files["train.h5"].read_bytes()
    assert b.verify(m, dest).clean
    # no second copy in W&B's cache (skip_cache): the data takes its size once on disk
    cached = [p for p in (tmp_path / "wandb-cache").rglob("*") if p.is_file() and "checksums" not in p.parts]
    assert cached == []
    assert b.fetch(m, dest, {}) == 0
    # the bytes served change behind the manifest: the digest check catches it
    (served / "val" / "val.h5").write_bytes(b"V" * 300)
    with pytest.raises(DigestMismatch):
        b.fetch(m, tmp_path / "again", {})


def test_an_unknown_digest_algorithm_is_refused_clearly():
    from runform.storage_backends.wandb_api import entry_digest

    class Entry:
        path, digest, extra = "x.bin", "AAAAAAAAAAAAAAAAAAAAAA==", {"alg": "SHA3"}

    with pytest.raises(RunformError, match="SHA3"):
        entry_digest(Entry(), "wandb://e/p/n:v0: x.bin")


def test_artifact_uris_are_checked_without_the_network():
    from runform.storage_backends.wandb import check_uri

    assert check_uri("wandb://e/p/name-1.0:best") is None
    assert check_uri("wandb://p/name") is None  # the entity may come from WANDB_ENTITY
    assert "characters" in check_uri("wandb://e/p/bad name")[0]
    assert "128" in check_uri("wandb://e/p/" + "n" * 129)[0]
    assert "entity/project/name" in check_uri("wandb://only")[1]
