"""Variables and references in a spec: ``variables:`` defaults and ``--var`` values, then
``${var.NAME}``, ``${env.NAME}`` and ``${run}`` substituted into every other field (a secret of
the env file is never pulled in through ``${env.X}``)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from runform.errors import SpecError
from runform.spec.yamlpos import dotted

_REF = re.compile(r"\$\{([^}]*)\}")
# in order: an escaped `$${`, a whole reference, a `${` that no `}` closes
_REF_TOKENS = re.compile(r"\$\$\{|\$\{[^}]*\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Locations = Mapping[tuple[Any, ...], tuple[int, int]]
ErrorAt = Callable[..., SpecError]  # err(message, field, hint=None)


def error_at(file: str, locs: Locations) -> ErrorAt:
    """``err(message, field, hint)``: a SpecError at the field's line and column in ``file``."""

    def err(msg: str, field: tuple[Any, ...], hint: str | None = None) -> SpecError:
        line, col = _locate(locs, field)
        return SpecError(msg, file=file, line=line, column=col, field=dotted(field) or None, hint=hint)

    return err


def declared_values(doc: Mapping[str, Any], variables: Mapping[str, str], err: ErrorAt, locs: Locations,
                    file: str) -> dict[str, Any]:
    """Each declared variable's value: its default, or the ``--var`` given (a YAML scalar)."""
    declared = doc.get("variables") or {}
    if not isinstance(declared, dict):
        raise err(f"expected a mapping of NAME: default, got {type(declared).__name__}", ("variables",),
                  hint="write `variables: {NAME: default}` (or NAME: {default: ..., description: ...})")
    values: dict[str, Any] = {}
    for name, decl in declared.items():
        values[name] = decl.get("default") if isinstance(decl, dict) else decl
        if isinstance(values[name], (dict, list)):
            at = ("variables", name, "default") if isinstance(decl, dict) else ("variables", name)
            raise err(f"a variable's default must be a single value (text, number or boolean), "
                      f"got a {'mapping' if isinstance(values[name], dict) else 'list'}", at,
                      hint="write one value, e.g. `default: hello` (a ${var.X} is pasted into text)")
    for name, raw in variables.items():
        if name not in declared:
            line, col = locs.get(("variables",), (None, None))
            raise SpecError(
                f"--var {name}: no variable {name!r} is declared" + _suggest(name, declared),
                file=file, line=line, column=col, field=f"variables.{name}",
                hint=f"declare it under `variables:` in {file}, or drop the --var",
            )
        values[name] = _scalar(raw)
    return values


class Substitution:
    """Substitutes references in a parsed spec; errors point at the reference in the source."""

    def __init__(self, *, text: str, locs: Locations, file: str, values: Mapping[str, Any], run_name: Any,
                 env: Mapping[str, str], secret_keys: set[str], env_file_rel: Any, err: ErrorAt) -> None:
        self.text, self.locs, self.file, self.values = text, locs, file, values
        self.run_name, self.env, self.secret_keys, self.env_file_rel = run_name, env, secret_keys, env_file_rel
        self.err = err

    def check_terminated(self, value: str, field: tuple[Any, ...]) -> None:
        """A `${` that no `}` closes would reach the machine (bash) as it is: refuse it here."""
        bad = next((m for m in _REF_TOKENS.finditer(value) if m.group() == "${"), None)
        if bad is None:
            return
        fragment = re.match(r"\$\{[^\s$]*", value[bad.start():]).group()  # type: ignore[union-attr]
        line, col = _locate(self.locs, field)
        line, col = _find_in_source(self.text, fragment, line, col, value.count("\n") + 1)
        raise SpecError(f"unterminated reference {fragment!r}: no closing '}}'", file=self.file, line=line,
                        column=col, field=dotted(field) or None,
                        hint=f"close it ({fragment}}}), or write $${{ for a literal '${{'")

    def __call__(self, value: Any, field: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self(v, field + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, field + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        self.check_terminated(value, field)
        whole = _REF.fullmatch(value)
        if whole:
            return self.resolve(whole.group(1), field)
        return _REF.sub(lambda m: str(self.resolve(m.group(1), field)),
                        value.replace("$${", "\0")).replace("\0", "${")

    def resolve(self, ref: str, field: tuple[Any, ...]) -> Any:
        err, values = self.err, self.values
        ref = ref.strip()
        if ref == "run":
            if not isinstance(self.run_name, str):
                raise err("${run} used but `run` is not set", field, hint="set `run: NAME`")
            return self.run_name
        kind, _, name = ref.partition(".")
        if kind == "var" and _NAME.match(name):
            if name not in values:
                raise err(f"unknown variable ${{var.{name}}}" + _suggest(name, values), field,
                          hint=f"fix the name, or declare `{name}` under `variables:`")
            if values[name] is None:
                raise err(f"variable {name!r} has no value", field,
                          hint=f"give it a default, or pass --var {name}=VALUE")
            return values[name]
        if kind == "env" and _NAME.match(name):
            if name in self.secret_keys:
                raise err(f"${{env.{name}}} names a secret from {self.env_file_rel}", field,
                          hint="secrets reach stages through `secrets.env_file` only; remove this reference")
            if name not in self.env:
                raise err(f"environment variable {name} is not set", field,
                          hint=f"export {name}=... before running runform")
            return self.env[name]
        raise err(f"unknown reference ${{{ref}}}", field,
                  hint="use ${var.NAME}, ${env.NAME} or ${run}")


def _find_in_source(text: str, fragment: str, line: int, col: int, span: int) -> tuple[int, int]:
    """The position of ``fragment`` in the source, searched from ``line:col`` over ``span`` lines
    (the value's own lines); ``(line, col)`` itself when it is not written there verbatim."""
    lines = text.splitlines()
    for i in range(line - 1, min(len(lines), line - 1 + span + 1)):
        at = lines[i].find(fragment, col - 1 if i == line - 1 else 0)
        while at >= 0:
            after = lines[i][at + len(fragment):at + len(fragment) + 1]
            if not after or after.isspace() or after in "$\"'":  # not the start of a longer token
                return i + 1, at + 1
            at = lines[i].find(fragment, at + 1)
    return line, col


def _locate(locs: Mapping[tuple[Any, ...], tuple[int, int]], field: tuple[Any, ...]) -> tuple[int, int]:
    key = tuple(field)
    while key and key not in locs:
        key = key[:-1]
    return locs.get(key, (1, 1))


def _suggest(name: str, pool: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(name), [str(p) for p in pool], n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _scalar(raw: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (str, int, float, bool)) else raw
