"""The W&B artifact server behind a small runform-owned interface.

W&B's public API goes through the ``wandb-core`` sidecar and needs a live server and key,
so it cannot be recorded or faked at HTTP (storage.md §6). runform talks to it through
:class:`WandbArtifactAPI`; :class:`WandbPublicAPI` is the real implementation (``wandb.Api``,
imported lazily) and :class:`DirArtifactStore` a faithful fake on a folder, usable across
processes (set ``RUNFORM_WANDB_FAKE_DIR`` in the env given to the backend).

Digests crossing this interface are runform's: ``md5:<hex>`` (W&B's default, which stores
base64 of the raw MD5) or ``xxh128:<hex>`` (W&B's opt-in algorithm).

Lineage of a push: W&B logs an artifact version from a run. The machine must not write into
the pipeline's own run (the client holds it open: two writers), so :func:`log_push` starts a
short run of its own, grouped with the pipeline run (``group``), named by its ``job_type``
(``runform-push-<artifact>``), and the version's metadata names the pipeline run
(``runform_run_id``). The push run never takes ``WANDB_RUN_ID``/``WANDB_RESUME`` from the
environment: its id is always a fresh one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from runform.errors import RunformError


class ArtifactVersion(NamedTuple):
    """What an alias points at: ``(version, digest, files)``; files are
    ``(path, size, digest)`` with runform digests."""

    version: str  # "v3"
    digest: str  # W&B's artifact digest (hex MD5 over its manifest)
    files: tuple[tuple[str, int, str], ...]


@runtime_checkable
class WandbArtifactAPI(Protocol):
    """The W&B artifact server, as much of it as runform uses."""

    def resolve(self, entity: str, project: str, name: str, alias: str) -> ArtifactVersion:
        """The version an alias (or ``vN``) points at now, with its files."""
        ...

    def download(self, entity: str, project: str, name: str, version: str, path: str,
                 target: Path) -> None:
        """Write one file of ``name:version`` to ``target`` (a temp path runform renames)."""
        ...

    def upload(self, entity: str, project: str, name: str, files: Mapping[str, Path], *,
               type: str, aliases: Iterable[str], metadata: Mapping[str, Any] | None = None,
               group: str | None = None, job_type: str | None = None) -> str:
        """Log a new version holding ``files`` (path → local file) with ``type`` and
        ``metadata``, from a run in ``group`` with ``job_type`` (see :func:`log_push`); return
        its version. W&B makes no new version when the content equals the current one."""
        ...


PUSH_JOB_TYPE = "runform-push"


def push_job_type(name: str) -> str:
    """The ``job_type`` of the run that pushes artifact ``name``: ``runform-push-<name>``."""
    return f"{PUSH_JOB_TYPE}-{name}"[:64]


def push_settings(*, api_key: str | None = None, base_url: str | None = None,
                  mode: str | None = None) -> Any:
    """Settings of a push run: like the tracker's run, nothing of the process (console, git,
    code, system metrics, host metadata, requirements) lands in W&B files. ``mode`` None:
    W&B's own choice (``WANDB_MODE``)."""
    import wandb

    kwargs: dict[str, Any] = {
        "console": "off", "disable_git": True, "save_code": False, "x_disable_stats": True,
        "x_disable_meta": True, "x_disable_machine_info": True, "x_save_requirements": False,
        "silent": True, "disable_job_creation": True,
    }
    if api_key:
        kwargs["api_key"] = api_key
    if base_url:
        kwargs["base_url"] = base_url
    if mode:
        kwargs["mode"] = mode
    return wandb.Settings(**kwargs)


def log_push(entity: str, project: str, name: str, files: Mapping[str, Path], *, type: str,
             aliases: Iterable[str], metadata: Mapping[str, Any] | None = None,
             group: str | None = None, job_type: str | None = None, settings: Any = None,
             dir: str | Path | None = None) -> tuple[Any, Any]:
    """Start a push run and log ``files`` as an artifact version from it; returns
    ``(run, artifact)``, the run still open (the caller waits for the version and finishes
    it). The run gets a fresh id (``push-<12 hex>``; never the pipeline run's, even when
    ``WANDB_RUN_ID`` is in the environment), ``group`` and ``job_type`` (default
    ``runform-push-<name>``). Works offline too (the version is then known only after
    ``wandb sync``)."""
    import wandb

    run = wandb.init(
        id=f"push-{uuid.uuid4().hex[:12]}", resume="never", entity=entity, project=project,
        group=group, job_type=job_type or push_job_type(name), name=f"push {name}",
        dir=str(dir) if dir is not None else None, settings=settings or push_settings(),
        reinit="create_new",
    )
    try:
        art = wandb.Artifact(name, type=type, metadata=dict(metadata or {}))
        for rel, path in files.items():
            art.add_file(str(path), name=rel)
        return run, run.log_artifact(art, aliases=list(aliases))
    except BaseException:
        run.finish(exit_code=1)
        raise


# ---------------------------------------------------------------------- digests


def b64_to_hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def wandb_file_digest(path: Path) -> str:
    """W&B's default entry digest: base64 of the raw MD5."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def artifact_digest(entries: Mapping[str, str]) -> str:
    """W&B's artifact digest over ``path -> base64 entry digest`` (storage.md §6)."""
    h = hashlib.md5(b"wandb-artifact-manifest-v1\n")
    for path in sorted(entries):
        h.update(f"{path}:{entries[path]}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------- real


class WandbPublicAPI:
    """The real server through ``wandb.Api`` (needs ``WANDB_API_KEY`` and network)."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None,
                 run_dir: str | None = None) -> None:
        self.api_key, self.base_url = api_key, base_url
        self.run_dir = run_dir  # where a push run's local files go (never the user's folder)
        self._api: Any = None
        self._artifacts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _artifact(self, entity: str, project: str, name: str, alias: str) -> Any:
        path = f"{entity}/{project}/{name}:{alias}"
        with self._lock:
            if path not in self._artifacts:
                if self._api is None:
                    import wandb

                    overrides = {"base_url": self.base_url} if self.base_url else None
                    self._api = wandb.Api(overrides=overrides, api_key=self.api_key)
                try:
                    self._artifacts[path] = self._api.artifact(path)
                except Exception as exc:  # wandb raises CommError/ValueError variants
                    raise RunformError(f"wandb://{path}: {exc}",
                                       hint="check entity/project/name and the alias, and "
                                            "that WANDB_API_KEY can read it") from exc
            return self._artifacts[path]

    def resolve(self, entity: str, project: str, name: str, alias: str) -> ArtifactVersion:
        art = self._artifact(entity, project, name, alias)
        files = []
        for path, entry in sorted(art.manifest.entries.items()):
            if entry.ref is not None:
                raise RunformError(
                    f"wandb://{entity}/{project}/{name}:{alias}: {path} is a reference to "
                    f"{entry.ref}",
                    hint="use the referenced storage URI as the dataset source instead")
            algo = str(entry.extra.get("digest_algorithm") or "md5").lower()
            kind = "xxh128" if "xxh" in algo else "md5"
            files.append((path, int(entry.size or 0), f"{kind}:{b64_to_hex(entry.digest)}"))
        return ArtifactVersion(art.version, art.digest, tuple(files))

    def download(self, entity: str, project: str, name: str, version: str, path: str,
                 target: Path) -> None:
        art = self._artifact(entity, project, name, version)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".runform-wandb-") as root:
            got = art.get_entry(path).download(root=root)
            os.replace(got, target)

    def upload(self, entity: str, project: str, name: str, files: Mapping[str, Path], *,
               type: str, aliases: Iterable[str], metadata: Mapping[str, Any] | None = None,
               group: str | None = None, job_type: str | None = None) -> str:
        run, logged = log_push(entity, project, name, files, type=type, aliases=aliases,
                               metadata=metadata, group=group, job_type=job_type, dir=self.run_dir,
                               settings=push_settings(api_key=self.api_key,
                                                      base_url=self.base_url))
        try:
            logged.wait()  # needs the server: offline, W&B knows no version until `wandb sync`
            return str(logged.version)
        finally:
            run.finish()


# ---------------------------------------------------------------------- fake


class DirArtifactStore:
    """A W&B artifact server on a folder: ``<root>/<entity>/<project>/<name>/vN/<files>``,
    ``aliases.json`` and ``versions.json`` (each version's ``type``, ``metadata`` and the
    ``run`` that logged it: ``group``, ``job_type``). Same digests and versioning rules as
    W&B (a new version only when the content digest changes, keeping the first push's
    metadata; ``latest`` always moves). Safe across processes for tests."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.downloads = 0  # files served by this instance

    def _dir(self, entity: str, project: str, name: str) -> Path:
        return self.root / entity / project / name

    def _aliases(self, entity: str, project: str, name: str) -> dict[str, str]:
        p = self._dir(entity, project, name) / "aliases.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def _version_dir(self, entity: str, project: str, name: str, alias: str) -> Path:
        base = self._dir(entity, project, name)
        version = alias if alias[:1] == "v" and alias[1:].isdigit() else \
            self._aliases(entity, project, name).get(alias)
        if version is None or not (base / version).is_dir():
            raise RunformError(f"wandb://{entity}/{project}/{name}:{alias} not found")
        return base / version

    def resolve(self, entity: str, project: str, name: str, alias: str) -> ArtifactVersion:
        vdir = self._version_dir(entity, project, name, alias)
        b64: dict[str, str] = {}
        files = []
        for path in sorted(p for p in vdir.rglob("*") if p.is_file()):
            rel = path.relative_to(vdir).as_posix()
            b64[rel] = wandb_file_digest(path)
            files.append((rel, path.stat().st_size, "md5:" + b64_to_hex(b64[rel])))
        return ArtifactVersion(vdir.name, artifact_digest(b64), tuple(files))

    def download(self, entity: str, project: str, name: str, version: str, path: str,
                 target: Path) -> None:
        src = self._version_dir(entity, project, name, version) / path
        shutil.copyfile(src, target)
        self.downloads += 1

    def upload(self, entity: str, project: str, name: str, files: Mapping[str, Path], *,
               type: str = "dataset", aliases: Iterable[str] = (),
               metadata: Mapping[str, Any] | None = None, group: str | None = None,
               job_type: str | None = None) -> str:
        base = self._dir(entity, project, name)
        base.mkdir(parents=True, exist_ok=True)
        digest = artifact_digest({rel: wandb_file_digest(p) for rel, p in files.items()})
        aliases_now = self._aliases(entity, project, name)
        versions = sorted(int(p.name[1:]) for p in base.glob("v*") if p.name[1:].isdigit())
        version = None
        if "latest" in aliases_now and \
                self.resolve(entity, project, name, "latest").digest == digest:
            version = aliases_now["latest"]
        if version is None:
            version = f"v{(versions[-1] + 1) if versions else 0}"
            for rel, p in files.items():
                dst = base / version / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)
            info = self._versions(entity, project, name)
            info[version] = {"type": type, "metadata": json.loads(json.dumps(dict(metadata or {}))),
                             "run": {"group": group, "job_type": job_type or push_job_type(name)}}
            (base / "versions.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        for alias in {"latest", *aliases}:
            aliases_now[alias] = version
        (base / "aliases.json").write_text(json.dumps(aliases_now, indent=1, sort_keys=True))
        return version

    def _versions(self, entity: str, project: str, name: str) -> dict[str, Any]:
        p = self._dir(entity, project, name) / "versions.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def info(self, entity: str, project: str, name: str, alias: str) -> dict[str, Any]:
        """What the server knows of a version besides its files: ``type``, ``metadata`` and
        the logging ``run`` (``group``, ``job_type``); what W&B's UI shows for it."""
        version = self._version_dir(entity, project, name, alias).name
        return {"version": version, **self._versions(entity, project, name).get(version, {})}

    def set_alias(self, entity: str, project: str, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (what moving an alias in the W&B UI does)."""
        aliases = self._aliases(entity, project, name)
        aliases[alias] = version
        (self._dir(entity, project, name) / "aliases.json").write_text(json.dumps(aliases))


def api_from_env(env: Mapping[str, str]) -> WandbArtifactAPI:
    """The fake when ``RUNFORM_WANDB_FAKE_DIR`` is set, else the real server."""
    if fake := env.get("RUNFORM_WANDB_FAKE_DIR"):
        return DirArtifactStore(Path(fake))
    return WandbPublicAPI(api_key=env.get("WANDB_API_KEY"), base_url=env.get("WANDB_BASE_URL"),
                          run_dir=env.get("WANDB_DIR"))
