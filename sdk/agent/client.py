"""Calls the agent on a machine: in-process for the local provider, ``python -m runform.agent``
over the transport otherwise. Same operations, same JSON."""

from __future__ import annotations

import json
from typing import Any

from runform.errors import ProviderError
from runform.interfaces import Machine


class AgentClient:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    @property
    def root(self) -> str:
        return self.machine.root

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        request = {"op": op, "root": self.machine.root, **args}
        response: Any
        if self.machine.local:
            import contextlib

            from runform.agent.callstop import CURRENT
            from runform.agent.ops import handle

            calls = getattr(self.machine.transport, "in_process_call", None)  # its abort stops the call
            with calls() if calls is not None else contextlib.nullcontext() as stop:
                token = CURRENT.set(stop)
                try:
                    response = handle(json.loads(json.dumps(request)))
                finally:
                    CURRENT.reset(token)
        else:
            result = self.machine.transport.run(
                [self.machine.python, "-m", "runform.agent"], stdin=json.dumps(request).encode()
            )
            try:
                # no answer at all (the channel was closed under it: an abort at Ctrl-C, a lost
                # connection) is a failure, never an empty success
                response = json.loads(result.stdout.decode())
            except ValueError:
                response = None
            if not isinstance(response, dict):
                tail = result.stderr.decode(errors="replace")[-500:]
                raise ProviderError(f"the agent on the machine failed ({op}, exit {result.exit_code}): {tail}",
                                    hint="re-run apply; if it persists, `runform apply --replace instance.main`") from None
        if not response.get("ok", True):
            hint = response.get("hint")
            if hint:  # a refusal worded for the user (a path that would leave the run root, ...)
                raise ProviderError(f"agent {op} refused: {response.get('error')}", hint=str(hint))
            raise ProviderError(f"agent {op} failed: {response.get('error')}",
                                hint="re-run apply; if it persists, report it with RUNFORM_DEBUG=1 output")
        return response
