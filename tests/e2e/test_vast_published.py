"""Runform against answers shaped exactly like Vast's published examples, served by a small
server written here (not the stand-in): the offer row and instance row are the examples of
Vast's published API spec (``tests/e2e/cassettes/vast_published_examples.json``), the v0 list
answers 410, the v1 list pages, a key attached twice gets Vast's "already associated" answer,
and a destroyed instance lingers as ``unloaded``/``destroyed``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from helpers import run_cli

from runform.interfaces import InstanceRequest, ProviderContext
from runform.providers.vast.client import RetryPolicy, VastClient
from runform.providers.vast.provider import VastProvider
from runform.testing.vast import contract

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

EXAMPLES = json.loads((Path(__file__).parent / "cassettes" / "vast_published_examples.json").read_text())
UNVERIFIED, VERIFIED = 1001, 1002
COMPUTE = {"provider": "vast", "gpus": ["Imaginary RTX 9999"], "num_gpus": 4,
           "image": "nvidia/cuda:11.0.3-devel-ubuntu18.04", "disk_gb": 40, "min_reliability": 0.9,
           "max_price_per_hour": 5.0}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu published"


def _offer(offer_id: int, **changes: Any) -> dict[str, Any]:
    return {**EXAMPLES["offer"], "id": offer_id, "ask_contract_id": offer_id, "machine_id": offer_id, **changes}


class Published:
    """The account behind the server: one instance at most, the example row."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.row: dict[str, Any] | None = None
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, query: dict[str, Any], body: Any) -> tuple[int, Any]:
        self.calls.append((method, path))
        iid = self.row["id"] if self.row else None
        if method == "POST" and path == "/api/v0/bundles/":
            # the cheaper offer is unverified: a client that reads a "verified" boolean rejects both
            return 200, {"offers": [_offer(UNVERIFIED, verification="unverified", vericode=0, dph_total=0.1),
                                    _offer(VERIFIED)]}
        if method == "GET" and path == "/api/v0/instances/":
            return 410, {"success": False, "error": "deprecated", "msg": "use /api/v1/instances/"}
        if method == "PUT" and path == f"/api/v0/asks/{VERIFIED}/":
            self.row = {**EXAMPLES["instance"], "id": 4242001, "label": body["label"], "actual_status": "running",
                        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41022"}]},
                        "public_ipaddr": "203.0.113.42\n", "extra_env": [[k, v] for k, v in body["env"].items()]}
            return 200, {"success": True, "new_contract": 4242001, "instance_api_key": "example-key"}
        if method == "GET" and path == "/api/v1/instances/":
            rows = [self.row] if self.row else []
            want = (query.get("select_filters") or {}).get("label", {}).get("eq")
            rows = [r for r in rows if want is None or r["label"] == want]
            return 200, {"success": True, "instances_found": len(rows), "total_instances": len(rows),
                         "label_counts": {r["label"]: 1 for r in rows}, "next_token": None, "instances": rows}
        if iid is not None and path == f"/api/v0/instances/{iid}/":
            if method == "GET":
                return 200, {"instances": self.row}
            if method == "DELETE":
                if self.row["cur_state"] == "unloaded":
                    return 404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}
                self.row = {**self.row, "cur_state": "unloaded", "actual_status": "destroyed",
                            "intended_status": "stopped", "next_state": "unloaded"}  # lingers
                return 200, {"success": True}
        if iid is not None and method == "POST" and path == f"/api/v0/instances/{iid}/ssh/":
            if body["ssh_key"] in self.keys:
                return 200, {"success": False, "msg": "SSH key already associated with this instance"}
            self.keys.append(body["ssh_key"])
            return 200, {"success": True, "msg": "SSH key attached successfully"}
        if path.startswith("/api/v0/instances/"):
            return 404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}
        return 404, {"success": False, "error": "not_found", "msg": path}


@pytest.fixture
def published() -> Iterator[tuple[str, Published]]:
    account = Published()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _do(self) -> None:
            url = urlsplit(self.path)
            query = {}
            for k, v in parse_qsl(url.query):
                try:
                    query[k] = json.loads(v)
                except ValueError:
                    query[k] = v
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}") if size else {}
            with account.lock:
                status, payload = account.answer(self.command, url.path, query, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _do

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", account
    finally:
        server.shutdown()
        server.server_close()


def test_the_published_examples_fit_the_schemas() -> None:
    assert contract.reply_errors("search_offers", 200, {"offers": [EXAMPLES["offer"]]}) == []
    assert contract.reply_errors("show_instance", 200, {"instances": EXAMPLES["instance"]}) == []
    assert "verified" not in EXAMPLES["offer"] and EXAMPLES["offer"]["verification"] == "verified"


def test_offers_create_find_destroy_against_published_shapes(published, tmp_path: Path) -> None:
    url, account = published
    client = VastClient(api_key="k", base_url=url, retry=RetryPolicy(attempts=3, initial=0.001, max_wait=0.01))
    provider = VastProvider(client=client, on_ready=lambda info: True, bootstrap=False, poll_initial=0.01,
                            poll_max=0.02, settle_s=0.0)
    ctx = ProviderContext(tmp_path / "state", "demo", "0123abcd", log=lambda m: None)
    rows = provider.offers(COMPUTE, ctx)
    assert [r["id"] for r in rows] == [VERIFIED] and rows[0]["chosen"]
    info = provider.create(InstanceRequest(label="runform-demo-0123abcd", run="demo", compute=COMPUTE, env={}), ctx)
    assert info.id == "4242001" and info.attrs["ssh_host"] == "203.0.113.42" and info.attrs["ssh_port"] == 41022
    assert [(h, p) for h, p in info.attrs["ssh_fallbacks"]] == [("ssh123.vast.ai", 10600)]  # the proxy
    account.keys.append(KEY)  # attached before (a re-run): Vast answers "already associated"
    provider.client.attach_ssh_key(4242001, KEY)
    assert set(provider.find(["runform-demo-0123abcd"], ctx)) == {"runform-demo-0123abcd"}
    provider.destroy(info, ctx)
    assert provider.find(["runform-demo-0123abcd"], ctx) == {}  # lingering as unloaded/destroyed: gone
    assert ("GET", "/api/v0/instances/") not in account.calls
    client.close()


def test_cli_offers_and_plan_against_published_shapes(published, hello: Path) -> None:
    url, account = published
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**COMPUTE, "root": str(hello / "remote-root")}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"VAST_API_URL": url, "VAST_API_KEY": "k"}
    offers = run_cli("offers", cwd=hello, env=env)
    assert offers.returncode == 0, offers.stderr
    chosen = [line for line in offers.stdout.splitlines() if "chosen" in line]
    assert len(chosen) == 1 and str(VERIFIED) in chosen[0] and str(UNVERIFIED) not in offers.stdout
    plan = run_cli("plan", "--detailed-exitcode", cwd=hello, env=env)
    assert plan.returncode == 2, plan.stderr
    assert "instance.main" in plan.stdout and "Traceback" not in plan.stderr
    assert ("GET", "/api/v0/instances/") not in account.calls

