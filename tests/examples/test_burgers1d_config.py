"""burgers1d: config include resolution, and that every entry point uses the one resolver."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.config import (
    ConfigError,
    config_digest,
    deep_merge,
    load_config,
    parse_stage_args,
)

ENTRY_POINTS = (
    "simulate",
    "check_splits",
    "precompute",
    "train_operator",
    "train_residual",
    "distill",
    "train_steady_prior",
    "train_fno",
    "evaluate",
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_and_list_includes_resolve_relative_to_the_including_file(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "seed: 1\nmodel: {width: 8, depth: 2}\nlr: 0.1\n")
    _write(tmp_path / "extra.yaml", "model: {depth: 4}\ntags: [a]\n")
    _write(tmp_path / "sub/mid.yaml", "include: [../base.yaml, ../extra.yaml]\nlr: 0.2\n")
    top = _write(
        tmp_path / "sub/deeper/top.yaml", "include: ../mid.yaml\nmodel: {width: 16}\ntags: [b, c]\n"
    )
    cfg = load_config(top, ["model.depth=6", "new.key=3", "name=hello"])
    assert cfg["seed"] == 1 and cfg["lr"] == 0.2
    assert cfg["model"] == {"width": 16, "depth": 6}  # deep merge, then the override
    assert cfg["tags"] == ["b", "c"]  # lists are replaced, not concatenated
    assert cfg["new"] == {"key": 3} and cfg["name"] == "hello"
    assert "include" not in cfg
    assert [Path(s).name for s in cfg["_sources"]] == [
        "base.yaml",
        "extra.yaml",
        "mid.yaml",
        "top.yaml",
    ]


def test_include_errors(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "include: b.yaml\nx: 1\n")
    _write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    _write(tmp_path / "c.yaml", "include: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(_write(tmp_path / "ok.yaml", "x: 1\n"), ["no-equals"])


def test_digest_ignores_sources_and_order(tmp_path: Path) -> None:
    a = load_config(_write(tmp_path / "a.yaml", "x: 1\ny: {p: 2, q: 3}\n"))
    b = load_config(_write(tmp_path / "b/b.yaml", "y: {q: 3, p: 2}\nx: 1\n"))
    assert config_digest(a) == config_digest(b)
    assert config_digest(deep_merge(a, {"x": 2})) != config_digest(a)


def test_stage_args_set_the_device(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "runtime: {device: cuda}\n")
    _, cfg = parse_stage_args(["--config", str(path)], "x")
    assert cfg["runtime"]["device"] == "cuda"
    _, cfg = parse_stage_args(["--config", str(path), "--device", "cpu"], "x")
    assert cfg["runtime"]["device"] == "cpu"


def _calls(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                names.add(f"{func.value.id}.{func.attr}")
            elif isinstance(func, ast.Name):
                names.add(func.id)
    return names


def test_only_config_py_reads_yaml_and_every_entry_point_uses_it() -> None:
    for path in sorted((EXAMPLE / "burgers1d").glob("*.py")):
        calls = _calls(ast.parse(path.read_text(encoding="utf-8")))
        if path.stem != "config":
            assert not calls & {"yaml.safe_load", "yaml.load", "yaml.full_load"}, path.name
        if path.stem in ENTRY_POINTS or path.stem == "stage":
            src = path.read_text(encoding="utf-8")
            assert (
                "parse_stage_args" in src or "stage.start(" in src or "stage.run_seeds(" in src
            ), path.name


@pytest.mark.parametrize("preset", ["", "pdebench/"])
@pytest.mark.parametrize(
    "name,section",
    [
        ("encoder", "encoder"),
        ("operator", "operator"),
        ("diff_residual", "diff_residual"),
        ("consistency_distill", "consistency_distill"),
        ("steady_prior", "steady_prior"),
        ("fno", "fno"),
        ("eval", "eval"),
    ],
)
def test_shipped_configs_resolve(preset: str, name: str, section: str) -> None:
    cfg = load_config(EXAMPLE / "configs" / f"{preset}{name}.yaml")
    assert section in cfg and cfg["data"]["splits"]["train"]["path"]
    if preset:  # the GPU preset reads a real PDEBench file by non-overlapping row ranges
        ranges = [(s["start"], s["stop"]) for s in cfg["data"]["splits"].values()]
        assert all(a[1] <= b[0] for a, b in zip(sorted(ranges), sorted(ranges)[1:]))
        assert cfg["runtime"]["device"] == "cuda"
