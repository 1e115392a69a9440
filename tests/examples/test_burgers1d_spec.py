"""burgers1d: the runform specs. deps are exact, configs are split so that an operator change
re-runs the operator and its dependents only, and both specs follow the spec contract."""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.config import load_config

SPECS = {"local": EXAMPLE / "runform.yaml", "vast": EXAMPLE / "runform.vast.yaml"}
PIPELINE = [
    "check_splits",
    "precompute",
    "operator",
    "diff_residual",
    "consistency_distill",
    "steady_prior",
    "fno",
    "eval",
]
TRAINING = ["operator", "diff_residual", "consistency_distill", "steady_prior", "fno"]


def _spec(kind: str) -> dict:
    return yaml.safe_load(SPECS[kind].read_text(encoding="utf-8"))


def _local_imports(module: str) -> set[str]:
    """burgers1d modules imported (transitively) by ``module``, the package __init__ included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((EXAMPLE / "burgers1d" / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    return seen | {"__init__"}


def _command(stage: dict) -> tuple[str, str]:
    argv = shlex.split(stage["run"])
    # the local spec runs `python` (the agent's, which is the venv runform runs from); the Vast
    # spec the image's interpreter, ${var.python}
    assert argv[0] in ("python", "${var.python}") and argv[1] == "-m", argv
    assert argv[2].startswith("burgers1d.")
    return argv[2].split(".", 1)[1], argv[argv.index("--config") + 1]


def _expected_deps(stage: dict) -> set[str]:
    module, config = _command(stage)
    files = {f"burgers1d/{m}.py" for m in _local_imports(module)}
    sources = load_config(EXAMPLE / config)["_sources"]
    files |= {Path(s).resolve().relative_to(EXAMPLE.resolve()).as_posix() for s in sources}
    return files


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_deps_are_exactly_the_imported_modules_and_config_chain(kind: str) -> None:
    for name, stage in _spec(kind)["stages"].items():
        if name == "setup":
            continue  # pip install + envcheck: checked by test_vast_setup_stage_*
        deps = set(stage["deps"])
        assert all((EXAMPLE / d).is_file() for d in deps), name
        assert deps == _expected_deps(stage), name


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_operator_config_change_reruns_only_operator_and_dependents(kind: str) -> None:
    stages = _spec(kind)["stages"]
    op_config = _command(stages["operator"])[1]
    touched = {n for n, s in stages.items() if op_config in s["deps"]}
    assert touched == {"operator"}

    def upstream(name: str) -> set[str]:
        out: set[str] = set()
        for need in stages[name].get("needs", []):
            if need.startswith("stage."):
                out |= {need[6:]} | upstream(need[6:])
        return out

    rerun = {n for n in stages if n == "operator" or "operator" in upstream(n)}
    assert rerun == {"operator", "diff_residual", "consistency_distill", "eval"}
    for name in ("check_splits", "precompute", "steady_prior", "fno") + (
        ("simulate",) if kind == "local" else ()
    ):
        assert name not in rerun


def test_local_and_vast_specs_run_the_same_pipeline() -> None:
    local, vast = _spec("local"), _spec("vast")
    assert list(local["stages"]) == ["simulate", *PIPELINE]
    assert list(vast["stages"]) == ["setup", *PIPELINE]
    for name in PIPELINE:
        assert _command(local["stages"][name])[0] == _command(vast["stages"][name])[0]
    assert local["compute"] == {"provider": "local"} and local["tracker"] == {"kind": "jsonl"}
    assert local["stages"]["check_splits"]["needs"] == ["stage.simulate"]
    assert vast["compute"]["provider"] == "vast" and vast["compute"]["gpus"] == ["RTX 4090", "H200"]
    assert vast["tracker"]["kind"] == "wandb" and vast["tracker"]["project"]
    (dataset,) = vast["datasets"].values()
    assert dataset["source"].startswith("b2://")
    assert vast["stages"]["check_splits"]["needs"] == ["dataset.burgers1d", "stage.setup"]
    for name in TRAINING:
        assert vast["stages"][name]["launcher"] == "torchrun"
    for spec in (local, vast):
        assert spec["stages"]["eval"]["metrics"] == "reports/eval.json"
        for name, stage in spec["stages"].items():
            assert stage["metrics"].startswith("reports/") and stage["outputs"], name


def test_vast_links_put_the_file_where_the_gpu_config_reads_it() -> None:
    vast = _spec("vast")
    (dataset,) = vast["datasets"].values()
    cfg = load_config(EXAMPLE / "configs/pdebench/base.yaml")
    wanted = {f"{cfg['data']['root']}/{s['path']}" for s in cfg["data"]["splits"].values()}
    assert wanted <= set(dataset["links"])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_specs_validate_against_runform_schema(kind: str) -> None:
    load = pytest.importorskip("runform.spec.load")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(_spec(kind), load.schema())
    text = SPECS[kind].read_text(encoding="utf-8")
    declared = set(_spec(kind).get("variables", {}))
    assert set(re.findall(r"\$\{var\.([A-Za-z_]+)\}", text)) <= declared


def test_vast_setup_stage_installs_the_pinned_requirements_before_everything() -> None:
    stages = _spec("vast")["stages"]
    setup = stages["setup"]
    assert "pip install" in setup["run"] and "-r requirements.txt" in setup["run"]
    # one interpreter for the install and every stage, and no install where the pins are there
    assert setup["run"].startswith(
        "${var.python} -m burgers1d.envcheck --pins requirements.txt || "
    )
    assert "${var.python} -m pip install" in setup["run"]
    assert all(s["run"].startswith("${var.python} -m ") for s in stages.values())
    assert _spec("vast")["variables"]["python"]["default"] == "/opt/conda/bin/python"
    assert "requirements.txt" in setup["deps"]  # a changed pin re-runs setup (and dependents)
    lines = [
        ln.strip()
        for ln in (EXAMPLE / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", ln) for ln in lines)
    assert {ln.split("==")[0].lower() for ln in lines} >= {"h5py", "pyyaml", "matplotlib"}
    for name, stage in stages.items():
        if name != "setup":
            assert "stage.setup" in stage["needs"], name


def test_pdebench_preset_follows_pdebench() -> None:
    cfg = load_config(EXAMPLE / "configs/pdebench/eval.yaml")
    data = cfg["data"]
    splits = data["splits"]
    assert {s["path"] for s in splits.values()} == {"1D_Burgers_Sols_Nu0.001.hdf5"}
    assert (splits["test"]["start"], splits["test"]["stop"]) == (0, 1000)
    assert min(splits["train"]["start"], splits["val"]["start"]) >= 1000
    assert (data["t_stride"], data["x_stride"], data["given_frames"]) == (5, 4, 10)
    assert data["nu_convention"] == "pdebench"
    fno = load_config(EXAMPLE / "configs/pdebench/fno.yaml")["fno"]["model"]
    assert (fno["modes"], fno["width"]) == (12, 20)
    enc = load_config(EXAMPLE / "configs/pdebench/encoder.yaml")["encoder"]["model"]
    cells = 1024 // data["x_stride"]
    assert enc["dim"] * cells // 2 ** enc["levels"] < cells  # the latent compresses


def test_envcheck_pins_says_which_pin_is_missing(tmp_path: Path) -> None:
    """setup skips pip only when every pinned version is installed (stdlib check)."""
    import importlib.metadata

    from burgers1d.envcheck import main, missing_pins

    have = importlib.metadata.version("PyYAML")
    ok = tmp_path / "ok.txt"
    ok.write_text(f"# pinned\nPyYAML=={have}\n", encoding="utf-8")
    assert missing_pins(ok) == [] and main(["--pins", str(ok)]) == 0
    bad = tmp_path / "bad.txt"
    bad.write_text(f"PyYAML=={have}.999\nno-such-package-xyz==1.0\n", encoding="utf-8")
    missing = missing_pins(bad)
    assert missing == [
        f"PyYAML=={have}.999 (installed: {have})",
        "no-such-package-xyz==1.0 (installed: none)",
    ]
    assert main(["--pins", str(bad)]) == 1
