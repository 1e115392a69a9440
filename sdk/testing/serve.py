"""Run a stand-in from the command line until Ctrl-C or SIGTERM (``python -m runform.testing.sshd``,
``python -m runform.testing.vast``)."""

from __future__ import annotations

import signal
import threading


def until_stopped() -> None:
    """Block until Ctrl-C (KeyboardInterrupt) or SIGTERM; the caller's ``with`` block then stops
    what it started."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
