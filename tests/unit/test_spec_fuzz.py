"""Property-based fuzz of the spec loader (hypothesis): whatever the bytes, ``load_spec`` returns
a spec or raises a :class:`SpecError` (file, position, fix), never anything else, and never takes
long (each example has a deadline: an alias bomb or a deep nesting is refused, not expanded).

The budget is fixed by example counts (about 15 s in all on a small CI machine); set
RUNFORM_FUZZ=deep to run thousands of random examples instead."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runform.errors import SpecError
from runform.spec.load import load_spec

HELLO = Path(__file__).resolve().parents[1] / "bad_input" / "base" / "runform.yaml"
# CI: a fixed, small budget. RUNFORM_FUZZ=deep runs many random examples (for hunting, not for CI).
settings.register_profile("runform-ci", max_examples=80, deadline=3000, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("runform-deep", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings(settings.get_profile("runform-deep" if os.environ.get("RUNFORM_FUZZ") == "deep" else "runform-ci"))


def _load(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        project = Path(d)
        (project / "hello.env").write_text('HELLO_TOKEN="not-a-real-secret-0000"\n')
        (project / "steps").mkdir()
        for name in ("prepare.py", "common.py", "branch.py", "join.py"):
            (project / "steps" / name).write_text("")
        spec = project / "runform.yaml"
        spec.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            load_spec(spec, environ={})
        except SpecError as exc:
            assert exc.hint, f"no fix in {exc}"
            assert str(exc).startswith(str(spec)) or exc.file, str(exc)


YAML_BITS = st.sampled_from([
    "run: hello\n", "stages:\n", "  a:\n", "    run: echo\n", "&a ", "*a", "<<: *a\n", "[", "]", "{", "}",
    ": ", "- ", "\n", "  ", "\t", "'", '"', "!!binary ", "!!python/object ", "%YAML 1.1\n", "---\n",
    "${var.x}", "${env.HOME}", "$${", "\0", "\ufeff", "é", "0x10", "1e999", "~", "? ", "|\n", ">\n",
    "datasets: {d: {source: file://x, dest: ../x, links: {/etc/x: y}}}\n",
    "artifacts: {a: {paths: [.runform], to: file:///tmp}}\n",
])


@FUZZ
@given(st.lists(YAML_BITS, max_size=40).map("".join))
def test_fragments_of_yaml(text: str) -> None:
    _load(text)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    _load(data)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["..", "/", ".runform", "a/../..", "0s", "${run}"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([
    ("run",), ("variables",), ("compute",), ("compute", "provider"), ("secrets",), ("secrets", "env_file"),
    ("code", "path"), ("datasets",), ("datasets", "greetings", "dest"), ("datasets", "greetings", "links"),
    ("stages",), ("stages", "join"), ("stages", "join", "outputs"), ("stages", "join", "env"),
    ("stages", "join", "timeout"), ("stages", "left", "needs"), ("state",), ("state", "lock_lease"),
    ("artifacts",), ("tracker",)]), VALUES), max_size=4))
def test_the_hello_spec_with_fields_replaced(edits: list[tuple[tuple[str, ...], Any]]) -> None:
    doc = yaml.safe_load(HELLO.read_text())
    for path, value in edits:
        node = doc
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    _load(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=15, deadline=3000, derandomize=True, database=None)
@given(st.integers(min_value=2, max_value=12), st.integers(min_value=2, max_value=12))
def test_alias_bombs_are_refused_quickly(width: int, depth: int) -> None:
    lines = ["run: hello", "x0: &x0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * width) + "]" for i in range(1, depth)]
    _load("\n".join(lines) + "\nstages: {a: {run: echo}}\n")
