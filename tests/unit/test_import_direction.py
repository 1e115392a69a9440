"""Imports point one way: the core (``sdk/``) never imports a plugin folder, a plugin package
never imports another plugin package (what two share lives in the core), and nothing imports
another package's underscore module or name. The plugin manager loads the built-ins through entry
points, and ``runform.testing`` (the pytest plugin) drives them against the stand-ins.
An ``importlib.import_module("runform...")`` with a literal name counts as an import."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"sdk": "runform", "providers": "runform.providers", "storage_backends": "runform.storage_backends",
            "trackers": "runform.trackers"}
PLUGINS = tuple(f"runform.{p}" for p in ("providers", "storage_backends", "trackers"))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.args[0].value


def _plugin(module: str) -> str | None:
    """The plugin package ``module`` belongs to: ``runform.providers.<name>`` (each provider is
    its own plugin), ``runform.storage_backends``, ``runform.trackers``; None for the core."""
    parts = module.split(".")
    if parts[:2] == ["runform", "providers"] and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2]) if module.startswith(PLUGINS) else None


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parent.parts
    return ".".join([PACKAGES[rel[0]], *rel[1:]]) if rel[0] in PACKAGES else ".".join(rel)


def _owner(parts: list[str]) -> str:
    """The package that owns ``parts[-1]``'s underscore name: the module's package, or the package."""
    top = next((d for d, pkg in PACKAGES.items() if pkg == ".".join(parts[:2])), "sdk")
    rest = parts[2:] if top != "sdk" else parts[1:]
    is_module = (ROOT / top).joinpath(*rest).with_suffix(".py").is_file() if rest else False
    return ".".join(parts[:-1] if is_module else parts)


def test_imports_point_one_way():
    wrong = []
    for path in sorted(p for d in (*PACKAGES, "tests", "examples", "bench") for p in (ROOT / d).rglob("*.py")):
        if ".venv" in path.parts:
            continue
        here, core = _package(path), path.relative_to(ROOT).parts[0] == "sdk" and "testing" not in path.parts
        plugin = _plugin(here + "." + path.stem) if path.relative_to(ROOT).parts[0] in PACKAGES else None
        for mod in _imports(path):
            parts = mod.split(".")
            private = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
            if private is not None and mod.startswith("runform") and not (here + ".").startswith(_owner(parts[:private]) + "."):
                wrong.append(f"{path.relative_to(ROOT)}: {mod} (another package's underscore name)")
            if core and mod.startswith(PLUGINS):
                wrong.append(f"{path.relative_to(ROOT)}: {mod} (the core imports a plugin)")
            if plugin and _plugin(mod) not in (None, plugin):
                wrong.append(f"{path.relative_to(ROOT)}: {mod} (a plugin imports another plugin)")
    assert not wrong, "\n".join(wrong)


def test_what_moved_into_the_core_keeps_its_old_import_path() -> None:
    """Third parties may import the SSH transport from the ssh provider: those names re-export
    the core's ``runform.transport.ssh`` (the same objects)."""
    import runform.providers.ssh.hostkeys as old_keys
    import runform.providers.ssh.transport as old
    import runform.transport.ssh as core
    from runform.transport.ssh import hostkeys

    for name in old.__all__:
        assert getattr(old, name) is getattr(core, name), name
    for name in old_keys.__all__:
        assert getattr(old_keys, name) is getattr(hostkeys, name), name
