"""Load a spec: YAML with positions, variables, JSON Schema validation, then attrs models.

Every error names the file, line and column, the field path, what was expected and the fix.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from runform.durations import parse_duration
from runform.envfile import EnvFileError, parse_env
from runform.errors import RunformError, SpecError
from runform.spec.model import Artifact, Code, Compute, Dataset, Spec, Stage, TrackerConfig
from runform.spec.yamlpos import dotted, load_with_locations

_REF = re.compile(r"\$\{([^}]*)\}")
# in order: an escaped `$${`, a whole reference, a `${` that no `}` closes
_REF_TOKENS = re.compile(r"\$\$\{|\$\{[^}]*\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MIN_LOCK_LEASE = 10.0  # seconds
MAX_SPEC_BYTES = 4 << 20
# the kernel's limit for one argument or one environment string (MAX_ARG_STRLEN): a longer `run`
# or env value fails at exec with "Argument list too long"
MAX_ARG = 128 * 1024 - 1


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package (``runform schema`` prints it)."""
    return json.loads(resources.files("runform.spec").joinpath("schema.json").read_text())


def load_spec(
    path: str | os.PathLike[str] = "runform.yaml",
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Spec:
    """Load and validate a spec. ``variables`` are ``--var`` values (strings, parsed as YAML scalars)."""
    spec_path = Path(path).resolve() if Path(path).is_absolute() else (Path.cwd() / path)
    file = str(path)
    if spec_path.is_dir():
        spec_path = spec_path / "runform.yaml"
        file = str(spec_path)
    if not spec_path.is_file():
        named = Path(file).name != "runform.yaml"  # a path the user gave, not the default name
        raise SpecError("spec file not found", file=file,
                        hint=f"check the path (looked in {spec_path.parent}); pass a spec file or the "
                        "folder holding runform.yaml" if named else
                        "create runform.yaml here, or pass the spec's path")
    text = _read_spec(spec_path, file)
    doc, locs = load_with_locations(text, file)
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a mapping of keys (run, compute, stages, ...)", file=file,
                        line=1, column=1, hint="see `runform schema` for the expected shape")
    env = dict(os.environ if environ is None else environ)

    def err(msg: str, field: tuple[Any, ...], hint: str | None = None) -> SpecError:
        line, col = _locate(locs, field)
        return SpecError(msg, file=file, line=line, column=col, field=dotted(field) or None, hint=hint)

    # -- variables ------------------------------------------------------------------------
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
    for name, raw in (variables or {}).items():
        if name not in declared:
            line, col = locs.get(("variables",), (None, None))
            raise SpecError(
                f"--var {name}: no variable {name!r} is declared" + _suggest(name, declared),
                file=file, line=line, column=col, field=f"variables.{name}",
                hint=f"declare it under `variables:` in {file}, or drop the --var",
            )
        values[name] = _scalar(raw)
    run_name = doc.get("run")

    # secrets must not be pulled in through ${env.X}
    secret_keys: set[str] = set()
    env_file_rel = (doc.get("secrets") or {}).get("env_file") if isinstance(doc.get("secrets"), dict) else None

    def check_terminated(value: str, field: tuple[Any, ...]) -> None:
        """A `${` that no `}` closes would reach the machine (bash) as it is: refuse it here."""
        bad = next((m for m in _REF_TOKENS.finditer(value) if m.group() == "${"), None)
        if bad is None:
            return
        fragment = re.match(r"\$\{[^\s$]*", value[bad.start():]).group()  # type: ignore[union-attr]
        line, col = _locate(locs, field)
        line, col = _find_in_source(text, fragment, line, col, value.count("\n") + 1)
        raise SpecError(f"unterminated reference {fragment!r}: no closing '}}'", file=file, line=line,
                        column=col, field=dotted(field) or None,
                        hint=f"close it ({fragment}}}), or write $${{ for a literal '${{'")

    def substitute(value: Any, field: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {k: substitute(v, field + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v, field + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        check_terminated(value, field)
        whole = _REF.fullmatch(value)

        def resolve(ref: str) -> Any:
            ref = ref.strip()
            if ref == "run":
                if not isinstance(run_name, str):
                    raise err("${run} used but `run` is not set", field, hint="set `run: NAME`")
                return run_name
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
                if name in secret_keys:
                    raise err(f"${{env.{name}}} names a secret from {env_file_rel}", field,
                              hint="secrets reach stages through `secrets.env_file` only; remove this reference")
                if name not in env:
                    raise err(f"environment variable {name} is not set", field,
                              hint=f"export {name}=... before running runform")
                return env[name]
            raise err(f"unknown reference ${{{ref}}}", field,
                      hint="use ${var.NAME}, ${env.NAME} or ${run}")

        if whole:
            return resolve(whole.group(1))
        return _REF.sub(lambda m: str(resolve(m.group(1))), value.replace("$${", "\0")).replace("\0", "${")

    if env_file_rel and isinstance(env_file_rel, str) and "${" not in env_file_rel:
        env_path = (spec_path.parent / env_file_rel)
        if env_path.is_file():
            secret_keys = set(_read_env_file(env_path, env_file_rel))
    resolved = {k: (v if k == "variables" else substitute(v, (k,))) for k, v in doc.items()}

    # -- schema -------------------------------------------------------------------------
    _validate(resolved, locs, file)
    _check_paths(resolved, err)
    _check_commands(resolved, err)

    # -- models and cross-field checks ----------------------------------------------------
    base = spec_path.parent
    compute_raw = dict(resolved.get("compute") or {"provider": "local"})
    compute_raw.setdefault("provider", "local")
    compute = Compute(provider=compute_raw["provider"], config=compute_raw)
    for key in ("max_duration", "ready_timeout"):
        if key in compute_raw:
            parse_duration(compute_raw[key])

    env_file = None
    if resolved.get("secrets", {}).get("env_file"):
        rel = resolved["secrets"]["env_file"]
        env_file = (base / rel).resolve()
        if not env_file.is_file():
            raise err(f"env file {rel!r} not found (looked in {base})", ("secrets", "env_file"),
                      hint="create it, or remove `secrets.env_file`")
        _read_env_file(env_file, rel)

    code_raw = resolved.get("code") or {}
    code_path = (base / code_raw.get("path", ".")).resolve()
    if not code_path.is_dir():
        raise err(f"code path {code_raw.get('path')!r} is not a folder", ("code", "path"),
                  hint="point `code.path` at the folder to sync")
    code = Code(path=code_path, exclude=tuple(code_raw.get("exclude", ())))

    datasets = {
        name: Dataset(name=name, source=d["source"], dest=d["dest"], links=dict(d.get("links", {})))
        for name, d in (resolved.get("datasets") or {}).items()
    }
    stages: dict[str, Stage] = {}
    for name, s in resolved["stages"].items():
        for i, need in enumerate(s.get("needs", [])):
            kind, _, target = need.partition(".")
            pool = datasets if kind == "dataset" else resolved["stages"]
            if target not in pool:
                raise err(f"{need!r} does not exist" + _suggest(target, pool, prefix=kind + "."),
                          ("stages", name, "needs", i),
                          hint=f"declare {kind} {target!r} or fix the name")
            if kind == "stage" and target == name:
                raise err("a stage cannot need itself", ("stages", name, "needs", i),
                          hint=f"remove {need!r} from the needs of stage {name!r}")
        timeout = parse_duration(s["timeout"]) if "timeout" in s else None
        if timeout is not None and timeout <= 0:
            raise err("a timeout of 0 would stop the stage at once", ("stages", name, "timeout"),
                      hint="give a positive duration such as 30m, or remove `timeout` for none")
        stages[name] = Stage(
            name=name,
            run=s["run"],
            deps=tuple(s["deps"]) if "deps" in s else None,
            needs=tuple(s.get("needs", ())),
            env={k: _env_str(v) for k, v in (s.get("env") or {}).items()},
            outputs=tuple(s.get("outputs", ())),
            metrics=s.get("metrics"),
            launcher=s.get("launcher", "bash"),
            nproc=s.get("nproc"),
            timeout=timeout,
        )
        if stages[name].deps is not None:
            _check_deps(stages[name], code_path, lambda f, n=name: err(
                f"no file in the code tree matches {f!r}", ("stages", n, "deps", list(s["deps"]).index(f)),
                hint=f"fix the path (relative to {code_path}) or remove it from deps"))
    artifacts = {
        name: Artifact(name=name, paths=tuple(a["paths"]), to=a["to"], type=a.get("type", "model"))
        for name, a in (resolved.get("artifacts") or {}).items()
    }
    tracker_raw = dict(resolved.get("tracker") or {"kind": "jsonl"})
    state_raw = resolved.get("state") or {}
    lease = parse_duration(state_raw.get("lock_lease", "30s"))
    if lease < MIN_LOCK_LEASE:
        raise err(f"a lock lease under {MIN_LOCK_LEASE:g}s is not safe (a holder renews it every third of "
                  "the lease; a shorter one lapses under a busy disk or a paused process, and a second "
                  "apply takes the lock)", ("state", "lock_lease"),
                  hint=f"use at least {MIN_LOCK_LEASE:g}s, or remove it for the default 30s")
    backend = state_raw.get("backend", "local")
    if "://" in backend and not re.match(r"[a-z][a-z0-9+.-]*://[^/\s]+/\S", backend):
        raise err(f"state backend {backend!r} names no bucket and key", ("state", "backend"),
                  hint="write SCHEME://BUCKET/KEY, e.g. s3://my-bucket/runs/hello.state")
    spec = Spec(
        path=spec_path,
        run=resolved["run"],
        variables=values,
        compute=compute,
        env_file=env_file,
        code=code,
        datasets=datasets,
        stages=stages,
        artifacts=artifacts,
        tracker=TrackerConfig(kind=tracker_raw["kind"], config=tracker_raw),
        state_backend=state_raw.get("backend", "local"),
        lock_lease=lease,
        raw=resolved,
        locations=locs,
    )
    _check_plugins(spec, err)
    return spec


def _read_spec(path: Path, file: str) -> str:
    """The spec's text: UTF-8 (a BOM is dropped), not larger than a spec can sensibly be."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is {size} bytes; runform reads at most {MAX_SPEC_BYTES >> 20} MiB",
                            file=file, hint="this is not a spec; pass the right file")
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror or exc}", file=file,
                        hint="check the file's permissions") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", file=file, line=line, column=col,
                        hint="save the spec as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


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
    from runform.errors import PluginError
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
        check = getattr(reg.factory, "validate_compute", None) if kind == "providers" else None
        if check is not None:
            try:
                check(dict(spec.compute.config))
            except RunformError as exc:
                raise err(exc.message, ("compute", *getattr(exc, "field", ())), hint=exc.hint) from None
    # a storage backend may check its URIs here (no network): `check_uri(uri) -> (problem, fix)`
    for section, items, attr in (("datasets", spec.datasets, "source"), ("artifacts", spec.artifacts, "to")):
        for name, item in items.items():
            uri = getattr(item, attr)
            check = getattr(pm.get("storage_backends", uri.split("://", 1)[0]).factory, "check_uri", None)
            if check is not None and (problem := check(uri)):
                raise err(problem[0], (section, name, attr), hint=problem[1])


def _read_env_file(path: Path, shown: str) -> dict[str, str]:
    # Messages name the file and line, never a value: the file holds secrets.
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", file=shown, line=line,
                        hint="save the env file as UTF-8") from None
    try:
        return parse_env(text)
    except EnvFileError as exc:
        raise SpecError(str(exc), file=shown, line=exc.line,
                        hint="write KEY=VALUE, one per line; quote a value that has spaces or spans "
                        "lines (KEY=\"...\")") from None


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


def _env_str(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _check_deps(stage: Stage, code_path: Path, err: Any) -> None:
    from runform.digests import match_globs

    for pattern in stage.deps or ():
        if not match_globs(code_path, [pattern]):
            raise err(pattern)
