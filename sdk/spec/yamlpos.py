"""YAML to plain Python values, remembering the line and column of every field."""

from __future__ import annotations

from typing import Any

import yaml
from runform.errors import SpecError

Path_ = tuple[Any, ...]

# Hostile YAML: aliases can make a few lines expand to billions of values ("billion laughs"), refer
# to themselves, or nest deeper than Python's stack. The spec is built node by node within these.
MAX_NODES = 100_000  # values after aliases are expanded (a large spec has a few thousand)
MAX_DEPTH = 64  # nesting of mappings and lists (the schema needs 5)


def load_with_locations(text: str, file: str) -> tuple[Any, dict[Path_, tuple[int, int]]]:
    """Parse ``text``; return the value and a map of field path -> (line, column), 1-based."""
    _check_depth(text, file)
    node = _compose(text, file)
    if node is None:
        return None, {}
    builder = _Builder(file)
    return builder.build(node, ()), builder.locations


def _compose(text: str, file: str) -> yaml.Node | None:
    """The YAML node tree (libyaml first; the pure-Python parser words errors better)."""
    try:
        try:
            return yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster
        except yaml.YAMLError:
            return yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SpecError(f"the YAML nests deeper than runform reads (at most {MAX_DEPTH} levels)", file=file,
                        hint="flatten the nested lists or mappings") from None
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


def _where(n: yaml.Node) -> dict[str, int]:
    return {"line": n.start_mark.line + 1, "column": n.start_mark.column + 1}


class _Builder:
    """Plain values from a node tree, node by node within :data:`MAX_NODES` and :data:`MAX_DEPTH`,
    recording where each field is."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.locations: dict[Path_, tuple[int, int]] = {}
        self.constructor = yaml.SafeLoader("")
        self.count = 0

    def build(self, n: yaml.Node, path: Path_, depth: int = 0) -> Any:
        file = self.file
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(f"the spec expands to more than {MAX_NODES} values (YAML aliases, *name, "
                            "repeat what their anchor holds)", file=file, **_where(n), field=_dotted(path) or None,
                            hint="write the values out, or use fewer aliases")
        if depth > MAX_DEPTH:
            raise SpecError(f"the YAML nests deeper than runform reads (at most {MAX_DEPTH} levels; an alias "
                            "that refers to itself nests without end)", file=file, **_where(n),
                            field=_dotted(path[:8]) or None,
                            hint="flatten the nesting, or remove the alias that refers to its own anchor")
        if len(path) < 16:  # a position per field a message may name (not one per expanded alias)
            self.locations.setdefault(path, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.MappingNode):
            return self._mapping(n, path, depth)
        if isinstance(n, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(n.value)]
        try:
            value = self.constructor.construct_object(n, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise SpecError(f"invalid value: {str(exc).splitlines()[0]}", file=file, **_where(n),
                            field=_dotted(path) or None, hint="quote the value to keep it as text") from None
        if isinstance(value, bytes):  # !!binary
            raise SpecError("binary values (!!binary) are not supported", file=file, **_where(n),
                            field=_dotted(path) or None, hint="write the value as text") from None
        return value

    def _mapping(self, n: yaml.MappingNode, path: Path_, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in n.value:
            key = self._key(key_node, path)
            if key in out:
                raise SpecError(
                    f"duplicate key {key!r}",
                    file=self.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    field=_dotted(path + (key,)),
                    hint="remove one of the two entries",
                )
            out[key] = self.build(value_node, path + (key,), depth + 1)
            if len(path) < 16:
                # errors point at the key that names the field (as Terraform does), not its value
                self.locations[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out

    def _key(self, key_node: yaml.Node, path: Path_) -> Any:
        file = self.file
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError("YAML merge keys (<<) are not supported", file=file, **_where(key_node),
                            field=_dotted(path) or None,
                            hint="write the keys out in this mapping (runform reads plain YAML: "
                            "no merge keys)")
        if not isinstance(key_node, yaml.ScalarNode):
            raise SpecError("a mapping key must be a scalar", file=file, **_where(key_node),
                            hint="use a plain name as the key")
        try:
            key = self.constructor.construct_object(key_node, deep=True)
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid key: {str(exc).splitlines()[0]}", file=file, **_where(key_node),
                            hint="quote the key to keep it as text") from None
        if isinstance(key, (list, dict)):
            raise SpecError("a mapping key must be a scalar", file=file,
                            line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1,
                            hint="use a plain name as the key")
        return key


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` from the parser's events (a flat loop), before
    anything recursive (the composer, the builder) sees the document."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(f"the YAML nests deeper than runform reads (at most {MAX_DEPTH} levels)",
                                    file=file, line=event.start_mark.line + 1,
                                    column=event.start_mark.column + 1,
                                    hint="flatten the nested lists or mappings")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return  # a syntax error: compose reports it, with its position


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


dotted = _dotted
