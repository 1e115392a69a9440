"""``runform apply`` / ``destroy``: plan, show, approve, execute, summarise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from runform.cli.common import load_spec_opts, parse_lock_timeout

if TYPE_CHECKING:
    from runform.planning.model import Plan


def run_apply(spec_or_plan: str, var: tuple[str, ...], target: tuple[str, ...], replace: tuple[str, ...],
              refresh: bool, lock_timeout: str, auto_approve: bool, parallelism: int,
              spec_for_plan: str | None, accept_host_key: tuple[str, ...], *, destroy: bool,
              verify_data: bool = False, as_json: bool = False, quiet: bool = False,
              rename_run: bool = False) -> None:
    import runform.api as api

    plan_file = None
    spec_path = spec_or_plan
    if not destroy and _is_plan_file(spec_or_plan):
        from runform.planning.planfile import load_plan

        plan_file = spec_or_plan
        saved = load_plan(Path(plan_file))
        spec_path = spec_for_plan or saved.spec_path
        var = tuple(f"{k}={v}" for k, v in saved.variables.items()) if not var else var
    if as_json and not auto_approve and not plan_file:
        from runform.errors import RunformError

        raise RunformError("--json cannot ask for approval", hint="add --auto-approve, or apply a saved plan")
    spec = load_spec_opts(spec_path, var)
    if plan_file is not None:
        from runform.planning.planfile import check_origin

        check_origin(saved, spec.run, spec.path, Path(plan_file), explicit_spec=spec_for_plan is not None)
    if as_json:
        emit = _json_line
    else:
        from runform.cli.progress_view import event_printer

        emit = event_printer()

    show, confirm = _shower(as_json, plan_file), _confirmer(auto_approve, destroy)
    result = api.apply(spec, plan_file=plan_file, rename_run=rename_run, refresh=refresh, targets=target, replace=replace,
                       destroy=destroy, confirm=confirm, lock_timeout=parse_lock_timeout(lock_timeout),
                       parallelism=parallelism, out=None, on_plan=show,
                       accept_host_keys=accept_host_key, verify_data=verify_data, on_event=emit,
                       stream_logs=not quiet)
    if result is None:
        click.echo("Apply cancelled." if not destroy else "Destroy cancelled.")
        sys.exit(1)
    if as_json:
        sys.exit(0 if result.ok else 1)
    if not result.outcomes:
        return
    click.echo("")
    for o in result.failed:  # the only place the error is printed (the progress line says "Failed")
        where = "" if (o.error or "").startswith(o.address) else f"{o.address}: "
        click.echo(f"Error: {where}{o.error}", err=True)
    for o in result.skipped:
        click.echo(f"Skipped: {o.address} ({o.error or 'a dependency did not complete'})", err=True)
    if result.teardown_failed:
        click.echo(f"Error: instance.main: {result.teardown}", err=True)
    elif result.teardown:
        click.echo(result.teardown)
    click.echo(result.line(destroy))
    if result.spent is not None:
        click.echo(result.spent_line())
    if not result.ok:
        sys.exit(1)



def _shower(as_json: bool, plan_file: str | None) -> Callable[[Plan], None]:
    """How the plan is shown before approval: a JSON line, or the rendered plan."""
    from runform.planning.render import render_plan

    def show(plan: Plan) -> None:
        if as_json:
            s = plan.summary()
            _json_line({"type": "planned", "@message": s.line() if plan.has_changes else "No changes.",
                        "@timestamp": _now(), "plan": plan.to_json()})
        elif plan.has_changes or not plan_file:
            click.echo(render_plan(plan, saved=True))

    return show


def _confirmer(auto_approve: bool, destroy: bool) -> Callable[[Plan], bool]:
    """Terraform's approval: only ``yes`` approves (read from stdin when it is not a terminal)."""

    def confirm(plan: Plan) -> bool:
        if auto_approve:
            return True
        question = ("Do you really want to destroy all resources?" if destroy
                    else "Do you want to perform these actions?")
        click.echo(f"\n{question}\n  runform will perform the actions described above.\n"
                   "  Only 'yes' will be accepted to approve.\n")
        if not sys.stdin or not sys.stdin.isatty():
            answer = sys.stdin.readline().strip() if sys.stdin else ""
        else:
            answer = click.prompt("  Enter a value", default="", show_default=False)
        return answer == "yes"

    return confirm

def _is_plan_file(path: str) -> bool:
    """A positional argument that is not a YAML spec (nor a folder holding one) is a saved plan."""
    p = Path(path)
    return not p.is_dir() and p.suffix not in (".yaml", ".yml")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json_line(event: dict) -> None:
    """One event, one line of JSON on stdout (``terraform apply -json``); see docs/events.md."""
    import json

    click.echo(json.dumps(event, default=str, separators=(",", ":")))
