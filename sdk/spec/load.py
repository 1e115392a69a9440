"""Load a spec: YAML with positions, variables (:mod:`.variables`), JSON Schema validation and
checks (:mod:`.checks`), then attrs models.

Every error names the file, line and column, the field path, what was expected and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runform.durations import parse_duration
from runform.envfile import EnvFileError, parse_env
from runform.errors import SpecError
from runform.nodes import check_nodes
from runform.spec.checks import (  # noqa: F401 - check_sources and schema are this module's API too
    _check_commands,
    _check_deps,
    _check_paths,
    _check_plugins,
    _validate,
    check_sources,
    schema,
)
from runform.spec.model import Artifact, Code, Compute, Dataset, Spec, Stage, TrackerConfig
from runform.spec.variables import ErrorAt, Substitution, _suggest, declared_values, error_at
from runform.spec.yamlpos import load_with_locations

MIN_LOCK_LEASE = 10.0  # seconds
MAX_SPEC_BYTES = 4 << 20


def load_spec(
    path: str | os.PathLike[str] = "runform.yaml",
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Spec:
    """Load and validate a spec. ``variables`` are ``--var`` values (strings, parsed as YAML scalars)."""
    spec_path, file = _find_spec(path)
    text = _read_spec(spec_path, file)
    doc, locs = load_with_locations(text, file)
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a mapping of keys (run, compute, stages, ...)", file=file,
                        line=1, column=1, hint="see `runform schema` for the expected shape")
    err = error_at(file, locs)
    values = declared_values(doc, variables or {}, err, locs, file)
    resolved = _substitute(doc, text, locs, file, values, dict(os.environ if environ is None else environ),
                           spec_path, err)
    _validate(resolved, locs, file)
    _check_paths(resolved, err)
    _check_commands(resolved, err)
    spec = _build(resolved, spec_path, values, locs, err)
    _check_plugins(spec, err)
    return spec


def _find_spec(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The spec file (a folder means its runform.yaml) and the name errors give it."""
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
    return spec_path, file


def _substitute(doc: dict[str, Any], text: str, locs: Any, file: str, values: dict[str, Any],
                env: dict[str, str], spec_path: Path, err: ErrorAt) -> dict[str, Any]:
    """Every field but ``variables`` with its references resolved; secrets must not be pulled in
    through ``${env.X}``."""
    secret_keys: set[str] = set()
    env_file_rel = (doc.get("secrets") or {}).get("env_file") if isinstance(doc.get("secrets"), dict) else None
    if env_file_rel and isinstance(env_file_rel, str) and "${" not in env_file_rel:
        env_path = (spec_path.parent / env_file_rel)
        if env_path.is_file():
            secret_keys = set(_read_env_file(env_path, env_file_rel))
    substitute = Substitution(text=text, locs=locs, file=file, values=values, run_name=doc.get("run"), env=env,
                              secret_keys=secret_keys, env_file_rel=env_file_rel, err=err)
    return {k: (v if k == "variables" else substitute(v, (k,))) for k, v in doc.items()}


def _build(resolved: dict[str, Any], spec_path: Path, values: dict[str, Any], locs: Any, err: ErrorAt) -> Spec:
    """The models, with the checks that need more than one field."""
    base = spec_path.parent
    compute_raw = dict(resolved.get("compute") or {"provider": "local"})
    compute_raw.setdefault("provider", "local")
    compute = Compute(provider=compute_raw["provider"], config=compute_raw)
    if problem := check_nodes(compute_raw):
        raise err(problem[1], ("compute", *problem[0]), hint=problem[2])
    for key in ("max_duration", "ready_timeout"):
        if key in compute_raw:
            parse_duration(compute_raw[key])

    env_file = _env_file(resolved, base, err)

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
    stages = _stages(resolved, datasets, code_path, err)
    artifacts = {
        name: Artifact(name=name, paths=tuple(a["paths"]), to=a["to"], type=a.get("type", "model"))
        for name, a in (resolved.get("artifacts") or {}).items()
    }
    tracker_raw = dict(resolved.get("tracker") or {"kind": "jsonl"})
    state_raw = resolved.get("state") or {}
    lease = _lease(state_raw, err)
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
    return spec


def _stages(resolved: dict[str, Any], datasets: Mapping[str, Dataset], code_path: Path,
            err: ErrorAt) -> dict[str, Stage]:
    """The stages, each ``needs`` naming something that exists and each ``deps`` matching a file."""
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
    return stages


def _lease(state_raw: Mapping[str, Any], err: ErrorAt) -> float:
    """``state.lock_lease`` (long enough to be safe); ``state.backend`` names a bucket and key."""
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
    return lease


def _env_file(resolved: dict[str, Any], base: Path, err: ErrorAt) -> Path | None:
    """``secrets.env_file``, which must exist and parse (nothing of it is kept here)."""
    env_file = None
    if resolved.get("secrets", {}).get("env_file"):
        rel = resolved["secrets"]["env_file"]
        env_file = (base / rel).resolve()
        if not env_file.is_file():
            raise err(f"env file {rel!r} not found (looked in {base})", ("secrets", "env_file"),
                      hint="create it, or remove `secrets.env_file`")
        _read_env_file(env_file, rel)
    return env_file


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


def _env_str(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)
