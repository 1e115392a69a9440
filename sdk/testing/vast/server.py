"""The HTTP face of the stand-in: a threaded stdlib server that routes to :class:`World`.

Auth is a Bearer header or ``?api_key=`` (both accepted, like the real API). An instance's own
key (``instance_api_key``, the container's ``CONTAINER_API_KEY``) is accepted, as Vast
documents its scope, for starting, stopping and destroying that instance only. ``/bundles/`` works without a key; a wrong key there gets 404, elsewhere 401 ``auth_error``. Query values
are JSON-decoded one by one, the way the SDK encodes them. ``/_standin/...`` routes (audit,
log files) need no key and see no faults.

Contract: every request to an endpoint in :mod:`runform.testing.vast.contract` is checked
against its schema first (a rejected one gets Vast's ``400 invalid_args`` shape), and every
reply is checked too; a reply that breaks the schema is recorded in
``World.contract_violations`` (the pytest fixture fails the test on any). With
``Faults.enforce_intervals`` a caller that breaks an endpoint's documented minimum interval
gets a plain-text 429 without ``Retry-After``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from runform.testing.vast import contract
from runform.testing.vast.world import DROP, World

Handler = Callable[[World, dict[str, Any], dict[str, Any], tuple[str, ...]], tuple[Any, ...]]

ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("POST", re.compile(r"/api/v0/bundles/?"), lambda w, q, b, m: w.search(b)),
    ("PUT", re.compile(r"/api/v0/search/asks/?"), lambda w, q, b, m: w.search(b.get("q") or {})),
    ("PUT", re.compile(r"/api/v0/asks/(\d+)/?"), lambda w, q, b, m: w.create(int(m[0]), b)),
    ("GET", re.compile(r"/api/v0/instances/?"), lambda w, q, b, m: w.list_legacy()),
    ("GET", re.compile(r"/api/v1/instances/?"), lambda w, q, b, m: w.list_v1(q)),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/?"), lambda w, q, b, m: w.show(int(m[0]))),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)/?"), lambda w, q, b, m: w.destroy(int(m[0]))),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)/?"), lambda w, q, b, m: w.update(int(m[0]), b)),
    ("POST", re.compile(r"/api/v0/instances/(\d+)/ssh/?"), lambda w, q, b, m: w.attach_key(int(m[0]), b)),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/ssh/?"), lambda w, q, b, m: w.list_keys(int(m[0]))),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)/ssh/(\d+)/?"),
     lambda w, q, b, m: w.detach_key(int(m[0]), int(m[1]))),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)/?"),
     lambda w, q, b, m: w.request_logs(int(m[0]), b)),
    ("GET", re.compile(r"/api/v0/users/current/?"),
     lambda w, q, b, m: (200, {"id": 1, "email": "standin@example.invalid", "credit": 100.0, "ssh_key": None})),
]


def _query(raw: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in parse_qsl(raw, keep_blank_values=True):
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    world: World
    api_key: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a killed runform) is no error of the stand-in's."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body leave in separate writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        at = time.monotonic()
        url = urlsplit(self.path)
        path, query = url.path, _query(url.query)
        size = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(size) if size else b""
        world = self.server.world
        if path.startswith("/_standin/"):
            self._standin(method, path)
            return
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            world.record(method, path, 400, at, None)
            self._send(400, {"success": False, "error": "invalid_args", "msg": "body is not JSON"})
            return
        route = next(((h, m) for verb, rx, h in ROUTES if verb == method and (m := rx.fullmatch(path))), None)
        # each reply is recorded before it is sent, so a test that got the answer sees the record
        if route is None:
            world.record(method, path, 404, at, None)
            self._send(404, {"success": False, "error": "not_found", "msg": f"no route {method} {path}"})
            return
        denied = self._auth(method, path, query, body)
        if denied:
            world.record(method, path, denied[0], at, "auth")
            self._send(*denied)
            return
        endpoint = contract.endpoint_for(method, path)
        if endpoint is not None and self._refused(endpoint, method, path, query, body, at):
            return
        fault = world.http_fault(method, path)
        if fault is not None:
            status, headers, text = fault
            world.record(method, path, status, at, f"http-{status}")
            self._send(status, text, headers)
            return
        handler, match = route
        reply = handler(world, query, body if isinstance(body, dict) else {}, match.groups())
        status, payload = reply[0], reply[1]
        if payload is DROP:
            world.record(method, path, 0, at, "dropped")
            self.close_connection = True
            return
        world.record(method, path, status, at, "lost-create" if status == 500 else None)
        if endpoint is not None:
            for problem in contract.reply_errors(endpoint, status, payload):
                world.contract_violation(f"{method} {path}: reply {problem}")
        self._send(status, payload, reply[2] if len(reply) > 2 else None)

    def _refused(self, endpoint: str, method: str, path: str, query: dict[str, Any], body: Any,
                 at: float) -> bool:
        """Answer (and record) a call too soon after the last one (the endpoint's published
        spacing) or a request the published schema refuses; False when neither applies."""
        world = self.server.world
        doc = contract.endpoints()[endpoint]
        fault = world.interval_fault(endpoint, self._caller(query), float(doc.get("min_interval_s") or 0))
        if fault is not None:
            world.record(method, path, fault[0], at, "interval")
            self._send(fault[0], fault[2], fault[1])
            return True
        problems = contract.request_errors(endpoint, query={k: v for k, v in query.items() if k != "api_key"},
                                           body=body)
        if problems:
            world.record(method, path, 400, at, "schema")
            self._send(400, {"success": False, "error": "invalid_args",
                             "msg": "Invalid args: " + "; ".join(problems)[:1000]})
            return True
        return False

    def _caller(self, query: dict[str, Any]) -> str:
        """Who is calling, for per-caller limits: the key, else the client address."""
        header = self.headers.get("Authorization") or ""
        key = header[7:].strip() if header.startswith("Bearer ") else query.get("api_key")
        return f"key:{key}" if key else f"ip:{self.client_address[0]}"

    def _auth(self, method: str, path: str, query: dict[str, Any],
              body: Any = None) -> tuple[int, dict[str, Any]] | None:
        header = self.headers.get("Authorization") or ""
        key = header[7:].strip() if header.startswith("Bearer ") else query.get("api_key")
        if key == self.server.api_key:
            return None
        if key and self.server.world.instance_key_allows(str(key), method, path, body):
            return None
        if path.rstrip("/").endswith("/bundles"):
            if key is None:
                return None  # searching works unauthenticated
            return 404, {"success": False, "error": "auth_error", "msg": "Invalid user key"}
        return 401, {"success": False, "error": "auth_error", "msg": "Invalid user key"}

    def _standin(self, method: str, path: str) -> None:
        world = self.server.world
        if method == "GET" and path == "/_standin/audit":
            self._send(200, world.audit().to_json())
        elif method == "GET" and (m := re.fullmatch(r"/_standin/logs/(\w+)\.log", path)):
            self._send(*world.fetch_log(m[1]))
        else:
            self._send(404, {"success": False, "error": "not_found", "msg": path})

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def serve(world: World, api_key: str, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """A server bound to ``host:port`` (0: a free port); call ``serve_forever`` in a thread."""
    server = _Server((host, port), _Handler)
    server.world = world
    server.api_key = api_key
    return server


class BannerServer:
    """A TCP port that greets like sshd and hangs up: the SSH endpoint of instances when no
    real sshd is configured (enough for a "port answers SSH" readiness check)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.05)
        self.host, self.port = host, self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vast-standin-banner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 runform-vast-standin\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
