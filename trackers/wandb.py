"""The ``wandb`` tracker: one W&B run per pipeline, resumed on every apply.

- Run id: the id the core passes to ``start`` (use :func:`.base.deterministic_run_id`, from
  the run name and the state's lineage), with ``resume="allow"``: a re-apply continues the
  same run. Files go to ``<state_dir>/wandb``.
- Group: ``tracker.group``, else the run id, so the runs that push its ``wandb://`` artifacts
  from the machine (same group, job type ``runform-push-<name>``) sit with it in W&B's UI.
- Mode: ``tracker.mode``, else ``WANDB_MODE`` (``online``, ``offline``, ``disabled``).
  Offline runs are synced later with ``wandb sync``.
- Metrics: ``<stage>/<name>``, with the step logged as data (``<stage>/step``) and declared
  once with ``define_metric(<stage>/*, step_metric=<stage>/step)``; ``step=`` is never used
  (with ``define_metric`` it gave the seed pipeline empty charts).
- Events: counters in the run summary (``runform/events/<type>``) and the last event.
- Artifacts: a typed, versioned ``wandb.Artifact`` holding runform's manifest (so a content
  change makes a new version) and a reference to the storage URI, logged by the run. For a
  ``wandb://`` destination the real artifact is logged on the machine by the push (see
  :mod:`runform.storage_backends.wandb`); this one names that version in its metadata
  (``wandb_artifact``: ``entity/project/name:vN``) and, online, the run uses it.
- Everything runform hands to W&B is redacted first; console capture, git, code, system
  metrics and host metadata are off, so nothing else of the process lands in W&B files.

``wandb`` is imported when the run starts, never at module import.
"""

from __future__ import annotations

import json
import logging
import netrc
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import runform.hookspecs
from runform.errors import RunformError
from runform.interfaces import Manifest

from .base import TrackerContext
from .wandb_records import wait_for_exit_record

log = logging.getLogger("runform.trackers.wandb")

_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_REFERENCE_SCHEMES = ("s3", "gs", "http", "https", "file")


class WandbTracker:
    """A W&B run driven by runform. ``config`` is the spec's ``tracker`` block: ``project``,
    ``entity``, ``mode``, ``group``, ``tags``, ``job_type``, ``notes``, ``artifact_type``."""

    def __init__(self, config: Mapping[str, Any], ctx: TrackerContext) -> None:
        self.config = dict(config or {})
        self.ctx = ctx
        env = ctx.env
        self.project = str(self.config.get("project") or env.get("WANDB_PROJECT") or ctx.run)
        self.entity = self.config.get("entity") or env.get("WANDB_ENTITY") or None
        mode = str(self.config.get("mode") or env.get("WANDB_MODE") or "online").lower()
        self.mode = "offline" if mode == "dryrun" else mode
        self.dir = Path(ctx.state_dir) / "wandb"
        self.run: Any = None
        self.run_id: str | None = None
        self._stages: set[str] = set()
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle
    def _settings(self) -> Any:
        import wandb

        kwargs: dict[str, Any] = {
            "mode": self.mode, "console": "off", "disable_git": True, "save_code": False,
            "x_disable_stats": True, "x_disable_meta": True, "x_disable_machine_info": True,
            "x_save_requirements": False, "silent": True, "disable_job_creation": True,
        }
        if self.mode in ("online", "shared"):
            key = self.ctx.env.get("WANDB_API_KEY")
            if key:
                kwargs["api_key"] = key
            elif not _netrc_has_wandb(self.ctx.env.get("WANDB_BASE_URL")):
                raise RunformError(
                    "the wandb tracker is online but no WANDB_API_KEY is set",
                    hint="put WANDB_API_KEY in the secrets env file, or set WANDB_MODE=offline")
            if base := self.ctx.env.get("WANDB_BASE_URL"):
                kwargs["base_url"] = base
        return wandb.Settings(**kwargs)

    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        """Start or resume ``run_id``; returns the env that lets stage code join the run."""
        import wandb

        redact = self.ctx.redact
        self.dir.mkdir(parents=True, exist_ok=True)
        _next_second_if_taken(self.dir, run_id)
        self.run = wandb.init(
            id=run_id, resume="allow", project=self.project, entity=self.entity,
            name=redact(name), dir=str(self.ctx.state_dir), config=redact(dict(config)),
            group=redact(self.group(run_id)), tags=redact(list(self.config.get("tags") or [])) or None,
            job_type=self.config.get("job_type"), notes=redact(self.config.get("notes")),
            settings=self._settings(), reinit="create_new",
        )
        self.run_id = run_id
        env = {"WANDB_RUN_ID": run_id, "WANDB_RESUME": "allow", "WANDB_PROJECT": self.project,
               "WANDB_MODE": self.mode, "WANDB_NAME": redact(name),
               "RUNFORM_RUN_ID": run_id, "RUNFORM_TRACKER": "wandb"}
        if self.entity:
            env["WANDB_ENTITY"] = str(self.entity)
        env["WANDB_RUN_GROUP"] = redact(self.group(run_id))
        return env

    def group(self, run_id: str) -> str:
        """The run's W&B group: ``tracker.group``, else the run id (pushes join it)."""
        return str(self.config.get("group") or run_id)

    def finish(self) -> None:
        """Finish the run and wait (up to ``finish_timeout_s``, default 30) until its run file
        holds the exit record: wandb-core may still be flushing when ``finish`` returns."""
        if self.run is None:
            return
        run, self.run = self.run, None
        sync_file = getattr(run.settings, "sync_file", None)
        run.finish()
        if sync_file and self.mode != "disabled":
            timeout = float(self.config.get("finish_timeout_s", 30))
            if not wait_for_exit_record(Path(sync_file), timeout):
                log.warning("wandb run file %s not complete after %.0f s", sync_file, timeout)

    def _require(self) -> Any:
        if self.run is None:
            raise RunformError("the wandb tracker was used before start()")
        return self.run

    # ------------------------------------------------------------------ records
    def log_metrics(self, metrics: Mapping[str, float], *, stage: str, step: int | None = None) -> None:
        """Log ``<stage>/<key>`` values; the step goes in as ``<stage>/step`` data."""
        run = self._require()
        stage = self.ctx.redact(stage)
        data: dict[str, Any] = {f"{stage}/{self.ctx.redact(str(k))}": v for k, v in metrics.items()}
        if step is not None:
            if stage not in self._stages:
                run.define_metric(f"{stage}/step")
                run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
                self._stages.add(stage)
            data[f"{stage}/step"] = step
        run.log(data)

    def log_event(self, event: Mapping[str, Any]) -> None:
        """Count events by type in the summary and keep the last one."""
        run = self._require()
        doc = self.ctx.redact(dict(event))
        kind = _ARTIFACT_NAME.sub("_", str(doc.get("type") or "event"))
        self._counts[kind] = self._counts.get(kind, 0) + 1
        run.summary[f"runform/events/{kind}"] = self._counts[kind]
        run.summary["runform/last_event"] = json.dumps(doc, default=str, sort_keys=True)[:4096]

    def link_artifact(self, name: str, uri: str, manifest: Manifest) -> None:
        """Log a typed, versioned artifact for ``uri`` as an output of the run.

        For a ``wandb://`` destination the pushed version (``entity/project/name:vN``, from
        the push's manifest) goes in this artifact's metadata as ``wandb_artifact``, and in
        online (or shared) mode the run also uses it (``run.use_artifact``), so W&B's
        lineage graph links the pipeline run to it. Offline, W&B cannot use an artifact
        (``use_artifact`` needs the server), so the reference stays in the metadata only;
        the push run's group and job type still tie the version to this run. A failed
        ``use_artifact`` is a warning: the push itself succeeded.
        """
        import wandb

        run = self._require()
        redact = self.ctx.redact
        art_name = _ARTIFACT_NAME.sub("-", f"{self.ctx.run}-{name}").strip("-.")[:120]
        art_type = "dataset" if name.startswith("dataset") else str(
            self.config.get("artifact_type") or "model")
        pushed = self._pushed_version(uri, manifest)
        meta = redact({"runform_name": name, "uri": uri, "version": manifest.version,
                       "digest": manifest.digest, "files": len(manifest.entries),
                       "bytes": manifest.total_bytes,
                       **({"wandb_artifact": pushed} if pushed else {})})
        art = wandb.Artifact(art_name, type=art_type, metadata=meta)
        with art.new_file("runform-manifest.json", mode="w") as f:
            json.dump(redact(manifest.to_json()), f, sort_keys=True)
        if urlsplit(uri).scheme in _REFERENCE_SCHEMES and redact(uri) == uri:
            try:  # a pointer only: no listing or download (works offline)
                art.add_reference(uri, name="source", checksum=False)
            except Exception as exc:  # noqa: BLE001 (an unusual URI must not fail the apply)
                log.debug("no W&B reference for %s: %s", uri, exc)
        run.log_artifact(art, aliases=["latest", f"run-{self.run_id}"])
        if pushed and self.mode in ("online", "shared") and redact(pushed) == pushed:
            try:
                run.use_artifact(pushed)
            except Exception as exc:  # noqa: BLE001 (lineage must not fail a done push)
                log.warning("wandb: could not mark %s as used by run %s: %s",
                            pushed, self.run_id, exc)

    def _pushed_version(self, uri: str, manifest: Manifest) -> str | None:
        """``entity/project/name:vN`` of a ``wandb://`` push (None for other schemes, or
        when the push's manifest has no ``vN``)."""
        from runform.storage_backends.wandb import ArtifactRef

        version = manifest.version or ""
        if not (version[:1] == "v" and version[1:].isdigit()):
            return None
        for candidate in (manifest.uri, uri):
            if urlsplit(candidate).scheme != "wandb":
                continue
            try:
                ref = ArtifactRef.parse(candidate, self.ctx.env)
            except RunformError:
                continue
            return f"{ref.entity}/{ref.project}/{ref.name}:{version}"
        return None


def _next_second_if_taken(wandb_dir: Path, run_id: str) -> None:
    """W&B names a run's folder ``<mode>-run-<YYYYmmdd_HHMMSS>-<id>``. A second start of the
    same id within the same second finds that folder taken and its records are lost (seen
    with wandb 0.31 offline), so wait for the next second in that case (a re-apply right
    after an apply)."""
    while any(wandb_dir.glob(f"*run-{time.strftime('%Y%m%d_%H%M%S')}-{run_id}")):
        time.sleep(1.01 - time.time() % 1)


def _netrc_has_wandb(base_url: str | None) -> bool:
    host = urlsplit(base_url or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@runform.hookspecs.hookimpl
def runform_register_trackers(register: Callable[..., None]) -> None:
    register("wandb", WandbTracker)
