"""The spec reference (``docs/spec.md``), generated from ``schema.json`` so that it cannot drift.

    python -m runform.spec.reference > docs/spec.md      # write it
    python -m runform.spec.reference --check docs/spec.md  # exit 1 when it is stale
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.json")
HEADER = ("<!-- Generated from sdk/spec/schema.json by `python -m runform.spec.reference`; "
          "do not edit by hand. -->")


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


def render(schema: Mapping[str, Any]) -> str:
    """The whole reference as Markdown."""
    out = [HEADER, "", f"# The {schema.get('title', 'spec')} reference", "",
           schema.get("description", ""), "",
           ("Every field below is checked when the spec is loaded (`runform validate`); an unknown "
            "field is an error naming its line. Values may use `${var.NAME}`, `${env.NAME}` and `${run}` "
            "(see the README's \"The spec\")."), "",
           "## Top level", ""]
    out += _table(schema, "")
    for key, node in schema.get("properties", {}).items():
        out += _section(key, node)
    out += ["## Types", ""]
    for name, node in schema.get("$defs", {}).items():
        out += [f"### {name}", "", " ".join(_sentences(node)), ""]
    return "\n".join(out).rstrip() + "\n"


def _section(path: str, node: Mapping[str, Any]) -> list[str]:
    """A section for an object with fields, or for a map of named objects (``stages.<name>``)."""
    out: list[str] = []
    if "properties" in node:
        out += [f"## `{path}`", ""]
        if node.get("description"):
            out += [node["description"], ""]
        out += _table(node, path)
        out += _rules(node)
        if node.get("additionalProperties", True) is not False:
            out += ["Other fields are allowed: they go to the plugin.", ""]
    item = node.get("additionalProperties")
    if isinstance(item, Mapping) and "properties" in item:
        what = node.get("propertyNames", {})
        out += [f"## `{path}.<name>`", ""]
        if node.get("description"):
            out += [node["description"], ""]
        out += [f"Each entry is keyed by its name ({_type(what) if what else 'a string'}).", ""]
        out += _table(item, f"{path}.<name>")
    return out


def _table(node: Mapping[str, Any], path: str) -> list[str]:
    required = set(node.get("required", ()))
    rows = ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
    for key, sub in node.get("properties", {}).items():
        full = f"{path}.{key}" if path else key
        rows.append(f"| `{full}` | {_type(sub, full)} | {'yes' if key in required else ''} | "
                    f"{_cell(' '.join(_sentences(sub, with_type=False)))} |")
    return rows + [""]


def _rules(node: Mapping[str, Any]) -> list[str]:
    """``if``/``then`` rules in words (``host`` is required when ``provider`` is ``ssh``)."""
    out = []
    for rule in node.get("allOf", ()):
        cond = rule.get("if", {}).get("properties", {})
        need = rule.get("then", {}).get("required", ())
        if cond and need:
            when = " and ".join(f"`{k}` is `{v.get('const')}`" for k, v in cond.items())
            out.append(f"- {', '.join(f'`{n}`' for n in need)} is required when {when}.")
    return out + [""] if out else []


def _type(node: Mapping[str, Any], path: str = "") -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name})"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type(n, path) for n in node[key])
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type(node.get('items', {}), path)}"
    if kind == "object" and path and ("properties" in node or _is_map_of_objects(node)):
        heading = f"{path}.<name>" if _is_map_of_objects(node) else path
        anchor = "".join(c for c in heading.lower() if c.isalnum() or c in "-_")  # GitHub's rule
        return f"[object](#{anchor})"
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return f"map of {_type(node['additionalProperties'], '')}"
    return kind or "any"


def _is_map_of_objects(node: Mapping[str, Any]) -> bool:
    item = node.get("additionalProperties")
    return isinstance(item, Mapping) and "properties" in item


def _sentences(node: Mapping[str, Any], *, with_type: bool = True) -> list[str]:
    """The description, then the constraints in words."""
    out = [node["description"].rstrip(".") + "."] if node.get("description") else []
    if with_type:
        out.append(f"Type: {_type(node)}.")
    if "default" in node:
        out.append(f"Default: `{json.dumps(node['default'])}`.")
    if "pattern" in node:
        out.append(f"Matches `{node['pattern']}`.")
    if "propertyNames" in node and "pattern" in node["propertyNames"]:
        out.append(f"Names match `{node['propertyNames']['pattern']}`.")
    bounds = [("minimum", "at least"), ("exclusiveMinimum", "more than"), ("maximum", "at most"),
              ("minLength", "at least {} character(s)"), ("minItems", "at least {} item(s)"),
              ("minProperties", "at least {} entry")]
    for key, words in bounds:
        if key in node:
            out.append((words.format(node[key]) if "{}" in words else f"{words} {node[key]}").capitalize() + ".")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = render(load_schema())
    if args[:1] == ["--check"]:
        path = Path(args[1] if len(args) > 1 else "docs/spec.md")
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is stale: regenerate it with `python -m runform.spec.reference > {path}`",
                  file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
