"""Conformance suites for plugin authors: the contracts of ``runform.interfaces``, as tests.

Subclass one in your own test file, give it your plugin through a fixture, and pytest runs every
check against it (runform's built-in plugins run the same suites in runform's CI)::

    from runform.testing.conformance import StorageBackendContract

    class TestMyBackend(StorageBackendContract):
        @pytest.fixture
        def backend(self):
            return MyBackend()

        @pytest.fixture
        def storage_uri(self, tmp_path):
            return "my://bucket/conformance/"

Each suite says which fixtures it needs in its docstring. ``docs/plugins.md`` has a full example.
"""

from __future__ import annotations

from runform.testing.conformance.provider import ProviderContract
from runform.testing.conformance.state import StateBackendContract
from runform.testing.conformance.storage import StorageBackendContract
from runform.testing.conformance.tracker import TrackerContract

__all__ = ["ProviderContract", "StateBackendContract", "StorageBackendContract", "TrackerContract"]
