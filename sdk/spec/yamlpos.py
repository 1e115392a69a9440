"""YAML to plain Python values, remembering the line and column of every field."""

from __future__ import annotations

from typing import Any

import yaml

from runform.errors import SpecError

Path_ = tuple[Any, ...]


def load_with_locations(text: str, file: str) -> tuple[Any, dict[Path_, tuple[int, int]]]:
    """Parse ``text``; return the value and a map of field path -> (line, column), 1-based."""
    try:
        try:
            node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster
        except yaml.YAMLError:
            node = yaml.compose(text, Loader=yaml.SafeLoader)  # the pure-Python parser words errors better
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = "fix the YAML syntax at that position"
        if "'\\t'" in problem:
            hint = "indent with spaces, not tabs (YAML does not allow tabs for indentation)"
        elif "mapping values are not allowed" in problem:
            hint = "quote a value that contains ': ' (for example run: \"echo a: b\")"
        raise SpecError(
            f"invalid YAML: {problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            hint=hint,
        ) from None
    locations: dict[Path_, tuple[int, int]] = {}
    if node is None:
        return None, locations
    constructor = yaml.SafeLoader("")

    def build(n: yaml.Node, path: Path_) -> Any:
        locations[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    raise SpecError("a mapping key must be a scalar", file=file,
                                    line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1,
                                    hint="use a plain name as the key")
                if key in out:
                    raise SpecError(
                        f"duplicate key {key!r}",
                        file=file,
                        line=key_node.start_mark.line + 1,
                        column=key_node.start_mark.column + 1,
                        field=_dotted(path + (key,)),
                        hint="remove one of the two entries",
                    )
                out[key] = build(value_node, path + (key,))
                # errors point at the key that names the field (as Terraform does), not its value
                locations[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(n.value)]
        try:
            return constructor.construct_object(n, deep=True)
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid value: {exc}", file=file, line=n.start_mark.line + 1,
                            column=n.start_mark.column + 1, field=_dotted(path),
                            hint="quote the value to keep it as text") from None

    return build(node, ()), locations


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


dotted = _dotted
