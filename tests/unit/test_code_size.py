"""Small units: no module over 450 lines and no function over 60 in the core (the stand-ins of
``runform.testing`` included) and the built-in plugins; tests are not held to it. A data table
(a literal list or dict of rows) may be exempt by name in ``DATA_TABLES``, with why."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE, MAX_FUNCTION = 450, 60
# Modules or functions exempt as data tables: "path" or "path:function" -> what the table is.
DATA_TABLES: dict[str, str] = {}


def offenders() -> list[str]:
    out = []
    for folder in ("sdk", "providers", "storage_backends", "trackers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            if text.count("\n") > MAX_MODULE and rel not in DATA_TABLES:
                out.append(f"{rel}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION and f"{rel}:{node.name}" not in DATA_TABLES:
                        out.append(f"{rel}:{node.lineno} {node.name}() {length} lines")
    return out


def test_modules_and_functions_are_small():
    assert not offenders(), "\n".join(offenders())


if __name__ == "__main__":
    print("\n".join(offenders()) or "none")
