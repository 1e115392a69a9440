"""The diff: one Action per resource, each with a reason, cascades included."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from runform.durations import format_duration
from runform.graph import CODE, INSTANCE, SECRETS, TRACKER, kind_of, name_of
from runform.interfaces import InstanceInfo
from runform.nodes import at_node, split_node
from runform.planning.desired import Desired
from runform.planning.model import Action
from runform.planning.refresh import Observed
from runform.state.model import ResourceState, State

# why a live instance no longer fits the spec's compute (None: it fits); the provider's answer
ReplaceReason = Callable[[InstanceInfo], "str | None"]

DETAILS_MAX = 50  # paths an action lists in its details (the whole list when fewer)


def _names(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "")


def diff(desired: dict[str, Desired], state: State, observed: Observed, *, order: Iterable[str] | None = None,
         replace: Iterable[str] = (), replace_reason: ReplaceReason | None = None) -> list[Action]:
    """The plan's actions, pure: what the spec wants (``desired``), what the state records
    (``state``) and what the refresh saw (``observed``). ``order``: the graph's topological order
    (default: ``desired``'s order, the instance first); ``replace_reason``: the provider's verdict
    on a live instance (default: it always fits)."""
    return Differ(state, list(order if order is not None else desired), desired, observed, set(replace),
                  replace_reason or (lambda inst: None)).run()


class Differ:
    def __init__(self, state: State, order: list[str], desired: dict[str, Desired],
                 observed: Observed, replace: set[str], replace_reason: ReplaceReason) -> None:
        self.state, self.order, self.desired, self.obs = state, order, desired, observed
        self.observed, self.node = observed, 0  # the whole refresh; the node being diffed
        self.replace, self.replace_reason = replace, replace_reason
        self.actions: dict[str, Action] = {}

    def run(self) -> list[Action]:
        for address in self.order:
            self.actions[address] = self.diff(address)
        self._completed_run()
        for address in self.state.addresses():
            if address not in self.desired:
                self.actions[address] = Action(address, "delete", "not in the configuration any more",
                                               "delete_because_no_resource_config",
                                               revision=self.state.resources[address].revision)
        return list(self.actions.values())

    def diff(self, address: str) -> Action:
        kind = kind_of(address)
        prior = self.state.get(address)
        d = self.desired[address]
        self.node = split_node(address)[1]
        self.obs = self.observed.at(self.node)  # what this node holds (a stage: node 0's, jobs merged)
        try:
            action = getattr(self, f"_{kind}")(address, prior, d)
        finally:
            self.node, self.obs = 0, self.observed
        if address in self.replace and action.kind in ("no-op", "update", "read", "attach"):
            action = Action(address, "replace", "replacement requested with --replace", "replace_by_request",
                            retry_failed=True)
        after = dict(d.attrs)
        after.pop("manifest", None)
        return Action(address, action.kind, action.reason, action.code, action.details, d.fingerprint,
                      prior.revision if prior else None, after, action.retry_failed)

    # -------------------------------------------------------------- instance
    def _machine_action(self) -> Action | None:
        """The instance's action when it re-creates what lives on it."""
        a = self.actions.get(at_node(INSTANCE, self.node))
        return a if a and a.kind in ("create", "replace") else None

    def _instance(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        inst = self.obs.instance
        if not self.obs.refreshed:
            if prior is None:
                return Action(address, "create", "not yet created", "create")
            return Action(address, "no-op", "not refreshed (--refresh=false)", "noop")
        if inst is None:
            if prior is None:
                offer = ""
                return Action(address, "create", f"no machine yet: rent/claim one{offer}", "create")
            old_label = prior.attrs.get("label") or prior.attrs.get("instance", {}).get("label")
            new_label = d.attrs.get("label")
            if old_label and new_label and old_label != new_label:
                # refresh looks the machine up by the new label: the old one may well still run
                return Action(address, "replace",
                              _label_changed(prior.attrs.get("instance", {}).get("id", "?"), old_label, new_label),
                              "replace_because_label_changed")
            return Action(address, "replace",
                          f"instance {prior.attrs.get('instance', {}).get('id', '?')} is gone "
                          "(preempted, or destroyed outside runform)", "replace_because_gone")
        extra = inst.attrs.get("duplicates") or []  # other machines with the label (each bills)
        if inst.status in STARTING and not inst.attrs.get("failure"):
            # booting or rebooting: waiting costs less than a new rental (and loses nothing)
            return Action(address, "read", f"instance {inst.id} is {inst.status}"
                          + (f" ({inst.attrs.get('status_msg')})" if inst.attrs.get("status_msg") else "")
                          + ": apply waits until it is ready"
                          + (f"; instance(s) {', '.join(map(str, extra))} carry its label too: apply destroys them"
                             if extra else ""), "read_because_starting")
        if inst.status != "running":
            return Action(address, "replace", f"instance {inst.id} is {inst.status}"
                          + (f" ({inst.attrs.get('status_msg')})" if inst.attrs.get("status_msg") else ""),
                          "replace_because_not_running")
        if extra and prior is not None and not self.replace_reason(inst):
            # more than one machine carries the run's label (a create whose answer was lost):
            # each bills; apply adopts this one again, and that destroys the others
            return Action(address, "read", f"instance {inst.id} is running, but instance(s) "
                          f"{', '.join(map(str, extra))} carry its label {inst.label} too and bill: "
                          "apply destroys them", "read_because_duplicates")
        why = self.replace_reason(inst)
        if why:
            return Action(address, "replace", why, "replace_because_cannot_update")
        if prior is None:
            more = (f"; instance(s) {', '.join(map(str, extra))} carry the label too: apply destroys them"
                    if extra else "")
            return Action(address, "read", f"found instance {inst.id} by its label {inst.label} "
                          f"(left by an interrupted apply): adopt it{more}", "read_because_adopt")
        return Action(address, "no-op", f"instance {inst.id} is running", "noop")

    def _completed_run(self) -> None:
        """A run that completed and gave its machine back (teardown) needs no machine until a
        stage must run again: then everything re-runs on a new one (the outputs went with the
        old machine); until then, every resource on the machine is a no-op saying so."""
        stages = [a for a in self.desired if kind_of(a) == "stage"]
        nodes = [self.observed.at(k).instance for k in range(1 + len(self.observed.nodes))]
        if not stages or any(nodes) or any(kind_of(a) == "instance" for a in self.state.addresses()):
            return
        released = None
        for a in stages:
            prior = self.state.get(a)
            if (prior is None or prior.status != "ok" or prior.fingerprint != self.desired[a].fingerprint
                    or not prior.attrs.get("released") or a in self.replace):
                return
            released = prior.attrs["released"]
        if any(kind_of(a) == "artifact" and act.kind != "no-op" for a, act in self.actions.items()):
            return
        assert released is not None
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(released.get("at") or 0)))
        for a in list(self.actions):
            if kind_of(a) == "instance":
                why = (f"not needed: the run completed and its machine was given back {when} "
                       f"(teardown: {released.get('teardown')}); a changed stage or --replace rents one")
            elif kind_of(a) == "stage":
                took = self.state.get(a).attrs.get("duration")  # type: ignore[union-attr]
                why = "done (same fingerprint" + (f", ran {format_duration(took)}" if took else "") + \
                      "); its machine was given back after the run"
            elif a in self.desired and on_machine(a):
                why = "not needed: no stage has to run"
            else:
                continue
            self.actions[a] = Action(a, "no-op", why, "noop_because_run_completed")

    # -------------------------------------------------------------- on the machine
    def _on_new_machine(self, address: str, prior: ResourceState | None) -> Action | None:
        m = self._machine_action()
        if m is None or prior is None:
            return None  # a first create gives its own reason
        verb = "created" if m.kind == "create" else "replaced"
        return Action(address, "create" if prior is None else "replace",
                      f"{m.address} will be {verb}", "replace_because_instance")

    def _secrets(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if a := self._on_new_machine(address, prior):
            return a
        keys = d.attrs["keys"]
        if self.obs.machine is None:
            if prior is not None and prior.fingerprint == d.fingerprint:
                return Action(address, "no-op", "not refreshed; unchanged in state", "noop")
            return Action(address, "create" if prior is None else "update",
                          f"upload the env file ({keys} keys, mode 0600)", "create")
        remote = self.obs.machine.get("secrets_digest")
        if remote is None:
            return Action(address, "create" if prior is None else "update",
                          f"upload the env file ({keys} keys, mode 0600)" if prior is None
                          else "the env file is missing on the machine", "create")
        if remote != d.fingerprint:
            return Action(address, "update", "the env file changed", "update")
        if prior is None or prior.fingerprint != d.fingerprint:
            return Action(address, "read", "the machine already has this env file: record it", "read")
        return Action(address, "no-op", f"env file in place ({keys} keys, 0600)", "noop")

    def _code(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if a := self._on_new_machine(address, prior):
            return a
        files = d.attrs["files"]
        remote = self.obs.machine.get("code_digest") if self.obs.machine else (
            prior.fingerprint if prior else None)
        if remote == d.fingerprint:
            if prior is None or prior.fingerprint != d.fingerprint:
                return Action(address, "read", "the machine already has this code: record it", "read")
            return Action(address, "no-op", f"{files} files in sync", "noop")
        if remote is None and prior is None:
            mb = d.attrs["bytes"] / 1e6
            return Action(address, "create", f"sync {files} files ({mb:.1f} MB)", "create")
        changed = self._changed_files(prior, d)
        if not changed:
            return Action(address, "update", "the code on the machine differs from its record", "update")
        return Action(address, "update", f"{len(changed)} file(s) changed: {_names(changed)}", "update",
                      details=tuple(changed[:DETAILS_MAX]))

    def _changed_files(self, prior: ResourceState | None, d: Desired) -> list[str]:
        old = (prior.attrs.get("manifest") or {}) if prior else {}
        new = d.attrs["manifest"]
        changed = [p for p in new if old.get(p) != new[p]]
        removed = [p for p in old if p not in new]
        return sorted(changed) + [f"{p} (removed)" for p in sorted(removed)]

    def _dataset(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if a := self._on_new_machine(address, prior):
            return a
        n, mb, src = d.attrs["objects"], d.attrs["bytes"] / 1e6, d.attrs["source"]
        obs = (self.obs.machine or {}).get("datasets", {}).get(name_of(split_node(address)[0])) if self.obs.machine \
            else ({"digest": prior.fingerprint, "missing": []} if prior else None)
        if not obs or obs.get("digest") is None:
            if prior is not None and prior.fingerprint != d.fingerprint:
                return self._moved(address, prior, d)
            return Action(address, "create", f"hydrate from {src} ({n} objects, {mb:.1f} MB)", "create")
        if obs["digest"] != d.fingerprint:
            return self._moved(address, prior, d)
        if obs.get("missing"):
            miss = obs["missing"]
            return Action(address, "update", f"{len(miss)} file(s) missing or corrupted on the machine: "
                          f"{_names(miss)}", "update_because_files_missing", details=tuple(miss[:DETAILS_MAX]))
        if not obs.get("links_ok", True):
            return Action(address, "update", "links missing on the machine", "update_because_files_missing")
        if prior is None or prior.fingerprint != d.fingerprint:
            return Action(address, "read", "already hydrated on the machine: record it", "read")
        return Action(address, "no-op", f"{n} objects in place ({mb:.1f} MB)", "noop")

    def _moved(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        old = {e[0]: e for e in ((prior.attrs.get("manifest") or {}).get("entries", []) if prior else [])}
        new = {e[0]: e for e in d.attrs["manifest"]["entries"]}
        changed = sorted(p for p in new if p not in old or old[p][1:] != new[p][1:])
        removed = sorted(p for p in old if p not in new)
        names = changed + [f"{p} (removed)" for p in removed]
        # hydration is incremental (only the changed objects move): an in-place update
        return Action(address, "update", f"source {d.attrs['source']} changed: {_names(names) or 'new version'}",
                      "update_because_source_changed", details=tuple(names[:DETAILS_MAX]))

    def _stage(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if a := self._on_new_machine(address, prior):
            return a
        name = address.split(".", 1)[1]
        fp = d.fingerprint
        if self.obs.machine is None:
            job: dict[str, Any] = ({"state": "succeeded"} if prior and prior.fingerprint == fp
                                   and prior.status == "ok" else {"state": "none"})
            exists: dict[str, bool] = {}
        else:
            job = self.obs.machine["stages"].get(name, {"state": "none"})
            exists = self.obs.machine.get("exists", {})
        state = job["state"]
        if state == "running":
            since = format_duration(time.time() - (job.get("started") or time.time()))
            return Action(address, "attach", f"its job is still running{_on_node(job)} (pid {job.get('pid')}, for {since}); "
                          "apply waits for it instead of starting another", "attach_because_running")
        if state == "succeeded":
            missing = [o for o in d.attrs["outputs"] if exists.get(o) is False]
            if missing:
                return Action(address, "replace", f"output(s) missing on the machine: {_names(missing)}",
                              "replace_because_outputs_missing", retry_failed=True)
            if prior is None or prior.fingerprint != fp or prior.status != "ok":
                return Action(address, "read", "its job finished after the last apply "
                              "(exit 0): record the result", "read_because_job_finished")
            took = prior.attrs.get("duration")
            return Action(address, "no-op", "up to date (same fingerprint, outputs present"
                          + (f", ran {format_duration(took)})" if took else ")"), "noop")
        if state == "failed":
            return Action(address, "replace" if prior else "create",
                          f"its last run failed{_on_node(job)} (exit {job.get('exit_code')})", "replace_because_tainted",
                          retry_failed=True)
        if state == "lost":
            return Action(address, "replace" if prior else "create",
                          f"its job died without an exit code{_on_node(job)} (machine restarted?)", "replace_because_lost")
        if job.get("superseded") and (prior is None or prior.fingerprint == fp):
            return Action(address, "replace" if prior else "create", "its job with these inputs ran, but a later "
                          "run of the stage has rewritten its outputs since", "replace_because_superseded")
        if prior is None:
            return Action(address, "create", "never ran", "create")
        if prior.fingerprint == fp:
            return Action(address, "replace", "no record of its job on the machine", "replace_because_missing")
        reasons = self._why_changed(prior, d)
        return Action(address, "replace", "; ".join(reasons) or "its inputs changed",
                      "replace_because_fingerprint_changed", details=tuple(reasons))

    def _why_changed(self, prior: ResourceState, d: Desired) -> list[str]:
        old = prior.attrs.get("inputs") or {}
        new = d.attrs["inputs"]
        out = []
        if old.get("run") != new["run"]:
            out.append("command changed")
        for k in sorted(set(old.get("env", {})) | set(new["env"])):
            if old.get("env", {}).get(k) != new["env"].get(k):
                out.append(f"env {k} changed")
        if old.get("launcher") != new["launcher"] or old.get("nproc") != new["nproc"]:
            out.append("launcher changed")
        if old.get("nodes", 1) != new.get("nodes", 1):
            out.append(f"nodes changed ({old.get('nodes', 1)} → {new.get('nodes', 1)})")
        od, nd = old.get("deps", {}), new["deps"]
        if "tree" in nd:
            if od.get("tree") != nd["tree"]:
                files = self._changed_files(self.state.get(CODE), self.desired[CODE])
                out.append("code changed: " + (_names(files) if files else "the code tree")
                           + " (no deps: the stage depends on the whole tree)")
        else:
            changed = sorted(p for p in nd if od.get(p) != nd[p])
            removed = sorted(p for p in od if p not in nd and p != "tree")
            if changed:
                out.append(f"deps changed: {_names(changed)}")
            if removed:
                out.append(f"deps removed: {_names(removed)}")
        for n, fp in new["needs"].items():
            if old.get("needs", {}).get(n) != fp:
                verb = "re-runs" if n.startswith("stage.") else "changed"
                out.append(f"{n} {verb}")
        return out

    # -------------------------------------------------------------- off the machine
    def _artifact(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if prior is None:
            return Action(address, "create", f"push {', '.join(d.attrs['paths'])} to {d.attrs['to']}", "create")
        if prior.fingerprint != d.fingerprint or prior.status != "ok":
            stages = [s for s, fp in d.attrs["inputs"]["stages"].items()
                      if (prior.attrs.get("inputs") or {}).get("stages", {}).get(s) != fp]
            why = f"{_names(stages)} produced new outputs" if stages else "destination changed"
            if prior.status == "partial" and not stages:
                why = f"the last push was partial ({prior.attrs.get('salvaged', 'pushed before a teardown')})"
            return Action(address, "update", why, "update")
        pending = " (logged offline: pending `wandb sync`)" if prior.attrs.get("pending_sync") else ""
        return Action(address, "no-op", f"pushed to {d.attrs['to']}{pending}", "noop")

    def _tracker(self, address: str, prior: ResourceState | None, d: Desired) -> Action:
        if prior is None:
            return Action(address, "create", f"start a {d.attrs['kind']} run", "create")
        if prior.attrs.get("kind") != d.attrs["kind"]:
            return Action(address, "replace", f"tracker kind changed to {d.attrs['kind']}", "replace")
        return Action(address, "no-op", f"run {prior.attrs.get('run_id')} continues", "noop")


def _on_node(job: dict[str, Any]) -> str:
    """`` on node K`` for a job merged from several nodes' (nothing for one node's)."""
    return f" on node {job['node']}" if "nodes" in job and "node" in job else ""


def _label_changed(instance_id: str, old_label: str, new_label: str) -> str:
    """Why the instance is replaced when its label (``runform-RUN-LINEAGE8``) changed."""
    runs = []
    for label in (old_label, new_label):
        head, _, tail = label.rpartition("-")
        runs.append(head[len("runform-"):] if head.startswith("runform-") and len(tail) == 8 else None)
    what = (f"the run name changed from {runs[0]} to {runs[1]}" if None not in runs and runs[0] != runs[1]
            else "the instance label changed")
    which = f" (instance {instance_id})" if str(instance_id) != old_label else ""
    return f"{what}: the instance label changes from {old_label}{which} to {new_label}"


# provider statuses of a machine on its way up (InstanceInfo.status); one with a
# ``failure`` attr set is treated as failed instead
STARTING = frozenset({"created", "loading", "starting", "scheduling", "booting", "rebooting", "pending"})


def on_machine(address: str) -> bool:
    return kind_of(address) in ("secrets", "code", "dataset", "stage")


__all__ = ["SECRETS", "TRACKER", "Differ", "diff", "on_machine"]
