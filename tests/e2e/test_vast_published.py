"""Runform against answers shaped exactly like Vast's published examples, served by a small
server written here (not the stand-in): the offer row and instance row are the examples of
Vast's published API spec (``tests/e2e/cassettes/vast_published_examples.json``), the v0 list
answers 410, the v1 list pages, a key attached twice gets Vast's "already associated" answer,
and a destroyed instance lingers as ``unloaded``/``destroyed`` for a read, then is gone.

Over an instance's life only values change (ids, label, addresses and ports, the machine's
hardware and price from the offer rented, ``actual_status``/``cur_state``); every row keeps the
example's keys and types, and every request and reply fits the published schemas. For the full
CLI run (apply, an empty plan, destroy) the machine behind the instance is the test sshd."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
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
# what an instance row shows of the machine it runs on (the same keys and types in the offer row)
MACHINE = ("machine_id", "host_id", "gpu_name", "gpu_arch", "gpu_ram", "num_gpus", "cpu_name", "cpu_cores",
           "cpu_ram", "geolocation", "reliability2", "verification", "dph_base", "dph_total", "storage_cost")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOLmeWf4sgNYmcjU7AL88iMKb6/LRaacOwfaXjXTmpQu published"


def _offer(offer_id: int, **changes: Any) -> dict[str, Any]:
    return {**EXAMPLES["offer"], "id": offer_id, "ask_contract_id": offer_id, "machine_id": offer_id, **changes}


def _types(row: dict[str, Any]) -> dict[str, str]:
    return {k: type(v).__name__ for k, v in row.items()}


class Published:
    """The account behind the server: one instance at most, the example row. With ``sshd``
    (runform.testing.sshd.SSHD) that server is the machine behind the instance: its address is
    in the row, attached keys go into its authorized_keys, and the create's onstart "runs" when
    the instance does (its one effect runform waits for: the sentinel under ``RUNFORM_ROOT``)."""

    def __init__(self, sshd: Any = None) -> None:
        self.sshd = sshd
        self.calls: list[tuple[str, str]] = []
        self.problems: list[str] = []  # replies or requests off the published shape
        self.row: dict[str, Any] | None = None
        self.env: dict[str, str] = {}
        self.keys: list[str] = []
        self.reads_left = 0  # reads before a loading row runs, or a destroyed row vanishes
        self.lingered = 0  # reads that showed a destroyed row
        self.next_id = 4242001
        self.lock = threading.Lock()

    def live(self) -> bool:
        return self.row is not None and self.row["cur_state"] != "unloaded"

    def reply(self, method: str, path: str, query: dict[str, Any], body: Any) -> tuple[int, Any]:
        """``answer``, every request and reply checked against the published schemas and every
        instance row against the example's keys and types."""
        name = contract.endpoint_for(method, path)
        if name:
            self.problems += [f"{name} request {e}" for e in contract.request_errors(name, query=query, body=body)]
        status, payload = self.answer(method, path, query, body)
        if name:
            self.problems += [f"{name} reply {e}" for e in contract.reply_errors(name, status, payload)]
        rows = payload.get("instances") if isinstance(payload, dict) else None
        for row in rows if isinstance(rows, list) else [rows] if isinstance(rows, dict) else []:
            if _types(row) != _types(EXAMPLES["instance"]):
                self.problems.append(f"{method} {path}: a row off the example's shape")
        return status, payload

    def _read(self) -> dict[str, Any] | None:
        """The row as a read shows it now; each read moves the lifecycle on."""
        row = self.row
        if row is not None and self.reads_left > 0:
            self.reads_left -= 1
            self.lingered += row["cur_state"] == "unloaded"
        elif row is not None and row["actual_status"] == "loading":
            if self.sshd is not None:  # what runform's onstart leaves when it is done
                sentinel = Path(self.env["RUNFORM_ROOT"]) / ".runform" / "vast" / "onstart.done"
                sentinel.parent.mkdir(parents=True, exist_ok=True)
                sentinel.touch()
            self.row = {**row, "actual_status": "running", "status_msg": EXAMPLES["instance"]["status_msg"]}
        elif row is not None and row["cur_state"] == "unloaded":
            self.row = None  # lingered; now gone
        return self.row

    def _authorize(self) -> None:
        """The machine's authorized_keys: the test's own key plus the live instance's keys."""
        if self.sshd is not None:
            own = self.sshd.key_file.with_suffix(".pub").read_text().strip()
            keys = [own] + (self.keys if self.live() else [])
            self.sshd.authorized_keys.write_text("".join(f"{k}\n" for k in keys))

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
            host, port = (self.sshd.host, self.sshd.port) if self.sshd else ("203.0.113.42", 41022)
            proxy_host, proxy_port = (host, port) if self.sshd else ("ssh123.vast.ai", 10600)
            ports = {**EXAMPLES["instance"]["ports"], "22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
            machine = {k: _offer(VERIFIED)[k] for k in MACHINE}
            self.row = {**EXAMPLES["instance"], **machine, "id": self.next_id, "label": body["label"],
                        "image_uuid": body["image"], "disk_space": float(body["disk"]),
                        "actual_status": "loading", "status_msg": f"Pulling image {body['image']}",
                        "onstart": body.get("onstart") or "", "ports": ports, "public_ipaddr": f"{host}\n",
                        "ssh_host": proxy_host, "ssh_port": proxy_port,
                        "extra_env": [[k, v] for k, v in body["env"].items()]}
            self.env, self.keys, self.reads_left = dict(body["env"]), [], 1
            self.next_id += 1
            return 200, {"success": True, "new_contract": self.row["id"], "instance_api_key": "example-key"}
        if method == "GET" and path == "/api/v1/instances/":
            row = self._read()
            want = (query.get("select_filters") or {}).get("label", {}).get("eq")
            rows = [row] if row and (want is None or row["label"] == want) else []
            return 200, {"success": True, "instances_found": len(rows), "total_instances": len(rows),
                         "label_counts": {r["label"]: 1 for r in rows}, "next_token": None, "instances": rows}
        if iid is not None and path == f"/api/v0/instances/{iid}/":
            if method == "GET":
                row = self._read()
                if row is not None:
                    return 200, {"instances": row}
            if method == "DELETE" and self.live():
                self.row = {**self.row, "cur_state": "unloaded", "actual_status": "destroyed",
                            "intended_status": "stopped", "next_state": "unloaded"}
                self.reads_left = 1  # lingers for one read, then gone
                self._authorize()  # the machine is gone: its keys log in no more
                return 200, {"success": True}
        if iid is not None and method == "POST" and path == f"/api/v0/instances/{iid}/ssh/" and self.live():
            if body["ssh_key"] in self.keys:
                return 200, {"success": False, "msg": "SSH key already associated with this instance"}
            self.keys.append(body["ssh_key"])
            self._authorize()
            return 200, {"success": True, "msg": "SSH key attached successfully"}
        if path.startswith("/api/v0/instances/"):
            return 404, {"success": False, "error": "no_such_instance", "msg": "Instance not found"}
        return 404, {"success": False, "error": "not_found", "msg": path}


@contextlib.contextmanager
def _serve(account: Published) -> Iterator[str]:
    """The account behind a stdlib HTTP server on 127.0.0.1; yields its URL."""

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
                status, payload = account.reply(self.command, url.path, query, body)
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
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
    assert account.problems == [], account.problems[:10]


@pytest.fixture
def published() -> Iterator[tuple[str, Published]]:
    account = Published()
    with _serve(account) as url:
        yield url, account


@pytest.fixture
def published_on_sshd(sshd) -> Iterator[tuple[str, Published]]:  # type: ignore[no-untyped-def]
    """The published-example server with the test sshd as the machine behind its instance."""
    account = Published(sshd)
    with _serve(account) as url:
        yield url, account


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


def test_cli_apply_plan_destroy_against_published_shapes(published_on_sshd, hello: Path) -> None:  # type: ignore[no-untyped-def]
    """The hello example through the CLI, the instance a published-example row whose machine
    is the test sshd: apply, an empty second plan, destroy; the v0 list is never called."""
    url, account = published_on_sshd
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    # the machine's own run root; the instance outlives the apply, so the plan and destroy find it
    spec["compute"] = {**COMPUTE, "root": str(hello.parent / "vast-root"), "teardown": "never"}
    if os.geteuid() != 0:  # Vast's container user is root; a non-root test sshd logs in as its own user
        spec["compute"]["options"] = {"ssh_user": getpass.getuser()}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"VAST_API_URL": url, "VAST_API_KEY": "k"}
    a = run_cli("apply", "--auto-approve", cwd=hello, env=env)
    assert a.returncode == 0, a.stdout + a.stderr
    assert account.live() and account.row["label"].startswith("runform-hello-") and account.keys
    assert (hello.parent / "vast-root" / ".runform" / "vast" / "onstart.done").exists()
    p = run_cli("plan", "--detailed-exitcode", cwd=hello, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    d = run_cli("destroy", "--auto-approve", cwd=hello, env=env)
    assert d.returncode == 0, d.stdout + d.stderr
    assert not account.live() and account.lingered == 1  # destroy read the lingering row back as gone
    assert ("GET", "/api/v0/instances/") not in account.calls
    assert [c for c in account.calls if c[0] == "PUT" and c[1].startswith("/api/v0/asks/")] == \
        [("PUT", f"/api/v0/asks/{VERIFIED}/")]  # one rental, of the verified offer
