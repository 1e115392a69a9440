"""Options shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def spec_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("spec_path", required=False, default="runform.yaml", metavar="[SPEC]")(fn)


def var_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--var", multiple=True, metavar="NAME=VALUE", help="Set a variable.")(fn)


def state_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--target", multiple=True, metavar="ADDR", help="Only ADDR and what it depends on."),
        click.option("--replace", multiple=True, metavar="ADDR", help="Force ADDR to be replaced."),
        click.option("--refresh", "refresh", type=click.BOOL, default=True, show_default=True,
                     help="Read what exists first (--refresh=false plans against the state alone)."),
        click.option("--lock-timeout", default="0s", show_default=True, help="Wait this long for the lock."),
        click.option("--rename-run", is_flag=True,
                     help="The spec's `run` was renamed: use the state of the old name (its resources "
                          "are replaced under the new one). Without it such a state is refused."),
    ]):
        fn = opt(fn)
    return fn


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    from runform.errors import SpecError

    out = {}
    for p in pairs:
        if "=" not in p:
            raise SpecError(f"--var {p!r}: expected NAME=VALUE", hint="write --var NAME=VALUE")
        k, _, v = p.partition("=")
        out[k.strip()] = v
    return out


def load_spec_opts(path: str, var: tuple[str, ...]) -> Any:
    import runform.api as api

    return api.load(path, variables=parse_vars(var))


def parse_lock_timeout(text: str) -> float:
    from runform.durations import parse_duration
    from runform.errors import SpecError

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SpecError(f"--lock-timeout: {exc}", hint="e.g. --lock-timeout 30s") from None


def parse_parallelism(text: str | int) -> int:
    from runform.errors import SpecError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(f"--parallelism {text!r}: expected a whole number of at least 1",
                        hint="e.g. --parallelism 4")
    return value
