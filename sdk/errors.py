"""Errors a user can act on. The CLI prints them without a traceback and exits 1."""

from __future__ import annotations


class RunformError(Exception):
    """An error meant for the user: what went wrong, where, and the fix."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"


class SpecError(RunformError):
    """Bad input in a file: names the file, line/column and the field path."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file, self.line, self.column, self.field = file, line, column, field
        where = file or "command line"  # no file: the bad input is a flag
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        prefix = f"{where}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message, hint=hint)


class StateError(RunformError):
    """The state is unreadable, locked, or does not match a saved plan."""


class LockError(StateError):
    """The state lock is held by someone else."""


class ProviderError(RunformError):
    """A provider call failed in a way the user should see."""


class HostKeyError(ProviderError):
    """A machine's SSH host key differs from the one pinned in state."""


class PolicyError(RunformError):
    """A policy plugin rejected the plan."""


class PluginError(RunformError):
    """A plugin is missing, broken, or registered twice."""


class TransferStopped(RunformError):
    """A transfer was told to stop (the client hung up: its first Ctrl-C). A push's ``progress``
    callback raises it; a backend lets it through and leaves nothing a later push takes for
    complete (an object is either whole under its key or absent)."""
