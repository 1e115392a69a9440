"""The agent's ``push`` op: outputs to storage from the machine (artifacts), counted in the
artifact's progress file while it runs, runform's own files never included."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from runform.agent.layout import meta, secret_env
from runform.agent.progressfile import ProgressFile
from runform.rootpath import OutsideRootError, resolve_inside, within


def push(req: dict[str, Any]) -> dict[str, Any]:
    """Push outputs to storage from the machine (artifacts). With ``missing_ok`` (the salvage
    push before a teardown after a failure) paths that do not exist are listed, not an error.
    With ``name`` (the artifact's), the bytes pushed are counted in its progress file, which
    the client reads with ``progress`` (``kind: artifact``) while the push runs.

    When the client hangs up (its first Ctrl-C closes the SSH channel) the push stops within a
    fraction of a second: the count raises :class:`TransferStopped` into the backend, which
    leaves no object half-written; the answer is a failure with ``stopped`` (over SSH nobody reads
    it) and the progress file says ``stopped``. The local provider's in-process call stops the
    same way, at its transport's ``abort`` (:mod:`.callstop`). The client records nothing, so the next apply pushes again,
    and the backend's incremental push moves only what is missing."""
    import threading

    from runform.agent.callstop import watch
    from runform.errors import TransferStopped

    stop = threading.Event()
    unwatch = watch(stop)
    try:
        return _push(req, stop)
    except TransferStopped:
        _mark_stopped(req)
        return {"ok": False, "stopped": True, "error": "the push was stopped (Ctrl-C); nothing was recorded"}
    finally:
        unwatch()


def _mark_stopped(req: dict[str, Any]) -> None:
    """The progress file's last word after a stop (written once the backend let go: no upload
    of this push goes on after it)."""
    import json

    from runform.agent.layout import push_progress_path
    from runform.atomic import atomic_write

    if not req.get("name"):
        return
    path = push_progress_path(req["root"], req["name"])
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return
    if isinstance(doc, dict):
        atomic_write(path, json.dumps({**doc, "stopped": True}).encode())


def _push(req: dict[str, Any], stop: Any) -> dict[str, Any]:
    from runform.interfaces import Manifest
    from runform.plugins import get_plugin_manager

    root, to = req["root"], req["to"].rstrip("/") + "/"
    scheme = to.split("://", 1)[0]
    backend = get_plugin_manager().storage(scheme)
    env = {**secret_env(root), **(req.get("env") or {})}
    manifests, missing = {}, []
    if scheme == "wandb":  # one artifact, one version: every path goes into it, under its name
        env.setdefault("WANDB_DIR", meta(root, "wandb"))  # the push run's files: not the cwd
        return _push_one_version(backend, root, req, env, stop)
    srcs = {rel: Path(resolve_inside(root, rel, what="artifact path")) for rel in req["paths"]}
    prog = _push_meter(req, sum(_size(root, p) for p in srcs.values() if p.exists()), stop)
    for rel, src in srcs.items():
        if not src.exists():
            if req.get("missing_ok"):
                missing.append(rel)
                continue
            return {"ok": False, "error": f"artifact path {rel!r} does not exist on the machine"}
        prior = (req.get("prior") or {}).get(rel)
        key = _dest(to, rel, src.is_dir())
        with _without_private(root, src) as clean:
            m = _push_counted(backend, clean, key, env, Manifest.from_json(prior) if prior else None, prog)
        manifests[rel] = {**m.to_json(), "digest": m.digest}
    return {"manifests": manifests, "missing": missing, **_pushed(prog)}


def _size(root: str, src: Path) -> int:
    """The bytes a push of ``src`` takes (what :class:`_without_private` leaves)."""
    if src.is_file():
        return 0 if _private(root, str(src)) else src.stat().st_size
    return sum(path.stat().st_size for _, path in _safe_files(root, src))


class _PushMeter(ProgressFile):
    """The push's progress file, and its way to stop: once ``stop`` is set each count raises
    :class:`TransferStopped` (the file then says ``stopped``)."""

    def __init__(self, path: str, total: int, ident: str | None, stop: Any) -> None:
        self.stop = stop
        super().__init__(path, total, ident)

    def __call__(self, n: int) -> None:
        if self.stop is not None and self.stop.is_set():
            from runform.errors import TransferStopped

            raise TransferStopped("the push was stopped: the client hung up")
        super().__call__(n)


def _push_meter(req: dict[str, Any], total: int, stop: Any = None) -> ProgressFile | None:
    from runform.agent.layout import push_progress_path

    name = req.get("name")
    return _PushMeter(push_progress_path(req["root"], name), total, req.get("push_id"), stop) if name else None


def _push_counted(backend: Any, src: Path, uri: str, env: dict[str, str], prior: Any,
                  prog: ProgressFile | None) -> Any:
    """``backend.push``, counting its bytes as they go when it can (``ReportsPushProgress``),
    else all at once when it returns."""
    from runform.interfaces import ReportsPushProgress

    if prog is None:
        return backend.push(src, uri, env, prior=prior)
    if isinstance(backend, ReportsPushProgress):
        return backend.push_with_progress(src, uri, env, prior=prior, progress=prog)
    m = backend.push(src, uri, env, prior=prior)
    prog(sum(path.stat().st_size for _, path in _walk(src)))
    return m


def _walk(src: Path) -> list[tuple[str, Path]]:
    from runform.storage.record import walk_files

    return [(src.name, src)] if src.is_file() else list(walk_files(src))


def _pushed(prog: ProgressFile | None) -> dict[str, Any]:
    """The push's final count for the client (the progress file's last word)."""
    if prog is None:
        return {}
    prog._write()
    return {"pushed": {"bytes": prog.done, "total": prog.total}}


def _private(root: str, path: str) -> bool:
    """A file an artifact never takes: under ``.runform/`` (state, secrets) at any depth, or a
    symlink whose target is there or outside the root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if ".runform" in os.path.relpath(path, root).split(os.sep):
        return True
    return not within(real, real_root) or within(real, os.path.join(real_root, ".runform"))


def _safe_files(root: str, src: Path) -> list[tuple[str, Path]]:
    from runform.storage.record import walk_files

    return [(sub, path) for sub, path in walk_files(src) if not _private(root, str(path))]


class _without_private:
    """``src`` itself when an artifact may take all of it; otherwise a staging folder under the
    meta folder that holds the rest as hard links (same names, same bytes, no copies)."""

    def __init__(self, root: str, src: Path) -> None:
        self.root, self.src = root, src
        self._tmp: Any = None

    def __enter__(self) -> Path:
        import tempfile

        from runform.storage.record import walk_files

        if self.src.is_file():
            if _private(self.root, str(self.src)):
                raise OutsideRootError(f"artifact path {os.path.relpath(self.src, self.root)!r} is refused: "
                                       "it leads into .runform/ or outside the run root",
                                       hint="name the stage's outputs, not runform's own files")
            return self.src
        every = list(walk_files(self.src))
        keep = _safe_files(self.root, self.src)
        if len(keep) == len(every):
            return self.src
        staging_root = meta(self.root, "push")
        os.makedirs(staging_root, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(dir=staging_root)
        for sub, path in keep:
            _link_or_copy(str(path), os.path.join(self._tmp.name, sub))
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _dest(to: str, rel: str, is_dir: bool) -> str:
    """Where ``rel`` goes under ``to``: by its name (``out/`` → ``TO/out/``), except a folder
    whose name ``to`` already ends with (``model/`` → ``…/model/``, not ``…/model/model/``)."""
    name = rel.rstrip("/").rsplit("/", 1)[-1]
    if is_dir and to.rstrip("/").rsplit("/", 1)[-1] == name:
        return to
    return to + rel.rstrip("/") + ("/" if is_dir else "")


def _push_one_version(backend: Any, root: str, req: dict[str, Any], env: dict[str, str],
                      stop: Any = None) -> dict[str, Any]:
    """A W&B artifact is one versioned unit: stage the paths (hard links, no copies) in one
    folder under the run's own meta folder and log that as one version of ``to``."""
    import tempfile

    from runform.interfaces import Manifest

    srcs = {rel: resolve_inside(root, rel, what="artifact path") for rel in req["paths"]}
    present = [rel for rel in req["paths"] if os.path.exists(srcs[rel])]
    missing = [rel for rel in req["paths"] if rel not in present]
    if missing and not req.get("missing_ok"):
        return {"ok": False, "error": f"artifact path {missing[0]!r} does not exist on the machine"}
    staging_root = meta(root, "push")
    os.makedirs(staging_root, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root) as staging:
        for rel in present:
            src = Path(srcs[rel])
            if src.is_file() and _private(root, str(src)):
                raise OutsideRootError(f"artifact path {rel!r} is refused: it leads into .runform/",
                                       hint="name the stage's outputs, not runform's own files")
            for sub, path in _safe_files(root, src):  # what a push of ``src`` would take
                _link_or_copy(str(path), os.path.join(staging, rel if src.is_file() else os.path.join(rel, sub)))
        prior = next(iter((req.get("prior") or {}).values()), None)
        prog = _push_meter(req, sum(p.stat().st_size for _, p in _walk(Path(staging))), stop)
        m = _push_counted(backend, Path(staging), req["to"], env,
                          Manifest.from_json(prior) if prior else None, prog)
    key = ",".join(req["paths"])
    return {"manifests": {key: {**m.to_json(), "digest": m.digest}}, "missing": missing, **_pushed(prog)}


def _link_or_copy(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
