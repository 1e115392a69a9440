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
from runform.agent.push import push
from runform.agent.progressfile import ProgressFile, progress
from runform.agent.layout import (
    code_manifest_path,
    dataset_record,
    manifest_digest,
    meta,
    secret_env,
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
        from runform.agent.callstop import watch
        from runform.storage.urlfetch import agent_fetch

        got = agent_fetch(manifest, Path(dest), req["urls"], float(req["expires_at"]), prog,
                          headers=req.get("headers"), watch=watch)  # over SSH the hang-up, in-process the abort
        prog._write()
        if "bytes" not in got:  # expired (the client signs fresh URLs) or stopped
            return {**got, "bytes": prog.done}
        moved = got["bytes"]
    else:
        backend = get_plugin_manager().storage(scheme)
        moved = backend.fetch(manifest, Path(dest), secret_env(root), progress=prog)
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
