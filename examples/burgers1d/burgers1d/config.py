"""The one place YAML configs are read: ``include:`` resolution, overrides, digests.

The seed pipeline resolved ``include:`` only in ``evaluate.py`` while ``train.py`` and the
precompute script used plain ``yaml.safe_load``, so training silently ran without the parent
config. Here every entry point calls :func:`load_config` (through :func:`parse_stage_args`), and
a test checks that no other module reads YAML.

Rules:

* ``include:`` is a path or a list of paths, relative to the file that names them. Includes are
  merged first, in order; the including file's own keys are merged on top.
* Merging is deep for mappings; anything else (lists, scalars) is replaced.
* Include cycles are an error, and so is a missing file.
* ``--set a.b=VALUE`` overrides are applied last; VALUE is parsed as YAML (``--set x=3`` is int).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Config = dict[str, Any]


class ConfigError(ValueError):
    """A config file cannot be resolved (missing include, cycle, bad override)."""


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> Config:
    """Return ``base`` updated by ``top``; nested mappings merge, everything else replaces."""
    out: Config = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> Config:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open("r", encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def _resolve(path: Path, stack: tuple[Path, ...]) -> tuple[Config, list[str]]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"include cycle: {chain}")
    raw = _read_yaml(path)
    includes = raw.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: include must be a path or a list of paths")
    merged: Config = {}
    sources: list[str] = []
    for inc in includes:
        child, child_sources = _resolve(path.parent / inc, (*stack, path))
        merged = deep_merge(merged, child)
        sources += [s for s in child_sources if s not in sources]
    sources.append(str(path))
    return deep_merge(merged, raw), sources


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=VALUE`` into (``["a", "b", "c"]``, YAML-parsed VALUE)."""
    if "=" not in text:
        raise ConfigError(f"override must look like key.path=value, got {text!r}")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override has an empty key: {text!r}")
    return parts, yaml.safe_load(value)


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> Config:
    """Return a copy of ``cfg`` with each ``key.path=value`` override set."""
    out: Config = copy.deepcopy(dict(cfg))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Resolve ``path`` (its ``include:`` chain, then ``overrides``) into one plain dict.

    The result carries the files it was built from under ``_sources`` (absolute paths, includes
    first) so that the resolved config stored beside a checkpoint says where it came from.
    """
    cfg, sources = _resolve(Path(path), ())
    cfg = apply_overrides(cfg, overrides)
    cfg["_sources"] = sources
    return cfg


def config_digest(cfg: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """sha256 of the canonical JSON of ``cfg`` (only ``keys`` if given; ``_sources`` ignored)."""
    body = {k: v for k, v in cfg.items() if k != "_sources" and (keys is None or k in keys)}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def dump_config(cfg: Mapping[str, Any]) -> str:
    """The resolved config as YAML text (what is stored next to a checkpoint)."""
    return yaml.safe_dump(dict(cfg), sort_keys=True, default_flow_style=False)


def section(cfg: Mapping[str, Any], name: str) -> Config:
    """``cfg[name]`` as a dict; a clear error naming the config files when it is missing."""
    value = cfg.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} missing (resolved from {cfg.get('_sources')})")
    return value


def stage_arg_parser(description: str, *, device: bool = True) -> argparse.ArgumentParser:
    """The argument parser every entry point starts from: ``--config``, ``--set``, ``--device``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (include: is resolved)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set operator.epochs=2 (repeatable)",
    )
    if device:
        parser.add_argument(
            "--device",
            default=None,
            choices=["auto", "cpu", "cuda"],
            help="auto = cuda when present; cuda fails when CUDA is absent "
            "(default: runtime.device from the config, else auto)",
        )
    return parser


def parse_stage_args(
    argv: Sequence[str] | None, description: str, *, device: bool = True
) -> tuple[argparse.Namespace, Config]:
    """Parse an entry point's arguments and resolve its config with :func:`load_config`."""
    args = stage_arg_parser(description, device=device).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if device:
        runtime = cfg.setdefault("runtime", {})
        if args.device is not None:
            runtime["device"] = args.device
        runtime.setdefault("device", "auto")
    return args, cfg
