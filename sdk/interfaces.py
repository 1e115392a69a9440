"""The plugin contracts: small typing Protocols and the value objects they exchange.

Every provider, transport, storage backend, tracker and state backend that runform
uses, built-in or third-party, is an object satisfying one of these Protocols.
Optional capabilities are separate Protocols (``SupportsOffers``) checked with
``isinstance``; nothing raises ``NotImplementedError``.

Failure contract (after Pulumi's dynamic providers): if ``create`` raises, the
instance may or may not exist and is found by its label on the next refresh;
if ``destroy`` raises, the instance is assumed to still exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from runform.redact import Redactor

# --------------------------------------------------------------------------- values


PENDING_SYNC = "pending-sync:"  # Manifest.version of a version logged offline, not uploaded yet


@attrs.frozen
class ManifestEntry:
    """One file: its path relative to the manifest root, size and content digest."""

    path: str
    size: int
    digest: str  # "sha256:<hex>", "md5:<hex>" or "etag:<opaque>"


@attrs.frozen
class Manifest:
    """What a storage location or a folder holds, and which version of it."""

    uri: str
    entries: tuple[ManifestEntry, ...] = ()
    version: str | None = None  # e.g. a W&B artifact version or a bucket listing marker

    @property
    def pending_sync(self) -> str | None:
        """Where a version logged offline waits to be uploaded (``version`` is
        ``pending-sync:<where>``, e.g. a W&B offline run folder), else None."""
        v = self.version or ""
        return v[len(PENDING_SYNC):] if v.startswith(PENDING_SYNC) else None

    @property
    def digest(self) -> str:
        from runform.agent.layout import manifest_digest

        return manifest_digest([(e.path, e.size, e.digest) for e in self.entries])

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def by_path(self) -> dict[str, ManifestEntry]:
        return {e.path: e for e in self.entries}

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "entries": [[e.path, e.size, e.digest] for e in self.entries],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Manifest:
        return cls(
            uri=raw["uri"],
            version=raw.get("version"),
            entries=tuple(ManifestEntry(p, int(s), d) for p, s, d in raw.get("entries", [])),
        )


@attrs.frozen
class CommandResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@attrs.frozen
class InstanceInfo:
    """A machine as the provider sees it. ``label`` is runform's idempotency key."""

    id: str
    label: str
    status: str  # "running", "loading", "exited", "gone", ...
    attrs: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "status": self.status, "attrs": dict(self.attrs)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> InstanceInfo:
        return cls(id=str(raw["id"]), label=raw["label"], status=raw["status"],
                   attrs=dict(raw.get("attrs", {})))


@attrs.frozen
class InstanceRequest:
    """What the plan asks a provider to create."""

    label: str
    run: str
    compute: Mapping[str, Any]  # the spec's `compute` block, variables resolved
    env: Mapping[str, str] = attrs.field(factory=dict)  # non-secret only


# --------------------------------------------------------------------------- tracker context

_SLUG = re.compile(r"[^a-z0-9_-]+")


def deterministic_run_id(run: str, lineage: str) -> str:
    """The tracker run id of a pipeline: stable across applies of the same state.

    ``<slug of run>-<12 hex of sha256(run, lineage)>``, at most 53 characters, using only
    ``[a-z0-9_-]`` (valid as a W&B run id). A new state (new lineage) gets a new id, so a
    destroyed and re-created pipeline does not resume an old run.
    """
    slug = _SLUG.sub("-", run.lower()).strip("-")[:40] or "run"
    digest = hashlib.sha256(f"{run}\0{lineage}".encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


@attrs.frozen
class TrackerContext:
    """What a tracker may use.

    :param run: the spec's ``run`` name.
    :param lineage: the state's lineage (a uuid fixed when the state is created).
    :param state_dir: runform's local folder (``.runform/`` beside the spec).
    :param spec_dir: the folder of the spec file.
    :param redactor: masks secrets in everything a tracker writes (None: nothing to mask).
    :param env: environment for the tracker itself (e.g. ``WANDB_API_KEY`` from the secrets
        env file, ``WANDB_MODE``); defaults to the process environment.
    """

    run: str
    lineage: str
    state_dir: Path = attrs.field(converter=Path)
    spec_dir: Path = attrs.field(converter=Path)
    redactor: Redactor | None = None
    env: Mapping[str, str] = attrs.field(factory=lambda: dict(os.environ))

    @property
    def run_id(self) -> str:
        return deterministic_run_id(self.run, self.lineage)

    def redact(self, value: Any) -> Any:
        """``value`` with secrets masked (strings, bytes or JSON-like documents)."""
        return value if self.redactor is None else self.redactor(value)


@attrs.frozen
class ProviderContext:
    """What a provider may use: where runform keeps local files, and the run identity.

    ``pins`` holds the host keys pinned in state, by endpoint (``host:port``, ``[v6]:port``).
    A provider whose transport accepts a host key on first use (no pin for its endpoint) calls
    ``pin(endpoint, key)`` at once, so that the core pins it in state: every later connection,
    in this apply or the next, then accepts that key only.

    ``phase(name, detail)`` reports where a slow ``create`` is (e.g. ``created``, ``loading``,
    ``running``, ``ssh``, ``bootstrap``): the core shows it and sends it as an event. It raises
    (a :class:`runform.RunformError`) once the apply was interrupted: the provider then stops
    waiting and gives back what it has not handed over, as for any other error.
    """

    state_dir: Path
    run: str
    lineage: str
    pins: Mapping[str, Any] = attrs.field(factory=dict)  # pinned host keys etc. from state
    log: Callable[[str], None] = print
    pin: Callable[[str, str], None] = lambda endpoint, key: None
    phase: Callable[..., None] = lambda phase, detail="": None


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Transport(Protocol):
    """Moves bytes to and from a machine and runs commands there."""

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` (no shell) and return its exit code and output.

        Past ``timeout`` seconds the command is ended and :class:`TimeoutError` raised, whatever
        the transport (callers catch that one exception, not a transport's own)."""
        ...

    def put_bytes(self, data: bytes, remote_path: str, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` atomically, created with ``mode`` from the start."""
        ...

    def put_file(self, local_path: Path, remote_path: str, *, mode: int = 0o644) -> None:
        """Copy a local file to ``remote_path`` atomically."""
        ...

    def get_bytes(self, remote_path: str) -> bytes:
        """Read a remote file."""
        ...

    def close(self) -> None: ...


@attrs.frozen
class Machine:
    """A connected machine: its transport, the run's root folder on it, and the agent's python."""

    transport: Transport
    root: str
    python: str  # the interpreter that has runform's agent installed
    local: bool = False  # the agent may be called in-process


@runtime_checkable
class Provider(Protocol):
    """Rents (or claims) machines. Registered with ``runform_register_providers``."""

    name: str

    def find(self, labels: Iterable[str], ctx: ProviderContext) -> dict[str, InstanceInfo]:
        """Batched refresh: the live instances among ``labels`` (absent = gone)."""
        ...

    def create(self, request: InstanceRequest, ctx: ProviderContext) -> InstanceInfo:
        """Create (or adopt, when one with the label exists) an instance and wait until ready."""
        ...

    def destroy(self, instance: InstanceInfo, ctx: ProviderContext) -> None:
        """Give the instance back. An instance that is already gone is success."""
        ...

    def connect(self, instance: InstanceInfo, ctx: ProviderContext) -> Machine:
        """Open a transport to a ready instance."""
        ...

    def replace_reason(self, instance: InstanceInfo, compute: Mapping[str, Any]) -> str | None:
        """Why this live instance no longer fits ``compute`` (None: it fits)."""
        ...


@runtime_checkable
class SupportsOffers(Protocol):
    """Optional: providers with a market of offers (``runform offers``, cost in the plan)."""

    def offers(self, compute: Mapping[str, Any], ctx: ProviderContext) -> list[Mapping[str, Any]]: ...


@runtime_checkable
class StreamsOutput(Protocol):
    """Optional, on a Transport: ``run`` that hands output over as it arrives (``runform pull``)."""

    def run_stream(self, argv: list[str], on_output: Callable[[bytes], None], *, stdin: bytes | None = None,
                   env: Mapping[str, str] | None = None, timeout: float | None = None) -> CommandResult: ...


@runtime_checkable
class RendersOffers(Protocol):
    """Optional, on a provider: its own table of offers for ``runform offers``."""

    def render_offers(self, rows: list[Mapping[str, Any]]) -> Any: ...


@runtime_checkable
class ValidatesCompute(Protocol):
    """Optional, on a provider's factory: check the spec's ``compute`` block at load time (no
    network); raise a RunformError whose ``field`` is the path under ``compute``."""

    def validate_compute(self, config: Mapping[str, Any]) -> None: ...


@runtime_checkable
class ChecksURI(Protocol):
    """Optional, on a storage backend's factory: check a URI at load time (no network); return
    ``(problem, fix)`` or None."""

    def check_uri(self, uri: str) -> tuple[str, str] | None: ...


@runtime_checkable
class StorageBackend(Protocol):
    """Reads and writes a storage URI scheme. Registered with ``runform_register_storage_backends``."""

    schemes: tuple[str, ...]

    def resolve(self, uri: str, env: Mapping[str, str]) -> Manifest:
        """List what ``uri`` holds now (plan time, on the client)."""
        ...

    def fetch(
        self,
        manifest: Manifest,
        dest: Path,
        env: Mapping[str, str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Make ``dest`` hold ``manifest`` (only missing or changed files move, each verified and
        written atomically). Runs on the machine. Returns the bytes moved."""
        ...

    def push(self, src: Path, uri: str, env: Mapping[str, str], *, prior: Manifest | None = None) -> Manifest:
        """Upload ``src`` (a folder or file) to ``uri`` incrementally; return what is there now."""
        ...


@runtime_checkable
class ReportsPushProgress(Protocol):
    """Optional, on a storage backend: a push that counts its bytes as they go, so that apply
    shows ``artifact.NAME: pushed a/b MB (rate, ETA)`` while it runs (without it, once at the end).

    ``progress(n)`` gets each run of ``n`` bytes sent, and the size of each file found already
    there (unchanged), so that the count ends at the size of ``src``. It may be called from
    several threads at once, and with a negative ``n`` when a retry sends bytes again. It raises
    :class:`runform.errors.TransferStopped` once the push is to stop (the client hung up): let it
    through, promptly (no retry), leaving no object half-written under its key. Otherwise it is
    ``push``: same arguments, same result."""

    def push_with_progress(self, src: Path, uri: str, env: Mapping[str, str], *,
                           progress: Callable[[int], None], prior: Manifest | None = None) -> Manifest: ...


@runtime_checkable
class Tracker(Protocol):
    """Records a run. Registered with ``runform_register_trackers``; one run per pipeline."""

    def start(self, *, run_id: str, name: str, config: Mapping[str, Any]) -> Mapping[str, str]:
        """Start or resume the run ``run_id``; return env vars that let stage code join it."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], *, stage: str, step: int | None = None) -> None: ...

    def log_event(self, event: Mapping[str, Any]) -> None: ...

    def link_artifact(self, name: str, uri: str, manifest: Manifest) -> None: ...

    def finish(self) -> None: ...


@runtime_checkable
class ImageTracker(Protocol):
    """An optional ability of a tracker: images a stage names in its metrics file
    (``{"images": {"rollout": "reports/rollout.png"}}``) reach it after the stage, copied to
    ``.runform/media/<stage>/`` on the client (PNG, JPEG or GIF, at most 8 MiB each)."""

    def log_image(self, name: str, path: Path, *, stage: str, source: str) -> None:
        """Log the image at ``path`` (local) as ``name`` of ``stage``; ``source`` is its path on
        the machine, relative to the run root."""
        ...


@runtime_checkable
class HasStageEnv(Protocol):
    """Optional, on a tracker: env a stage's process gets on top of ``start``'s."""

    def stage_env(self, stage: str) -> Mapping[str, str]: ...


@runtime_checkable
class StateBackend(Protocol):
    """Keeps the state: a snapshot plus an append-only journal, behind a lease lock."""

    def read(self) -> Any:
        """The current state (snapshot with the journal replayed), or None."""
        ...

    def append(self, entries: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Durably append journal entries (fsync before returning); return them as written (each
        with its ``seq``), which the core replays onto the state in memory."""
        ...

    def compact(self, state: Any) -> None:
        """Write a new snapshot atomically and start an empty journal."""
        ...

    def lock(self, operation: str, *, timeout: float = 0.0) -> Any:
        """Take the lock (waiting up to ``timeout`` s) and return its LockInfo."""
        ...

    def unlock(self, lock_id: str) -> None: ...

    def force_unlock(self, lock_id: str) -> None: ...


@runtime_checkable
class UsesSecrets(Protocol):
    """Optional, on a state backend: takes its credentials from the spec's env file too."""

    def use_env(self, env: Mapping[str, str]) -> None: ...


@runtime_checkable
class Closeable(Protocol):
    """Optional, on a state backend: release what it holds once the command is done with it."""

    def close(self) -> None: ...


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()
