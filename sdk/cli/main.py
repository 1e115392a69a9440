"""``runform`` commands. Each parses flags, calls the SDK, and prints; nothing heavy is imported
before a command runs, so ``runform --help`` stays fast and imports none of wandb/boto3/torch/paramiko."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from runform.cli.common import (
    echo_err,
    load_spec_opts,
    parse_lock_timeout,
    spec_argument,
    state_options,
    var_option,
)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors print as ``Error: ...`` with the fix, exit 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runform.errors import RunformError

        try:
            return fn(*args, **kwargs)
        except RunformError as exc:
            echo_err(f"Error: {exc}")
            sys.exit(1)
        except KeyboardInterrupt:
            echo_err("Interrupted.")
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runform")
def cli() -> None:
    """runform: declarative GPU training pipelines. plan, apply, destroy."""


@cli.command()
@spec_argument
@var_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (docs/schemas/validate.schema.json).")
def validate(spec_path: str, var: tuple[str, ...], as_json: bool) -> None:
    """Check the spec (schema, references, files, plugins) without touching anything."""
    from runform.errors import RunformError

    try:
        from runform.spec.load import check_sources

        spec = load_spec_opts(spec_path, var)
        check_sources(spec)
    except RunformError as exc:
        if not as_json:
            echo_err(f"Error: {exc}")
            sys.exit(1)
        click.echo(json.dumps({"valid": False, "error_count": 1, "spec": spec_path,
                               "diagnostics": [{"severity": "error", "summary": str(exc).split(chr(10))[0],
                                                "detail": str(exc), "hint": getattr(exc, "hint", None)}]},
                              indent=1))
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"valid": True, "error_count": 0, "spec": str(spec.path), "run": spec.run,
                               "provider": spec.compute.provider, "stages": sorted(spec.stages),
                               "datasets": sorted(spec.datasets), "artifacts": sorted(spec.artifacts),
                               "diagnostics": []}, indent=1))
        return
    click.echo(f"Success! {spec.path} is valid: {len(spec.stages)} stage(s), "
               f"{len(spec.datasets)} dataset(s), provider {spec.compute.provider}.")


@cli.command()
@spec_argument
@var_option
@state_options
@click.option("--out", "out_file", type=click.Path(), help="Save the plan for `apply FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (see docs/plan-json.md).")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when no changes, 2 when changes, 1 on error.")
@click.option("--destroy", is_flag=True, help="Plan to destroy everything.")
@click.option("--verify-data", is_flag=True,
              help="Read every hydrated file on the machine back and compare its bytes (slow on big "
                   "datasets); files changed in place are fetched again.")
@handle_errors
def plan(spec_path: str, var: tuple[str, ...], target: tuple[str, ...], replace: tuple[str, ...],
         refresh: bool, lock_timeout: str, rename_run: bool, out_file: str | None, as_json: bool,
         detailed_exitcode: bool, destroy: bool, verify_data: bool) -> None:
    """Refresh what exists, diff it against the spec, and say what apply would do and why."""
    import runform.api as api
    from runform.planning.model import Plan
    from runform.planning.render import render_plan

    spec = load_spec_opts(spec_path, var)

    def show(p: Plan) -> None:
        # shown before the policy check, so that a rejection follows the plan it rejects
        if as_json:
            click.echo(json.dumps(p.to_json(), indent=1, default=str))
        else:
            click.echo(render_plan(p, saved=bool(out_file)))

    # a bad --out path fails before anything is planned; a rejected plan raises (exit 1, never 2)
    p = api.plan(spec, refresh=refresh, targets=target, replace=replace, destroy=destroy,
                 lock_timeout=parse_lock_timeout(lock_timeout), out=None if as_json else echo_err,
                 on_plan=show, save_to=out_file, verify_data=verify_data, rename_run=rename_run)
    if out_file and not as_json:
        click.echo(f"\nSaved the plan to: {out_file}\nTo perform exactly these actions, run:\n"
                   f"  runform apply {out_file}")
    if detailed_exitcode and p.has_changes:
        sys.exit(2)


@cli.command()
@click.argument("spec_or_plan", required=False, default="runform.yaml", metavar="[SPEC|PLANFILE]")
@var_option
@state_options
@click.option("--auto-approve", is_flag=True, help="Skip the interactive approval.")
@click.option("--parallelism", default="10", show_default=True, help="Actions run at once.")
@click.option("--spec", "spec_for_plan", default=None, help="The spec a saved plan belongs to.")
@click.option("--accept-host-key", multiple=True, metavar="HOST:PORT",
              help="Forget the pinned SSH host key of a re-installed machine.")
@click.option("--verify-data", is_flag=True,
              help="Read every hydrated file on the machine back and compare its bytes (slow on big "
                   "datasets); files changed in place are fetched again.")
@click.option("--json", "as_json", is_flag=True,
              help="Stream one JSON event per line (docs/events.md); needs --auto-approve or a saved plan.")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream the running stages' log lines.")
@handle_errors
def apply(spec_or_plan: str, var: tuple[str, ...], target: tuple[str, ...], replace: tuple[str, ...],
          refresh: bool, lock_timeout: str, rename_run: bool, auto_approve: bool, parallelism: str,
          spec_for_plan: str | None, accept_host_key: tuple[str, ...], verify_data: bool, as_json: bool,
          quiet: bool) -> None:
    """Make the machine match the spec: journaled, idempotent, safe to kill and re-run."""
    from runform.cli.applying import run_apply
    from runform.cli.common import parse_parallelism

    run_apply(spec_or_plan, var, target, replace, refresh, lock_timeout, auto_approve,
              parse_parallelism(parallelism),
              spec_for_plan, accept_host_key, destroy=False, verify_data=verify_data, as_json=as_json,
              quiet=quiet, rename_run=rename_run)


@cli.command()
@spec_argument
@var_option
@state_options
@click.option("--auto-approve", is_flag=True, help="Skip the interactive approval.")
@click.option("--json", "as_json", is_flag=True,
              help="Stream one JSON event per line (docs/events.md); needs --auto-approve.")
@handle_errors
def destroy(spec_path: str, var: tuple[str, ...], target: tuple[str, ...], replace: tuple[str, ...],
            refresh: bool, lock_timeout: str, rename_run: bool, auto_approve: bool, as_json: bool) -> None:
    """Give back everything the run rented (artifacts stay in storage)."""
    from runform.cli.applying import run_apply

    run_apply(spec_path, var, target, replace, refresh, lock_timeout, auto_approve, 10, None, (),
              destroy=True, as_json=as_json, rename_run=rename_run)


@cli.command()
@click.argument("spec_path", required=False, default="runform.yaml", metavar="[SPEC|PLANFILE]")
@var_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/schemas/show.schema.json; a saved "
              "plan: docs/plan-json.md).")
@handle_errors
def show(spec_path: str, var: tuple[str, ...], as_json: bool) -> None:
    """Show the state: the machine (GPU, $/h, uptime, spend, ssh), running jobs, resources, stages'
    last metrics, pushed artifacts. Given a saved plan, render it."""
    import runform.api as api
    from runform.cli.applying import _is_plan_file
    from runform.cli.showing import render_show

    if _is_plan_file(spec_path):
        from pathlib import Path

        from runform.planning.planfile import load_plan
        from runform.planning.render import render_plan

        saved = load_plan(Path(spec_path))
        click.echo(json.dumps(saved.to_json(), indent=1, default=str) if as_json else render_plan(saved, saved=True))
        return
    data = api.show(load_spec_opts(spec_path, var))
    click.echo(json.dumps(data, indent=1, default=str) if as_json else render_show(data))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/schemas/status.schema.json).")
@handle_errors
def status(as_json: bool) -> None:
    """Every run of yours on this machine: phase, machine, $/h, uptime, spend, running stages."""
    from runform.cli.status import render_status, status_rows

    rows = status_rows()
    click.echo(json.dumps({"runs": rows}, indent=1, default=str) if as_json else render_status(rows))


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--spec", "spec_path", default="runform.yaml", show_default=True)
@var_option
@click.option("-L", "forward", multiple=True, metavar="PORT[:REMOTE]",
              help="Forward localhost:PORT to the machine's port (TensorBoard, Jupyter).")
@click.option("--node", type=int, default=0, show_default=True,
              help="Which node of a fleet (docs/multinode.md).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def ssh(spec_path: str, var: tuple[str, ...], forward: tuple[str, ...], node: int, command: tuple[str, ...]) -> None:
    """A shell in the run's folder on its machine (`runform ssh -- CMD` runs CMD there).

    Uses the run's key and the host key pinned in the state; nothing else is accepted."""
    from runform.cli.remote import run_ssh

    sys.exit(run_ssh(load_spec_opts(spec_path, var), command, forward, node))


@cli.command()
@click.argument("what", metavar="PATH|artifact.NAME")
@click.argument("dest", required=False)
@click.option("--spec", "spec_path", default="runform.yaml", show_default=True)
@click.option("--node", type=int, default=None,
              help="Which node of a fleet  [default: 0; for artifact.NAME the node it is pushed from, "
                   "where rank 0 ran] (docs/multinode.md).")
@var_option
@handle_errors
def pull(what: str, dest: str | None, spec_path: str, node: int | None, var: tuple[str, ...]) -> None:
    """Copy files from the run's folder on its machine to DEST (default: here); only what differs moves."""
    from runform.cli.remote import pull as do_pull

    do_pull(load_spec_opts(spec_path, var), what, dest, node)


@cli.command()
@click.argument("stage")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--node", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which node's log, for a stage that runs on several (docs/multinode.md).")
@click.option("--spec", "spec_path", default="runform.yaml", show_default=True)
@var_option
@handle_errors
def logs(stage: str, follow: bool, node: int, spec_path: str, var: tuple[str, ...]) -> None:
    """Print a stage's log from the machine (re-attaches to a running job with -f)."""
    from runform.cli.logging_ import stream_logs

    stream_logs(load_spec_opts(spec_path, var), stage, follow, node)


@cli.command()
@spec_argument
@var_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/schemas/offers.schema.json).")
@handle_errors
def offers(spec_path: str, var: tuple[str, ...], as_json: bool) -> None:
    """List the offers the plan would choose from, the chosen one marked."""
    from runform.cli.showing import print_offers

    print_offers(load_spec_opts(spec_path, var), as_json=as_json)


@cli.group()
def state() -> None:
    """Inspect the state."""


@state.command("list")
@spec_argument
@var_option
@handle_errors
def state_list(spec_path: str, var: tuple[str, ...]) -> None:
    """List the addresses in the state."""
    import runform.api as api

    for r in api.show(load_spec_opts(spec_path, var))["resources"]:
        click.echo(r["address"])


@cli.command("force-unlock")
@click.argument("lock_id")
@spec_argument
@handle_errors
def force_unlock(lock_id: str, spec_path: str) -> None:
    """Remove a stuck lock by its ID (shown in the lock error)."""
    from runform.workspace import Workspace

    spec = load_spec_opts(spec_path, ())
    Workspace(spec).backend.force_unlock(lock_id)
    click.echo("runform state has been successfully unlocked!")


@cli.command()
def schema() -> None:
    """Print the spec's JSON Schema."""
    from runform.spec.load import schema as get_schema

    click.echo(json.dumps(get_schema(), indent=2))


@cli.command()
@handle_errors
def plugins() -> None:
    """List installed plugins, their versions and what they register."""
    from runform.plugins import get_plugin_manager

    for info in get_plugin_manager().plugin_infos():
        status = f"  BROKEN: {info.error}" if info.error else ""
        click.echo(f"{info.name:16} {info.distribution} {info.version}  {', '.join(info.registered)}{status}")


def _as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP (``timeout``, a closed terminal, a scheduler) stop runform as Ctrl-C
    does: no new action starts, running jobs go on, the journal and the lock are left clean."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    # Ctrl-C even when started with SIGINT ignored (a background job of a non-interactive
    # shell, some CI runners and schedulers): Python then installs no handler of its own, and
    # a SIGINT sent to stop an apply cleanly would do nothing at all
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _as_interrupt)
    cli(prog_name="runform")


if __name__ == "__main__":
    main()
