"""A Workspace ties a spec to its state, plugins and provider: what plan and apply work on."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from runform.digests import DigestCache
from runform.envfile import parse_env
from runform.errors import RunformError
from runform.interfaces import Closeable, Machine, Provider, ProviderContext, UsesSecrets
from runform.nodes import at_node, node_label
from runform.plugins import PluginManager, get_plugin_manager
from runform.redact import Redactor
from runform.spec.model import Spec
from runform.state.model import State


class Workspace:
    def __init__(self, spec: Spec, *, pm: PluginManager | None = None, out: Any = None) -> None:
        self.spec = spec
        self.pm = pm or get_plugin_manager()
        self.out = out  # a callable for progress lines (the CLI passes its console printer)
        from runform.progress import Events

        self.events = Events()  # every line said is also an event (``on_event``, ``--json``)
        self.stop: threading.Event | None = None  # set by an interrupted apply: providers stop waiting
        self.stream_logs = True  # running stages stream their log lines (``--quiet`` turns it off)
        self._last_phase: tuple[str, str, str] | None = None
        self.backend = self.pm.state_backend(spec.state_backend, spec.dir, lease=spec.lock_lease)
        self._provider: Provider | None = None
        self.digests = DigestCache(spec.state_dir / "digests.json")
        self._machines: dict[int, Machine] = {}  # node -> its open connection
        self._machine_lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self.verify_data = False  # refresh reads every hydrated byte back (--verify-data)
        self.read_only = False  # plan: writes nothing, not even a first-seen host key's pin
        self.rename_run = False  # a state of another run name is taken as this run's, renamed
        self.secrets: dict[str, str] = {}
        # dataset address -> the manifest this process's plan listed (the apply fetches it
        # without listing the source again; see Handlers.dataset)
        self.listed: dict[str, Any] = {}
        if spec.env_file is not None:
            self.secrets = parse_env(spec.env_file.read_text(encoding="utf-8"))
        self.redactor = Redactor.from_env(self.secrets)
        if isinstance(self.backend, UsesSecrets):  # remote state backends: credentials from the env file too
            self.backend.use_env(self.secrets)

    # ------------------------------------------------------------------ state
    def read_state(self) -> State | None:
        state = self.backend.read()
        if state is not None and state.run and state.run != self.spec.run and not self.rename_run:
            from runform.errors import StateError

            raise StateError(
                f"the state belongs to run {state.run!r}, and {self.spec.path.name} is run {self.spec.run!r}",
                hint=f"if you renamed the run, add --rename-run (the resources of {state.run!r} are "
                "replaced under the new name); if this state is another project's, move it away or "
                "give this spec a `state.backend` of its own")
        rec = state.get("instance.main") if state is not None else None
        if rec is not None:
            rec.instance()  # a machine record says what the provider knows of it, or the state is refused
        return state

    @contextlib.contextmanager
    def locked(self, operation: str, timeout: float = 0.0) -> Iterator[Any]:
        info = self.backend.lock(operation, timeout=timeout)
        try:
            yield info
        finally:
            self.backend.unlock(info.id)
            if isinstance(self.backend, Closeable):
                self.backend.close()

    # ------------------------------------------------------------------ provider
    @property
    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = self.pm.provider(self.spec.compute.provider)
        return self._provider

    def provider_context(self, state: State, pins: dict[str, Any] | None = None, node: int = 0) -> ProviderContext:
        """``node``: whose record a first-seen host key is pinned in, and whose phases are told."""
        return ProviderContext(state_dir=self.spec.state_dir, run=self.spec.run, lineage=state.lineage,
                               pins=pins or {}, log=self.say,
                               pin=lambda endpoint, key: self.pin_host_key(state, endpoint, key, node),
                               phase=lambda phase, detail="": self.instance_phase(phase, detail, node))

    def instance_phase(self, phase: str, detail: str = "", node: int = 0) -> None:
        """A provider's readiness phase (``ProviderContext.phase``): shown and sent as an event.
        Raises :class:`~runform.progress.Interrupted` once the apply was interrupted, so that a
        provider stops waiting for a machine nobody will use (and gives it back)."""
        from runform.progress import Interrupted

        more = f" ({detail})" if detail else ""
        address = at_node("instance.main", node)
        last_address, last_phase, last_detail = self._last_phase or (None, None, None)
        # a provider may report on every poll: show changes (a phase again without a detail is none)
        if address != last_address or phase != last_phase or (detail and detail != last_detail):
            self._last_phase = (address, phase, detail)
            self.tell("phase", f"{address}: {phase}{more}", address=address, phase=phase,
                      detail=detail or None, show=not self.read_only)
        if self.stop is not None and self.stop.is_set():
            raise Interrupted(f"{address}: interrupted while {phase}")

    # ------------------------------------------------------------------ journal
    def journal(self, state: State, *entries: dict[str, Any]) -> None:
        """Append ``entries`` to the state's journal (fsynced) and fold them into ``state``.
        One writer at a time: actions, and pins learned by transports, share it."""
        with self._journal_lock:
            # every string that reaches the state passes the redactor (a stage's metric names, errors)
            for e in self.backend.append([self.redactor.redact_json(e) for e in entries]):
                state.fold(e)

    def pin_host_key(self, state: State, endpoint: str, key: str, node: int = 0) -> None:
        """Pin a host key a transport accepted on first use (``ProviderContext.pin``), in the
        record of the node that met it."""
        address = at_node("instance.main", node)
        rec = state.get(address)
        if rec is None or self.read_only:
            return  # being created (the instance handler stores what the provider saw), or a plan
        pins = dict(rec.attrs.get("pins") or {})
        if endpoint in pins:
            return  # a pin exists: the transport never accepts another key for it
        pins[endpoint] = key
        record = {**rec.to_json(), "attrs": {**rec.attrs, "pins": pins}}
        self.journal(state, {"t": "put", "key": f"pin:{endpoint}", "record": record})
        self.say(f"{address}: pinned the host key of {endpoint} (first use)")

    def label(self, state: State, node: int = 0) -> str:
        return node_label(f"runform-{self.spec.run}-{state.lineage[:8]}", node)

    def pins(self, state: State) -> dict[str, Any]:
        """Every node's pinned host keys (nodes on one host share its key)."""
        out: dict[str, Any] = {}
        for address, rec in state.resources.items():
            if address.split("[", 1)[0] == "instance.main":
                out.update(rec.attrs.get("pins") or {})
        return out

    def say(self, line: str) -> None:
        self.tell("message", line)

    def tell(self, type_: str, message: str, *, show: bool = True, **fields: object) -> dict[str, Any]:
        """Send an event of ``type_`` with ``fields`` and print ``message`` (both redacted;
        ``show=False``: the event only, for what the CLI prints its own way)."""
        message = self.redact(message)
        fields = {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        event = self.events.emit(type_, message, **fields)
        if self.out and show:
            self.out(message)
        return event

    def redact(self, text: str) -> str:
        return self.redactor.redact_text(text)

    # ------------------------------------------------------------------ machine
    def machine(self, state: State, node: int = 0) -> Machine:
        """A connection to ``node``'s live instance in ``state`` (opened once, shared by threads)."""
        with self._machine_lock:
            if node not in self._machines:
                from runform.interfaces import InstanceInfo

                address = at_node("instance.main", node)
                rec = state.get(address)
                if rec is None:
                    raise RunformError(f"no machine: {address} is not in the state")
                info = InstanceInfo.from_json(rec.instance())
                pins = {**self.pins(state), **dict(rec.attrs.get("pins", {}))}
                self._machines[node] = self.provider.connect(info, self.provider_context(state, pins, node))
            return self._machines[node]

    def forget_machine(self, node: int | None = None) -> None:
        """Close ``node``'s connection (None: every node's)."""
        with self._machine_lock:
            for k in [node] if node is not None else list(self._machines):
                m = self._machines.pop(k, None)
                if m is not None:
                    with contextlib.suppress(Exception):
                        m.transport.close()
