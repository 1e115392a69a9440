"""``docs/plugins.md``'s protocol blocks say what ``runform.interfaces`` declares: each
``class X(Protocol):`` block has exactly the real protocol's attributes and method signatures."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _members(cls: ast.ClassDef) -> dict[str, str]:
    out = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            ret = ast.unparse(node.returns) if node.returns else ""
            out[node.name] = f"({ast.unparse(node.args)}) -> {ret}"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = ast.unparse(node.annotation)
    return out


def _classes(source: str) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)}


def test_protocol_blocks_match_the_real_signatures():
    real = _classes((ROOT / "sdk" / "interfaces.py").read_text())
    blocks = re.findall(r"```python\n(class \w+\(Protocol\):.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.S)
    documented = {name: cls for b in blocks for name, cls in _classes(b).items()}
    assert {"Provider", "StorageBackend", "Tracker", "StateBackend"} <= set(documented)
    for name, cls in documented.items():
        assert _members(cls) == _members(real[name]), f"docs/plugins.md's {name} differs from runform.interfaces"
