"""The executor: runs a plan's actions in dependency order with bounded parallelism.

Before every mutation the intent goes to the journal with an idempotency key; the result is
journaled right after. A failed action taints its resource, its dependents are skipped,
independent branches finish, and a summary is printed anyway. Ctrl-C stops scheduling new
actions; running remote jobs go on and are attached to by the next apply.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import attrs
from runform.durations import format_duration
from runform.errors import LockError, RunformError
from runform.execution.handlers import FINGERPRINT, Handlers, Interrupted, StageFailed, record_of
from runform.graph import INSTANCE, build_graph, kind_of
from runform.nodes import at_node, split_node
from runform.planning.diff import on_machine
from runform.planning.model import Action, Plan
from runform.progress import Ticker
from runform.state.model import State
from runform.workspace import Workspace


@attrs.frozen
class Outcome:
    address: str
    status: str  # done | failed | skipped | interrupted
    duration: float = 0.0
    error: str | None = None


@attrs.frozen
class ApplyResult:
    outcomes: tuple[Outcome, ...]
    added: int
    changed: int
    destroyed: int
    interrupted: bool = False
    teardown: str | None = None
    teardown_failed: bool = False  # the machine may still be there: `runform destroy`
    spent: float | None = None  # USD spent on this run's machines so far (price × uptime)
    price_per_hour: float | None = None  # of the machines still there, together (None: none, or no price)
    machines: int = 1  # how many machines are still there (a fleet: one per node)

    def spent_line(self) -> str:
        now = f"; the machine still bills ${self.price_per_hour:.3f}/h" if self.price_per_hour else ""
        if self.price_per_hour and self.machines > 1:
            now = f"; its {self.machines} machines still bill ${self.price_per_hour:.3f}/h together"
        return f"Spent so far on this run: ${self.spent or 0:.2f} (price × uptime){now}."

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.teardown_failed and all(o.status == "done" for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def skipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "skipped"]

    def line(self, destroy: bool = False) -> str:
        if destroy and self.ok:
            return f"Destroy complete! Resources: {self.destroyed} destroyed."
        if self.ok:
            return f"Apply complete! Resources: {self.added} added, {self.changed} changed, {self.destroyed} destroyed."
        return (f"Apply failed: {len([o for o in self.outcomes if o.status == 'done'])} done, "
                f"{len(self.failed)} failed, {len(self.skipped)} skipped"
                + (", interrupted" if self.interrupted else "")
                + (", teardown failed" if self.teardown_failed else "")
                + f". Resources: {self.added} added, {self.changed} changed, {self.destroyed} destroyed.")


class Executor:
    def __init__(self, ws: Workspace, state: State, plan: Plan, *, parallelism: int = 10,
                 progress_every: float = 10.0) -> None:
        self.ws, self.state, self.plan = ws, state, plan
        self.parallelism = max(1, parallelism)
        self._stop = threading.Event()
        ws.stop = self._stop  # a provider waiting for readiness stops when it is set
        self.tracker: Any = None
        self.ticker = Ticker(ws.events, progress_every)

    # ------------------------------------------------------------------ journal
    def _journal(self, *entries: dict[str, Any]) -> None:
        try:
            self.ws.journal(self.state, *entries)
        except LockError:
            self._stop.set()  # the lock is someone else's now: no new action starts
            raise

    def _key(self, a: Action) -> str:
        if kind_of(a.address) == "instance":
            return f"{self.ws.label(self.state, split_node(a.address)[1])}:{a.kind}"
        return f"{a.address}:{a.fingerprint or a.kind}:{self.state.serial}"

    # ------------------------------------------------------------------ run
    def run(self) -> ApplyResult:
        """Schedule the plan's actions, then finish: teardown, summary, tracker, compaction."""
        actions = {a.address: a for a in self.plan.changes}
        handlers = self._begin()
        t_apply = time.monotonic()
        self._event("apply_start", f"{'Destroy' if self.plan.destroy else 'Apply'} started: {len(actions)} action(s)",
                    actions=len(actions), destroy=self.plan.destroy, price_per_hour=self._price())
        outcomes = self._schedule(handlers, actions)
        return self._finish(handlers, actions, outcomes, time.monotonic() - t_apply)

    def _begin(self) -> Handlers:
        """Journal the new state's meta and what the refresh reconciled, start the tracker, and
        tell the plan; the handlers that carry out the actions."""
        if self.plan.new_state:
            self._journal({"t": "meta", **self.plan.new_state})
        if self.state.pending:
            self._journal({"t": "reconciled", "keys": list(self.state.pending)})
        self._start_tracker()
        s = self.plan.summary()
        self._event("plan", s.line(), add=s.add, change=s.change, destroy=s.destroy,
                    actions=[{"address": a.address, "action": a.kind, "reason": a.reason}
                             for a in self.plan.changes], cost=dict(self.plan.cost))
        handlers = Handlers(self.ws, self.state, self.tracker, self.run_id, self.tracker_env)
        handlers.stop = self._stop
        handlers.transfer_every = min(handlers.transfer_every, self.ticker.every)  # progress_every
        return handlers

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, handlers: Handlers, actions: dict[str, Action]) -> dict[str, Outcome]:
        """Run every action whose dependencies are done, up to ``parallelism`` at once; skip those
        below a failure. Ctrl-C stops scheduling (running jobs go on on the machine)."""
        deps = self._deps(actions)
        outcomes: dict[str, Outcome] = {}
        running: dict[Future[Any], str] = {}
        pending = list(actions)
        self.ticker.start()
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="runform-apply") as pool:
            try:
                while pending or running:
                    if not self._stop.is_set():
                        self._start_ready(pool, handlers, actions, deps, pending, outcomes, running)
                    if not running:
                        if pending and not self._stop.is_set():
                            continue  # nothing can start: all remaining depend on skipped ones
                        break
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED, timeout=0.5)
                    for fut in done:
                        outcomes[running.pop(fut)] = fut.result()
            except KeyboardInterrupt:
                self._stop.set()
                self.ws.say("Interrupt received: no new actions start. Running jobs go on on the machine; "
                            "`runform apply` attaches to them.")
                for fut in running:
                    fut.cancel()
            finally:
                self.ticker.stop()
        for addr in pending:
            outcomes.setdefault(addr, Outcome(addr, "interrupted" if self._stop.is_set() else "skipped"))
        for addr in actions:
            outcomes.setdefault(addr, Outcome(addr, "interrupted"))
        return outcomes

    def _start_ready(self, pool: ThreadPoolExecutor, handlers: Handlers, actions: dict[str, Action],
                     deps: dict[str, list[str]], pending: list[str], outcomes: dict[str, Outcome],
                     running: dict[Future[Any], str]) -> None:
        """Submit each pending action whose dependencies have all finished (skip it when one failed)."""
        for addr in list(pending):
            ds = deps[addr]
            if any(outcomes.get(d) is None for d in ds):
                continue
            pending.remove(addr)
            bad = [d for d in ds if outcomes[d].status != "done"]
            if bad:
                outcomes[addr] = Outcome(addr, "skipped", error=f"{bad[0]} did not complete")
                self.ws.say(f"{addr}: skipped ({bad[0]} did not complete)")
                continue
            running[pool.submit(self._one, handlers, actions[addr])] = addr

    # ------------------------------------------------------------------ finishing
    def _finish(self, handlers: Handlers, actions: dict[str, Action], outcomes: dict[str, Outcome],
                elapsed: float) -> ApplyResult:
        """Tear down when the policy says so, then report, close the tracker and compact the state."""
        ordered = tuple(outcomes[a] for a in actions)
        teardown, teardown_failed = self._teardown_if_due(handlers, actions, outcomes, ordered)
        done_kinds = [(actions[o.address].kind, o) for o in ordered if o.status == "done"]
        result = ApplyResult(
            outcomes=ordered,
            added=sum(1 for k, _ in done_kinds if k in ("create", "replace", "attach")),
            changed=sum(1 for k, _ in done_kinds if k == "update"),
            destroyed=sum(1 for k, _ in done_kinds if k in ("delete", "replace")),
            interrupted=self._stop.is_set(),
            teardown=teardown,
            teardown_failed=teardown_failed,
        )
        self._event("apply_finished", result.line(self.plan.destroy), ok=result.ok,
                    summary=result.line(self.plan.destroy), added=result.added,
                    changed=result.changed, destroyed=result.destroyed, interrupted=result.interrupted,
                    failed=[o.address for o in result.failed], teardown=teardown,
                    duration=round(elapsed, 3), cost=self._cost(elapsed))
        self._hook("runform_apply_finished", result=result)
        if self.tracker is not None:
            try:
                self.tracker.finish()
            except Exception as exc:  # noqa: BLE001 - a tracker must not fail the apply
                self.ws.say(f"warning: tracker finish failed: {exc}")
        self.ws.backend.compact(self.state)
        return result

    def _teardown_if_due(self, handlers: Handlers, actions: dict[str, Action], outcomes: dict[str, Outcome],
                         ordered: tuple[Outcome, ...]) -> tuple[str | None, bool]:
        """Salvage and destroy the machine when ``compute.teardown`` says so: (what was said, failed)."""
        plan = self.plan
        ok = all(o.status == "done" for o in ordered) and not self._stop.is_set()
        policy = self.ws.spec.compute.teardown if not plan.destroy else "never"
        if plan.destroy or not (policy == "always" or (policy == "on_success" and ok)) or \
                self.state.get(INSTANCE) is None or not plan.changes:
            return None, False
        self._salvage(handlers, actions, outcomes)
        try:
            return self._teardown(handlers, policy), False
        except Exception as exc:  # noqa: BLE001 - the summary, tracker and state still follow
            hint = getattr(exc, "hint", None) or "run `runform destroy` and check the provider's console"
            teardown = f"teardown failed: {self.ws.redact(str(exc))} (fix: {hint})"
            # the error itself is the summary's (``result.teardown``, the CLI's last ``Error:``)
            self.ws.say("instance.main: teardown failed: the machine may still bill")
            return teardown, True

    # ------------------------------------------------------------------ cost
    def _price(self) -> float | None:
        """What the machines bill in USD per hour (a fleet: every node's together), when their
        provider states a price."""
        prices = [float(p) for address, rec in self.state.resources.items()
                  if address.split("[", 1)[0] == INSTANCE
                  and (p := ((rec.attrs.get("instance") or {}).get("attrs") or {}).get("price_per_hour")) is not None]
        return sum(prices) if prices else None

    def _cost(self, seconds: float) -> float | None:
        """What the machine cost over ``seconds`` (None when the provider states no price)."""
        price = self._price()
        return None if price is None else round(price * seconds / 3600, 4)

    def _deps(self, actions: dict[str, Action]) -> dict[str, list[str]]:
        graph = build_graph(self.ws.spec)
        out: dict[str, list[str]] = {}
        for addr, a in actions.items():
            if self.plan.destroy:
                # destroy: things on the machines go first, the instances last
                out[addr] = [d for d in actions if kind_of(d) != "instance"] if kind_of(addr) == "instance" else []
                continue
            up = graph.upstream([addr]) if addr in graph.deps else set()
            out[addr] = [d for d in actions if d in up]
        return out

    def _one(self, handlers: Handlers, a: Action) -> Outcome:
        t0 = time.monotonic()
        if self._stop.is_set():
            return Outcome(a.address, "interrupted")
        self._hook("runform_action_started", action=a)
        self._event("action_started", f"{a.address}: {_verb(a.kind)}...", show=True, address=a.address,
                    action=a.kind, reason=a.reason, price_per_hour=self._price())
        self.ticker.begin(a.address, a.kind)
        key = self._key(a)
        self._journal({"t": "intent", "key": key, "addr": a.address, "action": a.kind})
        outcome: Outcome
        try:
            if a.kind == "delete" and on_machine(a.address) and self.plan.destroy:
                new = None  # goes with the machine
            elif a.kind == "forget":
                new = None
            else:
                new = handlers.apply(a)
            if new is None:
                self._journal({"t": "rm", "key": key, "addr": a.address})
            else:
                fingerprint = new.pop(FINGERPRINT, a.fingerprint)
                rec = record_of(a.address, new, fingerprint)
                self._journal({"t": "put", "key": key, "record": rec.to_json()})
            outcome = Outcome(a.address, "done", time.monotonic() - t0)
            done_line = f"{a.address}: {_verb(a.kind, done=True)} after {format_duration(outcome.duration)}"
            ran = (new or {}).get("duration") if kind_of(a.address) == "stage" else None
            if ran and a.kind in ("attach", "read"):  # the wait was not the job: say both
                done_line += f" (the job ran {format_duration(float(ran))})"
            finished = done_line
        except Interrupted as exc:
            outcome = Outcome(a.address, "interrupted", time.monotonic() - t0, str(exc))
            finished = str(exc)
        except StageFailed as exc:
            rec = record_of(a.address, exc.record, a.fingerprint, status="tainted")
            self._journal({"t": "put", "key": key, "record": rec.to_json()})
            outcome = Outcome(a.address, "failed", time.monotonic() - t0, self.ws.redact(str(exc)))
            # the first line only: the log tail is in the summary's error (printed once)
            finished = f"{a.address}: error: {outcome.error.splitlines()[0]}"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and reported
            self._journal({"t": "done", "key": key, "error": self.ws.redact(str(exc))[:2000]})
            msg = str(exc) if isinstance(exc, RunformError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RunformError) and _debug():
                msg += "\n" + traceback.format_exc()
            outcome = Outcome(a.address, "failed", time.monotonic() - t0, self.ws.redact(msg))
            finished = f"{a.address}: error: {outcome.error.splitlines()[0] if outcome.error else ''}"
        self.ticker.end(a.address)
        self._event("action_finished", finished, show=True, address=a.address, action=a.kind,
                    status=outcome.status, duration=round(outcome.duration, 3),
                    cost=self._cost(outcome.duration), error=outcome.error)
        self._hook("runform_action_finished", action=a, outcome=outcome)
        return outcome

    def _salvage(self, handlers: Handlers, actions: dict[str, Action], outcomes: dict[str, Outcome]) -> None:
        """Before a teardown, push what exists of every artifact whose push did not happen (a
        producer failed, or the apply was interrupted): the machine is about to go, and its
        outputs with it. Recorded as ``partial``, so the next plan pushes it again."""
        for addr, a in actions.items():
            if kind_of(addr) != "artifact" or a.kind not in ("create", "update"):
                continue
            if outcomes[addr].status not in ("skipped", "interrupted"):
                continue
            why = outcomes[addr].error or "the apply was interrupted"
            try:
                new = handlers.artifact(a, salvage=why)
            except Exception as exc:  # noqa: BLE001 - teardown goes on; the loss is reported
                self.ws.say(f"{addr}: warning: could not push before teardown: {self.ws.redact(str(exc))}")
                continue
            assert new is not None
            rec = record_of(addr, new, a.fingerprint, status="partial")
            self._journal({"t": "put", "key": self._key(a), "record": rec.to_json()})
            missing = f"; not on the machine: {', '.join(new['missing'])}" if new.get("missing") else ""
            self.ws.say(f"{addr}: pushed what exists before teardown ({new['objects']} object(s)); "
                        f"partial because {why}{missing}")

    def _teardown(self, handlers: Handlers, policy: str) -> str:
        nodes = sorted((split_node(a)[1] for a in self.state.addresses() if kind_of(a) == "instance"), reverse=True)
        for k in nodes:  # node 0 last: what a teardown that fails half-way leaves is what it names
            a = Action(at_node(INSTANCE, k), "delete", f"teardown: {policy}", "delete_because_teardown")
            self.ws.say(f"{a.address}: destroying (teardown: {policy})...")
            key = self._key(a)
            self._journal({"t": "intent", "key": key, "addr": a.address, "action": "delete"})
            handlers.apply(a)
            self._journal({"t": "rm", "key": key, "addr": a.address})
        released = {"at": time.time(), "teardown": policy}
        for addr in list(self.state.resources):
            if not on_machine(addr):
                continue
            rec = self.state.resources[addr]
            if kind_of(addr) == "stage" and rec.status == "ok":
                # done: the record stays, so the next plan knows the run completed and rents
                # nothing until a stage must run again (outputs went with the machine)
                record = {**rec.to_json(), "attrs": {**rec.attrs, "released": released}}
                self._journal({"t": "put", "key": key, "record": record})
            else:
                self._journal({"t": "rm", "key": key, "addr": addr})
        # confirm they are gone
        labels = [self.ws.label(self.state, k) for k in nodes]
        found = self.ws.provider.find(labels, self.ws.provider_context(self.state))
        for left in found.values():
            raise RunformError(f"teardown: instance {left.id} is still there after destroy",
                               hint="run `runform destroy` and check the provider's console")
        more = f" and {len(nodes) - 1} other node(s)" if len(nodes) > 1 else ""
        return f"instance.main{more} destroyed (teardown: {policy})"

    # ------------------------------------------------------------------ tracker
    def _start_tracker(self) -> None:
        self.run_id: str | None = None
        self.tracker_env: dict[str, str] = {}
        kind = self.ws.spec.tracker.kind
        if kind == "none" or self.plan.destroy:
            return
        import os

        from runform.interfaces import TrackerContext, deterministic_run_id

        ctx = TrackerContext(run=self.ws.spec.run, lineage=self.state.lineage, state_dir=self.ws.spec.state_dir,
                             spec_dir=self.ws.spec.dir, redactor=self.ws.redactor,
                             env={**os.environ, **self.ws.secrets})
        self.tracker = self.ws.pm.tracker(kind, dict(self.ws.spec.tracker.config), ctx)
        self.run_id = deterministic_run_id(self.ws.spec.run, self.state.lineage)
        config = {"run": self.ws.spec.run, "provider": self.ws.spec.compute.provider,
                  "variables": dict(self.ws.spec.variables), "stages": sorted(self.ws.spec.stages)}
        self.tracker_env = dict(self.tracker.start(run_id=self.run_id, name=self.ws.spec.run, config=config) or {})

    def _hook(self, name: str, **kwargs: Any) -> None:
        """Call an event hook under the one policy (:meth:`runform.plugins.PluginManager.notify`)."""
        self.ws.pm.notify(name, report=self.ws.say, **kwargs)

    def _event(self, type_: str, message: str, *, show: bool = False, **fields: Any) -> None:
        """An event for the sinks (``on_event``, ``--json``, the run registry) and the tracker;
        ``show``: its message is printed too."""
        event = self.ws.tell(type_, message, show=show, **fields)
        if self.tracker is not None:
            try:
                self.tracker.log_event(event)
            except Exception as exc:  # noqa: BLE001
                self.ws.say(f"warning: tracker event failed: {exc}")


def _verb(kind: str, done: bool = False) -> str:
    verbs = {"create": ("Creating", "Creation complete"), "update": ("Modifying", "Modifications complete"),
             "replace": ("Replacing", "Replacement complete"), "delete": ("Destroying", "Destruction complete"),
             "read": ("Reading", "Read complete"), "attach": ("Attaching", "Job complete"),
             "forget": ("Forgetting", "Forgotten")}
    return verbs[kind][1 if done else 0]


def _debug() -> bool:
    import os

    return bool(os.environ.get("RUNFORM_DEBUG"))
