"""The Vast client against the stand-in over HTTP: auth, retries with backoff and
Retry-After, the search quota, create's unknown outcome, and never leaking the key."""

from __future__ import annotations

import logging
import time

import pytest

from runform.providers.vast.client import (
    AuthError,
    CreateOutcomeUnknown,
    OfferGone,
    RateLimited,
    RetryPolicy,
    SearchQuotaExceeded,
    Unreachable,
    VastClient,
    resolve_api_key,
    resolve_base_url,
)

FAST = RetryPolicy(attempts=6, initial=0.001, max_wait=0.005, max_retry_after=5.0)
BODY = {"client_id": "me", "image": "pytorch/pytorch:latest", "disk": 20, "label": "t", "env": {},
        "cancel_unavail": True}


@pytest.fixture
def client(vast_standin):
    with VastClient(api_key=vast_standin.api_key, base_url=vast_standin.url, retry=FAST) as c:
        yield c


def cheapest(client: VastClient) -> dict:
    return client.search_offers({"gpu_name": {"eq": "RTX 4090"}, "rented": {"eq": False},
                                 "order": [["dph_total", "asc"]], "limit": 1})[0]


def test_key_and_url_resolution(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    assert resolve_api_key({"VAST_API_KEY": " k1 "}) == "k1"
    assert resolve_api_key({}) is None
    (tmp_path / ".config" / "vastai").mkdir(parents=True)
    (tmp_path / ".config" / "vastai" / "vast_api_key").write_text("k2\n")
    assert resolve_api_key({}) == "k2"
    assert resolve_base_url({}) == "https://console.vast.ai"
    assert resolve_base_url({"VAST_API_URL": "http://127.0.0.1:9/api/v0/"}) == "http://127.0.0.1:9"


def test_bearer_auth_and_paths_and_never_the_v0_list(vast_standin, client) -> None:
    assert cheapest(client)["gpu_name"] == "RTX 4090"
    assert client.list_instances() == [] and client.list_instances(label="x") == []
    paths = [(r.method, r.path, r.status) for r in vast_standin.audit().requests]
    assert paths == [("POST", "/api/v0/bundles/", 200), ("GET", "/api/v1/instances/", 200),
                     ("GET", "/api/v1/instances/", 200)]


def test_the_v1_list_filters_by_label_and_pages_past_25(vast_standin, client) -> None:
    offers = client.search_offers({"rented": {"eq": False}, "limit": 40})
    made = [client.create_instance(o["id"], {**BODY, "label": "many" if n < 30 else "other"})
            for n, o in enumerate(offers[:33])]
    many = client.list_instances(label="many")
    assert sorted(r["id"] for r in many) == sorted(made[:30]) and {r["label"] for r in many} == {"many"}
    pages = vast_standin.audit().requests_to("GET", "/api/v1/instances/")
    assert len(pages) == 2  # 25 + 5, the second asked for with the first page's next_token
    assert len(client.list_instances()) == 33


def test_an_already_attached_key_is_success(vast_standin, client) -> None:
    instance_id = client.create_instance(cheapest(client)["id"], BODY)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu me"
    client.attach_ssh_key(instance_id, key)
    client.attach_ssh_key(instance_id, key)  # 200 {"success": false, "msg": "SSH key already associated..."}
    assert vast_standin.audit().instances[instance_id]["keys"] == [key]


def test_a_destroyed_instance_that_lingers_reads_as_gone(vast_standin, client) -> None:
    vast_standin.set_lifecycle(destroy_s=30.0)
    instance_id = client.create_instance(cheapest(client)["id"], BODY)
    assert client.destroy_instance(instance_id) is True
    assert client.show_instance(instance_id) is None  # unloaded + destroyed/terminated
    assert client.list_instances(label="t") == []
    assert vast_standin.audit().instances[instance_id]["visible"] is True  # the row is still there


def test_no_network_fails_fast_naming_the_host_and_the_fix() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with VastClient(api_key="k", base_url=f"http://127.0.0.1:{port}") as c:  # default retry policy
        started = time.monotonic()
        with pytest.raises(Unreachable) as err:
            c.search_offers({"limit": 1})
        assert time.monotonic() - started < 10
    text = str(err.value)
    assert f"http://127.0.0.1:{port}" in text and "VAST_API_URL" in text and "network" in text
    assert "overloaded" not in text


def test_search_works_without_a_key_but_nothing_else_does(vast_standin, monkeypatch) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    monkeypatch.setattr("pathlib.Path.home", lambda: __import__("pathlib").Path("/nonexistent"))
    with VastClient(base_url=vast_standin.url, retry=FAST) as anon:
        assert anon.search_offers({"limit": 2})
        with pytest.raises(AuthError, match="no Vast API key"):
            anon.list_instances()
    with VastClient(api_key="wrong-key", base_url=vast_standin.url, retry=FAST) as bad:
        with pytest.raises(AuthError, match="401 auth_error: Invalid user key"):
            bad.list_instances()


def test_the_key_never_shows(vast_standin, caplog) -> None:
    secret = "sk-live-0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    with VastClient(api_key=secret, base_url=vast_standin.url, retry=FAST) as c:
        assert secret not in repr(c)
        with pytest.raises(AuthError) as err:
            c.show_instance(1)
        assert secret not in str(err.value)
    assert secret not in caplog.text


def test_429_and_5xx_are_retried_until_an_answer(vast_standin, client) -> None:
    vast_standin.set_faults(script=[429, 503, 502, 500, 429])
    assert client.list_instances() == []
    statuses = [r.status for r in vast_standin.audit().requests_to("GET", "/api/v1/instances/")]
    assert statuses == [429, 503, 502, 500, 429, 200]


def test_retry_after_is_honoured(vast_standin, client) -> None:
    vast_standin.set_faults(script=[429], retry_after=0.3, only="bundles")
    cheapest(client)
    first, second = vast_standin.audit().requests_to("POST", "/api/v0/bundles/")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.3  # the backoff alone would have waited ≤ 5 ms


def test_an_overlong_retry_after_is_reported_not_waited_out(vast_standin, client) -> None:
    vast_standin.set_faults(script=[429], retry_after=3600)
    started = time.monotonic()
    with pytest.raises(RateLimited, match="rate limited for 3600s"):
        client.list_instances()
    assert time.monotonic() - started < 1


def test_retries_give_up_with_a_clear_error(vast_standin, client) -> None:
    vast_standin.set_faults(rate_429=1.0)
    with pytest.raises(RateLimited, match=r"GET /api/v1/instances/ at 127.0.0.1: 429 .*gave up after 6 attempts"):
        client.list_instances()
    assert len(vast_standin.audit().requests) == 6


def test_search_quota_exceeded_is_an_error_not_a_retry_loop(vast_standin, client) -> None:
    vast_standin.set_faults(search_quota_exceeded=True)
    with pytest.raises(SearchQuotaExceeded, match=r"daily offer-search quota is used up until \d{4}-") as err:
        cheapest(client)
    assert "does not retry" in str(err.value)
    assert len(vast_standin.audit().requests) == 1


def test_create_is_not_retried_when_its_answer_is_lost(vast_standin, client) -> None:
    offer = cheapest(client)
    vast_standin.set_faults(lost_create_rate=1.0)
    with pytest.raises(CreateOutcomeUnknown):
        client.create_instance(offer["id"], BODY)
    vast_standin.set_faults(lost_create_rate=1.0, lost_create_mode="drop")
    with pytest.raises(CreateOutcomeUnknown, match="connection lost"):
        client.create_instance(cheapest(client)["id"], BODY)
    audit = vast_standin.audit()
    assert len(audit.requests_to("PUT", "/api/v0/asks/")) == 2
    assert len(audit.creates) == 2 and len(audit.live) == 2  # both happened; the caller must look


def test_create_is_retried_on_429_which_rejects_before_acting(vast_standin, client) -> None:
    offer = cheapest(client)
    vast_standin.set_faults(script=[429, 429], only="asks")
    instance_id = client.create_instance(offer["id"], BODY)
    assert [c.instance_id for c in vast_standin.audit().creates] == [instance_id]


def test_a_rented_offer_is_gone(vast_standin, client) -> None:
    offer = cheapest(client)
    client.create_instance(offer["id"], BODY)
    with pytest.raises(OfferGone, match="410 no_such_ask"):
        client.create_instance(offer["id"], BODY)
    with pytest.raises(OfferGone, match="404 invalid_args: error 404/3603: no_such_ask"):
        client.create_instance(offer["id"], {**BODY, "cancel_unavail": False})


def test_show_destroy_and_gone(vast_standin, client) -> None:
    instance_id = client.create_instance(cheapest(client)["id"], BODY)
    assert client.show_instance(instance_id)["label"] == "t"
    client.set_label(instance_id, "t2")
    assert client.list_instances()[0]["label"] == "t2"
    assert client.destroy_instance(instance_id) is True
    assert client.show_instance(instance_id) is None
    assert client.destroy_instance(instance_id) is False  # already gone is fine


def test_logs_are_fetched_from_the_result_url(vast_standin, client) -> None:
    instance_id = client.create_instance(cheapest(client)["id"], BODY)
    text = client.request_logs(instance_id, tail=50)
    assert f"instance {instance_id} created on machine" in text
