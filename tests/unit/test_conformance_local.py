"""The built-in plugins that need no service pass runform's conformance suites
(``runform.testing.conformance``): the local provider, the file:// backend, the jsonl tracker and
the local state backend."""

from __future__ import annotations

import os
import subprocess
import sys
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

    @pytest.fixture
    def state_backend_script(self, tmp_path: Path) -> str:
        return ("from pathlib import Path\nfrom runform.state.local import LocalStateBackend\n"
                f"b = LocalStateBackend(Path({str(tmp_path / '.runform')!r}), lease=LEASE)")


# --------------------------------------------------------------------------- the suites catch faults
# A suite's check, called on a plugin with one fault, must fail.


def test_the_provider_suite_catches_a_create_that_is_not_idempotent(tmp_path: Path) -> None:
    import attrs

    from runform.interfaces import InstanceRequest, ProviderContext
    from runform.providers.local import LocalProvider

    class Forgetful(LocalProvider):  # a lost answer, retried, rents a second machine
        calls = 0

        def create(self, request: Any, ctx: Any) -> Any:
            self.calls += 1
            return attrs.evolve(super().create(request, ctx), id=f"{request.label}-{self.calls}")

    provider, label, compute = Forgetful(), "runform-conformance-0000beef", {"provider": "local"}
    ctx = ProviderContext(state_dir=tmp_path / ".runform", run="conformance", lineage="0000beef")
    first = provider.create(InstanceRequest(label=label, run="conformance", compute=compute), ctx)
    with pytest.raises(AssertionError):
        TestLocalProvider().test_create_by_label_is_idempotent(provider, compute, ctx, first, label)


def test_the_storage_suite_catches_a_fetch_that_is_not_incremental(tmp_path: Path) -> None:
    import shutil

    from runform.storage_backends.file import FileBackend
    from runform.testing.conformance.storage import TREE

    class Eager(FileBackend):  # copies everything every time
        def fetch(self, manifest: Any, dest: Path, env: Any, *, progress: Any = None) -> int:
            shutil.rmtree(dest, ignore_errors=True)
            return super().fetch(manifest, dest, env, progress=progress)

    backend, uri = Eager(), (tmp_path / "store").as_uri() + "/"
    for rel, body in TREE.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(body)
    pushed = backend.push(tmp_path / "src", uri, {})
    with pytest.raises(AssertionError, match="a second fetch moves nothing"):
        TestFileBackend().test_fetch_moves_everything_once(backend, uri, {}, pushed, tmp_path)


def test_the_tracker_suite_catches_a_leaked_secret(tmp_path: Path) -> None:
    import json

    from runform.testing.conformance.tracker import make_context
    from runform.trackers.jsonl import JsonlTracker

    class Leaky(JsonlTracker):  # writes the config it was given, unmasked
        def start(self, *, run_id: str, name: str, config: Any) -> Any:
            (tmp_path / "leak.json").write_text(json.dumps(dict(config)))
            return super().start(run_id=run_id, name=name, config=config)

    ctx = make_context(tmp_path)
    with pytest.raises(AssertionError, match="the secret is in"):
        TestJsonlTracker().test_no_secret_in_what_it_writes(lambda c: Leaky({}, c), ctx, [], tmp_path)


def test_the_plugin_example_runs_the_tracker_suite() -> None:
    """``examples/plugin-example`` subclasses the tracker suite in its own tests/: they pass."""
    from helpers import EXAMPLES

    example = EXAMPLES / "plugin-example"
    env = {**os.environ, "PYTHONPATH": str(example / "src")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                       cwd=example, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "TestPrinterTracker" in (example / "tests" / "test_conformance.py").read_text()
    assert "6 passed" in r.stdout, r.stdout[-2000:]
