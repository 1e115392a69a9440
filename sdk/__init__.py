"""runform: declarative, journaled GPU training pipelines.

The public API is small and lazy: importing ``runform`` imports nothing heavy,
so the agent on a bare machine and ``runform --help`` start fast.

    import runform
    spec = runform.load("runform.yaml")
    plan = runform.plan(spec)
    result = runform.apply(spec)            # plans again under the lock, then converges
    runform.destroy(spec)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runform.version import __version__

_EXPORTS = {
    "load": "runform.api",
    "plan": "runform.api",
    "apply": "runform.api",
    "destroy": "runform.api",
    "show": "runform.api",
    "Workspace": "runform.workspace",
    "Spec": "runform.spec.model",
    "Plan": "runform.planning.model",
    "Action": "runform.planning.model",
    "ApplyResult": "runform.execution.executor",
    "RunformError": "runform.errors",
    "SpecError": "runform.errors",
    "hookimpl": "runform.hookspecs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runform' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover - names for type checkers and IDEs (the exports above are lazy)
    from runform.api import apply, destroy, load, plan, show
    from runform.errors import RunformError, SpecError
    from runform.execution.executor import ApplyResult
    from runform.hookspecs import hookimpl
    from runform.planning.model import Action, Plan
    from runform.spec.model import Spec
    from runform.workspace import Workspace
