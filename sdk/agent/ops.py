"""The agent's operations. Each takes a request dict and returns a JSON-able dict."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runform.agent import jobs
from runform.agent.media import read_media
from runform.agent.progressfile import ProgressFile, progress
from runform.agent.layout import (
    code_manifest_path,
    dataset_record,
    manifest_digest,
    meta,
    secrets_path,
)
from runform.atomic import atomic_write
from runform.digests import (
    salted_digest,
)
from runform.errors import RunformError
from runform.rootpath import OutsideRootError, check_name, resolve_inside, within


def handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    fn = OPS.get(str(op))
    if fn is None:
        return {"ok": False, "error": f"unknown op {op!r}"}
    try:
        out = fn(request)
    except RunformError as exc:  # a refusal worded for the user (a path outside the root, ...)
        return {"ok": False, "error": exc.message, "hint": exc.hint}
    except Exception as exc:  # reported to the client, which decides
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.setdefault("ok", True)
    return out


def version(req: dict[str, Any]) -> dict[str, Any]:
    from runform.version import __version__

    return {"version": __version__, "python": sys.executable}


def status(req: dict[str, Any]) -> dict[str, Any]:
    """Everything a refresh needs from the machine, in one call."""
    root = req["root"]
    out: dict[str, Any] = {"root_exists": os.path.isdir(root)}
    try:
        with open(code_manifest_path(root)) as f:
            out["code_digest"] = manifest_digest(json.load(f).get("entries", []))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        out["code_digest"] = None  # damaged: the code is sent again
    sp = secrets_path(root)
    if os.path.exists(sp) and req.get("salt"):
        with open(sp, "rb") as f:
            out["secrets_digest"] = salted_digest(req["salt"], f.read())
        out["secrets_mode"] = oct(os.stat(sp).st_mode & 0o777)
    else:
        out["secrets_digest"] = None
    out["stages"] = {
        name: jobs.job_status(root, name, fp) for name, fp in (req.get("stages") or {}).items()
    }
    out["exists"] = {p: _exists(root, p) for p in req.get("paths", [])}
    deep = bool(req.get("verify_data"))
    out["datasets"] = {name: _dataset_state_or_none(root, name, d, deep)
                       for name, d in (req.get("datasets") or {}).items()}
    return out


def _exists(root: str, rel: str) -> bool:
    """Whether the output ``rel`` exists inside the root (a path leading outside never does)."""
    try:
        return os.path.lexists(resolve_inside(root, rel, what="output", follow_last=False))
    except OutsideRootError:
        return False


def _dataset_state_or_none(root: str, name: str, d: dict[str, Any], deep: bool) -> dict[str, Any]:
    """A damaged fetch record reads as nothing hydrated: the next apply fetches the dataset again."""
    try:
        return _dataset_state(root, name, d, deep)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
        return {"digest": None, "missing": []}


def _dataset_state(root: str, name: str, d: dict[str, Any], deep: bool = False) -> dict[str, Any]:
    """What was hydrated (its manifest digest) and which files are missing, resized or modified
    since runform wrote them (a ``stat`` per file against the fetch record; no bytes read).
    ``deep`` (``--verify-data``) also reads every fetched file back and compares its bytes with
    what was fetched: a file changed in place (same size and mtime) is found too, and dropped
    from the fetch record, so the next fetch moves it again."""
    try:
        check_name(name, what="dataset")
        with open(dataset_record(root, name)) as f:
            rec = json.load(f)
        dest = resolve_inside(root, d["dest"], what=f"datasets.{name}.dest")
    except (OSError, ValueError, OutsideRootError):
        return {"digest": None, "missing": []}
    try:
        with open(os.path.join(dest, ".runform-manifest.json")) as f:
            fetched = json.load(f).get("files", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        fetched = {}
    missing = []
    for path, size, _digest in rec.get("entries", []):
        try:
            st = os.stat(os.path.join(dest, path))
        except OSError:
            missing.append(path)
            continue
        written = fetched.get(path)
        if st.st_size != size or (written and written.get("mtime_ns") not in (None, st.st_mtime_ns)):
            missing.append(path)
        elif fetched and written is None:
            missing.append(path)  # fetched before, no longer vouched for (a deep check dropped it)
    if deep and fetched:
        from runform.interfaces import Manifest
        from runform.storage.verify import verify

        report = verify(Manifest.from_json(rec), Path(dest))
        missing = sorted(set(missing) | set(report.bad))
    links_ok = all(_link_ok(root, d["dest"], link, target) for link, target in d.get("links", {}).items())
    return {"digest": rec.get("digest"), "missing": missing, "links_ok": links_ok}


def _link_ok(root: str, dest: str, link: str, target: str) -> bool:
    try:
        lp, rel = _link_paths(root, dest, link, target)
    except OutsideRootError:
        return False
    return os.path.islink(lp) and os.readlink(lp) == rel


def start(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.start(req)


def wait(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.wait(req)


def stop(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.stop(req)


def tail(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.tail(req)


def metrics(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.read_metrics(req["root"], req["stage"], req["fingerprint"], req.get("metrics_file"))


def gpus(req: dict[str, Any]) -> dict[str, Any]:
    return {"count": jobs.gpu_count()}


def _secret_env(root: str) -> dict[str, str]:
    from runform.envfile import parse_env

    env = dict(os.environ)
    try:
        with open(secrets_path(root), encoding="utf-8") as f:
            env.update(parse_env(f.read()))
    except OSError:
        pass
    return env


def hydrate(req: dict[str, Any]) -> dict[str, Any]:
    """Fetch a dataset's manifest into ``dest`` with its storage backend, then make the links."""
    from runform.interfaces import Manifest
    from runform.plugins import get_plugin_manager

    root, name = req["root"], check_name(req["name"], what="dataset")
    manifest = Manifest.from_json(req["manifest"])
    dest = resolve_inside(root, req["dest"], what=f"datasets.{name}.dest")
    _check_links(root, req["dest"], req.get("links", {}), name)  # before any byte is fetched
    os.makedirs(dest, exist_ok=True)
    scheme = manifest.uri.split("://", 1)[0]

    prog = ProgressFile(dataset_record(root, name) + ".progress", manifest.total_bytes)
    if req.get("urls") is not None:  # presigned GETs signed by the client: no credentials here
        from runform.storage.urlfetch import agent_fetch

        got = agent_fetch(manifest, Path(dest), req["urls"], float(req["expires_at"]), prog,
                          headers=req.get("headers"))
        prog._write()
        if "bytes" not in got:  # expired (the client signs fresh URLs) or stopped
            return {**got, "bytes": prog.done}
        moved = got["bytes"]
    else:
        backend = get_plugin_manager().storage(scheme)
        moved = backend.fetch(manifest, Path(dest), _secret_env(root), progress=prog)
    prog._write()  # the final count
    make_links(root, req["dest"], req.get("links", {}))
    record = manifest.to_json()
    record["digest"] = manifest.digest
    atomic_write(dataset_record(root, name), json.dumps(record).encode())
    return {"bytes": moved, "digest": manifest.digest}


def check_dataset(req: dict[str, Any]) -> dict[str, Any]:
    """Refuse a dataset's dest and links that would leave the root, before the client uploads into
    it (``file://`` sources): the symlinks already on the machine are seen here."""
    root, name = req["root"], check_name(req["name"], what="dataset")
    dest = resolve_inside(root, req["dest"], what=f"datasets.{name}.dest")
    _check_links(root, req["dest"], req.get("links", {}), name)
    return {"dest": dest}


def record_dataset(req: dict[str, Any]) -> dict[str, Any]:
    """Record a dataset the client put in place itself (``file://`` sources), then make links."""
    root, name = req["root"], check_name(req["name"], what="dataset")
    resolve_inside(root, req["dest"], what=f"datasets.{name}.dest")
    make_links(root, req["dest"], req.get("links", {}))
    record = dict(req["manifest"])
    record["digest"] = req["digest"]
    atomic_write(dataset_record(root, req["name"]), json.dumps(record).encode())
    return {}


def _link_paths(root: str, dest: str, link: str, target: str) -> tuple[str, str]:
    """(where the link goes, what it points to, relative): both inside the root, the target inside
    ``dest``, no existing symlink on the way leading out. The link itself is not followed (it is
    replaced), and it may not be ``dest`` or lie inside it (the data would hide it)."""
    what = f"link {link!r}"
    lp = resolve_inside(root, link, what="link", follow_last=False)
    d = resolve_inside(root, dest, what="dest")
    tp = resolve_inside(root, posixpath.join(dest, target), what=f"{what}: target")
    if not within(tp, d):
        raise OutsideRootError(f"{what}: its target {target!r} is outside the dataset's dest {dest!r}",
                               hint="name a file or folder inside dest as the target (relative to dest)")
    if within(lp, d):
        raise OutsideRootError(f"{what} lies inside the dataset's dest {dest!r}",
                               hint="put links beside dest, not inside it")
    if os.path.lexists(lp) and not os.path.islink(lp):
        raise OutsideRootError(f"{what}: {link} exists and is not a symlink (it would be replaced)",
                               hint="rename the link, or move that file away first")
    return lp, os.path.relpath(tp, os.path.dirname(lp))


def _check_links(root: str, dest: str, links: dict[str, str], name: str) -> None:
    for link, target in links.items():
        _link_paths(root, dest, link, target)


def make_links(root: str, dest: str, links: dict[str, str]) -> None:
    for link, target in links.items():
        lp, rel = _link_paths(root, dest, link, target)
        os.makedirs(os.path.dirname(lp), exist_ok=True)
        if os.path.islink(lp) and os.readlink(lp) == rel:
            continue
        tmp = lp + ".runform-link"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(rel, tmp)
        os.replace(tmp, lp)


def push(req: dict[str, Any]) -> dict[str, Any]:
    """Push outputs to storage from the machine (artifacts). With ``missing_ok`` (the salvage
    push before a teardown after a failure) paths that do not exist are listed, not an error.
    With ``name`` (the artifact's), the bytes pushed are counted in its progress file, which
    the client reads with ``progress`` (``kind: artifact``) while the push runs."""

    from runform.interfaces import Manifest
    from runform.plugins import get_plugin_manager

    root, to = req["root"], req["to"].rstrip("/") + "/"
    scheme = to.split("://", 1)[0]
    backend = get_plugin_manager().storage(scheme)
    env = {**_secret_env(root), **(req.get("env") or {})}
    manifests, missing = {}, []
    if scheme == "wandb":  # one artifact, one version: every path goes into it, under its name
        env.setdefault("WANDB_DIR", meta(root, "wandb"))  # the push run's files: not the cwd
        return _push_one_version(backend, root, req, env)
    srcs = {rel: Path(resolve_inside(root, rel, what="artifact path")) for rel in req["paths"]}
    prog = _push_meter(req, sum(_size(root, p) for p in srcs.values() if p.exists()))
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


def _push_meter(req: dict[str, Any], total: int) -> ProgressFile | None:
    from runform.agent.layout import push_progress_path

    name = req.get("name")
    return ProgressFile(push_progress_path(req["root"], name), total, req.get("push_id")) if name else None


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


def _push_one_version(backend: Any, root: str, req: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
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
        prog = _push_meter(req, sum(p.stat().st_size for _, p in _walk(Path(staging))))
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


def remove(req: dict[str, Any]) -> dict[str, Any]:
    """Remove runform's own files for a resource (never anything else)."""
    root = req["root"]
    for rel in req.get("meta", []):
        p = resolve_inside(meta(root), rel, what="runform file", allow_meta=True)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.unlink(p)
    return {}


OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "version": version,
    "status": status,
    "start": start,
    "wait": wait,
    "stop": stop,
    "tail": tail,
    "metrics": metrics,
    "gpus": gpus,
    "read_media": read_media,
    "hydrate": hydrate,
    "record_dataset": record_dataset,
    "check_dataset": check_dataset,
    "progress": progress,
    "push": push,
    "remove": remove,
}
