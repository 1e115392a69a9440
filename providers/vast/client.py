"""A small client for the Vast.ai REST API, on httpx with tenacity retries.

- Auth: ``Authorization: Bearer <key>``; the key comes from ``VAST_API_KEY`` or
  ``~/.config/vastai/vast_api_key`` (``$XDG_CONFIG_HOME`` honoured, then the legacy
  ``~/.vast_api_key``). It is only ever put in that header, never in a URL, a log line,
  an error message or a repr.
- Base URL: ``VAST_API_URL`` (default ``https://console.vast.ai``); paths are under ``/api/v0``,
  except the paged instance list ``GET /api/v1/instances/`` (the v0 list answers 410 for
  accounts made after 2026-06-02 and is never called).
- Retries: 429 and 5xx are retried with jittered exponential backoff (Vast sends no
  ``Retry-After``; one that arrives is honoured). The daily ``search_quota_exceeded`` 429 is
  never retried: it raises :class:`SearchQuotaExceeded`. A host that cannot be reached at all
  (no network, DNS, refused) is tried twice with a short connect timeout and then reported
  as :class:`Unreachable`, naming the host and the fix, within about 10 s.
- Creating is not idempotent: a 5xx or a dropped connection on ``PUT /asks/{id}/`` raises
  :class:`CreateOutcomeUnknown` (the instance may exist; the caller looks it up by label)
  instead of being retried blindly.
- Against the real API the client spaces calls to each endpoint by Vast's documented
  minimum intervals (:data:`VAST_MIN_INTERVALS`); against another server (a stand-in) it does
  not, unless ``RUNFORM_VAST_SPACING=on`` (``off`` turns it off everywhere).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from json import dumps as json_dumps
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity
from runform.providers.vast.errors import (
    AuthError,
    CreateFailed,
    CreateOutcomeUnknown,
    OfferGone,
    RateLimited,
    SearchQuotaExceeded,
    Unreachable,
    VastAPIError,
)
from runform.providers.vast.http import (
    API_PREFIX,
    CONNECT_ATTEMPTS,
    CONNECT_TIMEOUT,
    LIST_PAGE,
    LIST_PATH,
    VAST_MIN_INTERVALS,
    RetryPolicy,
    _brief,
    _describe,
    _endpoint,
    _is_vast_host,
    _json,
    _retry_after,
    _Throttle,
    _Transient,
    is_gone,
    resolve_api_key,
    resolve_base_url,
    shared_spacing_file,
    spacing_wanted,
)

__all__ = ["AuthError", "CreateFailed", "CreateOutcomeUnknown", "OfferGone", "RateLimited", "RetryPolicy",
           "SearchQuotaExceeded", "Unreachable", "VastAPIError", "VastClient", "resolve_api_key", "resolve_base_url"]

log = logging.getLogger("runform.providers.vast")

# --------------------------------------------------------------------------- client


class VastClient:
    """The Vast endpoints runform uses. Methods return parsed JSON or raise :class:`VastAPIError`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        min_intervals: Mapping[str, float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = (base_url or resolve_base_url()).rstrip("/")
        self._key = api_key if api_key is not None else resolve_api_key()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        host = urlsplit(self.base_url).hostname or ""
        shared = None
        if min_intervals is None:  # Vast's own intervals, kept across this user's processes
            min_intervals = VAST_MIN_INTERVALS if spacing_wanted(host) else {}
            shared = shared_spacing_file(self._key or "") if min_intervals else None
        self._throttle = _Throttle(min_intervals, sleep, shared)
        self._host = host
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            follow_redirects=True,
            headers={"User-Agent": "runform-vast", "Accept": "application/json"},
            event_hooks={"request": [self._authorize]},
        )

    def __repr__(self) -> str:  # never the key
        return f"VastClient({self.base_url!r}, key={'set' if self._key else 'missing'})"

    def __enter__(self) -> VastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def has_key(self) -> bool:
        return bool(self._key)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to redact from anything this client's callers print."""
        return (self._key,) if self._key else ()

    # ------------------------------------------------------------------ plumbing
    def _authorize(self, request: httpx.Request) -> None:
        """Add the key to API requests on our host (or *.vast.ai, across redirects); only there."""
        host = request.url.host
        if self._key and request.url.path.startswith("/api/") and (host == self._host or _is_vast_host(host)):
            request.headers["Authorization"] = f"Bearer {self._key}"
        else:
            request.headers.pop("Authorization", None)

    def _need_key(self) -> None:
        if not self._key:
            raise AuthError("no Vast API key found",
                            hint="set VAST_API_KEY, or save the key to ~/.config/vastai/vast_api_key")

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None, idempotent: bool = True) -> httpx.Response:
        """One logical call: attempts with backoff until it answers (any non-retryable status)."""
        endpoint = _endpoint(method, path)
        policy = self.retry
        backoff = tenacity.wait_random_exponential(multiplier=policy.initial, max=policy.max_wait)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return exc.retry_after
            if isinstance(exc, _Transient) and exc.unreachable:
                return 0.5
            return backoff(state)

        def give_up(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return isinstance(exc, _Transient) and exc.unreachable and state.attempt_number >= CONNECT_ATTEMPTS

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait_s = state.next_action.sleep if state.next_action else 0.0
            log.info("vast: %s %s: %s; retry %d in %.2fs", method, path, exc, state.attempt_number, wait_s)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=(tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(policy.max_elapsed)
                  | give_up),
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, method, path, endpoint, params, json, idempotent)
        except _Transient as exc:
            tries = retrying.statistics.get("attempt_number", policy.attempts)
            if exc.unreachable:
                raise Unreachable(
                    f"cannot reach the Vast API at {self.base_url} ({method} {path}): {exc} "
                    f"({tries} attempts)",
                    hint=f"check this machine's network connection (DNS, proxy, firewall) to {self._host}, "
                         "or set VAST_API_URL to the API's address") from None
            if exc.status == 429:
                raise RateLimited(f"Vast API {method} {path} at {self._host}: {exc} (gave up after {tries} attempts)",
                                  status=429, hint="Vast is rate limiting this key or address; wait a minute "
                                  "and run again") from None
            raise VastAPIError(f"Vast API {method} {path} at {self._host}: {exc} (gave up after {tries} attempts)",
                               status=exc.status,
                               hint="Vast is failing or overloaded (see https://status.vast.ai); try again later, "
                                    "or check VAST_API_URL") from None

    def _attempt(self, method: str, path: str, endpoint: str, params: Mapping[str, Any] | None,
                 json: Any, idempotent: bool) -> httpx.Response:
        self._throttle.wait(endpoint)
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            raise _Transient(f"{type(exc).__name__}: {_brief(exc)}", unreachable=True) from None
        except httpx.PoolTimeout as exc:
            raise _Transient(f"cannot connect: {type(exc).__name__}") from None  # nothing was sent
        except httpx.TransportError as exc:
            if idempotent:
                raise _Transient(f"connection lost: {type(exc).__name__}") from None
            raise CreateOutcomeUnknown(f"Vast API {method} {path}: connection lost before the answer "
                                       f"({type(exc).__name__})") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise VastAPIError(f"the Vast API address {self.base_url!r} is not usable: {exc}",
                               hint="set VAST_API_URL to an http(s) URL such as https://console.vast.ai, "
                                    "or unset it") from None
        except httpx.HTTPError as exc:
            raise VastAPIError(f"Vast API {method} {path} at {self._host}: {type(exc).__name__}: {_brief(exc)}",
                               hint="check the network connection and VAST_API_URL") from None
        status = resp.status_code
        if status == 429:
            body = _json(resp)
            if isinstance(body, dict) and body.get("error") == "search_quota_exceeded":
                raise self._quota_error(resp)
            wait = _retry_after(resp.headers.get("Retry-After"))
            if wait is not None and wait > self.retry.max_retry_after:
                raise RateLimited(f"Vast API {method} {path}: rate limited for {wait:.0f}s",
                                  status=429, hint="wait and run again")
            raise _Transient(_describe(resp, self._key), status=429, retry_after=wait)
        if status >= 500:
            if not idempotent:
                raise CreateOutcomeUnknown(f"Vast API {method} {path}: {_describe(resp, self._key)}", status=status)
            wait = _retry_after(resp.headers.get("Retry-After"))
            raise _Transient(_describe(resp, self._key), status=status, retry_after=wait)
        body = _json(resp) if status in (403, 404) else None
        if status == 401 or (isinstance(body, dict) and body.get("error") == "auth_error"):
            raise AuthError(f"Vast API {method} {path}: {_describe(resp, self._key)}", status=status, code="auth_error",
                            hint="check VAST_API_KEY / ~/.config/vastai/vast_api_key")
        return resp

    @staticmethod
    def _quota_error(resp: httpx.Response) -> SearchQuotaExceeded:
        reset = resp.headers.get("X-RateLimit-Reset")
        when = ""
        if reset:
            try:
                when = " until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(reset)))
            except ValueError:
                when = f" until {reset}"
        return SearchQuotaExceeded(
            f"Vast's daily offer-search quota is used up{when}", status=429, code="search_quota_exceeded",
            hint="offer searches resume after the reset (UTC midnight); runform does not retry this")

    def _fail(self, method: str, path: str, resp: httpx.Response) -> VastAPIError:
        body = _json(resp)
        code = body.get("error") if isinstance(body, dict) else None
        if not isinstance(body, dict) and resp.status_code in (404, 405):  # not Vast's API answering
            return VastAPIError(f"Vast API {method} {path} at {self.base_url}: {_describe(resp, self._key)}",
                                status=resp.status_code,
                                hint=f"{self.base_url} does not answer as Vast's API: check VAST_API_URL "
                                     "(unset it for https://console.vast.ai) and any proxy in between")
        return VastAPIError(f"Vast API {method} {path}: {_describe(resp, self._key)}",
                            status=resp.status_code, code=code)

    # ------------------------------------------------------------------ endpoints
    def search_offers(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``POST /bundles/``: offers matching ``query`` (works without a key)."""
        path = f"{API_PREFIX}/bundles/"
        resp = self._call("POST", path, json=dict(query))
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body, dict):
            raise self._fail("POST", path, resp)
        return list(body.get("offers") or [])

    def create_instance(self, offer_id: int, body: Mapping[str, Any]) -> int:
        """``PUT /asks/{offer_id}/``: rent the offer; returns the new instance id (``new_contract``).

        Raises :class:`OfferGone`, :class:`CreateFailed` (with a leftover ``new_contract`` to
        destroy) or :class:`CreateOutcomeUnknown` (look the label up before trying again).
        """
        self._need_key()
        path = f"{API_PREFIX}/asks/{int(offer_id)}/"
        resp = self._call("PUT", path, json=dict(body), idempotent=False)
        data = _json(resp)
        data = data if isinstance(data, dict) else {}
        contract = data.get("new_contract")
        if resp.status_code == 200 and data.get("success") and contract:
            return int(contract)
        text = f"{data.get('error', '')} {data.get('msg', '')} {resp.text[:500]}"
        if "no_such_ask" in text:
            raise OfferGone(f"offer {offer_id} is no longer available ({_describe(resp, self._key)})",
                            status=resp.status_code, code="no_such_ask")
        if contract:
            raise CreateFailed(f"create on offer {offer_id} failed: {_describe(resp, self._key)}",
                               new_contract=int(contract), status=resp.status_code, code=data.get("error"))
        raise self._fail("PUT", path, resp)

    def list_instances(self, label: str | None = None, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/instances/``: the account's live instances (those carrying ``label``,
        or one of ``labels``, when given: filtered by the server), following ``next_token`` page
        by page. Rows that read as gone (:func:`is_gone`) are left out."""
        self._need_key()
        params: dict[str, Any] = {"limit": LIST_PAGE,
                                  "order_by": json_dumps([{"col": "id", "dir": "asc"}])}
        if label is not None:
            params["select_filters"] = json_dumps({"label": {"eq": label}})
        elif labels is not None:
            params["select_filters"] = json_dumps({"label": {"in": list(labels)}})
        rows: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            resp = self._call("GET", LIST_PATH, params=params)
            body = _json(resp)
            if resp.status_code != 200 or not isinstance(body, dict):
                raise self._fail("GET", LIST_PATH, resp)
            rows.extend(r for r in (body.get("instances") or []) if isinstance(r, dict))
            token = body.get("next_token")
            if not token:
                break
            if str(token) in seen_tokens:
                raise VastAPIError(f"Vast API GET {LIST_PATH}: next_token {token!r} repeats; the list does not end",
                                   hint="try again later; report it to Vast if it persists")
            seen_tokens.add(str(token))
            params["after_token"] = str(token)
        return [r for r in rows if not is_gone(r)]

    def show_instance(self, instance_id: int) -> dict[str, Any] | None:
        """``GET /instances/{id}/``: the instance, or None when it is gone (null, 404,
        ``no_such_instance``, or a lingering row that is unloaded/destroyed/terminated)."""
        self._need_key()
        path = f"{API_PREFIX}/instances/{int(instance_id)}/"
        resp = self._call("GET", path, params={"owner": "me"})
        if resp.status_code == 404:
            return None
        body = _json(resp)
        if resp.status_code != 200 or not isinstance(body, dict):
            raise self._fail("GET", path, resp)
        row = body.get("instances")
        if isinstance(row, list):  # tolerate the list shape some deployments return
            row = row[0] if row else None
        return None if not isinstance(row, dict) or is_gone(row) else row

    def destroy_instance(self, instance_id: int) -> bool:
        """``DELETE /instances/{id}/``: True if destroyed now, False if it was already gone."""
        self._need_key()
        path = f"{API_PREFIX}/instances/{int(instance_id)}/"
        resp = self._call("DELETE", path, json={})
        body = _json(resp)
        code = body.get("error") if isinstance(body, dict) else None
        if resp.status_code == 404 or code in ("not_found", "no_such_instance"):
            return False
        if resp.status_code == 200 and isinstance(body, dict) and body.get("success", True):
            return True
        raise self._fail("DELETE", path, resp)

    def set_label(self, instance_id: int, label: str) -> None:
        """``PUT /instances/{id}/`` with ``{"label": ...}``."""
        self._need_key()
        path = f"{API_PREFIX}/instances/{int(instance_id)}/"
        resp = self._call("PUT", path, json={"label": label})
        if resp.status_code != 200:
            raise self._fail("PUT", path, resp)

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        """``POST /instances/{id}/ssh/``: authorise ``public_key`` (OpenSSH format) on the
        instance. A key that is already attached (``200 {"success": false, "msg": "SSH key
        already associated..."}``) is success: attaching is idempotent here."""
        self._need_key()
        path = f"{API_PREFIX}/instances/{int(instance_id)}/ssh/"
        resp = self._call("POST", path, json={"ssh_key": public_key.strip()})
        body = _json(resp)
        if resp.status_code == 200 and isinstance(body, dict) and body.get("success") is False:
            if "already" in str(body.get("msg") or body.get("error") or "").lower():
                return
        if resp.status_code != 200 or (isinstance(body, dict) and body.get("success") is False):
            raise self._fail("POST", path, resp)

    def request_logs(self, instance_id: int, *, tail: int = 200, timeout: float = 10.0) -> str:
        """The container log tail: request it, then poll the ``result_url`` (no auth) until ready."""
        self._need_key()
        path = f"{API_PREFIX}/instances/request_logs/{int(instance_id)}/"
        resp = self._call("PUT", path, json={"tail": str(tail)})
        body = _json(resp)
        url = body.get("result_url") if isinstance(body, dict) else None
        if resp.status_code != 200 or not url:
            raise self._fail("PUT", path, resp)
        deadline, pause = time.monotonic() + timeout, 0.05
        while True:
            got = self._http.get(url)
            if got.status_code == 200:
                return got.text
            if time.monotonic() + pause > deadline:
                raise VastAPIError(f"instance {instance_id} logs not ready after {timeout:g}s", status=got.status_code)
            self._sleep(pause)
            pause = min(pause * 2, 1.0)
