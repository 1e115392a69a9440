"""Fidelity: the official ``vastai`` SDK and CLI (1.9.x) drive the stand-in unchanged.

If Vast's own client can search, create, list, show, label, attach a key, read logs and
destroy against the stand-in, its routes, JSON shapes and query encoding match the real
API closely enough for runform's client to be tested against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import partial

import pytest
from helpers import poll

vastai = pytest.importorskip("vastai", reason="the official client is a test dependency (pip install vastai)")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu fidelity"


poll = partial(poll, timeout=5.0)  # the stand-in's lifecycles here take well under 5 s


def test_the_vastai_sdk_works_against_the_standin(vast_standin) -> None:
    sdk = vastai.VastAI(api_key=vast_standin.api_key, server_url=vast_standin.url, retry=1)
    offers = sdk.search_offers("num_gpus=1 gpu_name=RTX_4090 reliability>0.9", order="dph_total", limit=5)
    assert offers and all(o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1 for o in offers)
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)

    made = sdk.create_instance(id=offers[0]["id"], image="pytorch/pytorch:latest", disk=20, label="fidelity",
                               env={"RUN": "1", "-p 8000:8000": "1"}, onstart_cmd="echo hi", ssh=True,
                               direct=True, cancel_unavail=True)
    assert made["success"] is True and isinstance(made["new_contract"], int) and made["instance_api_key"]
    iid = made["new_contract"]

    row = poll(lambda: (r := sdk.show_instance(iid)) and r["actual_status"] == "running" and r)
    assert row["label"] == "fidelity" and row["extra_env"] == {"RUN": "1", "-p 8000:8000": "1"}
    assert row["public_ipaddr"] == "127.0.0.1\n" and row["image_runtype"] == "ssh_direc ssh_proxy"
    listed = sdk.show_instances()  # the paged /api/v1/instances/
    assert [r["id"] for r in listed] == [iid]

    assert sdk.label_instance(iid, "fidelity-2") == {"success": True}
    assert sdk.attach_ssh(iid, KEY)["success"] is True
    twice = sdk.attach_ssh(iid, KEY)  # Vast's answer to a key already attached
    assert twice["success"] is False and "already" in twice["msg"]
    assert f"instance {iid} created" in sdk.logs(iid, tail="20")

    vast_standin.set_lifecycle(destroy_s=0.5)  # destroyed rows linger, as on Vast
    assert sdk.destroy_instance(iid) == {"success": True}
    lingering = sdk.show_instance(iid)
    assert lingering is None or (lingering["cur_state"] == "unloaded"
                                 and lingering["actual_status"] in ("destroyed", "terminated"))
    assert poll(lambda: sdk.show_instance(iid) is None)
    assert sdk.show_instances() == []
    audit = vast_standin.audit()
    assert audit.destroyed == (iid,) and audit.instances[iid]["label"] == "fidelity-2"


@pytest.mark.skipif(shutil.which("vastai") is None, reason="the vastai command is not installed")
@pytest.mark.slow  # the official CLI, a process per command
def test_the_vastai_cli_searches_and_creates_against_the_standin(vast_standin) -> None:
    """The CLI's own query parser (``RTX_4090`` → ``"RTX 4090"``, numbers as strings) and its
    create path; each call is a ~1.5 s process start, so the rest is left to the SDK test."""
    env = {**os.environ, "VAST_API_KEY": vast_standin.api_key}

    def cli(*args: str) -> object:
        proc = subprocess.run(["vastai", "--url", vast_standin.url, *args, "--raw"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    offers = cli("search", "offers", "gpu_name=RTX_4090 num_gpus=1 verified=true", "-o", "dph_total")
    assert offers and {o["gpu_name"] for o in offers} == {"RTX 4090"}
    made = cli("create", "instance", str(offers[0]["id"]), "--image", "img:1", "--disk", "16", "--label", "cli")
    assert made["success"] and made["new_contract"]
    assert vast_standin.audit().creates[0].label == "cli"


def test_the_vastai_sdk_pages_the_v1_list_by_label_past_25(vast_standin) -> None:
    """The official SDK's paged list (select_filters on the label, next_token → after_token)
    over more than 25 instances; the deprecated v0 list is never what it calls."""
    from vastai.api import instances as sdk_instances

    sdk = vastai.VastAI(api_key=vast_standin.api_key, server_url=vast_standin.url, retry=1)
    offers = sdk.search_offers("num_gpus>=1 rentable=true", limit=40)
    made = []
    for n, offer in enumerate(offers[:32]):
        got = sdk.create_instance(id=offer["id"], image="img:1", disk=10, label="many" if n < 28 else "few",
                                  ssh=True, direct=True, cancel_unavail=True)
        made.append(got["new_contract"])
    many = sdk_instances.show_instances(sdk.client, select_filters={"label": {"eq": "many"}})
    assert sorted(r["id"] for r in many) == sorted(made[:28]) and {r["label"] for r in many} == {"many"}
    pages = vast_standin.audit().requests_to("GET", "/api/v1/instances/")
    assert len(pages) == 2 and all(p.status == 200 for p in pages)
    assert len(sdk.show_instances()) == 32
    assert vast_standin.audit().requests_to("GET", "/api/v0/instances/") == []
