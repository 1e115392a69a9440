"""What apply does for each resource kind. Each handler returns the new record (or None to remove).

Handlers are idempotent: re-running one after a crash finds what the last attempt did (an
instance by its label, a job by its fingerprint, files by their manifest) instead of doing it twice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from runform.agent.client import AgentClient
from runform.agent.layout import secrets_path
from runform.errors import RunformError
from runform.graph import name_of
from runform.interfaces import HasStageEnv, ImageTracker, InstanceInfo, InstanceRequest, Manifest
from runform.nodes import node_compute, split_node
from runform.planning.model import Action
from runform.execution.watchers import AbortOn, LogStream, ProgressReporter
from runform.progress import Interrupted, SendMeter
from runform.state.model import ResourceState, State
from runform.workspace import Workspace

FINGERPRINT = "__fingerprint__"  # a handler's record may carry the fingerprint it really achieved


class StageFailed(RunformError):
    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


class Handlers:
    def __init__(self, ws: Workspace, state: State, tracker: Any = None, run_id: str | None = None,
                 tracker_env: dict[str, str] | None = None) -> None:
        self.ws, self.state, self.trk = ws, state, tracker
        self.run_id, self.tracker_env = run_id, tracker_env or {}
        self.stop: Any = None  # a threading.Event set on Ctrl-C
        self.transfer_every = 5.0  # s between a push's transfer events (the executor may lower it)

    def machine_is_local(self) -> bool:
        return self.ws.machine(self.state).local

    def agent(self, node: int = 0) -> AgentClient:
        return AgentClient(self.ws.machine(self.state, node))

    def apply(self, action: Action) -> dict[str, Any] | None:
        kind = action.address.split(".", 1)[0]
        return getattr(self, kind)(action)

    # ------------------------------------------------------------------ instance
    def instance(self, a: Action) -> dict[str, Any] | None:
        ws, provider = self.ws, self.ws.provider
        node = split_node(a.address)[1]
        rec = self.state.get(a.address)
        pins = dict(rec.attrs.get("pins", {})) if rec else {}
        ctx = ws.provider_context(self.state, pins, node)
        if a.kind in ("delete", "replace"):
            old = InstanceInfo.from_json(rec.instance()) if rec else (
                InstanceInfo.from_json(a.after["instance"]) if a.after.get("instance") else None)
            if rec is None and old is not None and old.label != ws.label(self.state, node):
                # a machine named by the plan alone (found by its label): never another run's
                raise RunformError(f"{a.address}: the plan names the machine {old.label!r}, not this run's "
                                   f"{ws.label(self.state, node)!r} (was the plan edited?)",
                                   hint="run `runform plan --out FILE` again and apply the new plan")
            if old is not None:
                ws.forget_machine(node)
                provider.destroy(old, ctx)
            if a.kind == "delete":
                return None
        label = ws.label(self.state, node)
        t_create = time.time()  # when billing starts, near enough (spend = price × uptime)
        # a "read" adopts a machine found by its label (an interrupted apply left it, maybe
        # before its SSH key was attached or while it still starts): create is label-idempotent
        # and does the whole bring-up for it, as for a machine it rents
        compute = dict(ws.spec.compute.config)
        if ws.spec.compute.nodes > 1:
            compute = node_compute(compute, node)  # this node's slice of the fleet
        info = provider.create(InstanceRequest(label=label, run=ws.spec.run, compute=compute,
                                               env=dict(compute.get("env") or {})), ctx)
        ws.forget_machine(node)
        endpoint = info.attrs.get("endpoint")  # where the provider says its host key is pinned
        if info.attrs.get("host_key") and endpoint:
            pins[str(endpoint)] = info.attrs["host_key"]
        created = rec.attrs.get("created_at") if rec and a.kind == "read" and \
            (rec.attrs.get("instance") or {}).get("id") == info.id else None
        return {"instance": info.to_json(), "pins": pins, "label": label,
                "compute": a.after.get("compute", {}), "created_at": created or t_create}

    # ------------------------------------------------------------------ secrets
    def secrets(self, a: Action) -> dict[str, Any] | None:
        if a.kind == "delete":
            return None
        spec = self.ws.spec
        assert spec.env_file is not None
        machine = self.ws.machine(self.state, split_node(a.address)[1])
        from runform.machine_secrets import machine_secrets

        data = machine_secrets(spec, spec.env_file.read_bytes())  # no storage keys unless pushing
        machine.transport.put_bytes(data, secrets_path(machine.root), mode=0o600)
        return {"digest": a.after["digest"], "keys": a.after["keys"]}

    # ------------------------------------------------------------------ code
    def code(self, a: Action) -> dict[str, Any] | None:
        if a.kind == "delete":
            return None
        from runform.codesync import local_manifest, sync_tree
        from runform.planning.desired import code_excludes

        spec = self.ws.spec
        machine = self.ws.machine(self.state, split_node(a.address)[1])
        manifest = local_manifest(spec.code.path, code_excludes(spec), cache=self.ws.digests,
                                  never=[spec.env_file])
        if manifest.digest != a.fingerprint:
            # a file changed between plan and apply (a saved plan was checked before we got here):
            # sync what is there now and record exactly that; the next plan shows the consequences
            self.ws.say("code.workdir: the code changed since the plan; syncing the current tree")
        t0 = time.monotonic()
        with AbortOn(self.stop, machine.transport, a.address):
            report = sync_tree(machine.transport, spec.code.path, machine.root, manifest,
                               progress=SendMeter(self.ws, a.address, 0))
        self._sent(a.address, f"{report.files_sent} file(s)", report.bytes_sent, time.monotonic() - t0,
                   resumed=report.resumed)
        return {"digest": manifest.digest, "files": len(manifest.entries), "bytes": manifest.total_bytes,
                "manifest": {e.path: e.digest for e in manifest.entries}, FINGERPRINT: manifest.digest}

    # ------------------------------------------------------------------ dataset
    def dataset(self, a: Action) -> dict[str, Any] | None:
        if a.kind == "delete":
            return None
        base, node = split_node(a.address)
        name = name_of(base)
        d = self.ws.spec.datasets[name]
        manifest = self._planned_manifest(a, d.source)
        if manifest.digest != a.fingerprint:
            raise RunformError(f"{a.address}: the source {d.source} changed since the plan",
                               hint="run `runform plan` again")
        machine = self.ws.machine(self.state, node)
        agent = self.agent(node)
        t0 = time.monotonic()
        if d.source.startswith("file://") and not machine.local:
            agent.call("check_dataset", name=name, dest=d.dest, links=dict(d.links))  # before any upload
            with AbortOn(self.stop, machine.transport, a.address):
                moved = self._upload_file_dataset(machine, manifest, name, d.dest, _lost(a))
            agent.call("record_dataset", name=name, dest=d.dest, links=dict(d.links),
                       manifest=manifest.to_json(), digest=manifest.digest)
        else:
            with ProgressReporter(self.ws, agent, a.address, name), \
                    AbortOn(self.stop, machine.transport, a.address):
                moved = self._hydrate(agent, a.address, name, d, manifest)
        took = time.monotonic() - t0
        self.ws.say(f"{a.address}: {moved / 1e6:.1f} MB moved in {took:.1f}s")
        return {"source": d.source, "dest": d.dest, "digest": manifest.digest, "manifest": manifest.to_json(),
                "bytes_moved": moved}

    def _planned_manifest(self, a: Action, source: str) -> Manifest:
        """What this process's fresh plan listed (a saved plan is checked against it), if the
        action was planned with it; a later change at the source fails the fetch's checks."""
        listed = self.ws.listed.get(split_node(a.address)[0])  # every node fetches the same listing
        if isinstance(listed, Manifest) and listed.digest == a.fingerprint:
            return listed
        from runform.planning.desired import resolve_dataset

        return resolve_dataset(self.ws, source)

    def _sent(self, address: str, what: str, moved: int, took: float, resumed: int = 0) -> None:
        """A finished upload as a ``transfer`` event: the bytes sent, rate (the wait itself showed
        its elapsed time through ``action_progress``); ``resumed``: bytes an interrupted upload
        had already left on the machine (not sent again)."""
        rate = moved / took if took > 0 else 0.0
        more = f", resumed at {resumed / 1e6:.1f} MB" if resumed else ""
        self.ws.tell("transfer", f"{address}: sent {what}, {moved / 1e6:.1f} MB in {took:.1f}s "
                     f"({rate / 1e6:.1f} MB/s{more})", address=address, bytes=moved, total=moved,
                     rate=round(rate, 1), eta=0.0, **({"resumed": resumed} if resumed else {}))

    def _pushed(self, address: str, total: int, took: float) -> None:
        """A finished push as a ``transfer`` event at its total (unchanged files included)."""
        rate = total / took if took > 0 else 0.0
        self.ws.tell("transfer", f"{address}: pushed {total / 1e6:.1f}/{total / 1e6:.1f} MB in {took:.1f}s "
                     f"({rate / 1e6:.1f} MB/s)", address=address, bytes=total, total=total,
                     rate=round(rate, 1), eta=0.0)

    def _hydrate(self, agent: AgentClient, address: str, name: str, d: Any, manifest: Manifest) -> int:
        """The agent's ``hydrate``. For a backend that can sign URLs (``s3://``, ``b2://``) the
        client signs a presigned GET per object and the machine downloads without credentials;
        URLs that run out before the fetch ends are signed again (what landed stays)."""
        import os

        scheme = manifest.uri.split("://", 1)[0]
        backend = self.ws.pm.get("storage_backends", scheme).factory()
        sign = getattr(backend, "presign", None)
        args = {"name": name, "dest": d.dest, "links": dict(d.links), "manifest": manifest.to_json()}
        if sign is None:
            return int(agent.call("hydrate", **args)["bytes"])
        env = {**os.environ, **self.ws.secrets}
        ttl = int(env.get("RUNFORM_PRESIGN_TTL_S") or 3600)
        moved = 0
        for _ in range(20):
            res = agent.call("hydrate", **args, **sign(manifest, env, ttl_s=ttl))
            moved += int(res.get("bytes") or 0)
            if res.get("stopped"):
                raise Interrupted(f"{address}: the fetch was stopped; apply again to resume it")
            if not res.get("expired"):
                return moved
            self.ws.say(f"{address}: the download URLs expired; signing fresh ones")
        raise RunformError(f"{address}: the download URLs kept expiring before the fetch ended",
                           hint="raise RUNFORM_PRESIGN_TTL_S (seconds, default 3600) and apply again")

    def _upload_file_dataset(self, machine: Any, manifest: Manifest, name: str, dest: str,
                             lost: tuple[str, ...] | None = ()) -> int:
        """A ``file://`` source lives on the client: send it over the transport, incrementally (a
        folder or one file; a large file continues from what an interrupted apply sent); ``lost``:
        files the refresh found missing or changed on the machine (``None``: too many to list)."""
        import posixpath
        from pathlib import Path

        from runform.agent.layout import meta
        from runform.codesync import local_manifest, sync_tree

        base = Path(manifest.uri.split("://", 1)[1])
        if not base.is_absolute():
            base = self.ws.spec.dir / base
        address = f"dataset.{name}"
        files = local_manifest(base) if base.is_dir() else manifest  # one file: its name, at dest
        t0 = time.monotonic()
        report = sync_tree(machine.transport, base if base.is_dir() else base.parent,
                           posixpath.join(machine.root, dest), files,
                           remote_manifest_path=meta(machine.root, "datasets", f"{name}.files.json"),
                           progress=SendMeter(self.ws, address, files.total_bytes), missing=lost)
        self._sent(address, f"{report.files_sent} file(s)", report.bytes_sent, time.monotonic() - t0,
                   resumed=report.resumed)
        return report.bytes_sent

    # ------------------------------------------------------------------ stage
    def stage(self, a: Action) -> dict[str, Any] | None:
        if a.kind == "delete":
            return None
        if "nodes" in (a.after.get("inputs") or {}):  # a torchrun stage on every node of a fleet
            from runform.execution.multinode import run_multinode

            return run_multinode(self, a)
        name = name_of(a.address)
        agent = self.agent()
        fp = a.fingerprint
        s = self.ws.spec.stages[name]
        if a.kind != "read":
            env = dict(s.env)
            env.update(self._tracker_env())
            if isinstance(self.trk, HasStageEnv):  # a tracker's run of the stage's own
                env.update(self.trk.stage_env(name))
            st = agent.call("start", stage=name, fingerprint=fp, command=s.run, env=env, timeout=s.timeout,
                            launcher=s.launcher, nproc=s.nproc, retry_failed=a.retry_failed,
                            python=self.ws.machine(self.state).python)
            if st.get("attached") and st["state"] == "running":
                self.ws.say(f"{a.address}: attached to the running job (pid {st.get('pid')})")
        log = LogStream(self.ws, agent, a.address, name, fp) if self.ws.stream_logs else None
        while True:
            wait_s = 5 if self.machine_is_local() else 30
            st = agent.call("wait", stage=name, fingerprint=fp, timeout=min(wait_s, 2) if log else wait_s)
            if log is not None:
                log.pump()
            if st["state"] != "running":
                break
            if self.stop is not None and self.stop.is_set():
                raise Interrupted(f"{a.address}: stopped waiting; its job goes on (pid {st.get('pid')})")
        # metric names and values come from the stage: masked before the tracker or the state sees them
        m = self.ws.redactor.redact_json(agent.call("metrics", stage=name, fingerprint=fp, metrics_file=s.metrics))
        self._forward_metrics(name, m)
        self._forward_images(name, m)
        record = {"inputs": a.after.get("inputs"), "exit_code": st.get("exit_code"),
                  "started": st.get("started"), "ended": st.get("ended"),
                  "duration": (st["ended"] - st["started"]) if st.get("ended") and st.get("started") else None,
                  "metrics": m.get("final") or (m["records"][-1] if m.get("records") else {})}
        if st["state"] != "succeeded":
            why = f"{a.address} failed (exit {st.get('exit_code', '?')}, {st['state']})"
            if log is not None and log.lines:  # streamed above: not printed a second time
                raise StageFailed(f"{why}; its log is above (`runform logs {name}`)", record)
            tail = agent.call("tail", stage=name, fingerprint=fp, offset=0, limit=1 << 20)["data"]
            last = "\n".join(tail.rstrip().splitlines()[-15:])
            cause = f"; its supervisor said: {self.ws.redact(st['cause'])}" if st.get("cause") else ""
            raise StageFailed(why + cause + (f"; last lines of its log:\n{self.ws.redact(last)}" if last else ""), record)
        return record

    def _tracker_env(self) -> dict[str, str]:
        return dict(self.tracker_env)

    def _forward_metrics(self, stage: str, m: dict[str, Any]) -> None:
        pm = self.ws.pm
        for rec in m.get("records", []):
            step = rec.get("step")
            nums = {k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float))
                    and not isinstance(v, bool)}
            if nums:
                pm.notify("runform_stage_metrics", report=self.ws.say, stage=stage, metrics=nums, step=step)
                if self.trk:
                    self.trk.log_metrics(nums, stage=stage, step=step)
        if m.get("final"):
            pm.notify("runform_stage_metrics", report=self.ws.say, stage=stage, metrics=m["final"], step=None)
            if self.trk:
                self.trk.log_metrics(m["final"], stage=stage, step=None)

    def _forward_images(self, stage: str, m: dict[str, Any], node: int = 0) -> None:
        """Images a stage named in its metrics file (``{"images": {"name": "reports/x.png"}}``):
        copied from ``node`` (a multi-node stage: where rank 0 ran) to ``.runform/media/<stage>/``
        and handed to a tracker that takes images. A bad image is a warning, never a failed stage."""
        images: dict[str, str] = {}
        for rec in m.get("records", []):
            if isinstance(rec.get("images"), dict):
                images.update({str(k): str(v) for k, v in rec["images"].items() if isinstance(v, str)})
        if not images or not isinstance(self.trk, ImageTracker):
            return
        import base64
        import hashlib

        from runform.rootpath import check_name

        folder = self.ws.spec.state_dir / "media" / stage
        for key, rel in sorted(images.items())[:64]:
            try:
                name = check_name(key, what="image name")
                got = self.agent(node).call("read_media", path=rel)
                data = base64.b64decode(got["data"])
                if hashlib.sha256(data).hexdigest() != got["sha256"]:
                    raise RunformError(f"image {rel!r} changed while it was read")
                local = folder / (name + "." + rel.rsplit(".", 1)[-1].lower())
                folder.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                self.trk.log_image(name, local, stage=stage, source=rel)
            except RunformError as exc:
                self.ws.say(self.ws.redact(f"Warning: {stage}: image {key!r} not logged: {exc.message}"))

    # ------------------------------------------------------------------ artifact
    def artifact(self, a: Action, *, salvage: str | None = None) -> dict[str, Any] | None:
        """Push an artifact's paths. ``salvage`` (why the normal push did not happen) makes it
        the best-effort push before a teardown: what exists goes, what is missing is noted."""
        if a.kind in ("delete", "forget"):
            return None
        name = name_of(a.address)
        art = self.ws.spec.artifacts[name]
        prior = self.state.get(a.address)
        from runform.execution.multinode import push_node

        agent = self.agent(push_node(self, name))  # a fleet: the node where rank 0 ran
        t0, push_id = time.monotonic(), uuid.uuid4().hex[:12]
        # the tracker's env (run id, project, group) gives a push its lineage to the pipeline run
        with ProgressReporter(self.ws, agent, a.address, name, kind="artifact", verb="pushed",
                               every=self.transfer_every, ident=push_id), \
                AbortOn(None if salvage else self.stop, agent.machine.transport, a.address):
            # Ctrl-C stops the push (not a salvage's: the machine and its outputs go after it)
            res = agent.call("push", name=name, push_id=push_id, paths=list(art.paths), to=art.to,
                             missing_ok=bool(salvage),
                             prior=(prior.attrs.get("manifests") if prior else None),
                             env={**self._tracker_env(), "RUNFORM_ARTIFACT_TYPE": art.type})
        if res.get("pushed"):
            self._pushed(a.address, int(res["pushed"]["total"]), time.monotonic() - t0)
        if self.trk:
            for rel, m in res["manifests"].items():
                self.trk.link_artifact(name, art.to, Manifest.from_json(m))
        total = sum(len(m["entries"]) for m in res["manifests"].values())
        out = {"to": art.to, "paths": list(art.paths), "inputs": a.after.get("inputs"),
               "manifests": res["manifests"], "objects": total}
        pending = {rel: where for rel, m in res["manifests"].items()
                   if (where := Manifest.from_json(m).pending_sync)}
        if pending:  # logged offline: uploaded only by `wandb sync` on the machine
            out["pending_sync"] = pending
            for where in pending.values():
                self.ws.say(f"{a.address}: logged offline, pending sync: run `wandb sync {where}` on the "
                            "machine (before it is torn down)")
        if salvage:
            out.update(salvaged=salvage, missing=list(res.get("missing") or []))
        return out

    # ------------------------------------------------------------------ tracker
    def tracker(self, a: Action) -> dict[str, Any] | None:
        if a.kind in ("delete", "forget"):
            return None
        return {"kind": self.ws.spec.tracker.kind, "run_id": self.run_id, "env": dict(self.tracker_env)}


def record_of(address: str, attrs_: dict[str, Any], fingerprint: str | None, status: str = "ok") -> ResourceState:
    return ResourceState(address=address, attrs=attrs_, fingerprint=fingerprint, status=status,
                         updated=time.time())


def _lost(a: Action) -> tuple[str, ...] | None:
    """The files a dataset's refresh found missing or changed on the machine (the dest was
    emptied or moved, a file deleted by hand) that its upload must send again although the
    machine's sync record lists them; ``None`` when the plan listed only the first of them."""
    from runform.planning.diff import DETAILS_MAX

    if a.code != "update_because_files_missing":
        return ()
    return None if len(a.details) >= DETAILS_MAX else a.details
