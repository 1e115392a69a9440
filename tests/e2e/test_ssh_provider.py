"""The ssh provider against the real sshd: claim, find, connect, destroy (with its guard)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runform.errors import HostKeyError, ProviderError
from runform.interfaces import InstanceInfo, InstanceRequest, Machine, Provider, ProviderContext
from runform.providers.ssh.provider import CLAIM, SSHProvider, check_root, resolve_root
from runform.agent.wheel import build_wheel
from runform.testing.sshd import SSHD

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

LABEL = "runform-demo-abcd1234"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory):
    return build_wheel(tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def provider(wheel) -> SSHProvider:
    return SSHProvider(wheel=wheel, cache_dir=wheel.path.parent, find_timeout=1.0)


def context(
    tmp_path: Path, pins: dict[str, str] | None = None, log: list[str] | None = None
) -> ProviderContext:
    return ProviderContext(
        state_dir=tmp_path / ".runform",
        run="demo",
        lineage="abcd1234",
        pins=pins or {},
        log=(log if log is not None else []).append,
    )


def request(sshd: SSHD, root: Path, label: str = LABEL) -> InstanceRequest:
    return InstanceRequest(label=label, run="demo", compute={**sshd.compute, "root": str(root)})


def test_create_find_connect_destroy(sshd: SSHD, provider: SSHProvider, tmp_path: Path) -> None:
    assert isinstance(provider, Provider)
    root = tmp_path / "machine" / "run"
    neighbour = tmp_path / "machine" / "keep.txt"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("not runform's")
    log: list[str] = []

    info = provider.create(request(sshd, root), context(tmp_path, log=log))
    assert info.status == "running" and info.label == LABEL
    assert info.attrs["host_key"] == sshd.host_key  # pinned on first use, for the state
    assert (info.attrs["host"], info.attrs["port"]) == (sshd.host, sshd.port)
    assert info.attrs["root"] == str(root)
    assert json.loads((root / CLAIM).read_text())["label"] == LABEL
    assert any("installing runform" in line for line in log)

    pinned = context(tmp_path, pins={f"{sshd.host}:{sshd.port}": info.attrs["host_key"]})
    found = provider.find([LABEL, "runform-other-00000000"], pinned)
    assert list(found) == [LABEL] and found[LABEL].attrs["root"] == str(root)

    log.clear()  # create again (a crash between create and the journal): adopts, no reinstall
    again = provider.create(request(sshd, root), context(tmp_path, pins=pinned.pins, log=log))
    assert again.attrs == info.attrs and not any("installing" in line for line in log)
    with pytest.raises(ProviderError, match="already claimed by 'runform-demo-abcd1234'"):
        provider.create(request(sshd, root, label="runform-other-00000000"), pinned)
    stranger = InstanceInfo(
        id="x", label="runform-other-00000000", status="running", attrs=info.attrs
    )
    with pytest.raises(ProviderError, match="claimed by"):
        provider.destroy(stranger, pinned)

    compute = {**sshd.compute, "root": str(root)}
    assert provider.replace_reason(info, compute) is None
    assert provider.replace_reason(info, {**compute, "key_file": "/elsewhere"}) is None
    assert "compute.host changed" in provider.replace_reason(info, {**compute, "host": "10.0.0.9"})
    assert "compute.port changed" in provider.replace_reason(info, {**compute, "port": 2222})
    assert "compute.root changed" in provider.replace_reason(info, {**compute, "root": "/srv/x"})

    machine = provider.connect(found[LABEL], pinned)
    assert isinstance(machine, Machine) and machine.root == str(root)
    try:
        r = machine.transport.run([machine.python, "-c", "import runform.interfaces; print('ok')"])
        assert r.stdout == b"ok\n", r.stderr
    finally:
        machine.transport.close()

    provider.destroy(found[LABEL], pinned)
    assert not root.exists() and not Path(f"{root}.runform-deleting").exists()
    assert neighbour.read_text() == "not runform's"
    assert provider.find([LABEL], pinned) == {}
    provider.destroy(found[LABEL], pinned)  # already gone: success


@pytest.mark.parametrize("root", ["/", "/tmp", "/root/..", "/root", "~", "relative/../.."])
def test_the_destroy_guard_refuses_roots_that_take_more_than_a_run(root: str) -> None:
    with pytest.raises(ProviderError, match="refusing"):
        check_root(resolve_root(root, "/root"), "/root")


def test_the_guard_holds_in_create_and_destroy(
    sshd: SSHD, provider: SSHProvider, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError, match="refusing"):
        provider.create(
            InstanceRequest(label=LABEL, run="demo", compute={**sshd.compute, "root": "~"}),
            context(tmp_path),
        )
    attrs = {**sshd.compute, "root": "/tmp", "root_spec": "/tmp"}
    with pytest.raises(ProviderError, match="refusing"):
        provider.destroy(
            InstanceInfo(id="x", label=LABEL, status="running", attrs=attrs), context(tmp_path)
        )
    assert Path("/tmp").is_dir()


def test_find_reports_an_unreachable_host_instead_of_gone(sshd: SSHD, tmp_path: Path) -> None:
    provider = SSHProvider(bootstrap=False, find_timeout=1.0)  # find needs no agent
    provider.create(request(sshd, tmp_path / "machine" / "run"), context(tmp_path))
    sshd.stop()
    with pytest.raises(ProviderError) as err:
        provider.find([LABEL], context(tmp_path))
    assert f"127.0.0.1:{sshd.port}" in str(err.value) and "fix:" in str(err.value)


def test_find_refuses_a_changed_host_key(sshd: SSHD, tmp_path: Path) -> None:
    provider = SSHProvider(bootstrap=False, find_timeout=1.0)  # find needs no agent
    info = provider.create(request(sshd, tmp_path / "machine" / "run"), context(tmp_path))
    pins = {f"{sshd.host}:{sshd.port}": info.attrs["host_key"]}
    sshd.regenerate_host_key()
    with pytest.raises(HostKeyError, match=f"--accept-host-key 127.0.0.1:{sshd.port}"):
        provider.find([LABEL], context(tmp_path, pins=pins))


def test_a_root_claimed_before_a_failed_bootstrap_can_still_be_destroyed(
    sshd: SSHD, provider: SSHProvider, tmp_path: Path
) -> None:
    root = tmp_path / "machine" / "half"
    req = InstanceRequest(label=LABEL, run="demo",
                          compute={**sshd.compute, "root": str(root), "options": {"python": "/bin/false"}})
    with pytest.raises(ProviderError, match="Python >= 3.10"):
        provider.create(req, context(tmp_path))
    assert json.loads((root / CLAIM).read_text())["label"] == LABEL  # claimed, not bootstrapped
    found = provider.find([LABEL], context(tmp_path))
    assert list(found) == [LABEL]
    provider.destroy(found[LABEL], context(tmp_path))
    assert not root.exists()
