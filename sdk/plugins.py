"""The plugin manager: loads built-ins and third-party plugins from the ``runform`` entry
point group, and turns registration hooks into name → factory registries."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import pluggy
from runform import hookspecs
from runform.errors import PluginError

if TYPE_CHECKING:
    from runform.interfaces import Provider, StateBackend, StorageBackend, Tracker, TrackerContext

KINDS = ("providers", "storage_backends", "trackers", "state_backends")
_LABEL = {
    "providers": "provider",
    "storage_backends": "storage backend",
    "trackers": "tracker",
    "state_backends": "state backend",
}


@attrs.frozen
class Registration:
    name: str
    factory: Callable[..., Any]
    plugin: str  # the plugin (entry point) that registered it


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str
    version: str
    registered: tuple[str, ...]
    error: str | None = None


class PluginManager:
    """A typed wrapper around ``pluggy.PluginManager`` (after tox 4)."""

    def __init__(self, *, load_entry_points: bool = True, block: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.broken: dict[str, str] = {}
        self.infos: dict[str, tuple[str, str]] = {}
        for name in block:
            self.pm.set_blocked(name)
        if load_entry_points:
            self._load_entry_points()
        self._registries: dict[str, dict[str, Registration]] | None = None

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            dist = ep.dist
            self.infos[ep.name] = (dist.name if dist else "?", dist.version if dist else "?")
            try:
                self._register_checked(ep.load(), ep.name)
            except Exception as exc:  # a broken plugin must not break the others
                self.broken[ep.name] = f"{type(exc).__name__}: {exc}"

    def _register_checked(self, plugin: object, name: str | None) -> None:
        """Register, then check for misspelled hooks; a plugin that fails is not kept."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except Exception:
            self.pm.unregister(plugin)
            raise

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register an in-process plugin (tests, embedding applications)."""
        self._register_checked(plugin, name)  # a misspelled hook raises PluginValidationError
        self._registries = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._registries = None

    @property
    def hook(self) -> Hooks:
        """The hooks by name; an event hook called here follows :func:`notify`'s policy."""
        return Hooks(self)

    def notify(self, name: str, *, report: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        """Call the event hook ``name`` under the one failure policy for event hooks
        (``hookspecs.EVENT_HOOKS``): each plugin's implementation is called on its own; one that
        raises is reported (``report``, default stderr) as a warning naming the plugin and the
        hook, and neither stops the command nor the other plugins' implementations. (Event hooks
        are plain implementations, called newest first as pluggy does; a hook wrapper is not
        called here.)"""
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                continue
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - the policy: observers never break runform
                plugin = self.pm.get_name(impl.plugin) or "?"
                (report or _stderr)(f"warning: plugin {plugin!r}: its {name} hook failed: "
                                    f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ typed factories
    def provider(self, name: str, *, field: str | None = "compute.provider") -> Provider:
        """A new instance of the provider ``name`` (``compute.provider``)."""
        return cast("Provider", self.get("providers", name, field=field).factory())

    def storage(self, scheme: str, *, field: str | None = None) -> StorageBackend:
        """A new instance of the storage backend of the URI scheme ``scheme``."""
        return cast("StorageBackend", self.get("storage_backends", scheme, field=field).factory())

    def storage_factory(self, scheme: str, *, field: str | None = None) -> Callable[..., Any]:
        """The storage backend's factory (its class), for optional checks such as ``check_uri``."""
        return self.get("storage_backends", scheme, field=field).factory

    def tracker(self, kind: str, config: dict[str, Any], ctx: TrackerContext, *,
                field: str | None = "tracker.kind") -> Tracker:
        """A new tracker of ``kind`` for the spec's ``tracker`` block and ``ctx``."""
        return cast("Tracker", self.get("trackers", kind, field=field).factory(config, ctx))

    def state_backend(self, url: str, spec_dir: Path, *, lease: float,
                      field: str | None = "state.backend") -> StateBackend:
        """The state backend for ``url`` (``local`` or ``<scheme>://...``)."""
        scheme = url.split("://", 1)[0] if "://" in url else url
        return cast("StateBackend", self.get("state_backends", scheme, field=field).factory(url, spec_dir, lease=lease))

    # ------------------------------------------------------------------ registries
    def registries(self) -> dict[str, dict[str, Registration]]:
        if self._registries is None:
            self._registries = {kind: self._collect(kind) for kind in KINDS}
        return self._registries

    def _collect(self, kind: str) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        caller = getattr(self.pm.hook, f"runform_register_{kind}")
        for impl in caller.get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or "?"

            def register(name: str, factory: Callable[..., Any], _p: str = plugin_name) -> None:
                if name in found and found[name].plugin != _p:
                    raise PluginError(
                        f"{_LABEL[kind]} {name!r} is registered by both plugin "
                        f"{found[name].plugin!r} and {_p!r}",
                        hint=f"uninstall one, or block it with RUNFORM_BLOCK_PLUGINS={_p}",
                    )
                found[name] = Registration(name, factory, _p)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                self.broken[plugin_name] = f"{type(exc).__name__}: {exc}"
        return found

    def get(self, kind: str, name: str, *, field: str | None = None) -> Registration:
        reg = self.registries()[kind]
        if name in reg:
            return reg[name]
        installed = ", ".join(sorted(reg)) or "none"
        raise PluginError(
            f"{field + ': ' if field else ''}{_LABEL[kind]} {name!r} is not installed "
            f"(installed: {installed})",
            hint=f"install a plugin that provides the {_LABEL[kind]} {name!r}, or use one of the installed",
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self.registries()[kind])

    def plugin_infos(self) -> list[PluginInfo]:
        regs = self.registries()
        out: list[PluginInfo] = []
        for name, (dist, version) in sorted(self.infos.items()):
            registered = tuple(
                f"{_LABEL[k]}:{r.name}" for k in KINDS for r in regs[k].values() if r.plugin == name
            )
            out.append(PluginInfo(name, dist, version, registered, self.broken.get(name)))
        for name, err in sorted(self.broken.items()):
            if name not in self.infos:
                out.append(PluginInfo(name, "?", "?", (), err))
        return out


@functools.lru_cache(maxsize=1)
def _default() -> PluginManager:
    import os

    block = [b for b in os.environ.get("RUNFORM_BLOCK_PLUGINS", "").split(",") if b]
    return PluginManager(block=block)


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (entry points loaded once)."""
    return _default()


class Hooks:
    """``pm.hook``: registration and policy hooks as pluggy calls them; event hooks through
    :meth:`PluginManager.notify` (so that every caller, ``plan_ready`` included, has one policy)."""

    def __init__(self, manager: PluginManager) -> None:
        self._manager = manager

    def __getattr__(self, name: str) -> Any:
        if name in hookspecs.EVENT_HOOKS:
            return functools.partial(self._manager.notify, name)
        return getattr(self._manager.pm.hook, name)


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)
