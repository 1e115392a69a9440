"""The stand-in itself, over raw HTTP: catalogue, search semantics, create rules, lifecycle,
auth, the v1 list, logs, faults and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import httpx
import pytest
from helpers import poll

from runform.testing.vast import Faults, VastStandIn
from runform.testing.vast.catalogue import generate_offers


@pytest.fixture
def http(vast_standin):
    with httpx.Client(base_url=vast_standin.url,
                      headers={"Authorization": f"Bearer {vast_standin.api_key}"}) as c:
        yield c


def search(http, **q):
    r = http.post("/api/v0/bundles/", json=q)
    assert r.status_code == 200, r.text
    return r.json()["offers"]


def create(http, ask, **body):
    return http.put(f"/api/v0/asks/{ask}/", json={"client_id": "me", "image": "img:1", "disk": 16, **body})


poll = partial(poll, timeout=5.0)  # the stand-in's lifecycles here take well under 5 s


def test_the_catalogue_is_seeded_realistic_and_large() -> None:
    offers = generate_offers(seed=3)
    assert offers == generate_offers(seed=3) and offers != generate_offers(seed=4)
    assert len(offers) >= 50 and len({o["id"] for o in offers}) == len(offers)
    assert len({o["gpu_name"] for o in offers}) >= 8 and len({o["host_id"] for o in offers}) >= 10
    assert len({o["cuda_max_good"] for o in offers}) >= 4
    assert {o["num_gpus"] for o in offers} >= {1, 2, 4, 8}
    assert min(o["reliability"] for o in offers) < 0.9 < max(o["reliability"] for o in offers)


def test_search_filters_like_the_api(http) -> None:
    got = search(http, gpu_name={"eq": "RTX 4090"}, num_gpus={"eq": "1"}, reliability={"gte": "0.95"},
                 order=[["dph_total", "asc"]], limit=5, type="ondemand", allocated_storage=100)
    assert 0 < len(got) <= 5 and all(o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1 for o in got)
    assert [o["dph_total"] for o in got] == sorted(o["dph_total"] for o in got)
    o = got[0]
    assert o["dph_total"] == pytest.approx(o["dph_base"] + o["storage_cost"] * 100 / 720, abs=1e-6)
    assert search(http, gpu_name={"eq": "RTX_4090"}) == []  # names match exactly, as sent
    both = search(http, gpu_name={"in": ["H200", "L40S"]}, verified={"eq": "true"})
    assert {o["gpu_name"] for o in both} == {"H200", "L40S"}
    # rows say verification/vericode; "verified" is only a filter key (real rows carry no such boolean)
    assert all(o["verification"] == "verified" and o["vericode"] == 1 and "verified" not in o for o in both)
    unverified = search(http, verified={"eq": False}, limit=1000)
    assert unverified and all(o["verification"] in ("unverified", "deverified") for o in unverified)
    r = http.post("/api/v0/bundles/", json={"no_such_field": {"eq": 1}})
    assert r.status_code == 400 and "not a valid search key" in r.json()["msg"]


def test_create_consumes_the_ask_and_checks_its_arguments(vast_standin, http) -> None:
    ask = search(http, rented={"eq": False}, disk_space={"gte": 100}, limit=1)[0]["id"]
    r = create(http, ask, onstart="x" * 4049)
    assert r.status_code == 400 and r.json()["error"] == "invalid_args" and "onstart" in r.json()["msg"]
    assert create(http, ask, label="l" * 257).status_code == 400
    assert create(http, ask, disk=4).status_code == 400
    r = create(http, ask, label="a", env={"K": "v", "-p 8000:8000": "1"})
    assert r.status_code == 200 and r.json()["success"] and r.json()["new_contract"]
    assert ask not in {o["id"] for o in search(http, rented={"eq": False})}
    again = create(http, ask, cancel_unavail=True)
    assert again.status_code == 410 and again.json()["error"] == "no_such_ask"
    again = create(http, ask)
    assert again.status_code == 404 and "no_such_ask" in again.json()["msg"]


def test_lifecycle_runs_null_loading_running_and_ends_gone(vast_standin, http) -> None:
    ask = search(http, rented={"eq": False}, limit=1)[0]["id"]
    iid = create(http, ask, label="life").json()["new_contract"]
    seen = []

    def status():
        row = http.get(f"/api/v0/instances/{iid}/").json()["instances"]
        if not seen or seen[-1] != row["actual_status"]:
            seen.append(row["actual_status"])
        return row if row["actual_status"] == "running" else None

    row = poll(status)
    assert seen[0] in (None, "loading") and seen[-1] == "running" and "loading" in seen
    assert row["public_ipaddr"].endswith("\n") and row["ports"]["22/tcp"][0]["HostPort"] == str(row["ssh_port"])
    assert row["extra_env"] == [] and not any(k.startswith("runform") for k in row)
    vast_standin.set_lifecycle(destroy_s=0.3)  # destroyed rows linger a while, as on Vast
    assert http.request("DELETE", f"/api/v0/instances/{iid}/", json={}).json() == {"success": True}
    lingering = http.get(f"/api/v0/instances/{iid}/").json()["instances"]
    assert lingering["cur_state"] == "unloaded" and lingering["actual_status"] in ("destroyed", "terminated")
    assert poll(lambda: http.get(f"/api/v0/instances/{iid}/").json() == {"instances": None})
    gone = http.request("DELETE", f"/api/v0/instances/{iid}/", json={})
    assert gone.status_code == 404 and gone.json()["error"] == "no_such_instance"
    assert ask in {o["id"] for o in search(http, rented={"eq": False})}  # back on the market


def test_stop_keeps_billing_storage_and_is_audited(vast_standin, http) -> None:
    iid = create(http, search(http, rented={"eq": False}, limit=1)[0]["id"]).json()["new_contract"]
    http.put(f"/api/v0/instances/{iid}/", json={"state": "stopped"})
    row = http.get(f"/api/v0/instances/{iid}/").json()["instances"]
    assert row["actual_status"] == "stopped" and row["storage_total_cost"] > 0
    assert vast_standin.audit().stop_requests == (iid,)


def test_auth_bearer_or_api_key_parameter(vast_standin) -> None:
    with httpx.Client(base_url=vast_standin.url) as anon:
        assert anon.get("/api/v1/instances/").status_code == 401
        assert anon.get("/api/v1/instances/", params={"api_key": vast_standin.api_key}).status_code == 200
        # the deprecated v0 list: 410 for an account made after 2026-06-02, unless a legacy one
        assert anon.get("/api/v0/instances/", params={"api_key": vast_standin.api_key}).status_code == 410
        vast_standin.set_faults(legacy_account=True)
        assert anon.get("/api/v0/instances/", params={"api_key": vast_standin.api_key}).status_code == 200
        assert anon.post("/api/v0/bundles/", json={"limit": 1}).status_code == 200
        bad = anon.post("/api/v0/bundles/", json={}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 404 and bad.json()["error"] == "auth_error"


def test_v1_list_pages_and_filters_on_stored_columns(vast_standin, http) -> None:
    asks = [o["id"] for o in search(http, rented={"eq": False}, limit=30)]
    for i, ask in enumerate(asks):
        create(http, ask, label=f"batch-{i % 2}")
    rows, token = [], None
    while True:
        params = {"select_filters": json.dumps({"label": {"eq": "batch-0"}}), "limit": 4}
        if token:
            params["after_token"] = token
        page = http.get("/api/v1/instances/", params=params).json()
        rows += page["instances"]
        token = page["next_token"]
        if not token:
            break
    assert len(rows) == 15 and page["total_instances"] == 15 and page["label_counts"] == {"batch-0": 15}
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    r = http.get("/api/v1/instances/", params={"select_filters": json.dumps({"dph_total": {"lt": 1}})})
    assert r.status_code == 400 and "dph_total is not a valid search key" in r.json()["msg"]
    everything = http.get("/api/v1/instances/", params={"limit": 50})  # more than 25: refused by the schema
    assert everything.status_code == 400 and everything.json()["error"] == "invalid_args"
    first = http.get("/api/v1/instances/").json()
    assert first["instances_found"] == 25 and first["total_instances"] == 30 and first["next_token"]
    assert http.get("/api/v1/instances/", params={"after_token": "bogus"}).status_code == 400


def test_keys_and_logs(vast_standin, http) -> None:
    iid = create(http, search(http, rented={"eq": False}, limit=1)[0]["id"]).json()["new_contract"]
    assert http.post(f"/api/v0/instances/{iid}/ssh/", json={"ssh_key": "nonsense"}).status_code == 400
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu me"
    assert http.post(f"/api/v0/instances/{iid}/ssh/", json={"ssh_key": key}).json()["success"]
    twice = http.post(f"/api/v0/instances/{iid}/ssh/", json={"ssh_key": key})
    assert twice.status_code == 200 and twice.json()["success"] is False and "already" in twice.json()["msg"]
    keys = json.loads(http.get(f"/api/v0/instances/{iid}/ssh/").json()["ssh_keys"])  # a JSON string
    assert [k["public_key"] for k in keys] == [key]
    url = http.put(f"/api/v0/instances/request_logs/{iid}/", json={"tail": "10"}).json()["result_url"]
    with httpx.Client() as anon:  # the log URL needs no key
        text = poll(lambda: (r := anon.get(url)).status_code == 200 and r.text)
    assert f"instance {iid} created" in text


def test_http_faults_are_seeded_and_shaped_like_vasts(vast_standin, http) -> None:
    vast_standin.set_faults(Faults(rate_429=0.5, rate_5xx=0.3))
    answers = [http.get("/api/v1/instances/") for _ in range(60)]
    codes = [r.status_code for r in answers]
    assert codes.count(429) > 15 and sum(c >= 500 for c in codes) > 5 and codes.count(200) > 5
    throttled = [r for r in answers if r.status_code == 429]
    assert not any("Retry-After" in r.headers for r in throttled)  # Vast sends none
    assert {r.headers["content-type"].split(";")[0] for r in throttled} == {"text/plain", "application/json"}
    runs = []
    for _ in range(2):
        with VastStandIn(seed=7, faults=Faults(rate_429=0.5)) as s, httpx.Client(base_url=s.url) as c:
            runs.append([c.get("/api/v1/instances/", params={"api_key": s.api_key}).status_code
                         for _ in range(20)])
    assert runs[0] == runs[1] and 429 in runs[0]


def test_list_lag_hides_new_instances_from_the_lists_only(vast_standin, http) -> None:
    vast_standin.set_faults(list_lag_s=1.0, legacy_account=True)
    ask = search(http, rented={"eq": False}, limit=1)[0]["id"]
    iid = create(http, ask, label="lagging").json()["new_contract"]

    def listed() -> tuple[set[int], set[int]]:
        legacy = http.get("/api/v0/instances/").json()["instances"]  # a legacy account's v0 list
        v1 = http.get("/api/v1/instances/", params={"select_filters": json.dumps({"label": {"eq": "lagging"}})})
        return {r["id"] for r in legacy}, {r["id"] for r in v1.json()["instances"]}

    assert listed() == (set(), set())  # missing from both lists...
    assert http.get(f"/api/v0/instances/{iid}/").json()["instances"]["id"] == iid  # ...yet it shows,
    assert ask not in {o["id"] for o in search(http, rented={"eq": False})}  # took its offer,
    audit = vast_standin.audit()
    assert audit.live_for("lagging") == [iid] and audit.instances[iid]["listed"] is False  # and bills
    assert poll(lambda: listed() == ({iid}, {iid}))  # until the lists catch up
    assert vast_standin.audit().instances[iid]["listed"] is True
    with pytest.raises(ValueError, match="list_lag_s"):
        Faults(list_lag_s=-1)


def test_preempt_modes(vast_standin, http) -> None:
    asks = [o["id"] for o in search(http, rented={"eq": False}, limit=3)]
    ids = [create(http, a).json()["new_contract"] for a in asks]
    for iid, mode in zip(ids, ["gone", "stopped", "offline"], strict=True):
        vast_standin.preempt(iid, mode)
    assert http.get(f"/api/v0/instances/{ids[0]}/").json()["instances"] is None
    outbid = http.get(f"/api/v0/instances/{ids[1]}/").json()["instances"]
    assert outbid["cur_state"] == outbid["intended_status"] == outbid["next_state"] == "stopped"
    assert http.get(f"/api/v0/instances/{ids[2]}/").json()["instances"]["actual_status"] == "offline"
    assert vast_standin.audit().preempted == tuple(ids)


def test_audit_over_http(vast_standin, http) -> None:
    create(http, search(http, rented={"eq": False}, limit=1)[0]["id"], label="x")
    audit = httpx.get(f"{vast_standin.url}/_standin/audit").json()
    assert [c["label"] for c in audit["creates"]] == ["x"] and len(audit["live"]) == 1


def test_command_line_starts_a_server() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "runform.testing.vast", "--seed", "2", "--offers", "60",
                             "--created-s", "0", "--loading-s", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("vast stand-in listening on http://127.0.0.1:")
        url = line.split()[4]
        assert len(httpx.post(f"{url}/api/v0/bundles/", json={}).json()["offers"]) == 60
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ports_come_as_a_dict_an_int_array_or_not_at_all(vast_standin, http) -> None:
    for style in ("dict", "list", "absent"):
        vast_standin.set_faults(ports_style=style)
        iid = create(http, search(http, rented={"eq": False}, limit=1)[0]["id"]).json()["new_contract"]
        row = poll(lambda i=iid: (r := http.get(f"/api/v0/instances/{i}/").json()["instances"])
                   and r["actual_status"] == "running" and r)
        want = {"dict": dict, "list": list, "absent": type(None)}[style]
        assert isinstance(row["ports"], want), (style, row["ports"])


def test_too_frequent_calls_get_a_plain_text_429_without_retry_after(vast_standin, http) -> None:
    vast_standin.set_faults(enforce_intervals=True)
    iid = create(http, search(http, rented={"eq": False}, limit=1)[0]["id"]).json()["new_contract"]
    assert http.get(f"/api/v0/instances/{iid}/").status_code == 200
    again = http.get(f"/api/v0/instances/{iid}/")  # show: 2.0 s minimum interval
    assert again.status_code == 429 and again.headers["content-type"].startswith("text/plain")
    assert "threshold=2" in again.text and "Retry-After" not in again.headers
    assert http.get("/api/v1/instances/").status_code == 200  # another endpoint, its own interval


def test_requests_the_schema_rejects_get_vasts_error_shape(vast_standin, http) -> None:
    ask = search(http, rented={"eq": False}, limit=1)[0]["id"]
    r = http.put(f"/api/v0/asks/{ask}/", json={"client_id": "me", "image": "img:1", "disk": 16, "bogus": 1})
    assert r.status_code == 400 and r.json()["success"] is False and r.json()["error"] == "invalid_args"
    assert "bogus" in r.json()["msg"]
    r = http.post("/api/v0/instances/1/ssh/", json={})
    assert r.status_code == 400 and "ssh_key" in r.json()["msg"]


def test_an_untagged_image_fails_the_create_with_server_error(vast_standin, http) -> None:
    ask = search(http, rented={"eq": False}, limit=1)[0]["id"]
    r = create(http, ask, image="pytorch/pytorch")
    assert r.status_code == 500 and r.json()["error"] == "server_error"
