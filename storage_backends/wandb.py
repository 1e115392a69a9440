"""``wandb://entity/project/name:alias`` storage: W&B artifacts.

``resolve`` pins the alias to a version at plan time (``Manifest.version`` is ``vN``; the
entries carry each file's MD5), so the machine fetches exactly what the plan showed even if
the alias moves meanwhile. ``fetch`` moves only missing or changed files, one by one,
verified and renamed into place. ``push`` logs a new version (W&B makes none when the
content is unchanged).

A pushed version is typed and tied to the pipeline run that made it:

- type: ``push(..., artifact_type=)`` (the spec's ``artifacts.<name>.type``), else
  ``RUNFORM_ARTIFACT_TYPE`` in ``env``, else the backend's ``artifact_type``, else ``model``.
- lineage: when ``env`` holds the pipeline run's tracker variables (``RUNFORM_RUN_ID``, and
  ``WANDB_PROJECT``/``WANDB_ENTITY``/``WANDB_RUN_GROUP`` from the ``wandb`` tracker), the version's metadata names that run (``runform_run_id``,
  ``runform_run_path``) and the push run (see :func:`.wandb_api.log_push`) is put in the
  pipeline run's group (its ``WANDB_RUN_GROUP``, else its run id) with job type
  ``runform-push-<name>``. The pipeline run itself is never resumed from here: the client
  holds it open, and it records the pushed ``vN`` on its side
  (:meth:`runform.trackers.wandb.WandbTracker.link_artifact`).

Offline (``WANDB_MODE=offline``, the tracker's mode), a push is logged into an offline run and
never waits for a version: its manifest's ``version`` is ``pending-sync:<run folder>`` until
``wandb sync`` uploads it (:func:`.wandb_api.pending_sync`).

``wandb://project/name:alias`` takes the entity from ``WANDB_ENTITY``; a missing alias is
``latest``. ``validate`` checks the URI and the artifact name (:func:`check_uri`). The server is reached through :mod:`.wandb_api` (real, or the folder fake when
``RUNFORM_WANDB_FAKE_DIR`` is set).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import runform.hookspecs
from runform.interfaces import Manifest, ManifestEntry
from runform.storage.digest import md5_hex
from runform.storage.record import walk_files
from runform.storage.verify import VerifyReport, verify

from runform.storage.hydrate import HydrateOptions, Progress, hydrate
from runform.wandb_support import ArtifactRef, check_artifact_name
from .wandb_api import (
    WandbArtifactAPI,
    api_from_env,
    pending_sync,
    push_job_type,
)

DEFAULT_ARTIFACT_TYPE = "model"  # what an artifact (an output of a pipeline) is unless the spec says


def pipeline_run(env: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    """The push's group and the metadata naming the pipeline run, from the tracker variables
    in ``env`` (``(None, {})`` when there are none)."""
    run_id = env.get("RUNFORM_RUN_ID") or env.get("WANDB_RUN_ID")
    if not run_id:
        return None, {}
    meta: dict[str, Any] = {"runform_run_id": run_id}
    if env.get("RUNFORM_TRACKER", "wandb") == "wandb" and env.get("WANDB_PROJECT"):
        meta["runform_run_path"] = "/".join(
            p for p in (env.get("WANDB_ENTITY"), env["WANDB_PROJECT"], run_id) if p)
    if env.get("WANDB_RUN_GROUP"):
        meta["runform_run_group"] = env["WANDB_RUN_GROUP"]
    return env.get("WANDB_RUN_GROUP") or run_id, meta


def check_uri(uri: str) -> tuple[str, str] | None:
    """``(problem, fix)`` when ``uri`` cannot name a W&B artifact, else None. Needs no env (the
    entity may come from ``WANDB_ENTITY`` at run time) and no network: ``validate`` calls it."""
    body = uri[len("wandb://"):].strip("/") if uri.startswith("wandb://") else uri
    path, _, alias = body.partition(":")
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return (f"{uri!r} is not wandb://entity/project/name:alias",
                "write wandb://entity/project/name:alias (or wandb://project/name with WANDB_ENTITY set)")
    if problem := check_artifact_name(parts[-1]):
        return problem, "use letters, digits, '_', '-' and '.', at most 128 characters"
    if ":" in alias or "/" in alias:
        return f"alias {alias!r} has ':' or '/'", "write one alias (e.g. latest, best, v3) after the ':'"
    return None


class WandbBackend:
    """The ``wandb`` scheme. ``api`` replaces the server (tests); by default it is chosen
    from the env (see :func:`.wandb_api.api_from_env`)."""

    schemes = ("wandb",)

    @staticmethod
    def check_uri(uri: str) -> tuple[str, str] | None:
        """The plugin's validation hook: ``(problem, fix)`` for a bad URI (see :func:`check_uri`)."""
        return check_uri(uri)

    def __init__(self, api: WandbArtifactAPI | None = None, *,
                 artifact_type: str | None = None) -> None:
        self.api = api
        self.artifact_type = artifact_type

    def _api(self, env: Mapping[str, str]) -> WandbArtifactAPI:
        return self.api or api_from_env(env)

    def resolve(self, uri: str, env: Mapping[str, str]) -> Manifest:
        """Pin the alias: ``version`` = ``vN``, entries with ``md5:`` digests; the manifest's
        ``uri`` is normalised (``wandb://entity/project/name:alias``)."""
        ref = ArtifactRef.parse(uri, env)
        found = self._api(env).resolve(ref.entity, ref.project, ref.name, ref.alias)
        entries = tuple(ManifestEntry(p, s, d) for p, s, d in found.files)
        return Manifest(ref.uri, entries, version=found.version)

    def fetch(self, manifest: Manifest, dest: Path, env: Mapping[str, str], *,
              progress: Callable[[int], None] | None = None) -> int:
        """Download the pinned version's missing or changed files; returns bytes moved."""
        ref = ArtifactRef.parse(manifest.uri, env)
        version = manifest.version or ref.alias
        api = self._api(env)

        def transfer(entry: ManifestEntry, tmp: Path, report: Progress) -> None:
            api.download(ref.entity, ref.project, ref.name, version, entry.path, tmp)
            report(entry.size)

        return hydrate(manifest, Path(dest), transfer=transfer, progress=progress,
                       options=HydrateOptions(workers=8))

    def verify(self, manifest: Manifest, dest: Path) -> VerifyReport:
        return verify(manifest, dest)

    def push(self, src: Path, uri: str, env: Mapping[str, str], *,
             prior: Manifest | None = None, artifact_type: str | None = None) -> Manifest:
        """Log ``src`` as a new version of the artifact; the alias in ``uri`` (other than
        ``latest``) is added to it. Its type and lineage: see the module's docstring. Returns
        the manifest of the version now there (``version`` = ``vN``)."""
        return self.push_with_progress(src, uri, env, prior=prior, artifact_type=artifact_type,
                                       progress=lambda n: None)

    def push_with_progress(self, src: Path, uri: str, env: Mapping[str, str], *,
                           progress: Callable[[int], None], prior: Manifest | None = None,
                           artifact_type: str | None = None) -> Manifest:
        """``push`` counting its bytes (``runform.interfaces.ReportsPushProgress``) as far as
        W&B lets it be seen: file by file offline, all at once when W&B confirms an online
        version (see :meth:`.wandb_api.WandbPublicAPI.upload`)."""
        ref = ArtifactRef.parse(uri, env)
        files = dict(walk_files(Path(src)))
        pinned = ref.alias[:1] == "v" and ref.alias[1:].isdigit()
        aliases = [] if ref.alias == "latest" or pinned else [ref.alias]
        kind = (artifact_type or env.get("RUNFORM_ARTIFACT_TYPE") or self.artifact_type
                or DEFAULT_ARTIFACT_TYPE)
        group, metadata = pipeline_run(env)
        api = self._api(env)
        version = api.upload(ref.entity, ref.project, ref.name, files, type=kind,
                             aliases=aliases, metadata=metadata, group=group,
                             job_type=push_job_type(ref.name), progress=progress)
        if pending_sync(version) is not None:  # offline: no server to ask; the files are what went
            entries = tuple(ManifestEntry(rel, p.stat().st_size, "md5:" + md5_hex(p))
                            for rel, p in sorted(files.items()))
            return Manifest(ref.uri, entries, version=version)
        found = api.resolve(ref.entity, ref.project, ref.name, version)
        return Manifest(ref.uri, tuple(ManifestEntry(p, s, d) for p, s, d in found.files),
                        version=found.version)


@runform.hookspecs.hookimpl
def runform_register_storage_backends(register: Callable[..., None]) -> None:
    register("wandb", WandbBackend)
