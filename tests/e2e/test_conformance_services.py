"""The built-in plugins that talk to a service pass runform's conformance suites
(``runform.testing.conformance``) against the real stand-ins: the ssh provider on the real sshd,
the vast provider on the Vast stand-in (its instances reached through that sshd), the s3:// and
b2:// backends on moto's server, the wandb:// backend on the W&B artifact stand-in, the wandb
tracker offline, and the remote state backend on moto's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runform.testing.conformance import (
    ProviderContract,
    StateBackendContract,
    StorageBackendContract,
    TrackerContract,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from runform.agent.wheel import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheels"))


class TestSSHProvider(ProviderContract):
    @pytest.fixture
    def provider(self, wheel: Any) -> Any:
        from runform.providers.ssh.provider import SSHProvider

        return SSHProvider(wheel=wheel, cache_dir=wheel.path.parent, find_timeout=1.0)

    @pytest.fixture
    def compute(self, sshd: Any, tmp_path: Path) -> dict[str, Any]:
        return {**sshd.compute, "root": str(tmp_path / "machine" / "run")}


class TestVastProvider(ProviderContract):
    @pytest.fixture
    def provider(self, make_vast_standin: Any, sshd: Any) -> Iterator[Any]:
        from runform.testing.vast.fixture import fast_provider

        provider = fast_provider(make_vast_standin(sshd=sshd), on_ready=None)
        yield provider
        provider.client.close()

    @pytest.fixture
    def compute(self, tmp_path: Path) -> dict[str, Any]:
        # its own machine folder: the stand-in's instances share this host's filesystem
        return {"provider": "vast", "gpus": ["RTX 4090"], "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
                "disk_gb": 20, "max_price_per_hour": 3.0, "root": str(tmp_path / "vast-root")}


@pytest.fixture(params=["s3", "b2"])
def bucket(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, str]]:
    """(scheme, bucket, env) for each scheme; b2 runs against moto's B2 mode (a versioned bucket)."""
    scheme = request.param
    server = request.getfixturevalue("s3_server_b2" if scheme == "b2" else "s3_server")
    return scheme, server.make_bucket(versioned=scheme == "b2"), server.env(scheme)


class TestS3Backend(StorageBackendContract):
    @pytest.fixture
    def backend(self, bucket: tuple[str, str, dict[str, str]]) -> Any:
        from runform.storage_backends.s3 import B2Backend, S3Backend

        return B2Backend() if bucket[0] == "b2" else S3Backend()

    @pytest.fixture
    def storage_uri(self, bucket: tuple[str, str, dict[str, str]]) -> str:
        return f"{bucket[0]}://{bucket[1]}/conformance/"

    @pytest.fixture
    def storage_env(self, bucket: tuple[str, str, dict[str, str]]) -> dict[str, str]:
        return bucket[2]


class TestWandbBackend(StorageBackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Any:
        from runform.storage_backends.wandb import WandbBackend

        try:  # the W&B artifact server stand-in, where runform.testing keeps it
            from runform.testing.fakes import DirArtifactStore  # type: ignore[import-not-found]
        except ImportError:
            from runform.storage_backends.wandb_api import DirArtifactStore
        return WandbBackend(DirArtifactStore(tmp_path / "wandb-server"))

    @pytest.fixture
    def storage_uri(self) -> str:
        return "wandb://ent/proj/conformance:latest"


class TestWandbTracker(TrackerContract):
    @pytest.fixture
    def tracker_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
        from helpers import isolate_wandb

        isolate_wandb(tmp_path, monkeypatch)
        return {"WANDB_MODE": "offline", "WANDB_PROJECT": "runform-conformance"}

    @pytest.fixture
    def make_tracker(self) -> Any:
        from runform.trackers.wandb import WandbTracker

        return lambda ctx: WandbTracker({}, ctx)


class TestRemoteStateBackend(StateBackendContract):
    lease_s = 3.0  # b2's versioned lock spends about a second of its lease deciding

    @pytest.fixture
    def make_state_backend(self, bucket: tuple[str, str, dict[str, str]],
                           monkeypatch: pytest.MonkeyPatch) -> Any:
        from runform.state.remote import RemoteStateBackend

        scheme, name, env = bucket
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        made: list[Any] = []

        def make(lease: float = 30.0) -> Any:
            made.append(RemoteStateBackend(f"{scheme}://{name}/runs/conformance.state", lease=lease, settle=0.05))
            return made[-1]

        yield make
        for b in made:
            b.close()

    @pytest.fixture
    def state_backend_script(self, bucket: tuple[str, str, dict[str, str]]) -> str:
        scheme, name, _ = bucket  # the credentials are in the environment (monkeypatched above)
        return ("from runform.state.remote import RemoteStateBackend\n"
                f"b = RemoteStateBackend({scheme + '://' + name + '/runs/conformance.state'!r}, lease=LEASE, "
                "settle=0.05)")
