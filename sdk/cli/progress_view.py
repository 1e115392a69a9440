"""How ``apply`` and ``destroy`` show progress events without ``--json``: plain lines when stderr
is not a terminal (CI logs, pipes), the same lines styled with rich on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

# shown by the CLI its own way (the plan, the summary), or only meant for machines
_SILENT = {"planned", "plan", "apply_start", "apply_finished", "spend"}
_STYLE = {"action_started": "bold", "action_progress": "dim", "phase": "yellow", "transfer": "magenta",
          "message": ""}


def event_printer() -> Callable[[dict[str, Any]], None]:
    """A sink printing each event's ``@message`` on stderr (styled on a terminal)."""
    if not sys.stderr.isatty():
        def plain(event: dict[str, Any]) -> None:
            if event["type"] not in _SILENT:
                click.echo(_message(event), err=True)
        return plain

    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)

    def styled(event: dict[str, Any]) -> None:
        t = event["type"]
        if t in _SILENT:
            return
        if t == "log":
            console.print(log_line(event), soft_wrap=True)
            return
        style = _STYLE.get(t, "")
        if t == "action_finished":
            style = {"done": "green", "failed": "bold red", "interrupted": "yellow"}.get(event.get("status"), "")
        console.print(Text(_message(event), style=style), soft_wrap=True)

    return styled


def _message(event: dict[str, Any]) -> str:
    """What is printed for ``event``: its ``@message``, except for a failed action, whose error
    the summary's ``Error:`` line prints (once) when the apply ends."""
    if event["type"] == "action_finished" and event.get("status") == "failed":
        from runform.durations import format_duration

        return f"{event['address']}: Failed after {format_duration(float(event.get('duration') or 0))}"
    return str(event["@message"])


def log_line(event: dict[str, Any]) -> Any:
    """A stage's log line on a terminal: the stage's address styled, the line as the stage
    wrote it (a ``Text`` whose own style is plain, so the line does not take the prefix's)."""
    from rich.text import Text

    line = Text()
    node = f" node {event['node']}" if event.get("node") is not None else ""
    line.append(f"{event['address']}{node}: ", style="cyan")
    line.append(str(event.get("line", "")))
    return line
