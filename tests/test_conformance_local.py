"""The built-in plugins that need no service pass runform's conformance suites
(``runform.testing.conformance``): the local provider, the file:// backend, the jsonl tracker and
the local state backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runform.testing.conformance import (
    ProviderContract,
    StateBackendContract,
    StorageBackendContract,
    TrackerContract,
)


class TestLocalProvider(ProviderContract):
    @pytest.fixture
    def provider(self) -> Any:
        from runform.providers.local import LocalProvider

        return LocalProvider()

    @pytest.fixture
    def compute(self) -> dict[str, Any]:
        return {"provider": "local"}


class TestFileBackend(StorageBackendContract):
    @pytest.fixture
    def backend(self) -> Any:
        from runform.storage_backends.file import FileBackend

        return FileBackend()

    @pytest.fixture
    def storage_uri(self, tmp_path: Path) -> str:
        return (tmp_path / "store").as_uri() + "/"


class TestJsonlTracker(TrackerContract):
    @pytest.fixture
    def make_tracker(self) -> Any:
        from runform.trackers.jsonl import JsonlTracker

        return lambda ctx: JsonlTracker({}, ctx)


class TestLocalStateBackend(StateBackendContract):
    @pytest.fixture
    def make_state_backend(self, tmp_path: Path) -> Any:
        from runform.state.local import LocalStateBackend

        made: list[Any] = []

        def make(lease: float = 30.0) -> Any:
            made.append(LocalStateBackend(tmp_path / ".runform", lease=lease))
            return made[-1]

        yield make
        for b in made:
            b.close()
