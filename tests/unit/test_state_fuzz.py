"""Property-based fuzz of the state and saved-plan readers (hypothesis): whatever a state file, a
journal or a plan file holds, reading it gives a state/plan or a :class:`StateError` (with its
fix), never another exception. Fixed budget in CI; RUNFORM_FUZZ=deep hunts longer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runform.errors import StateError
from runform.planning.planfile import load_plan
from runform.state.local import LocalStateBackend

settings.register_profile("runform-state-ci", max_examples=80, deadline=3000, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("runform-state-deep", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings(settings.get_profile(
    "runform-state-deep" if os.environ.get("RUNFORM_FUZZ") == "deep" else "runform-state-ci"))

LIN = "a4637948-da7d-4b5a-84fd-3347b6fec8b3"
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
                    st.sampled_from(["../..", "/", ".runform", "instance.main", "stage.join", "ok", LIN]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=16)
FIELDS = st.sampled_from(["version", "lineage", "run", "salt", "serial", "seq", "resources", "pending",
                          "address", "attrs", "instance", "label", "id", "status", "pins", "duration",
                          "fingerprint", "revision", "t", "key", "record", "addr", "keys"])


def _good_state() -> dict[str, Any]:
    return {"version": 1, "lineage": LIN, "run": "hello", "salt": "00ff", "serial": 1, "seq": 2,
            "resources": [{"address": "instance.main", "revision": 1, "attrs": {
                "label": "runform-hello-a4637948", "pins": {},
                "instance": {"id": "x", "label": "runform-hello-a4637948", "status": "running", "attrs": {}}}},
                {"address": "stage.join", "revision": 1, "attrs": {"duration": 1.0, "metrics": {"loss": 1}}}],
            "pending": []}


def _mutate(doc: Any, path: list[str], value: Any) -> Any:
    """Replace (or add) the first key named ``path[0]`` found walking ``doc``, recursively."""
    if not path:
        return value
    if isinstance(doc, dict):
        out = dict(doc)
        out[path[0]] = _mutate(out.get(path[0]), path[1:], value) if len(path) > 1 else value
        return out
    if isinstance(doc, list) and doc:
        return [_mutate(doc[0], path, value), *doc[1:]]
    return doc


def _read(state: bytes | None = None, journal: bytes | None = None) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / ".runform"
        folder.mkdir()
        if state is not None:
            (folder / "state.json").write_bytes(state)
        if journal is not None:
            (folder / "journal.jsonl").write_bytes(journal)
        try:
            LocalStateBackend(folder).read()
        except StateError as exc:
            assert exc.hint, str(exc)


@FUZZ
@given(st.lists(st.tuples(st.lists(FIELDS, min_size=1, max_size=3), VALUES), max_size=3))
def test_state_snapshots_with_fields_replaced(edits: list[tuple[list[str], Any]]) -> None:
    doc: Any = _good_state()
    for path, value in edits:
        doc = _mutate(doc, ["resources", *path] if path[0] in ("attrs", "address", "instance") else path, value)
    _read(json.dumps(doc).encode())


@FUZZ
@given(st.lists(VALUES, max_size=5))
def test_journals_of_anything(entries: list[Any]) -> None:
    meta = {"seq": 1, "t": "meta", "lineage": LIN, "run": "hello", "salt": "00"}
    lines = [json.dumps(meta)] + [json.dumps(e) for e in entries]
    _read(journal="\n".join(lines).encode() + b"\n")


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_state_bytes_of_anything(state: bytes, journal: bytes) -> None:
    _read(state, journal)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["run", "lineage", "serial", "resource_changes", "variables",
                                           "new_state", "targets", "spec_path", "format_version", "destroy",
                                           "timestamp", "cost", "warnings"]), VALUES), max_size=4))
def test_saved_plans_with_fields_replaced(edits: list[tuple[str, Any]]) -> None:
    doc: dict[str, Any] = {"format_version": "1.0", "run": "hello", "lineage": LIN, "serial": 0,
                           "spec_path": "runform.yaml", "variables": {},
                           "resource_changes": [{"address": "stage.join", "action": "create", "reason": "r"}]}
    for key, value in edits:
        doc[key] = value
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "saved.plan"
        path.write_text(json.dumps(doc))
        try:
            load_plan(path)
        except StateError as exc:
            assert exc.hint, str(exc)
