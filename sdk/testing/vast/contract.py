"""Vast's API contract as JSON Schemas, one per endpoint (``schemas/*.json``), written in this
project from Vast's published per-endpoint specs (vast-ai/docs ``api-reference/openapi``) and
the official client's data classes (vast-ai/vast-cli ``vastai/data/offer.py``).

Each file holds the endpoint's ``method`` and ``path``, its documented minimum interval, the
``request`` body schema (or ``query`` for GETs, values JSON-decoded as the SDK encodes them),
and ``responses``: ``"200"`` and ``"default"`` (Vast's error shape). Offer and instance rows
(``_defs.json``) allow only fields Vast publishes (no ``verified`` boolean on offers, nothing
runform-specific on instances).

The stand-in checks every request it gets against these (refusing a rejected one with Vast's
``400 invalid_args`` shape) and every reply it gives (a violation is recorded and fails the
test); tests check runform's requests and the cassettes against them too.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schemas")


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, dict[str, Any]], Any]:
    from referencing import Registry, Resource

    docs = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}
    registry = Registry().with_resources(
        [(f"{name}.json", Resource.from_contents(doc, default_specification=_spec())) for name, doc in docs.items()])
    return {k: v for k, v in docs.items() if not k.startswith("_")}, registry


def _spec() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def endpoints() -> dict[str, dict[str, Any]]:
    """Every endpoint's schema document, by name (``create_instance``, ...)."""
    return _load()[0]


@functools.lru_cache(maxsize=64)
def _path_rx(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(path)).rstrip("/") + "/?")


def endpoint_for(method: str, path: str) -> str | None:
    """The name of the endpoint ``method path`` calls (None: not one in the contract)."""
    for name, doc in endpoints().items():
        if doc["method"] == method and _path_rx(doc["path"]).fullmatch(path):
            return name
    return None


def _errors(schema: Mapping[str, Any], instance: Any, base: str) -> list[str]:
    from jsonschema import Draft202012Validator

    docs, registry = _load()
    validator = Draft202012Validator({**schema, "$id": base}, registry=registry)
    out = []
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(map(str, e.absolute_path)) or "(top)"
        out.append(f"{where}: {e.message[:300]}")
    return out


def request_errors(name: str, *, query: Mapping[str, Any] | None = None, body: Any = None) -> list[str]:
    """What is wrong with a request to endpoint ``name`` (empty: it conforms)."""
    doc = endpoints()[name]
    found: list[str] = []
    if "query" in doc:
        found += [f"query {e}" for e in _errors(doc["query"], dict(query or {}), f"{name}.json")]
    if "request" in doc:
        found += [f"body {e}" for e in _errors({**doc["request"], "$defs": doc.get("$defs", {})},
                                               {} if body is None else body, f"{name}.json")]
    return found


def reply_errors(name: str, status: int, body: Any) -> list[str]:
    """What is wrong with a reply of endpoint ``name`` (empty: it conforms). A plain-text
    body is what Vast sends with 429 (and gateways with 5xx); anything else must be JSON."""
    doc = endpoints()[name]
    if isinstance(body, str):
        return [] if status == 429 or status >= 500 else [f"status {status}: a plain-text body"]
    schema = doc["responses"].get(str(status)) or doc["responses"]["default"]
    if status != 200 and str(status) not in doc["responses"]:
        schema = doc["responses"]["default"]
    return [f"status {status} {e}" for e in _errors(schema, body, f"{name}.json")]
