"""The ``ssh`` provider: a machine that already exists, reached over SSH.

``compute: {provider: ssh, host, port, user, key_file, root}``. Nothing is rented:

- ``create`` *claims* the run's root folder (``<root>/.runform/claim.json`` names the
  label; a root claimed by another run is refused) and installs the agent there;
- ``find`` connects and reports the labels whose claim is in place; an unreachable host is
  an error naming the host and the fix, never a silent "gone" (that would plan a re-create);
- ``destroy`` removes the run's root folder and nothing else (never ``/``, the home folder,
  a path of fewer than two components, or a root claimed by another run);
- ``connect`` returns the machine with its agent's python (re-installing it when this
  client's runform changed).

The provider API gives ``find`` only labels, so the provider remembers where each label
lives in ``<state_dir>/ssh-machines.json`` (its "account", like Vast's instance list). A
lost file only means ``find`` reports nothing and the next ``create`` adopts the claim.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import posixpath
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from runform.atomic import atomic_write
from runform.durations import parse_duration
from runform.errors import ProviderError
from runform.interfaces import InstanceInfo, InstanceRequest, Machine, ProviderContext

if TYPE_CHECKING:
    from runform.agent.install import AgentInfo
    from runform.agent.wheel import Wheel
    from runform.transport.ssh import SSHTransport

CLAIM = ".runform/claim.json"
REGISTRY = "ssh-machines.json"
FIND_TIMEOUT = 10.0  # seconds of reconnect attempts before a refresh reports a host unreachable
READY_TIMEOUT = 120.0


@attrs.frozen
class Target:
    """Where a run lives: the login and the root folder as the spec spells it."""

    host: str
    port: int
    user: str
    key_file: str | None
    root_spec: str  # as written: may start with "~"
    python: str = "python3"  # the machine's interpreter for the agent's venv
    ready_timeout: float = READY_TIMEOUT

    @classmethod
    def from_compute(cls, compute: Mapping[str, Any], run: str) -> Target:
        if not compute.get("host"):
            raise ProviderError(
                "compute.host: the ssh provider needs a host",
                hint="add `host:` (and `user`, `key_file`, `root`) under `compute:`",
            )
        options = compute.get("options") or {}
        return cls(
            host=str(compute["host"]),
            port=int(compute.get("port") or 22),
            user=str(compute.get("user") or getpass.getuser()),
            key_file=str(compute["key_file"]) if compute.get("key_file") else None,
            root_spec=str(compute.get("root") or f"~/runform/{run}"),
            python=str(options.get("python", "python3")),
            ready_timeout=parse_duration(compute.get("ready_timeout") or READY_TIMEOUT),
        )

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Target:
        return cls(
            host=a["host"],
            port=int(a["port"]),
            user=a["user"],
            key_file=a.get("key_file"),
            root_spec=a["root_spec"],
            python=a.get("python_spec", "python3"),
        )

    @property
    def endpoint(self) -> str:
        from runform.transport.ssh.hostkeys import endpoint

        return endpoint(self.host, self.port)


def resolve_root(root_spec: str, home: str) -> str:
    """The absolute root: ``~`` and relative paths are under the login's home folder."""
    if root_spec == "~" or root_spec.startswith("~/"):
        root_spec = home + root_spec[1:]
    elif not root_spec.startswith("/"):
        root_spec = posixpath.join(home, root_spec)
    return posixpath.normpath(root_spec)


def check_root(root: str, home: str) -> None:
    """Refuse a root whose removal would take more than one run's folder with it."""
    parts = [p for p in root.split("/") if p]
    home = posixpath.normpath(home)
    if (
        not root.startswith("/")
        or len(parts) < 2
        or ".." in parts
        or root == home
        or home.startswith(root.rstrip("/") + "/")
    ):
        raise ProviderError(
            f"refusing {root!r} as a run's root: destroy removes the root folder, and this one "
            "is /, the home folder (or above it), or has fewer than two path components",
            hint="set compute.root to a folder of its own, e.g. ~/runform/<run>",
        )


class SSHProvider:
    """runform's :class:`~runform.interfaces.Provider` for machines reached over SSH."""

    name = "ssh"

    def __init__(
        self,
        *,
        wheel: Wheel | None = None,
        cache_dir: Path | None = None,
        find_timeout: float = FIND_TIMEOUT,
        bootstrap: bool = True,
    ) -> None:
        """``wheel``: the runform wheel to install (default: the running runform, built and
        cached); ``bootstrap=False``: leave the machine's python as it is (the agent must be
        importable there already), as the Vast provider allows."""
        self._wheel = wheel
        self._cache_dir = cache_dir
        self._find_timeout = find_timeout
        self._bootstrap = bootstrap

    # ------------------------------------------------------------------ Provider
    def find(self, labels: Iterable[str], ctx: ProviderContext) -> dict[str, InstanceInfo]:
        known = _Registry(ctx.state_dir)
        out: dict[str, InstanceInfo] = {}
        for label in labels:
            entry = known.get(label)
            if entry is None:
                continue
            target = Target.from_attrs(entry)
            with self._transport(target, ctx, retry_timeout=self._find_timeout) as t:
                claim = _read_claim(t, entry["root"])
                if claim.get("label") == label:
                    out[label] = _info(label, target, entry["root"], t.host_key, entry)
        return out

    def create(self, request: InstanceRequest, ctx: ProviderContext) -> InstanceInfo:
        target = Target.from_compute(request.compute, request.run)
        ctx.phase("ssh", f"connecting to {target.endpoint}")  # progress
        with self._transport(target, ctx, retry_timeout=target.ready_timeout) as t:
            home = t.home()
            root = resolve_root(target.root_spec, home)
            check_root(root, home)
            self._claim(t, target, root, request, ctx)
            # registered as soon as it is claimed: a bootstrap that fails after the claim leaves a
            # root that `find` and `destroy` still know about
            _Registry(ctx.state_dir).put(request.label, {**_location(target, root), "run": request.run})
            ctx.phase("bootstrap", f"runform's agent in {root}")  # progress
            agent = self._agent(t, target, root, ctx)
            extra = {"run": request.run, "python": agent.python, "agent_version": agent.version}
            _Registry(ctx.state_dir).put(request.label, {**_location(target, root), **extra})
            return _info(request.label, target, root, t.host_key, extra)

    def destroy(self, instance: InstanceInfo, ctx: ProviderContext) -> None:
        target = Target.from_attrs(instance.attrs)
        root = str(instance.attrs["root"])
        with self._transport(target, ctx, retry_timeout=target.ready_timeout) as t:
            check_root(root, t.home())
            claim = _read_claim(t, root)
            if claim and claim.get("label") != instance.label:
                raise ProviderError(
                    f"not removing {root} on {target.endpoint}: it is claimed by "
                    f"{claim.get('label')!r}, not by this run ({instance.label})",
                    hint="another run uses this root; destroy that run instead",
                )
            if claim:  # an unclaimed root is not ours to remove: gone is success
                # rename first: a half-removed root never looks claimed
                trash = f"{root}.runform-deleting"
                r = t.run(
                    [
                        "sh",
                        "-c",
                        'rm -rf -- "$2" && mv -- "$1" "$2" && rm -rf -- "$2"',
                        "sh",
                        root,
                        trash,
                    ]
                )
                if not r.ok:
                    raise ProviderError(
                        f"removing {root} on {target.endpoint} failed: "
                        f"{r.stderr.decode(errors='replace').strip()[-500:]}"
                    )
        _Registry(ctx.state_dir).remove(instance.label)

    def connect(self, instance: InstanceInfo, ctx: ProviderContext) -> Machine:
        target = Target.from_attrs(instance.attrs)
        root = str(instance.attrs["root"])
        # the root comes from the state (untrusted): the one this client created, when it knows it
        known = _Registry(ctx.state_dir).get(instance.label)
        if known is not None and known.get("root") != root:
            raise ProviderError(f"the state names {root!r} as the root of {instance.label}, but it was created "
                                f"at {known.get('root')!r}", hint="restore the state from state.json.bak")
        transport = self._transport(target, ctx, retry_timeout=target.ready_timeout)
        try:
            agent = self._agent(transport, target, root, ctx)
        except BaseException:
            transport.close()
            raise
        return Machine(transport=transport, root=root, python=agent.python)

    def replace_reason(self, instance: InstanceInfo, compute: Mapping[str, Any]) -> str | None:
        was = Target.from_attrs(instance.attrs)
        now = Target.from_compute(compute, str(instance.attrs.get("run", "")))
        for field, old, new in (
            ("host", was.host, now.host),
            ("port", was.port, now.port),
            ("user", was.user, now.user),
            ("root", was.root_spec, now.root_spec),
        ):
            if old != new:
                return f"compute.{field} changed ({old} → {new}): the run moves to another place"
        return None

    # ------------------------------------------------------------------ helpers
    def _transport(
        self, target: Target, ctx: ProviderContext, *, retry_timeout: float
    ) -> SSHTransport:
        from runform.transport.ssh import SSHTransport  # paramiko only when used

        return SSHTransport(
            target.host,
            target.port,
            target.user,
            target.key_file,
            pinned_host_key=ctx.pins.get(target.endpoint),
            on_first_key=ctx.pin,
            retry_timeout=retry_timeout,
            connect_timeout=min(15.0, retry_timeout),
            log=ctx.log,
        ).connect()

    def _agent(self, t: SSHTransport, target: Target, root: str, ctx: ProviderContext) -> AgentInfo:
        from runform.agent.install import AgentInfo, ensure_agent

        if not self._bootstrap:
            return AgentInfo(python=target.python, version="", installed=False)
        return ensure_agent(
            t, root, python=target.python, wheel=self._wheel, cache_dir=self._cache_dir, log=ctx.log
        )

    def _claim(
        self,
        t: SSHTransport,
        target: Target,
        root: str,
        request: InstanceRequest,
        ctx: ProviderContext,
    ) -> None:
        """Claim ``root`` for the label (exclusive create), or adopt it if the label is ours."""
        body = json.dumps(
            {
                "label": request.label,
                "run": request.run,
                "lineage": ctx.lineage,
                "claimed_at": time.time(),
            }
        ).encode()
        # noclobber makes the claim an exclusive create; an existing claim is printed instead
        script = (
            'mkdir -p "$1/.runform" && set -C && { cat > "$1/.runform/claim.json"; } 2>/dev/null '
            '&& echo claimed || cat "$1/.runform/claim.json"'
        )
        r = t.run(["sh", "-c", script, "sh", root], stdin=body)
        if not r.ok:
            raise ProviderError(
                f"cannot claim {root} on {target.endpoint}: "
                f"{r.stderr.decode(errors='replace').strip()[-500:]}",
                hint="pick a `compute.root` the login user may write to",
            )
        if r.stdout.strip() == b"claimed":
            return
        owner = _parse_claim(r.stdout).get("label")
        if owner != request.label:
            raise ProviderError(
                f"{root} on {target.endpoint} is already claimed by {owner!r}, "
                f"not by this run ({request.label})",
                hint="set another compute.root, or destroy the run that owns it",
            )


def _read_claim(t: SSHTransport, root: str) -> dict[str, Any]:
    try:
        return _parse_claim(t.get_bytes(posixpath.join(root, CLAIM)))
    except FileNotFoundError:
        return {}


def _parse_claim(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {"label": "<unreadable claim>"}  # never ours: refuse rather than guess
    return data if isinstance(data, dict) else {"label": "<unreadable claim>"}


def _location(target: Target, root: str) -> dict[str, Any]:
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "key_file": target.key_file,
        "root": root,
        "root_spec": target.root_spec,
        "python_spec": target.python,
    }


def _info(
    label: str, target: Target, root: str, host_key: str | None, extra: Mapping[str, Any]
) -> InstanceInfo:
    attrs_ = {
        **_location(target, root),
        "host_key": host_key,
        "endpoint": target.endpoint,  # where host_key is pinned
        **{k: extra[k] for k in ("run", "python", "agent_version") if k in extra},
    }
    return InstanceInfo(
        id=f"{target.user}@{target.endpoint}:{root}", label=label, status="running", attrs=attrs_
    )


class _Registry:
    """label -> where it lives, in ``<state_dir>/ssh-machines.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / REGISTRY

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, label: str) -> dict[str, Any] | None:
        return self._load().get(label)

    def put(self, label: str, entry: Mapping[str, Any]) -> None:
        with self._locked():  # a fleet's nodes are created in parallel: no update lost
            self._save({**self._load(), label: dict(entry)})

    def remove(self, label: str) -> None:
        with self._locked():
            data = self._load()
            if data.pop(label, None) is not None:
                self._save(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _save(self, data: Mapping[str, Any]) -> None:
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True))
