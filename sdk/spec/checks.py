"""The checks of a spec after its references are resolved: the JSON Schema (errors in words,
with the fix), paths inside the run root, what the kernel would refuse at exec, the plugins it
names, and (offline) its ``file://`` sources."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from runform.errors import PluginError, RunformError, SpecError
from runform.interfaces import ChecksURI, ValidatesCompute
from runform.spec.model import Spec, Stage
from runform.spec.variables import _locate, _suggest
from runform.spec.yamlpos import dotted

# the kernel's limit for one argument or one environment string (MAX_ARG_STRLEN): a longer `run`
# or env value fails at exec with "Argument list too long"
MAX_ARG = 128 * 1024 - 1


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package (``runform schema`` prints it)."""
    return json.loads(resources.files("runform.spec").joinpath("schema.json").read_text())


def _validate(doc: dict[str, Any], locs: Mapping[tuple[Any, ...], tuple[int, int]], file: str) -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    e = _deepest(errors[0])
    field = tuple(e.absolute_path)
    at = field
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})), key=str)
        if extra:
            at = field + (extra[0],)  # point at the unknown key itself
    line, col = _locate(locs, at)
    message, hint = _describe(e, field)
    raise SpecError(message, file=file, line=line, column=col, field=dotted(field) or None, hint=hint)


def _deepest(e: Any) -> Any:
    while e.context:
        e = max(e.context, key=lambda c: len(c.absolute_path))
    return e


def _describe(e: Any, field: tuple[Any, ...]) -> tuple[str, str | None]:
    v = e.validator
    if v == "additionalProperties":
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        allowed = sorted(e.schema.get("properties", {}))
        bad = extra[0] if extra else "?"
        alias = _ALIASES.get(str(bad))  # what other tools call it
        meant = f" (did you mean {alias!r}?)" if alias in allowed else _suggest(bad, allowed)
        return (f"unknown key {bad!r}" + meant, f"allowed keys here: {', '.join(allowed)}")
    if v == "required":
        return (e.message.replace("is a required property", "is required"),
                "add it (see `runform schema`)")
    if v == "type":
        expected = [e.validator_value] if isinstance(e.validator_value, str) else list(e.validator_value)
        return (f"expected {' or '.join(expected)}, got {type(e.instance).__name__} {e.instance!r}"[:200],
                _type_hint(expected, e.instance))
    if v == "enum":
        return (f"{e.instance!r} is not one of {', '.join(map(repr, e.validator_value))}",
                f"use one of {', '.join(map(str, e.validator_value))}")
    if v == "pattern":
        desc = e.schema.get("description", "")
        known = _pattern_hints().get(e.validator_value)
        if known:
            return (f"{e.instance!r} does not have the expected form", known)
        return (f"{e.instance!r} does not have the expected form" + (f" ({desc})" if desc else ""),
                f"it must match {e.validator_value}")
    if v == "propertyNames":
        return (f"invalid name: {e.message}", "names use letters, digits, _ and -")
    if v in ("minProperties", "minItems", "minLength"):
        return (f"{e.instance!r} is empty", "add at least one entry" if v != "minLength" else "give it a value")
    return (e.message, e.schema.get("description") or "see `runform schema` for what this field takes")


# keys other tools use for runform's (docker compose, GitHub Actions, dstack, SkyPilot)
_ALIASES = {"depends_on": "needs", "depends": "needs", "dependencies": "needs", "requires": "needs",
            "command": "run", "commands": "run", "cmd": "run", "script": "run",
            "environment": "env", "envs": "env"}


_TYPE_HINTS = {
    "string": "write text (quote it if it looks like a number or a boolean)",
    "number": "write a number, such as 100 or 2.5",
    "integer": "write a whole number, such as 2",
    "boolean": "write true or false",
    "object": "write a mapping of `key: value` entries",
    "array": "write a list, such as [a, b]",
    "null": "leave it empty",
}


def _type_hint(expected: list[str], instance: Any) -> str:
    if expected == ["array"] and isinstance(instance, (str, int, float)):
        return f"write a list, such as [{instance}]"
    return "; or ".join(_TYPE_HINTS.get(t, f"write a {t}") for t in expected)


@functools.lru_cache(maxsize=1)
def _pattern_hints() -> dict[str, str]:
    """The fix for each pattern of the schema, in words rather than as a regex."""
    s = schema()
    defs, props = s["$defs"], s["properties"]
    stage = props["stages"]["additionalProperties"]["properties"]
    return {
        defs["duration"]["pattern"]: "write a duration such as 90s, 30m, 8h or 1h30m",
        defs["relpath"]["pattern"]: "use a path relative to the run root: no leading '/' and no '..'",
        defs["name"]["pattern"]: "names use letters, digits, _ and - (at most 64 characters)",
        # environment and variable names (the same form)
        defs["env"]["propertyNames"]["pattern"]: "names here use letters, digits and _, and do not start "
        "with a digit (e.g. MY_FLAG)",
        props["run"]["pattern"]: "start with a letter or digit, then use letters, digits, '.', '_' and '-' "
        "(at most 63 characters)",
        stage["needs"]["items"]["pattern"]: "write stage.NAME or dataset.NAME",
        props["datasets"]["additionalProperties"]["properties"]["source"]["pattern"]:
            "start with a storage scheme: b2://, s3://, wandb:// or file://",
    }


_PATH_HINT = "use a path relative to the run root: no leading '/', no '..', not under .runform/"


def _check_paths(doc: dict[str, Any], err: Any) -> None:
    """Every path a spec names stays inside the run root and out of runform's own folder (the
    agent checks again on the machine, where the symlinks are)."""
    from runform.rootpath import problem

    fields: list[tuple[tuple[Any, ...], Any, bool]] = []  # (field, value, inside dest: .runform allowed)
    for name, d in (doc.get("datasets") or {}).items():
        fields.append((("datasets", name, "dest"), d.get("dest"), False))
        for link, target in (d.get("links") or {}).items():
            fields.append((("datasets", name, "links", link), link, False))
            fields.append((("datasets", name, "links", link), target, True))
    for name, st in doc["stages"].items():
        for i, out in enumerate(st.get("outputs") or ()):
            fields.append((("stages", name, "outputs", i), out, False))
        if "metrics" in st:
            fields.append((("stages", name, "metrics"), st["metrics"], False))
    for name, a in (doc.get("artifacts") or {}).items():
        for i, p in enumerate(a.get("paths") or ()):
            fields.append((("artifacts", name, "paths", i), p, False))
    for field, value, in_dest in fields:
        why = problem(value, allow_meta=in_dest)
        if why is not None:
            what = "link target (relative to dest)" if in_dest else "path"
            raise err(f"{what} {value!r} is refused: {why}", field,
                      hint=_PATH_HINT if not in_dest else "name a file or folder inside the dataset's dest")
        if not in_dest and field[-1] == "dest" and value in (".", "./"):
            raise err("dest '.' would hydrate the dataset over the run root (code, outputs)", field,
                      hint="name a folder, e.g. dest: data/NAME")


def _check_commands(doc: dict[str, Any], err: Any) -> None:
    """What the kernel would refuse at exec, refused here: a NUL byte, an argument too long."""
    envs: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("compute", "env"), (doc.get("compute") or {}).get("env") or {})]
    for name, st in doc["stages"].items():
        run = st["run"]
        if "\0" in run:
            raise err("the command contains a NUL byte", ("stages", name, "run"),
                      hint="remove it (a command line cannot carry NUL bytes)")
        if len(run.encode()) > MAX_ARG - 200:
            raise err(f"the command is {len(run.encode())} bytes; the kernel takes at most 128 KiB",
                      ("stages", name, "run"), hint="put the command in a script in the code tree and run that")
        envs.append((("stages", name, "env"), st.get("env") or {}))
    for field, env in envs:
        for key, value in env.items():
            text = str(value)
            if "\0" in text:
                raise err("the value contains a NUL byte", field + (key,),
                          hint="remove it (an environment variable cannot carry NUL bytes)")
            if len(key) + len(text.encode()) + 1 > MAX_ARG:
                raise err(f"the value is {len(text.encode())} bytes; the kernel takes at most 128 KiB per "
                          "variable", field + (key,),
                          hint="put the value in a file in the code tree and read it from the stage")


def _check_plugins(spec: Spec, err: Any) -> None:
    from runform.plugins import get_plugin_manager

    pm = get_plugin_manager()
    checks = [("providers", spec.compute.provider, ("compute", "provider"))]
    if spec.tracker.kind != "none":
        checks.append(("trackers", spec.tracker.kind, ("tracker", "kind")))
    for name, d in spec.datasets.items():
        checks.append(("storage_backends", d.source.split("://", 1)[0], ("datasets", name, "source")))
    for name, a in spec.artifacts.items():
        checks.append(("storage_backends", a.to.split("://", 1)[0], ("artifacts", name, "to")))
    backend = spec.state_backend
    checks.append(("state_backends", backend.split("://", 1)[0] if "://" in backend else backend,
                   ("state", "backend")))
    for kind, name, field in checks:
        try:
            reg = pm.get(kind, name)
        except PluginError as exc:
            raise err(exc.message, field, hint=exc.hint) from None
        # a provider may check its compute block: ``validate_compute(config)`` raises a
        # RunformError whose ``field`` is the path under ``compute``
        if kind == "providers" and isinstance(reg.factory, ValidatesCompute):
            try:
                reg.factory.validate_compute(dict(spec.compute.config))
            except RunformError as exc:
                raise err(exc.message, ("compute", *getattr(exc, "field", ())), hint=exc.hint) from None
    # a storage backend may check its URIs here (no network): `check_uri(uri) -> (problem, fix)`
    for section, items, attr in (("datasets", spec.datasets, "source"), ("artifacts", spec.artifacts, "to")):
        for name, item in items.items():
            uri = getattr(item, attr)
            factory = pm.storage_factory(uri.split("://", 1)[0])
            if isinstance(factory, ChecksURI) and (problem := factory.check_uri(uri)):
                raise err(problem[0], (section, name, attr), hint=problem[1])


def check_sources(spec: Spec) -> None:
    """What can be checked offline beyond the spec itself: every ``file://`` dataset source
    (relative to the spec's folder) exists. ``validate``, ``plan`` and ``apply`` call it; ``destroy``
    does not (a deleted local folder never keeps a machine rented)."""
    from urllib.parse import unquote, urlsplit

    for name, d in spec.datasets.items():
        if not d.source.startswith("file://"):
            continue
        parts = urlsplit(d.source)
        raw = unquote(parts.netloc + parts.path)
        path = Path(raw) if Path(raw).is_absolute() else spec.dir / raw
        if not path.exists():
            line, col = _locate(spec.locations, ("datasets", name, "source"))
            raise SpecError(f"{d.source!r}: {path} does not exist", file=str(spec.path), line=line, column=col,
                            field=f"datasets.{name}.source",
                            hint="fix the path (relative to the spec's folder), or create it first")


def _check_deps(stage: Stage, code_path: Path, err: Any) -> None:
    from runform.digests import match_globs

    for pattern in stage.deps or ():
        if not match_globs(code_path, [pattern]):
            raise err(pattern)
