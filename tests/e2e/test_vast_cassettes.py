"""Recorded traffic of runform's Vast client (pytest-recording / vcrpy).

By default the cassettes in ``tests/e2e/cassettes/test_vast_cassettes/`` are replayed (record mode
``none``): the requests the client sends must match them on method, path and query (never on
host: the stand-in's port changes every run), and the client must parse the recorded answers.
The ``Authorization`` header and any ``api_key`` parameter are filtered out of the cassettes,
and ``instance_api_key`` is blanked in recorded bodies.

Re-record against the stand-in::

    pytest tests/e2e/test_vast_cassettes.py --record-mode=rewrite

Re-record against the real API (opt-in, never in CI; see docs/vast.md)::

    RUNFORM_VAST_LIVE=1 VAST_API_KEY=... pytest tests/e2e/test_vast_cassettes.py --record-mode=rewrite
    # add RUNFORM_VAST_LIVE_RENT=1 to also record create/show/destroy: rents the cheapest
    # matching offer for about a minute (a few cents) and destroys it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from runform.providers.vast.client import RetryPolicy, VastClient
from runform.providers.vast.config import VastCompute
from runform.providers.vast.instances import VastInstance
from runform.providers.vast.offers import Offer, build_query, rank

LIVE = os.environ.get("RUNFORM_VAST_LIVE") == "1"
LIVE_RENT = LIVE and os.environ.get("RUNFORM_VAST_LIVE_RENT") == "1"
COMPUTE = {"gpus": ["RTX 4090", "RTX 3090"], "image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
           "disk_gb": 20, "max_price_per_hour": 1.0, "min_reliability": 0.95, "max_duration": "1h"}
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu cassette"


def _scrub(response: dict) -> dict:
    """Blank secrets that come back in bodies (the instance's own API key)."""
    body = response.get("body", {}).get("string")
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return response
    if isinstance(data, dict) and "instance_api_key" in data:
        data["instance_api_key"] = "REDACTED"
        response["body"]["string"] = json.dumps(data).encode()
    return response


@pytest.fixture(scope="module")
def vcr_config() -> dict:
    return {
        "filter_headers": ["authorization", "cookie", "set-cookie"],
        "filter_query_parameters": ["api_key"],
        "match_on": ["method", "path", "query"],
        "before_record_response": _scrub,
        "decode_compressed_response": True,
    }


@pytest.fixture
def client(make_vast_standin, record_mode):
    if LIVE:  # the real API, VAST_API_KEY / ~/.config/vastai/vast_api_key
        with VastClient() as c:
            yield c
        return
    standin = make_vast_standin(seed=11)  # answers only while recording
    standin.set_lifecycle(created_s=0.0, loading_s=0.0)
    with VastClient(api_key=standin.api_key, base_url=standin.url,
                    retry=RetryPolicy(attempts=3, initial=0.001, max_wait=0.01)) as c:
        yield c
    if record_mode == "none":
        assert standin.audit().requests == (), "replay must not reach the server"


def _offers(client: VastClient) -> list[Offer]:
    cfg = VastCompute.from_compute(COMPUTE)
    return rank([Offer.from_json(o) for o in client.search_offers(build_query(cfg))], cfg)


@pytest.mark.vcr
def test_search_and_list(client: VastClient) -> None:
    ranked = _offers(client)
    assert ranked and ranked[0].gpu_name in ("RTX 4090", "RTX 3090") and ranked[0].dph_total <= 1.0
    assert isinstance(client.list_instances(), list)
    assert client.list_instances(label="runform-cassette-none") == []


@pytest.mark.vcr
@pytest.mark.skipif(LIVE and not LIVE_RENT, reason="renting on the real API needs RUNFORM_VAST_LIVE_RENT=1")
def test_rent_show_label_destroy(client: VastClient) -> None:
    offer = _offers(client)[0]
    body = {"client_id": "me", "image": COMPUTE["image"], "disk": COMPUTE["disk_gb"], "label": "runform-cassette",
            "env": {"RUNFORM_RUN": "cassette"}, "onstart": "touch /root/onstart.done",
            "runtype": "ssh_direc ssh_proxy", "cancel_unavail": True}
    instance_id = client.create_instance(offer.id, body)
    try:
        inst = VastInstance.from_json(client.show_instance(instance_id))
        assert inst.id == instance_id and inst.label == "runform-cassette" and inst.failure() is None
        client.set_label(instance_id, "runform-cassette-2")
        client.attach_ssh_key(instance_id, PUBLIC_KEY)
        client.attach_ssh_key(instance_id, PUBLIC_KEY)  # already attached: success
        assert [VastInstance.from_json(r).label for r in client.list_instances(label="runform-cassette-2")
                if r["id"] == instance_id] == ["runform-cassette-2"]
    finally:
        assert client.destroy_instance(instance_id) is True
    deadline = time.monotonic() + 120
    while client.show_instance(instance_id) is not None:  # one read when replayed
        assert time.monotonic() < deadline
        time.sleep(1)


CASSETTES = Path(__file__).parent / "cassettes" / "test_vast_cassettes"


@pytest.mark.parametrize("cassette", sorted(p.name for p in CASSETTES.glob("*.yaml")))
def test_cassettes_follow_the_published_schemas(cassette: str) -> None:
    """Every recorded request and answer conforms to the JSON Schema of its endpoint (written
    from Vast's published specs), and none calls the deprecated v0 list."""
    import yaml

    from runform.testing.vast import contract

    data = yaml.safe_load((CASSETTES / cassette).read_text())
    checked = 0
    for item in data["interactions"]:
        req, resp = item["request"], item["response"]
        url = urlsplit(req["uri"])
        name = contract.endpoint_for(req["method"], url.path)
        assert name is not None and name != "list_instances_v0", f"{req['method']} {url.path}"
        query = {}
        for k, v in parse_qsl(url.query, keep_blank_values=True):
            try:
                query[k] = json.loads(v)
            except ValueError:
                query[k] = v
        raw_body = req.get("body")
        body = json.loads(raw_body) if raw_body else None
        assert contract.request_errors(name, query=query, body=body) == [], (name, query, body)
        text = resp["body"]["string"]
        text = text.decode() if isinstance(text, bytes) else text
        try:
            answer = json.loads(text)
        except ValueError:
            answer = text
        assert contract.reply_errors(name, resp["status"]["code"], answer) == [], (name, answer)
        checked += 1
    assert checked
