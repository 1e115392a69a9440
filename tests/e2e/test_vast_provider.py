"""VastProvider against the stand-in over HTTP: create/adopt by label, lost creates, vanishing
offers, failed instances, destroy, find, replace reasons, and a 20-trial convergence run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import poll

from runform.errors import ProviderError
from runform.interfaces import InstanceInfo, InstanceRequest, Provider, ProviderContext, SupportsOffers
from runform.providers.vast import VastProvider
from runform.providers.vast.errors import VastAPIError
from runform.providers.vast.onstart import ONSTART_LIMIT, build_onstart, check_onstart
from runform.providers.vast.provider import AttemptFailed
from runform.testing.vast.fixture import fast_provider

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

IMAGE = "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
COMPUTE = {"provider": "vast", "gpus": ["RTX 4090", "RTX 3090", "A100 SXM4"], "image": IMAGE, "disk_gb": 50,
           "max_duration": "2h", "max_price_per_hour": 3.0, "min_reliability": 0.9,
           "env": {"WANDB_MODE": "offline"}}


@pytest.fixture
def ctx(tmp_path: Path) -> ProviderContext:
    return ProviderContext(state_dir=tmp_path / "state", run="demo", lineage="0123abcd", log=lambda _m: None)


def request(label: str = "runform-demo-0123abcd", **compute) -> InstanceRequest:
    return InstanceRequest(label=label, run="demo", compute={**COMPUTE, **compute}, env={"STAGE_SEED": "17"})


LABEL = "runform-demo-0123abcd"


def creates(vast_standin, label: str = LABEL) -> list:
    return vast_standin.audit().creates_for(label)


def test_it_is_a_provider_with_offers() -> None:
    provider = VastProvider()
    assert isinstance(provider, Provider) and isinstance(provider, SupportsOffers)
    assert provider.name == "vast"


def test_importing_the_plugin_stays_light() -> None:
    code = ("import sys, runform.providers.vast as v; v.VastProvider(); "
            "print([m for m in ('httpx', 'tenacity', 'rich', 'cryptography', 'paramiko') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_create_rents_the_best_offer_and_waits_until_ready(vast_standin, vast_provider, ctx) -> None:
    chosen = vast_provider.offers(COMPUTE, ctx)[0]
    info = vast_provider.create(request(), ctx)
    assert info.status == "running" and info.label == "runform-demo-0123abcd"
    (made,) = creates(vast_standin)
    assert info.id == str(made.instance_id) and made.offer_id == chosen["id"]
    a = info.attrs
    assert a["gpu_name"] == chosen["gpu_name"] and a["machine_id"] == chosen["machine_id"]
    assert a["ssh_host"] == "127.0.0.1" and a["ssh_port"] == vast_standin.world.ssh_port
    assert a["root"] == str(vast_standin.instance_root(info.id))
    key_file = Path(a["key_file"])
    assert key_file.parent == ctx.state_dir / "keys" and key_file.stat().st_mode & 0o777 == 0o600
    seen = vast_standin.audit().instances[int(info.id)]
    assert seen["keys"] == [key_file.with_name(key_file.name + ".pub").read_text().strip()]
    assert seen["env"]["WANDB_MODE"] == "offline" and seen["env"]["STAGE_SEED"] == "17"
    assert seen["env"]["RUNFORM_ROOT"] == "/root/runform" and seen["env"]["RUNFORM_MAX_DURATION_S"] == "7200"
    assert vast_standin.world.instances[int(info.id)].onstart == build_onstart()


def test_onstart_is_small_and_holds_no_secret(vast_standin, vast_provider) -> None:
    script = build_onstart()
    assert len(script) < ONSTART_LIMIT
    assert "CONTAINER_API_KEY" in script and vast_standin.api_key not in script
    with pytest.raises(ProviderError, match="would contain a secret"):
        check_onstart(script + "\nexport K=sk-secret-value", ["sk-secret-value"])
    with pytest.raises(ProviderError, match="Vast accepts fewer than 4048"):
        check_onstart("#" * ONSTART_LIMIT)
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_an_existing_instance_with_the_label_is_adopted(vast_standin, vast_provider, ctx) -> None:
    first = vast_provider.create(request(), ctx)
    again = vast_provider.create(request(), ctx)
    assert again.id == first.id and len(creates(vast_standin)) == 1
    assert vast_provider.find(["runform-demo-0123abcd", "runform-other"], ctx).keys() == {"runform-demo-0123abcd"}


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_a_lost_create_response_is_found_by_label(vast_standin, vast_provider, ctx, mode) -> None:
    vast_standin.set_faults(lost_create_rate=1.0, lost_create_mode=mode)
    info = vast_provider.create(request(), ctx)
    (made,) = creates(vast_standin)
    assert made.answered == f"lost-{mode}" and info.id == str(made.instance_id)
    assert vast_standin.audit().live == (made.instance_id,)


def test_a_vanished_offer_moves_on_to_the_next(vast_standin, vast_provider, ctx) -> None:
    first, second = vast_provider.offers(COMPUTE, ctx)[:2]
    vast_standin.set_faults(vanish_next=1)
    info = vast_provider.create(request(), ctx)
    (made,) = creates(vast_standin)
    assert made.offer_id == second["id"] and info.attrs["machine_id"] == second["machine_id"]
    asks = [r.path for r in vast_standin.audit().requests_to("PUT", "/api/v0/asks/")]
    assert asks == [f"/api/v0/asks/{first['id']}/", f"/api/v0/asks/{second['id']}/"]


def test_an_oci_error_destroys_the_attempt_and_tries_another_host(vast_standin, vast_provider, ctx) -> None:
    first, second = vast_provider.offers(COMPUTE, ctx)[:2]
    vast_standin.set_faults(machine_faults={first["machine_id"]: "oci"})
    logs: list[str] = []
    info = vast_provider.create(request(), ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    bad, good = creates(vast_standin)
    assert (bad.machine_id, good.machine_id) == (first["machine_id"], second["machine_id"])
    audit = vast_standin.audit()
    assert audit.destroyed == (bad.instance_id,) and audit.live == (good.instance_id,)
    assert info.id == str(good.instance_id)
    assert any("OCI runtime create failed" in line and "destroying" in line for line in logs)


@pytest.mark.parametrize("fault, words", [("exited", "is exited"), ("offline", "is offline")])
def test_failed_states_fail_fast(vast_standin, vast_provider, ctx, fault, words) -> None:
    vast_standin.set_faults(exited_rate=1.0 if fault == "exited" else 0.0,
                            machine_faults={} if fault == "exited" else
                            {o["machine_id"]: "offline" for o in vast_standin.offers()})
    with pytest.raises(ProviderError, match=rf"after 3 attempts: instance \d+ {words}") as err:
        vast_provider.create(request(), ctx)
    assert str(err.value).count(words) == 3
    audit = vast_standin.audit()
    assert len(audit.creates) == 3 and audit.live == () and len(set(c.machine_id for c in audit.creates)) == 3


def test_stuck_loading_hits_the_ready_deadline(vast_standin, vast_provider, ctx) -> None:
    vast_standin.set_faults(stuck_loading_rate=1.0)
    with pytest.raises(ProviderError, match=r"not ready after 0\.2s \(last: loading: Pulling image"):
        vast_provider.create(request(ready_timeout="200ms", options={"max_attempts": 1}), ctx)
    assert vast_standin.audit().live == ()


def test_a_contract_left_by_a_failed_create_is_destroyed(vast_standin, vast_provider, ctx) -> None:
    vast_standin.set_faults(contract_on_failure_rate=1.0)
    with pytest.raises(ProviderError, match="10 offers tried"):
        vast_provider.create(request(), ctx)
    audit = vast_standin.audit()
    assert len(audit.creates) == 10 and audit.live == () and audit.stop_requests == ()


@pytest.mark.parametrize("confirmable", [True, False], ids=["cleanup-confirmed", "show-keeps-failing"])
def test_an_api_error_while_starting_destroys_the_instance(vast_standin, vast_provider, ctx, confirmable) -> None:
    """An error that is not a failed attempt (show answering 5xx until the client gives up)
    destroys the instance before it is raised: nothing is left billing that state does not hold."""
    show = r"GET /api/v0/instances/\d+"
    if confirmable:  # one show call fails (12 attempts: all of the client's retries); later ones answer
        vast_standin.set_faults(only=show, script=[503] * 12)
    else:  # every show fails, so the cleanup cannot read the instance back either
        vast_standin.set_faults(only=show, rate_5xx=1.0)
    logs: list[str] = []
    with pytest.raises(VastAPIError, match="gave up after 12 attempts"):
        vast_provider.create(request(), ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    (made,) = creates(vast_standin)
    audit = vast_standin.audit()
    assert audit.live_for(LABEL) == [] and audit.destroyed == (made.instance_id,)
    path = f"/api/v0/instances/{made.instance_id}/"
    (delete,) = audit.requests_to("DELETE", path)
    assert delete.status == 200
    if confirmable:  # read back after the DELETE, and found gone
        assert any(r.at > delete.at and r.status == 200 for r in audit.requests_to("GET", path))
        assert f"vast: instance {made.instance_id} destroyed" in logs
    else:
        assert any("could not be confirmed destroyed" in line and "may still bill" in line for line in logs)


@pytest.mark.parametrize("error", [RuntimeError("probe crashed"), KeyboardInterrupt()],
                         ids=["exception", "keyboard-interrupt"])
def test_an_on_ready_that_raises_destroys_the_instance(vast_standin, ctx, error) -> None:
    def on_ready(info: InstanceInfo) -> bool:
        raise error

    provider = fast_provider(vast_standin, on_ready=on_ready)
    with pytest.raises(type(error)) as raised:
        provider.create(request(), ctx)
    assert raised.value is error  # the original, re-raised after the cleanup
    (made,) = creates(vast_standin)  # no other host was tried
    audit = vast_standin.audit()
    assert audit.live_for(LABEL) == [] and audit.destroyed == (made.instance_id,)
    assert provider.client.show_instance(made.instance_id) is None  # confirmed gone
    provider.client.close()


def test_an_on_ready_that_raises_attempt_failed_tries_another_host(vast_standin, ctx) -> None:
    calls: list[str] = []

    def on_ready(info: InstanceInfo) -> bool:
        calls.append(info.id)
        if len(calls) == 1:
            raise AttemptFailed("onstart never finished", machine_id=info.attrs["machine_id"])
        return True

    provider = fast_provider(vast_standin, on_ready=on_ready)
    info = provider.create(request(), ctx)
    bad, good = creates(vast_standin)
    assert bad.machine_id != good.machine_id and info.id == str(good.instance_id)
    audit = vast_standin.audit()
    assert audit.destroyed == (bad.instance_id,) and audit.live_for(LABEL) == [good.instance_id]
    provider.client.close()


def test_a_lost_create_is_looked_up_again_when_its_offer_reads_as_gone(vast_standin, ctx) -> None:
    """Vast's list lags behind creates: the instance a lost create made is not listed within
    ``lost_create_grace``, the retry finds the offer taken (by that very create), and runform
    looks the label up again instead of renting a second instance."""
    vast_standin.set_faults(lost_create_rate=1.0, list_lag_s=1.2)
    provider = fast_provider(vast_standin, lost_create_grace=0.8)  # listed only during the second lookup
    first = provider.offers(COMPUTE, ctx)[0]
    info = provider.create(request(), ctx)
    (made,) = creates(vast_standin)  # at most one instance per intent, despite the lag
    assert made.answered == "lost-500" and made.offer_id == first["id"] and info.id == str(made.instance_id)
    audit = vast_standin.audit()
    asks = [r.path for r in audit.requests_to("PUT", "/api/v0/asks/")]
    assert asks == [f"/api/v0/asks/{first['id']}/"] * 2  # the retry found it taken; no other offer rented
    assert audit.live_for(LABEL) == [made.instance_id]
    provider.destroy(info, ctx)
    assert vast_standin.audit().live_for(LABEL) == []
    provider.client.close()


def _lose_only_the_first_create_answer(standin, provider, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With ``lost_create_rate=1.0`` set: the first create's answer is lost, the rest arrive."""
    real_create = provider.client.create_instance

    def create_instance(offer_id: int, body: dict) -> int:
        try:
            return real_create(offer_id, body)
        finally:
            standin.set_faults(lost_create_rate=0.0)

    monkeypatch.setattr(provider.client, "create_instance", create_instance)


def test_destroy_removes_a_duplicate_that_a_lagging_list_let_through(vast_standin, ctx, monkeypatch) -> None:
    """The list lags past both lookups, so another offer is rented: at most two instances carry
    the label (the lost one and the one create returns). Once the list shows the lost one,
    destroy deletes both, each confirmed gone."""
    vast_standin.set_faults(lost_create_rate=1.0, list_lag_s=1.0)
    provider = fast_provider(vast_standin)  # lost_create_grace=0: each lookup is one list call
    _lose_only_the_first_create_answer(vast_standin, provider, monkeypatch)
    info = provider.create(request(), ctx)
    lost, kept = creates(vast_standin)
    assert (lost.answered, kept.answered) == ("lost-500", "ok") and info.id == str(kept.instance_id)
    assert vast_standin.audit().live_for(LABEL) == [lost.instance_id, kept.instance_id]
    poll(lambda: vast_standin.audit().instances[lost.instance_id]["listed"])  # the list catches up
    logs: list[str] = []
    provider.destroy(info, ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    audit = vast_standin.audit()
    assert audit.live_for(LABEL) == [] and set(audit.destroyed) == {lost.instance_id, kept.instance_id}
    assert provider.client.show_instance(lost.instance_id) is None  # confirmed, not just requested
    assert any(f"instance {lost.instance_id} also carries label {LABEL}" in line for line in logs)
    assert provider.find([LABEL], ctx) == {}
    provider.client.close()


def test_a_create_that_gives_up_sweeps_what_its_lost_creates_made(vast_standin, ctx) -> None:
    """Every create answer is lost and Vast's list lags past both lookups of the one offer
    allowed, so create gives up. Before it raises it sweeps the label, polling the list for the
    lost-create window: the instance the lost create made is destroyed, confirmed gone, and
    named in the log. Nothing carrying the label is left billing."""
    vast_standin.set_faults(lost_create_rate=1.0, list_lag_s=1.5)
    # two lookups of 0.6 s each end before the instance is listed (1.5 s); the sweep's window,
    # which starts after them, reaches past it
    provider = fast_provider(vast_standin, lost_create_grace=0.6)
    logs: list[str] = []
    with pytest.raises(ProviderError, match=r"could not rent a Vast instance .* \(1 offers tried\)"):
        provider.create(request(options={"max_offers": 1}),
                        ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    (made,) = creates(vast_standin)
    assert made.answered == "lost-500"
    assert not any("did happen" in line for line in logs)  # the lookups never saw it: the list lagged
    audit = vast_standin.audit()
    assert len(audit.requests_to("PUT", "/api/v0/asks/")) == 2  # the retry found the offer taken
    # swept inside create, before it raised: nothing to wait for afterwards
    assert audit.live_for(LABEL) == [] and audit.destroyed == (made.instance_id,)
    assert provider.client.show_instance(made.instance_id) is None  # confirmed, not just requested
    assert any(f"instance {made.instance_id} carries {LABEL}" in line and "destroying" in line for line in logs)
    assert f"vast: instance {made.instance_id} destroyed" in logs
    provider.client.close()


def test_a_create_that_sent_no_create_does_not_sweep(vast_standin, vast_provider, ctx) -> None:
    """No feasible offer: create fails before renting anything, and leaves the account alone
    (the one list call is the adoption lookup; no create, no DELETE, no sweep)."""
    logs: list[str] = []
    with pytest.raises(ProviderError, match="no feasible offer"):
        vast_provider.create(request(max_price_per_hour=0.001),
                             ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    audit = vast_standin.audit()
    assert audit.requests_to("PUT", "/api/v0/") == [] and audit.requests_to("DELETE", "/api/v0/") == []
    assert [r.path for r in audit.requests_to("GET", "/api/v1/instances")] == ["/api/v1/instances/"]
    assert audit.requests_to("GET", "/api/v0/instances/") == []  # the deprecated list: never
    assert not any("destroy" in line for line in logs)


def test_ctrl_c_while_looking_for_a_lost_create_still_sweeps(vast_standin, ctx, monkeypatch) -> None:
    """Ctrl-C in the lost-create lookup: the create's instance was never found, so the sweep
    polls the (lagging) list until it shows it, destroys it, and the KeyboardInterrupt is
    re-raised. The sweep stops once every lost create is accounted for, not at its window."""
    vast_standin.set_faults(lost_create_rate=1.0, list_lag_s=0.3)
    provider = fast_provider(vast_standin, lost_create_grace=5.0)
    interrupt = KeyboardInterrupt()

    def find_lost(label: str, run: object) -> int | None:
        raise interrupt

    monkeypatch.setattr(provider, "_find_lost", find_lost)
    logs: list[str] = []
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as raised:
        provider.create(request(), ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    assert raised.value is interrupt  # the original, re-raised after the sweep
    assert time.monotonic() - started < 4.0  # stopped early, not at the 5 s window
    (made,) = creates(vast_standin)  # no retry, no other offer
    audit = vast_standin.audit()
    assert audit.live_for(LABEL) == [] and audit.destroyed == (made.instance_id,)
    assert provider.client.show_instance(made.instance_id) is None
    assert any(f"instance {made.instance_id} carries {LABEL}" in line for line in logs)
    assert f"vast: instance {made.instance_id} destroyed" in logs
    provider.client.close()


def test_a_sweep_that_fails_is_logged_and_the_original_error_raised(vast_standin, ctx, monkeypatch) -> None:
    """The list call fails during the sweep: the label is logged with what to run, noted on the
    error, and the original error is still the one raised."""
    vast_standin.set_faults(lost_create_rate=1.0)
    provider = fast_provider(vast_standin)
    interrupt = KeyboardInterrupt()

    def find_lost(label: str, run: object) -> int | None:
        vast_standin.set_faults(only=r"^GET /api/v1/instances/$", rate_5xx=1.0)  # the list fails from now on
        raise interrupt

    monkeypatch.setattr(provider, "_find_lost", find_lost)
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt) as raised:
        provider.create(request(), ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    assert raised.value is interrupt
    (line,) = [line for line in logs if "may still bill" in line]
    assert LABEL in line and "vastai destroy instance <id>" in line and "runform destroy" in line
    assert line.removeprefix("vast: ") in getattr(raised.value, "__notes__", [])
    (made,) = creates(vast_standin)
    assert vast_standin.audit().live_for(LABEL) == [made.instance_id]  # left, and reported
    vast_standin.clear_faults()
    provider.destroy(InstanceInfo(str(made.instance_id), LABEL, "running", {}), ctx)
    provider.client.close()


def test_destroy_deletes_and_confirms(vast_standin, vast_provider, ctx) -> None:
    info = vast_provider.create(request(), ctx)
    vast_standin.set_lifecycle(destroy_s=0.2)  # the instance still reads back for a moment
    vast_provider.destroy(info, ctx)
    audit = vast_standin.audit()
    assert audit.live == () and audit.destroyed == (int(info.id),) and audit.stop_requests == ()
    assert vast_provider.client.show_instance(int(info.id)) is None  # confirmed, not just requested
    assert not Path(info.attrs["key_file"]).exists()
    vast_provider.destroy(info, ctx)  # already gone: success


def test_find_is_one_list_call(vast_standin, vast_provider, ctx) -> None:
    a = vast_provider.create(request("runform-demo-a"), ctx)
    b = vast_provider.create(request("runform-demo-b"), ctx)
    before = len(vast_standin.audit().requests)
    found = vast_provider.find(["runform-demo-a", "runform-demo-b", "runform-demo-c"], ctx)
    calls = vast_standin.audit().requests[before:]
    assert [(r.method, r.path) for r in calls] == [("GET", "/api/v1/instances/")]
    assert {k: v.id for k, v in found.items()} == {"runform-demo-a": a.id, "runform-demo-b": b.id}


def test_preempted_instances_are_gone_or_need_replacing(vast_standin, vast_provider, ctx) -> None:
    a = vast_provider.create(request("runform-demo-a"), ctx)
    b = vast_provider.create(request("runform-demo-b"), ctx)
    vast_standin.preempt(a.id, "gone")
    vast_standin.preempt(b.id, "exited")
    found = vast_provider.find(["runform-demo-a", "runform-demo-b"], ctx)
    assert list(found) == ["runform-demo-b"]
    assert vast_provider.replace_reason(found["runform-demo-b"], COMPUTE) == (
        f"instance {b.id} is exited (container exited: host reclaimed the machine)")
    gone = InstanceInfo(a.id, a.label, "gone", {})
    assert vast_provider.replace_reason(gone, COMPUTE) == f"instance {a.id} is gone"


def test_replace_reasons_for_changed_config(vast_provider, ctx) -> None:
    info = vast_provider.create(request(), ctx)
    gpu = info.attrs["gpu_name"]
    assert vast_provider.replace_reason(info, COMPUTE) is None
    assert vast_provider.replace_reason(info, {**COMPUTE, "gpus": [gpu.replace(" ", "_").lower()]}) is None
    assert vast_provider.replace_reason(info, {**COMPUTE, "gpus": ["H200"]}) == f"gpu {gpu} is not in gpus [H200]"
    assert vast_provider.replace_reason(info, {**COMPUTE, "image": "other:1"}) == f"image changed: {IMAGE} → other:1"
    assert "disk_gb changed: 50 → 80" in vast_provider.replace_reason(info, {**COMPUTE, "disk_gb": 80})


def test_twenty_intents_converge_under_faults(vast_standin, ctx) -> None:
    vast_standin.set_lifecycle(created_s=0.01, loading_s=0.02)
    provider = fast_provider(vast_standin)
    vast_standin.set_faults(rate_429=0.15, rate_5xx=0.15, lost_create_rate=0.1, vanish_rate=0.1)
    results = {}
    for i in range(20):
        label = f"runform-demo-{i:02d}"
        info = provider.create(request(label), ctx)
        provider.destroy(info, ctx)
        results[label] = info.id
    audit = vast_standin.audit()
    for label, instance_id in results.items():
        made = audit.creates_for(label)
        assert [c.instance_id for c in made] == [int(instance_id)], (label, made)
    assert audit.live == () and audit.stop_requests == ()
    faults = [r.fault for r in audit.requests if r.fault]
    assert faults.count("http-429") > 10 and any(f.startswith("http-5") for f in faults)
    assert any(c.answered.startswith("lost") for c in audit.creates)
    assert any(o.get("vanished") for o in vast_standin.offers())
    provider.client.close()


def test_end_to_end_with_a_real_sshd(make_vast_standin, sshd, ctx) -> None:
    """The default readiness (SSH handshake with the per-instance key + onstart sentinel), and
    connect with runform's agent bootstrapped, against the stand-in pointing at a real sshd."""
    pytest.importorskip("runform.agent.install")
    standin = make_vast_standin(sshd=sshd)
    provider = fast_provider(standin, on_ready=None)
    info = provider.create(request(), ctx)
    assert info.attrs["host_key"] == sshd.host_key  # pinned at first contact
    machine = provider.connect(info, ctx)
    try:
        assert machine.root == str(standin.instance_root(info.id))
        assert machine.python == f"{machine.root}/.runform/venv/bin/python"
        out = machine.transport.run(["sh", "-c", 'cd "$1" && ls .runform/vast && "$2" -c "import runform"',
                                     "sh", machine.root, machine.python])
        assert out.ok and out.stdout.decode().split() == ["onstart.done"], out
    finally:
        machine.transport.close()
    public_key = Path(info.attrs["key_file"] + ".pub").read_text().strip()
    assert public_key in sshd.authorized_keys.read_text()
    provider.destroy(info, ctx)
    assert public_key not in sshd.authorized_keys.read_text()  # the instance's key left with it
    json.dumps(info.to_json())  # state can keep it


def test_a_successful_create_drops_the_duplicate_a_lost_create_made(vast_standin, ctx, monkeypatch) -> None:
    """The first create's answer is lost and the list lags past the lookup, so another offer is
    rented; by the time that one is ready the list shows the lost one, and create destroys it
    before returning: one instance carries the label, the one create hands back."""
    vast_standin.set_faults(lost_create_rate=1.0, list_lag_s=0.5)
    vast_standin.set_lifecycle(loading_s=1.5)  # readiness outlasts the list's lag
    provider = fast_provider(vast_standin)
    _lose_only_the_first_create_answer(vast_standin, provider, monkeypatch)
    logs: list[str] = []
    info = provider.create(request(), ProviderContext(ctx.state_dir, "demo", "0123abcd", log=logs.append))
    lost, kept = creates(vast_standin)
    assert lost.answered == "lost-500" and info.id == str(kept.instance_id)
    assert vast_standin.audit().live_for(LABEL) == [kept.instance_id]
    assert provider.client.show_instance(lost.instance_id) is None  # confirmed gone
    assert any(f"instance {lost.instance_id} also carries {LABEL}" in line for line in logs)
    provider.client.close()


@pytest.mark.parametrize("dead", ["direct", "proxy"])
def test_direct_and_proxy_ssh_fall_back_to_each_other(vast_standin, ctx, dead: str) -> None:
    """One SSH endpoint of the instance leads nowhere: readiness (and the attrs connect uses)
    goes to the other, whichever runform prefers."""
    vast_standin.set_faults(dead_ssh=dead)
    for via in ("direct", "proxy"):
        provider = fast_provider(vast_standin)
        info = provider.create(request(f"runform-demo-{dead}-{via}", options={"ssh_via": via}), ctx)
        dead_port = vast_standin.world.dead_port
        assert info.attrs["ssh_port"] != dead_port and info.attrs["ssh_port"] == vast_standin.world.ssh_port
        assert [p for _, p in info.attrs["ssh_fallbacks"]] == [dead_port]  # kept: connect tries it last
        provider.destroy(info, ctx)


def test_ports_as_an_int_array_or_absent_leave_the_proxy(vast_standin, vast_provider, ctx) -> None:
    for style in ("list", "absent"):
        vast_standin.set_faults(ports_style=style)
        info = vast_provider.create(request(f"runform-demo-{style}"), ctx)
        assert (info.attrs["ssh_host"], info.attrs["ssh_port"]) == (vast_standin.world.ssh_host,
                                                                     vast_standin.world.ssh_port)
        assert info.attrs["ssh_fallbacks"] == []
        vast_provider.destroy(info, ctx)


def _create_behind_runforms_back(vast_standin, provider, label: str = LABEL) -> int:
    """Rent an instance with ``label`` straight through the client (another process did it)."""
    offer = next(o for o in provider.client.search_offers({"rented": {"eq": False}, "limit": 5})
                 if o["disk_space"] >= 20)
    body = {"client_id": "me", "image": "img:1", "disk": 20, "label": label, "env": {},
            "runtype": "ssh_direc ssh_proxy", "cancel_unavail": True}
    return provider.client.create_instance(offer["id"], body)


def test_a_create_killed_before_its_answer_is_waited_for_not_settled_by_a_lagging_list(
        vast_standin, ctx) -> None:
    """What an apply killed right after sending the create leaves: the create record says a
    call went out, its answer was never written. The list lags 1 s; the next lookup waits
    (up to settle_s after the call) instead of settling it with one list call."""
    from runform.providers.vast.ledger import CreateLedger

    vast_standin.set_faults(list_lag_s=1.0)
    provider = fast_provider(vast_standin, settle_s=5.0)
    CreateLedger(ctx.state_dir, LABEL).sent(0)
    iid = _create_behind_runforms_back(vast_standin, provider)
    found = provider.find([LABEL], ctx)
    assert found[LABEL].id == str(iid)
    info = provider.create(request(), ctx)  # adopts it: no second rental
    assert info.id == str(iid) and len(creates(vast_standin)) == 1
    assert not CreateLedger(ctx.state_dir, LABEL).load()  # settled once the list shows it


def test_an_answered_create_is_shown_directly_while_the_list_lags(vast_standin, ctx) -> None:
    from runform.providers.vast.ledger import CreateLedger

    vast_standin.set_faults(list_lag_s=60.0)  # the list will not show it during this test
    provider = fast_provider(vast_standin, settle_s=60.0)
    ledger = CreateLedger(ctx.state_dir, LABEL)
    key = ledger.sent(0)
    iid = _create_behind_runforms_back(vast_standin, provider)
    ledger.answered(key, iid)  # killed after the answer, before runform's state learned it
    assert provider.find([LABEL], ctx)[LABEL].id == str(iid)  # no wait: show does not lag
    info = provider.create(request(), ctx)
    assert info.id == str(iid) and len(creates(vast_standin)) == 1
    provider.destroy(info, ctx)
    assert vast_standin.audit().live_for(LABEL) == [] and not ledger.load()


def test_find_names_the_extra_instances_that_carry_the_label(vast_standin, vast_provider, ctx) -> None:
    info = vast_provider.create(request(), ctx)
    extra = _create_behind_runforms_back(vast_standin, vast_provider)
    found = vast_provider.find([LABEL], ctx)[LABEL]
    assert found.id == info.id and found.attrs["duplicates"] == [extra]
    again = vast_provider.create(request(), ctx)  # what apply does for the plan's "read"
    assert again.id == info.id and vast_standin.audit().live_for(LABEL) == [int(info.id)]
    assert "duplicates" not in vast_provider.find([LABEL], ctx)[LABEL].attrs
