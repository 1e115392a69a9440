"""The provider contract (``runform.interfaces.Provider``) as reusable tests.

Fixtures a subclass gives:

- ``provider``: the provider under test.
- ``compute``: a ``compute`` block the provider can satisfy (what a spec would hold).
- ``provider_context`` (optional): a :class:`ProviderContext`; the default keeps its files under
  ``tmp_path`` and pins host keys the provider reports, as the core does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runform.interfaces import InstanceInfo, InstanceRequest, Machine, Provider, ProviderContext


class ProviderContract:
    """Create by label is idempotent, find, destroy twice, readiness, the transport contract."""

    run = "conformance"

    @pytest.fixture
    def provider_context(self, tmp_path: Path) -> ProviderContext:
        pins: dict[str, Any] = {}
        return ProviderContext(state_dir=tmp_path / ".runform", run=self.run, lineage="c0ffee00",
                               pins=pins, log=lambda line: None, pin=pins.__setitem__)

    @pytest.fixture
    def label(self) -> str:
        return f"runform-{self.run}-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def instance(self, provider: Provider, compute: Mapping[str, Any], provider_context: ProviderContext,
                 label: str) -> Iterator[InstanceInfo]:
        """One instance created for the test, destroyed after it (whatever the test did)."""
        info = provider.create(InstanceRequest(label=label, run=self.run, compute=dict(compute)),
                               provider_context)
        yield info
        provider.destroy(info, provider_context)

    @pytest.fixture
    def machine(self, provider: Provider, instance: InstanceInfo,
                provider_context: ProviderContext) -> Iterator[Machine]:
        m = provider.connect(instance, provider_context)
        yield m
        m.transport.close()

    # ------------------------------------------------------------------ the protocol
    def test_it_is_a_provider(self, provider: Provider) -> None:
        assert isinstance(provider, Provider), "the object lacks a method of runform.interfaces.Provider"
        assert isinstance(provider.name, str) and provider.name

    def test_create_returns_a_ready_instance_under_its_label(self, instance: InstanceInfo, label: str) -> None:
        assert instance.label == label
        assert instance.status == "running", "create returns once the instance is ready"
        assert InstanceInfo.from_json(json.loads(json.dumps(instance.to_json()))) == instance, \
            "the state keeps the instance as JSON: its attrs must survive a round trip"

    def test_create_by_label_is_idempotent(self, provider: Provider, compute: Mapping[str, Any],
                                           provider_context: ProviderContext, instance: InstanceInfo,
                                           label: str) -> None:
        """A create whose answer was lost is retried: the same label adopts the same instance."""
        again = provider.create(InstanceRequest(label=label, run=self.run, compute=dict(compute)),
                                provider_context)
        assert again.id == instance.id and again.label == label
        assert list(provider.find([label], provider_context)) == [label]

    def test_find_answers_for_the_labels_asked(self, provider: Provider, provider_context: ProviderContext,
                                               instance: InstanceInfo, label: str) -> None:
        other = f"runform-{self.run}-{uuid.uuid4().hex[:8]}"
        found = provider.find([label, other], provider_context)
        assert list(found) == [label], "find returns the live instances among the labels, no others"
        assert found[label].id == instance.id and found[label].label == label
        assert found[label].status == "running"
        assert provider.find([other], provider_context) == {}

    def test_destroy_twice(self, provider: Provider, compute: Mapping[str, Any],
                           provider_context: ProviderContext, label: str) -> None:
        info = provider.create(InstanceRequest(label=label, run=self.run, compute=dict(compute)),
                               provider_context)
        provider.destroy(info, provider_context)
        assert provider.find([label], provider_context) == {}, "a destroyed instance is gone from find"
        provider.destroy(info, provider_context)  # already gone is success

    def test_a_fitting_instance_needs_no_replacement(self, provider: Provider, compute: Mapping[str, Any],
                                                     instance: InstanceInfo) -> None:
        assert provider.replace_reason(instance, dict(compute)) is None

    # ------------------------------------------------------------------ readiness and transport
    def test_connect_right_after_create(self, machine: Machine) -> None:
        """Readiness: once create returned, the machine takes commands at once."""
        assert isinstance(machine.root, str) and machine.root.startswith("/")
        out = machine.transport.run(["sh", "-c", 'test -d "$1" && echo ready', "sh", machine.root])
        assert out.ok and out.stdout.strip() == b"ready", out

    def test_transport_runs_commands(self, machine: Machine) -> None:
        t = machine.transport
        out = t.run(["sh", "-c", 'printf "%s" "$GREETING"; cat; echo err >&2; exit 3'],
                    stdin=b" from stdin", env={"GREETING": "hello"}, timeout=60)
        assert (out.exit_code, out.stdout, out.stderr.strip()) == (3, b"hello from stdin", b"err")
        assert not out.ok
        spaced = t.run(["printf", "%s|", "two words", "$HOME", "a'b"], timeout=60)
        assert spaced.stdout == b"two words|$HOME|a'b|", "argv is passed without a shell"

    def test_transport_timeout_raises_timeout_error(self, machine: Machine) -> None:
        with pytest.raises(TimeoutError):
            machine.transport.run(["sleep", "30"], timeout=0.5)

    def test_transport_moves_files(self, machine: Machine, tmp_path: Path) -> None:
        t, base = machine.transport, f"{machine.root}/conformance-{uuid.uuid4().hex[:6]}"
        assert t.run(["mkdir", "-p", f"{base}/sub"], timeout=60).ok  # the core makes the folders
        t.put_bytes(b"secret\n", f"{base}/sub/a.env", mode=0o600)
        assert t.get_bytes(f"{base}/sub/a.env") == b"secret\n"
        mode = t.run(["stat", "-c", "%a", f"{base}/sub/a.env"], timeout=60)
        assert mode.stdout.strip() == b"600", "put_bytes creates the file with the mode asked"
        t.put_bytes(b"replaced", f"{base}/sub/a.env", mode=0o600)
        assert t.get_bytes(f"{base}/sub/a.env") == b"replaced"
        local = tmp_path / "blob.bin"
        local.write_bytes(bytes(range(256)) * 400)
        t.put_file(local, f"{base}/blob.bin")
        assert t.get_bytes(f"{base}/blob.bin") == local.read_bytes()
        listing = t.run(["ls", "-a", f"{base}/sub"], timeout=60).stdout.split()
        assert sorted(listing) == [b".", b"..", b"a.env"], "no temporary file is left behind"
        with pytest.raises(Exception):  # noqa: B017 (the protocol names no error: any, but not silence)
            t.get_bytes(f"{base}/missing")
