"""Plugins: a third-party package installed for real, a broken one, inline plugins, hook docs.

1. ``examples/plugin-example`` is pip-installed into a fresh venv (its own build tools; the
   runform under test is seen through a ``.pth`` file, untouched) and shows up in
   ``runform plugins``; a spec using its ``printer`` tracker validates and applies there.
2. ``examples/broken-plugin`` (its module raises ImportError) is reported as BROKEN by name while
   everything else keeps working.
3. In-process: inline plugins registered on a private or the process-wide manager (and always
   unregistered), duplicate names, misspelled hooks, unknown names, and the example's policy hook
   rejecting a plan through ``runform.api.apply``.
4. Every hook in ``runform.hookspecs`` is documented in docs/plugins.md with its exact signature.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import types
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy
import pytest
import runform
from runform import api, hookspecs
from runform.errors import PluginError, PolicyError, RunformError, SpecError
from runform.interfaces import Manifest, ManifestEntry, Tracker
from runform.plugins import PluginManager, get_plugin_manager
from runform.providers.local import LocalProvider
from runform.redact import Redactor

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin-example"
BROKEN = ROOT / "examples" / "broken-plugin"
HELLO = ROOT / "examples" / "hello"
DOCS = ROOT / "docs" / "plugins.md"
BUILD_TOOLS = ("setuptools>=70.1", "wheel")  # the examples build with setuptools (>= 69)
UNDER_TEST_PTH = "runform-under-test.pth"
ADDED = "added-by-plugin-install.txt"  # in the venv folder: what installing the packages added
IGNORE = shutil.ignore_patterns(
    ".runform", "out", "build", "dist", "*.egg-info", "__pycache__", "*.pyc"
)


def _version_of(project: Path) -> str:
    m = re.search(
        r'^version\s*=\s*"([^"]+)"', (project / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert m, f"no version in {project}/pyproject.toml"
    return m.group(1)


def _copy(src: Path, dest: Path) -> Path:
    """A copy without state or build leftovers (pip builds in-tree; the tree is shared)."""
    shutil.copytree(src, dest, ignore=IGNORE)
    return dest


# --------------------------------------------------------------------------- venv helpers


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RUNFORM_BLOCK_PLUGINS", "RUNFORM_EXAMPLE_MAX_COST", "PYTHONHOME")
    }
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        check=False,
        cwd=cwd,
        env=dict(env or _clean_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _pip(python: Path, *args: str | Path) -> None:
    # This interpreter's pip, aimed at the venv (`pip --python`): the venvs have no pip.
    p = _run([sys.executable, "-m", "pip", "--python", python, *args])
    assert p.returncode == 0, f"pip {args} failed:\n{p.stdout}\n{p.stderr}"


def _make_venv(where: Path, *packages: Path) -> Path:
    """A venv under ``where`` with its own build tools, seeing the runform under test (and its
    dependencies) where they are installed, with ``packages`` installed into it.

    Nothing of the host interpreter leaks in: no ``--system-site-packages`` (the base python's
    own setuptools may be too old to build a wheel). The build tools come from the package index
    pip is configured with, into the venv itself; then a ``.pth`` file adds this environment's
    site folders *after* the venv's, so runform stays the one under test, untouched.
    """
    venv = where / "venv"
    p = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert p.returncode == 0, p.stderr
    python = venv / "bin" / "python"
    _pip(python, "install", "--quiet", *BUILD_TOOLS)
    site = _site_packages(python)
    under_test = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    (site / UNDER_TEST_PTH).write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in under_test) + "\n"
    )
    copies = [_copy(pkg, where / "src" / pkg.name) for pkg in packages]
    if copies:
        # no index: the packages are local folders, runform is already there, the tools too
        before = set(os.listdir(site))
        _pip(python, "install", "--no-index", "--no-build-isolation", "--quiet", *copies)
        (venv / ADDED).write_text("\n".join(sorted(set(os.listdir(site)) - before)) + "\n")
    return python


def _cli(
    python: Path, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return _run([python, "-m", "runform.cli.main", *args], cwd=cwd, env=env)


def _plugins_table(out: str) -> dict[str, str]:
    """``runform plugins`` output as {plugin name: rest of its line}."""
    rows = {}
    for line in out.splitlines():
        if line.strip():
            name, _, rest = line.strip().partition(" ")
            rows[name] = rest.strip()
    return rows


def _site_packages(python: Path) -> Path:
    p = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip())


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_venv(tmp_path_factory.mktemp("example-venv"), EXAMPLE)


@pytest.fixture(scope="module")
def broken_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_venv(tmp_path_factory.mktemp("broken-venv"), EXAMPLE, BROKEN)


PRINTER_SPEC = """\
run: printer-demo
compute: {provider: local}
code:
  path: .
  exclude: [events.jsonl]     # written during apply: not part of the synced code
stages:
  train:
    run: "echo '{\\"loss\\": 0.25}' > metrics.json"
    deps: []
    metrics: metrics.json
tracker: {kind: printer, path: events.jsonl}
"""


# --------------------------------------------------------------------------- 1. installed plugin


def test_installed_plugin_is_listed_with_version_and_tracker(example_venv: Path) -> None:
    p = _cli(example_venv, "plugins")
    assert p.returncode == 0, p.stderr
    rows = _plugins_table(p.stdout)
    assert "example" in rows, p.stdout
    line = rows["example"]
    assert re.match(rf"runform[-_]plugin[-_]example {re.escape(_version_of(EXAMPLE))}\b", line), (
        line
    )
    assert "tracker:printer" in line
    assert "BROKEN" not in p.stdout
    # the built-ins are still there, from the runform under test
    assert (
        rows["local"].startswith(f"runform {runform.__version__}")
        and "provider:local" in rows["local"]
    )
    assert "tracker:jsonl" in rows["jsonl"]


def test_installing_the_plugin_leaves_runform_alone(example_venv: Path) -> None:
    p = _run([example_venv, "-c", "import runform; print(runform.__file__)"])
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()) == Path(runform.__file__)  # the checkout under test, not a copy
    # pip added the plugin and nothing else (no second runform: its dependency was satisfied)
    added = (example_venv.parent.parent / ADDED).read_text().split()
    assert added == [
        "runform_plugin_example",
        f"runform_plugin_example-{_version_of(EXAMPLE)}.dist-info",
    ], added
    # the venv's own build tools built it, and the host interpreter's packages stay out
    code = "import json, setuptools, sys; print(json.dumps([setuptools.__file__, sys.path]))"
    p = _run([example_venv, "-c", code])
    assert p.returncode == 0, p.stderr
    tools, path = json.loads(p.stdout)
    assert tools.startswith(str(_site_packages(example_venv))), tools
    if sys.prefix != sys.base_prefix:  # the tests run in a venv: the base python's site is not ours
        host = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
        assert host["purelib"] not in path and host["platlib"] not in path, path


def test_spec_with_the_plugin_tracker_validates_and_applies(
    example_venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "runform.yaml").write_text(PRINTER_SPEC)
    p = _cli(example_venv, "validate", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success!" in p.stdout

    # Without the plugin (this interpreter has it not installed) the same spec names the tracker.
    bare = _run([sys.executable, "-m", "runform.cli.main", "validate"], cwd=tmp_path)
    if "printer" not in {n for n in get_plugin_manager().names("trackers")}:
        assert bare.returncode == 1
        assert "tracker.kind: tracker 'printer' is not installed" in bare.stderr

    p = _cli(example_venv, "apply", "--auto-approve", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    types_ = [e["type"] for e in events]
    assert types_[0] == "start" and types_[-1] == "finish", types_
    assert {"plan", "apply_start", "action_started", "action_finished", "apply_finished"} <= set(
        types_
    )
    metrics = [e for e in events if e["type"] == "metrics"]
    assert metrics and metrics[-1]["stage"] == "train" and metrics[-1]["metrics"] == {"loss": 0.25}
    assert events[0]["run_id"] == events[-1]["run_id"]

    # runform's testing rule: after an apply, a plan must be empty.
    p = _cli(example_venv, "plan", "--detailed-exitcode", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


# --------------------------------------------------------------------------- 2. broken plugin


def test_broken_plugin_is_reported_and_the_others_work(broken_venv: Path, tmp_path: Path) -> None:
    p = _cli(broken_venv, "plugins")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = _plugins_table(p.stdout)
    assert "broken" in rows, p.stdout
    assert "BROKEN" in rows["broken"] and "ImportError" in rows["broken"], rows["broken"]
    assert "deliberately broken" in rows["broken"]  # the plugin's own message, for the user
    assert "tracker:printer" in rows["example"] and "BROKEN" not in rows["example"]
    assert "provider:local" in rows["local"] and "BROKEN" not in rows["local"]
    assert sum("BROKEN" in r for r in rows.values()) == 1

    hello = _copy(HELLO, tmp_path / "hello")
    p = _cli(broken_venv, "validate", cwd=hello)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success!" in p.stdout

    (tmp_path / "printer").mkdir()
    (tmp_path / "printer" / "runform.yaml").write_text(PRINTER_SPEC)
    p = _cli(broken_venv, "validate", cwd=tmp_path / "printer")
    assert p.returncode == 0, p.stdout + p.stderr

    # a blocked plugin is not loaded at all
    p = _cli(broken_venv, "plugins", env=_clean_env(RUNFORM_BLOCK_PLUGINS="broken"))
    assert p.returncode == 0, p.stderr
    assert "broken" not in _plugins_table(p.stdout) and "BROKEN" not in p.stdout


# --------------------------------------------------------------------------- 3. in-process


class InlineTracker:
    def __init__(self, config: Mapping[str, Any], ctx: Any) -> None:
        self.config, self.ctx = config, ctx


class InlinePlugin:
    @runform.hookimpl
    def runform_register_trackers(self, register: Any) -> None:
        register("inline", InlineTracker)

    @runform.hookimpl
    def runform_register_providers(self, register: Any) -> None:
        register("inline-local", LocalProvider)


@pytest.fixture
def pm() -> PluginManager:
    """A private manager: no entry points, nothing that happens to be installed."""
    return PluginManager(load_entry_points=False)


@pytest.fixture
def example_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """``runform_plugin_example`` imported from the source tree (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    import runform_plugin_example

    yield runform_plugin_example
    for name in [m for m in sys.modules if m.split(".")[0] == "runform_plugin_example"]:
        del sys.modules[name]


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[PluginManager]:
    """Register on the process-wide manager for the length of a block, always unregistered."""
    manager = get_plugin_manager()
    manager.register(plugin, name=name)
    try:
        yield manager
    finally:
        manager.unregister(name)


def test_inline_plugin_registers_its_factories(pm: PluginManager) -> None:
    pm.register(InlinePlugin(), name="inline-plugin")
    reg = pm.get("trackers", "inline")
    assert reg.factory is InlineTracker and reg.plugin == "inline-plugin"
    assert pm.names("providers") == ["inline-local"]
    assert pm.names("storage_backends") == [] and pm.names("state_backends") == []
    pm.unregister("inline-plugin")
    assert pm.names("trackers") == []


def test_example_module_registers_printer(
    pm: PluginManager, example_module: types.ModuleType
) -> None:
    pm.register(example_module, name="example")
    reg = pm.get("trackers", "printer")
    assert reg.plugin == "example"
    assert "runform_plugin_example.printer" not in sys.modules  # lazy: imported on first use


def test_duplicate_name_names_both_plugins(
    pm: PluginManager, example_module: types.ModuleType
) -> None:
    class Impostor:
        @runform.hookimpl
        def runform_register_trackers(self, register: Any) -> None:
            register("printer", InlineTracker)

    pm.register(example_module, name="example")
    pm.register(Impostor(), name="impostor")
    with pytest.raises(PluginError) as exc:
        pm.registries()
    msg = str(exc.value)
    assert "tracker 'printer'" in msg and "'example'" in msg and "'impostor'" in msg, msg
    assert "RUNFORM_BLOCK_PLUGINS" in msg  # the fix


def test_same_plugin_name_twice_is_refused(pm: PluginManager) -> None:
    pm.register(InlinePlugin(), name="inline-plugin")
    with pytest.raises(ValueError, match="inline-plugin"):
        pm.register(InlinePlugin(), name="inline-plugin")


class Misspelled:
    @runform.hookimpl
    def runform_register_tracker(self, register: Any) -> None:  # missing the final "s"
        register("never", InlineTracker)


def test_misspelled_hook_fails_loudly(pm: PluginManager) -> None:
    with pytest.raises(pluggy.PluginValidationError, match="runform_register_tracker"):
        pm.register(Misspelled(), name="misspelled")


def test_rejected_plugin_does_not_poison_the_manager(pm: PluginManager) -> None:
    with pytest.raises(pluggy.PluginValidationError):
        pm.register(Misspelled(), name="misspelled")
    pm.register(InlinePlugin(), name="inline-plugin")
    assert pm.names("trackers") == ["inline"]


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, **modules: types.ModuleType | None) -> None:
    """Make the ``runform`` entry point group hold exactly ``modules`` (None: not importable)."""
    eps = []
    for name, module in modules.items():
        mod_name = f"runform_test_ep_{name}"
        if module is not None:
            monkeypatch.setitem(sys.modules, mod_name, module)
        eps.append(metadata.EntryPoint(name=name, value=mod_name, group=hookspecs.PROJECT))

    def entry_points(**kwargs: Any) -> list[metadata.EntryPoint]:
        return eps if kwargs.get("group") == hookspecs.PROJECT else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def _module_of(plugin_cls: type) -> types.ModuleType:
    mod = types.ModuleType("fake")
    inst = plugin_cls()
    for name in dir(plugin_cls):
        if name.startswith("runform_"):
            setattr(mod, name, getattr(inst, name))
    return mod


def test_unimportable_entry_point_is_broken_the_rest_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, good=_module_of(InlinePlugin), gone=None)
    manager = PluginManager()
    assert manager.names("trackers") == ["inline"]
    infos = {i.name: i for i in manager.plugin_infos()}
    assert infos["good"].error is None and infos["good"].registered == (
        "provider:inline-local",
        "tracker:inline",
    )
    assert infos["gone"].error and "ModuleNotFoundError" in infos["gone"].error


def test_installed_plugin_with_misspelled_hook_is_broken_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_entry_points(monkeypatch, good=_module_of(InlinePlugin), typo=_module_of(Misspelled))
    manager = PluginManager()
    assert manager.names("trackers") == ["inline"]
    infos = {i.name: i for i in manager.plugin_infos()}
    assert infos["typo"].error and "runform_register_tracker" in infos["typo"].error


def test_unknown_provider_lists_the_installed_ones(pm: PluginManager, tmp_path: Path) -> None:
    pm.register(InlinePlugin(), name="inline-plugin")
    with pytest.raises(PluginError) as exc:
        pm.get("providers", "lambda", field="compute.provider")
    assert str(exc.value).startswith(
        "compute.provider: provider 'lambda' is not installed (installed: inline-local)"
    )

    # the same through spec loading, with the process-wide manager (built-ins)
    (tmp_path / "runform.yaml").write_text(
        'run: x\ncompute: {provider: lambda}\nstages: {a: {run: "true", deps: []}}\ntracker: {kind: none}\n'
    )
    with pytest.raises(SpecError) as exc2:
        api.load(tmp_path / "runform.yaml")
    msg = str(exc2.value)
    assert "compute.provider: provider 'lambda' is not installed" in msg
    assert "installed: " in msg and "local" in msg.split("installed: ", 1)[1]


# ------------------------------------------------------------------ the printer tracker itself


def _ctx(tmp_path: Path, secrets: Mapping[str, str] | None = None) -> Any:
    from runform.interfaces import TrackerContext

    return TrackerContext(
        run="demo",
        lineage="0123-4567",
        state_dir=tmp_path / ".runform",
        spec_dir=tmp_path,
        redactor=Redactor.from_env(secrets or {}),
    )


def test_printer_tracker_protocol_and_lines(
    example_module: types.ModuleType, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, {"TOKEN": "hunter2-secret"})
    tracker = example_module.printer_factory({"kind": "printer", "path": "logs/events.jsonl"}, ctx)
    assert isinstance(tracker, Tracker)
    assert tracker.path == tmp_path / "logs" / "events.jsonl"  # relative to the spec's folder

    env = tracker.start(run_id=ctx.run_id, name="demo", config={"stages": ["a"]})
    assert env["RUNFORM_RUN_ID"] == ctx.run_id and env["RUNFORM_PRINTER_PATH"] == str(tracker.path)
    tracker.log_metrics({"loss": 1, "acc": "0.5"}, stage="train", step=3)
    tracker.log_event({"type": "note", "text": "token hunter2-secret leaked?", "ts": 1})
    tracker.log_event({"what": "untyped"})
    tracker.link_artifact(
        "ckpt",
        "file:///x",
        Manifest(
            "file:///x", (ManifestEntry("a", 3, "sha256:0"), ManifestEntry("b", 4, "sha256:1"))
        ),
    )
    tracker.finish()

    raw = tracker.path.read_text()
    assert "hunter2-secret" not in raw and "***" in raw
    events = tracker.events()
    assert [e["type"] for e in events] == [
        "start",
        "metrics",
        "note",
        "event",
        "artifact",
        "finish",
    ]
    assert all(isinstance(e["ts"], float) and e["ts"] > 1 for e in events)
    assert events[1] == {
        **events[1],
        "stage": "train",
        "step": 3,
        "metrics": {"loss": 1, "acc": 0.5},
    }
    assert events[4]["files"] == 2 and events[4]["bytes"] == 7
    assert events[5]["run_id"] == ctx.run_id


def test_printer_defaults_and_any_context(example_module: types.ModuleType, tmp_path: Path) -> None:
    ctx = types.SimpleNamespace(
        run="r", lineage="l", state_dir=tmp_path / "st", spec_dir=tmp_path, redactor=lambda v: v
    )
    tracker = example_module.printer_factory({"kind": "printer"}, ctx)
    assert tracker.path == tmp_path / "st" / "printer-events.jsonl"
    tracker.start(run_id="r-1", name="r", config={})
    assert tracker.events()[0]["run_id"] == "r-1"
    absolute = tmp_path / "abs.jsonl"
    assert example_module.printer_factory({"path": str(absolute)}, ctx).path == absolute
    with pytest.raises(RunformError, match="tracker.path"):
        example_module.printer_factory({"path": 3}, ctx)


def test_max_cost_reason(example_module: types.ModuleType) -> None:
    reason = example_module.max_cost_reason
    var = example_module.MAX_COST_ENV
    priced = types.SimpleNamespace(cost={"total": 5.0})
    assert reason(priced, {}) is None
    assert reason(priced, {var: "10"}) is None
    assert reason(priced, {var: "4.5"}) == f"estimated cost $5.00 exceeds {var}=$4.50"
    assert reason(types.SimpleNamespace(cost={}), {var: "1"}) is None  # no estimate: local, ssh
    assert var in reason(priced, {var: "lots"})  # a budget that cannot be read fails closed


# ------------------------------------------------------------------ the policy hook through apply


class PricedLocal(LocalProvider):
    """The local provider with a market of one offer, so that plans carry a cost."""

    name = "priced"

    def offers(self, compute: Mapping[str, Any], ctx: Any) -> list[dict[str, Any]]:
        return [{"id": 1, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 2.5, "chosen": True}]


class PricedPlugin:
    @runform.hookimpl
    def runform_register_providers(self, register: Any) -> None:
        register("priced", PricedLocal)


@pytest.fixture
def priced_hello(tmp_path: Path) -> Path:
    """examples/hello on the priced provider, 2h max: every plan is estimated at $5.00."""
    import yaml

    hello = _copy(HELLO, tmp_path / "hello")
    spec = hello / "runform.yaml"
    doc = yaml.safe_load(spec.read_text())
    doc["compute"] = {"provider": "priced", "max_duration": "2h", "teardown": "never"}
    doc["tracker"] = {"kind": "printer"}  # default path: .runform/printer-events.jsonl
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def test_policy_hook_rejects_plan_through_api_apply(
    example_module: types.ModuleType, priced_hello: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        registered(example_module, "example-under-test"),
        registered(PricedPlugin(), "priced-under-test"),
    ):
        spec = api.load(priced_hello)
        assert api.plan(spec).cost["total"] == 5.0

        monkeypatch.setenv(example_module.MAX_COST_ENV, "4")
        with pytest.raises(PolicyError) as exc:
            api.apply(spec)
        assert "rejected by a policy" in str(exc.value)
        assert f"estimated cost $5.00 exceeds {example_module.MAX_COST_ENV}=$4.00" in str(exc.value)
        assert api.show(spec)["resources"] == []  # nothing was touched
        assert not (spec.state_dir / "machines").exists()

        monkeypatch.setenv(example_module.MAX_COST_ENV, "6")
        result = api.apply(spec)
        assert result is not None and result.ok, result and result.line()
        assert not api.plan(spec).has_changes  # after an apply, the plan is empty

        events = [
            json.loads(x)
            for x in (spec.state_dir / "printer-events.jsonl").read_text().splitlines()
        ]
        plan_event = next(e for e in events if e["type"] == "plan")
        assert plan_event["cost"]["total"] == 5.0
        assert any(e["type"] == "metrics" and e["stage"] == "join" for e in events)
    assert "example-under-test" not in {i.name for i in get_plugin_manager().plugin_infos()}
    assert "printer" not in get_plugin_manager().names("trackers")


# --------------------------------------------------------------------------- 4. hook docs


class _Raw:
    """An annotation shown as written (hookspecs uses ``from __future__ import annotations``)."""

    def __init__(self, text: Any) -> None:
        self.text = text if isinstance(text, str) else inspect.formatannotation(text)

    def __repr__(self) -> str:
        return self.text


def _signature(fn: Any) -> str:
    sig = inspect.signature(fn)
    params = [
        p.replace(annotation=_Raw(p.annotation)) if p.annotation is not p.empty else p
        for p in sig.parameters.values()
    ]
    ret = _Raw(sig.return_annotation) if sig.return_annotation is not sig.empty else sig.empty
    return f"{fn.__name__}{sig.replace(parameters=params, return_annotation=ret)}"


def _hooks() -> dict[str, Any]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if getattr(fn, marker, None) is not None
    }


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    hooks = _hooks()
    assert len(hooks) >= 10 and all(n.startswith("runform_") for n in hooks)
    doc = DOCS.read_text(encoding="utf-8")
    missing = [_signature(fn) for fn in hooks.values() if _signature(fn) not in doc]
    assert not missing, "document these in docs/plugins.md, exactly as written:\n" + "\n".join(
        missing
    )
    assert _signature(hooks["runform_stage_metrics"]) == (
        "runform_stage_metrics(stage: str, metrics: dict[str, float], step: int | None) -> None"
    )


def test_docs_describe_no_hook_that_does_not_exist() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#+ `(runform_\w+)`", doc, re.MULTILINE))
    assert documented == set(_hooks())
