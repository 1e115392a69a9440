"""How apply's events look on a terminal (rich): a stage's log line keeps the stage's own text
unstyled, only its ``stage.NAME:`` prefix is coloured."""

from __future__ import annotations

import io

import pytest

from runform.cli.progress_view import event_printer


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_only_the_prefix_of_a_log_line_is_styled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    err = _Terminal()
    monkeypatch.setattr("sys.stderr", err)
    show = event_printer()
    show({"type": "log", "address": "stage.train", "line": "step 3 loss 0.25",
          "@message": "stage.train: step 3 loss 0.25"})
    show({"type": "transfer", "@message": "artifact.model: pushed 1.0/2.0 MB"})
    log, transfer = err.getvalue().splitlines()
    prefix, _, rest = log.partition("stage.train: ")
    assert prefix.startswith("\x1b[") and "36" in prefix  # the prefix is cyan
    assert rest.startswith("\x1b[0m") and rest[len("\x1b[0m"):] == "step 3 loss 0.25"  # the line is not
    assert transfer.startswith("\x1b[35m")  # other events keep their own style
