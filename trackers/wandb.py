"""The ``wandb`` tracker: one W&B run per pipeline, resumed on every apply.

- Run id: the id the core passes to ``start`` (use :func:`.base.deterministic_run_id`, from
  the run name and the state's lineage), with ``resume="allow"``: a re-apply continues the
  same run. Files go to ``<state_dir>/wandb``. The client holds this run open; nobody else
  writes to it.
- Group: ``tracker.group``, else the run id. Stages get runs of their own in it
  (:meth:`WandbTracker.stage_env`: ``WANDB_RUN_GROUP``, a deterministic per-stage
  ``WANDB_RUN_ID`` with ``WANDB_RESUME=allow`` for that id only), and so do the runs that
  push ``wandb://`` artifacts from the machine (job type ``runform-push-<name>``).
- Mode: ``tracker.mode``, else ``WANDB_MODE`` (``online``, ``offline``, ``disabled``); it
  reaches the stages and the pushes (``WANDB_MODE``). Offline runs are synced later with
  ``wandb sync``.
- Credentials: W&B's own lookup (``WANDB_API_KEY`` from the secrets env file, else what
  ``wandb login`` saved for W&B's default host); a failure is a clear error.
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
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import runform.hookspecs
from runform.errors import RunformError
from runform.interfaces import Manifest, TrackerContext

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
        from runform.wandb_support import settings

        online = self.mode in ("online", "shared")
        env = self.ctx.env
        return settings(mode=self.mode, api_key=env.get("WANDB_API_KEY") if online else None,
                        base_url=env.get("WANDB_BASE_URL") if online else None)

    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        """Start or resume ``run_id``; returns the env of the pipeline's W&B context (project,
        group, mode; never this run's id: see :meth:`stage_env`). Credentials: W&B's own lookup
        (``WANDB_API_KEY`` from the secrets env file, else what ``wandb login`` saved)."""
        import wandb

        redact = self.ctx.redact
        self.dir.mkdir(parents=True, exist_ok=True)
        _next_second_if_taken(self.dir, run_id)
        try:
            self.run = wandb.init(
                id=run_id, resume="allow", project=self.project, entity=self.entity,
                name=redact(name), dir=str(self.ctx.state_dir), config=redact(dict(config)),
                group=redact(self.group(run_id)), tags=redact(list(self.config.get("tags") or [])) or None,
                job_type=self.config.get("job_type"), notes=redact(self.config.get("notes")),
                settings=self._settings(), reinit="create_new",
            )
        except wandb.errors.Error as exc:  # not logged in, bad key, server unreachable ...
            raise RunformError(
                f"the wandb tracker could not start its run ({self.mode}): {redact(str(exc))}",
                hint="log in with `wandb login` (or put WANDB_API_KEY in the secrets env file), or "
                "set tracker.mode: offline") from None
        self.run_id = run_id
        env = {"WANDB_PROJECT": self.project, "WANDB_MODE": self.mode,
               "RUNFORM_RUN_ID": run_id, "RUNFORM_TRACKER": "wandb"}
        if self.entity:
            env["WANDB_ENTITY"] = str(self.entity)
        env["WANDB_RUN_GROUP"] = redact(self.group(run_id))
        return env

    def stage_env(self, stage: str) -> Mapping[str, str]:
        """The env a stage's own W&B run takes: a deterministic id of its own
        (:func:`stage_run_id`) that it may resume (``WANDB_RESUME=allow``, for that id only), in
        the pipeline's group, named ``<run> <stage>`` with job type ``<stage>``. Never the
        pipeline's run id: the client holds that run open, and several writers of one run give
        undefined results (storage.md §0)."""
        run_id = self.run_id or self.ctx.run_id
        return {"WANDB_RUN_ID": stage_run_id(run_id, stage), "WANDB_RESUME": "allow",
                "WANDB_RUN_GROUP": self.ctx.redact(self.group(run_id)),
                "WANDB_JOB_TYPE": stage[:64], "WANDB_NAME": self.ctx.redact(f"{self.ctx.run} {stage}")}

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

    def log_image(self, name: str, path: Path, *, stage: str, source: str) -> None:
        """Log ``<stage>/<name>`` as a ``wandb.Image`` (W&B's media panel shows it)."""
        import wandb

        run = self._require()
        stage = self.ctx.redact(stage)
        run.log({f"{stage}/{self.ctx.redact(name)}": wandb.Image(str(path), caption=self.ctx.redact(source))})

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
        from runform.wandb_support import ArtifactRef

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


def stage_run_id(run_id: str, stage: str) -> str:
    """A stage's W&B run id: ``<pipeline run id>-<stage slug>-<6 hex>``, stable across applies
    (so a re-run resumes the stage's own run), at most 64 characters of ``[a-z0-9_-]``."""
    import hashlib

    slug = re.sub(r"[^a-z0-9_-]+", "-", stage.lower()).strip("-")[:24] or "stage"
    digest = hashlib.sha256(f"{run_id}\0{stage}".encode()).hexdigest()[:6]
    return f"{run_id[:64 - len(slug) - 8]}-{slug}-{digest}"


@runform.hookspecs.hookimpl
def runform_register_trackers(register: Callable[..., None]) -> None:
    register("wandb", WandbTracker)
