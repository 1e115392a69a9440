"""How an agent call learns that the client wants it to stop.

Over SSH the agent is a process of its own: the client's abort (its first Ctrl-C) closes the
channel, and the agent sees the hang-up on its stdout (``watch_hangup``). The local provider calls
the agent in-process, so there is no channel: its transport's ``abort`` sets the event of every
call under way, which the call finds here (:data:`CURRENT`, set around ``handle`` by the client)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

CURRENT: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("runform_agent_stop", default=None)


def watch(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` when the client wants this call to stop: the in-process call's event, or the
    client hanging up on the agent's process. Returns a function that ends the watch."""
    current = CURRENT.get()
    if current is None:
        from runform.storage.urlfetch import watch_hangup

        return watch_hangup(stop)
    done = threading.Event()

    def relay() -> None:
        while not done.is_set():
            if current.wait(0.1):
                stop.set()
                return

    threading.Thread(target=relay, daemon=True, name="runform-call-stop").start()
    return done.set
