"""docs/spec.md is generated from the spec's JSON Schema and committed: it must be current."""

from __future__ import annotations

import json
from pathlib import Path

from runform.spec import reference

DOC = next(p for p in Path(__file__).resolve().parents if p.name == "tests").parent / "docs" / "spec.md"


def test_the_committed_spec_reference_is_current() -> None:
    assert DOC.read_text() == reference.render(reference.load_schema()), (
        "docs/spec.md is stale: run `python -m runform.spec.reference > docs/spec.md`")


def test_every_field_of_the_schema_is_documented() -> None:
    schema = reference.load_schema()
    text = reference.render(schema)
    for key, node in schema["properties"].items():
        assert f"| `{key}` |" in text
        item = node.get("additionalProperties")
        fields = node.get("properties") or (item.get("properties") if isinstance(item, dict) else None) or {}
        prefix = key if "properties" in node else f"{key}.<name>"
        for sub in fields:
            assert f"| `{prefix}.{sub}` |" in text, f"{prefix}.{sub} is not in the reference"
    for name in schema["$defs"]:
        assert f"### {name}" in text and f"(#{name})" in text


def test_a_change_to_the_schema_shows_in_the_reference() -> None:
    schema = reference.load_schema()
    schema["properties"]["stages"]["additionalProperties"]["properties"]["retries"] = {
        "description": "How often a failed stage is retried.", "type": "integer", "minimum": 0}
    assert "| `stages.<name>.retries` | integer |  | How often a failed stage is retried. At least 0. |" \
        in reference.render(schema)
    assert reference.render(schema) != reference.render(json.loads(reference.SCHEMA.read_text()))


def test_check_mode_exits_1_on_a_stale_file(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "spec.md"
    stale.write_text("# old\n")
    assert reference.main(["--check", str(stale)]) == 1
    assert "regenerate it with `python -m runform.spec.reference" in capsys.readouterr().err
    assert reference.main(["--check", str(DOC)]) == 0
