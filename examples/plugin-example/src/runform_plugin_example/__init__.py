"""runform-plugin-example: a third-party runform plugin.

runform finds this module through the ``runform`` entry point group (see ``pyproject.toml``)
and registers it with pluggy under the entry point's name, ``example``. It implements two hooks:

- ``runform_register_trackers``: the ``printer`` tracker (``tracker: {kind: printer, path: ...}``).
- ``runform_check_plan``: rejects a plan whose estimated cost exceeds ``RUNFORM_EXAMPLE_MAX_COST``.

This module imports nothing but ``runform.hookspecs`` (pluggy) and the standard library: every
runform command loads it, so the tracker itself is imported only when a spec asks for it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from runform.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from runform_plugin_example.printer import PrinterTracker

__version__ = "0.2.0"

#: The budget, in USD, above which ``runform_check_plan`` rejects a plan. Unset: no limit.
MAX_COST_ENV = "RUNFORM_EXAMPLE_MAX_COST"


def printer_factory(config: Mapping[str, Any], ctx: Any) -> PrinterTracker:
    """The ``printer`` tracker's factory, called by runform as ``factory(config, ctx)``."""
    from runform_plugin_example.printer import PrinterTracker

    return PrinterTracker(config, ctx)


@hookimpl
def runform_register_trackers(register: Callable[..., None]) -> None:
    register("printer", printer_factory)


@hookimpl
def runform_check_plan(plan: Any) -> str | None:
    """Reject the plan when its estimated total cost is above ``$RUNFORM_EXAMPLE_MAX_COST``.

    Plans without an estimate (the local and ssh providers have no price) pass.
    """
    return max_cost_reason(plan, os.environ)


def max_cost_reason(plan: Any, env: Mapping[str, str]) -> str | None:
    """Why ``plan`` breaks the budget in ``env`` (None: it does not, or there is no budget)."""
    raw = (env.get(MAX_COST_ENV) or "").strip()
    if not raw:
        return None
    try:
        limit = float(raw)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit):
        # Fail closed: a budget that cannot be read must not silently allow everything.
        return f"{MAX_COST_ENV}={raw!r} is not a number of US dollars"
    total = (getattr(plan, "cost", None) or {}).get("total")
    if total is None:
        return None
    if float(total) > limit:
        return f"estimated cost ${float(total):.2f} exceeds {MAX_COST_ENV}=${limit:.2f}"
    return None
