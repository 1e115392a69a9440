"""The W&B artifact server behind a small runform-owned interface.

W&B's public API goes through the ``wandb-core`` sidecar and needs a live server and key,
so it cannot be recorded or faked at HTTP (storage.md §6). runform talks to it through
:class:`WandbArtifactAPI`; :class:`WandbPublicAPI` is the real implementation (``wandb.Api``,
imported lazily); the tests' faithful fake on a folder is :class:`runform.testing.fakes.DirArtifactStore`
(set ``RUNFORM_WANDB_FAKE_DIR`` in the env given to the backend).

Digests crossing this interface are runform's: ``md5:<hex>`` or ``xxh128:<hex>``. W&B stores
base64 of the raw digest and names the algorithm per entry (``entry.extra["alg"]``, read
through ``ArtifactManifestEntry.digest_algorithm()``; no tag means MD5), see
:func:`entry_digest`.

Downloads write straight to runform's temp file (``skip_cache=True``): no copy in W&B's cache,
so a dataset takes its size once on the machine's disk, not twice.

Offline (the tracker's mode, ``WANDB_MODE`` in the push's env), W&B cannot tell a version:
``Artifact.wait()`` raises. A push then never waits: the version is logged into an offline run
and its ``version`` is ``pending-sync:<run folder>`` (:func:`pending_sync`), synced later with
``wandb sync <run folder>``. ``disabled`` cannot push and says so.

Credentials are W&B's own business: ``WANDB_API_KEY`` when the env has it, else whatever
``wandb login`` saved (wandb reads it; runform never guesses the netrc host).

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
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from runform.errors import RunformError
from runform.interfaces import PENDING_SYNC
from runform.wandb_support import settings


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
               group: str | None = None, job_type: str | None = None,
               progress: Callable[[int], None] | None = None) -> str:
        """Log a new version holding ``files`` (path → local file) with ``type`` and
        ``metadata``, from a run in ``group`` with ``job_type`` (see :func:`log_push`); return
        its version. W&B makes no new version when the content equals the current one.
        ``progress(n)`` counts the bytes pushed, ending at the size of ``files``."""
        ...


PUSH_JOB_TYPE = "runform-push"
def pending_sync(version: str | None) -> str | None:
    """The offline run folder of a version logged offline (None for a real version)."""
    if version and version.startswith(PENDING_SYNC):
        return version[len(PENDING_SYNC):]
    return None


def push_job_type(name: str) -> str:
    """The ``job_type`` of the run that pushes artifact ``name``: ``runform-push-<name>``."""
    return f"{PUSH_JOB_TYPE}-{name}"[:64]


def push_settings(*, api_key: str | None = None, base_url: str | None = None,
                  mode: str | None = None) -> Any:
    """Settings of a push run (see :func:`settings`)."""
    return settings(mode=mode, api_key=api_key, base_url=base_url)


def log_push(entity: str, project: str, name: str, files: Mapping[str, Path], *, type: str,
             aliases: Iterable[str], metadata: Mapping[str, Any] | None = None,
             group: str | None = None, job_type: str | None = None, settings: Any = None,
             dir: str | Path | None = None,
             on_added: Callable[[int], None] | None = None) -> tuple[Any, Any]:
    """Start a push run and log ``files`` as an artifact version from it; returns
    ``(run, artifact)``, the run still open (the caller waits for the version and finishes
    it). The run gets a fresh id (``push-<12 hex>``; never the pipeline run's, even when
    ``WANDB_RUN_ID`` is in the environment), ``group`` and ``job_type`` (default
    ``runform-push-<name>``). Works offline too (the version is then known only after
    ``wandb sync``). ``on_added(size)`` follows each file W&B has taken in (read, hashed and
    copied into its staging folder)."""
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
            entry = art.add_file(str(path), name=rel)
            if on_added is not None:
                on_added(int(entry.size or 0))
        return run, run.log_artifact(art, aliases=list(aliases))
    except BaseException:
        run.finish(exit_code=1)
        raise


# ---------------------------------------------------------------------- digests


def b64_to_hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def entry_digest(entry: Any, where: str = "") -> str:
    """runform's digest of a W&B manifest entry: the algorithm is the entry's own
    (``digest_algorithm()``, i.e. ``extra["alg"]``; none means MD5)."""
    alg: Any = None
    method = getattr(entry, "digest_algorithm", None)
    if callable(method):
        alg = method()
        alg = getattr(alg, "name", alg)  # an enum member: MANIFEST_MD5 / MANIFEST_XXH128
    if alg is None:
        alg = (getattr(entry, "extra", None) or {}).get("alg") or "MD5"
    name = str(alg).upper().replace("MANIFEST_", "")
    kinds = {"MD5": "md5", "XXH128": "xxh128"}
    if name not in kinds:
        raise RunformError(f"{where or entry.path}: W&B digest algorithm {alg!r} is not one runform checks",
                           hint="upgrade runform, or log the artifact with digest_algorithm='MD5' or 'XXH128'")
    return f"{kinds[name]}:{b64_to_hex(entry.digest)}"


def artifact_files(entries: Mapping[str, Any], where: str) -> tuple[tuple[str, int, str], ...]:
    """``(path, size, digest)`` of a W&B manifest's entries (``artifact.manifest.entries``),
    refusing references (their bytes live elsewhere)."""
    files = []
    for path, entry in sorted(entries.items()):
        if entry.ref is not None:
            raise RunformError(f"{where}: {path} is a reference to {entry.ref}",
                               hint="use the referenced storage URI as the dataset source instead")
        files.append((path, int(entry.size or 0), entry_digest(entry, f"{where}: {path}")))
    return tuple(files)


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
    """The real server through ``wandb.Api`` (credentials: ``api_key`` or wandb's own lookup;
    ``mode``: the tracker's W&B mode, which the push follows)."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None,
                 run_dir: str | None = None, mode: str | None = None) -> None:
        self.api_key, self.base_url = api_key, base_url
        self.run_dir = run_dir  # where a push run's local files go (never the user's folder)
        self.mode = "offline" if mode == "dryrun" else (mode or None)
        self._api: Any = None
        self._artifacts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _artifact(self, entity: str, project: str, name: str, alias: str) -> Any:
        path = f"{entity}/{project}/{name}:{alias}"
        with self._lock:
            if path not in self._artifacts:
                try:
                    if self._api is None:
                        import wandb

                        overrides = {"base_url": self.base_url} if self.base_url else None
                        self._api = wandb.Api(overrides=overrides, api_key=self.api_key)
                    self._artifacts[path] = self._api.artifact(path)
                except Exception as exc:  # wandb raises CommError/ValueError/UsageError variants
                    raise RunformError(f"wandb://{path}: {exc}",
                                       hint="check entity/project/name and the alias, and that you are "
                                            "logged in (`wandb login`, or WANDB_API_KEY in the secrets "
                                            "env file)") from exc
            return self._artifacts[path]

    def resolve(self, entity: str, project: str, name: str, alias: str) -> ArtifactVersion:
        art = self._artifact(entity, project, name, alias)
        files = artifact_files(art.manifest.entries, f"wandb://{entity}/{project}/{name}:{alias}")
        return ArtifactVersion(art.version, art.digest, files)

    def download(self, entity: str, project: str, name: str, version: str, path: str,
                 target: Path) -> None:
        """One file, straight to ``target``'s folder (``skip_cache``: no copy in W&B's cache),
        then renamed onto ``target``."""
        art = self._artifact(entity, project, name, version)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".runform-wandb-") as root:
            got = art.get_entry(path).download(root=root, skip_cache=True)
            os.replace(got, target)

    def upload(self, entity: str, project: str, name: str, files: Mapping[str, Path], *,
               type: str, aliases: Iterable[str], metadata: Mapping[str, Any] | None = None,
               group: str | None = None, job_type: str | None = None,
               progress: Callable[[int], None] | None = None) -> str:
        """Progress, as much as wandb shows: it has no byte callback, and uploads from its
        ``wandb-core`` process after ``log_artifact``. Offline, taking the files in is the whole
        push, so each file counts once W&B has staged it; online, the bytes count when W&B
        confirms the version (``wait()``), all at once."""
        if self.mode == "disabled":
            raise RunformError(f"wandb://{entity}/{project}/{name}: W&B is disabled (WANDB_MODE=disabled), "
                               "so the artifact cannot be pushed",
                               hint="set tracker.mode (or WANDB_MODE) to online or offline, or push the "
                                    "artifact to s3:// or b2:// instead")
        count = progress or (lambda n: None)
        staged: list[int] = []
        run, logged = log_push(entity, project, name, files, type=type, aliases=aliases,
                               metadata=metadata, group=group, job_type=job_type, dir=self.run_dir,
                               settings=push_settings(api_key=self.api_key, base_url=self.base_url,
                                                      mode=self.mode),
                               on_added=count if self.mode == "offline" else staged.append)
        offline = self.mode == "offline" or str(getattr(run.settings, "mode", "")) in ("offline", "dryrun")
        try:
            if offline:  # W&B knows no version until `wandb sync`: never wait for one
                if staged:  # offline by W&B's own settings: what it staged is the push
                    count(sum(staged))
                return PENDING_SYNC + str(Path(run.settings.sync_file).parent)
            logged.wait()
            count(sum(staged))
            return str(logged.version)
        finally:
            run.finish()


def api_from_env(env: Mapping[str, str]) -> WandbArtifactAPI:
    """The fake when ``RUNFORM_WANDB_FAKE_DIR`` is set, else the real server, in the mode the
    env gives (``WANDB_MODE``: the tracker's mode reaches the push)."""
    if fake := env.get("RUNFORM_WANDB_FAKE_DIR"):  # tests: the folder fake of runform.testing
        from runform.testing.fakes import DirArtifactStore

        return DirArtifactStore(Path(fake))
    return WandbPublicAPI(api_key=env.get("WANDB_API_KEY"), base_url=env.get("WANDB_BASE_URL"),
                          run_dir=env.get("WANDB_DIR"), mode=env.get("WANDB_MODE"))
