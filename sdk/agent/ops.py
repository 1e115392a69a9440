"""The agent's operations. Each takes a request dict and returns a JSON-able dict."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from runform.agent import jobs
from runform.agent.layout import atomic_write, code_manifest_path, manifest_digest, dataset_record, meta, secrets_path


def handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    fn = OPS.get(str(op))
    if fn is None:
        return {"ok": False, "error": f"unknown op {op!r}"}
    try:
        out = fn(request)
    except Exception as exc:  # reported to the client, which decides
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.setdefault("ok", True)
    return out


def version(req: dict[str, Any]) -> dict[str, Any]:
    from runform import __version__

    return {"version": __version__, "python": sys.executable}


def status(req: dict[str, Any]) -> dict[str, Any]:
    """Everything a refresh needs from the machine, in one call."""
    root = req["root"]
    out: dict[str, Any] = {"root_exists": os.path.isdir(root)}
    try:
        with open(code_manifest_path(root)) as f:
            out["code_digest"] = manifest_digest(json.load(f).get("entries", []))
    except (OSError, ValueError, TypeError):
        out["code_digest"] = None
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
    out["exists"] = {p: os.path.lexists(os.path.join(root, p)) for p in req.get("paths", [])}
    deep = bool(req.get("verify_data"))
    out["datasets"] = {name: _dataset_state(root, name, d, deep)
                       for name, d in (req.get("datasets") or {}).items()}
    return out


def salted_digest(salt: str, data: bytes) -> str:
    return "hmac-sha256:" + hashlib.sha256(salt.encode() + b"\0" + data).hexdigest()


def _dataset_state(root: str, name: str, d: dict[str, Any], deep: bool = False) -> dict[str, Any]:
    """What was hydrated (its manifest digest) and which files are missing, resized or modified
    since runform wrote them (a ``stat`` per file against the fetch record; no bytes read).
    ``deep`` (``--verify-data``) also reads every fetched file back and compares its bytes with
    what was fetched: a file changed in place (same size and mtime) is found too, and dropped
    from the fetch record, so the next fetch moves it again."""
    try:
        with open(dataset_record(root, name)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return {"digest": None, "missing": []}
    dest = os.path.join(root, d["dest"])
    try:
        with open(os.path.join(dest, ".runform-manifest.json")) as f:
            fetched = json.load(f).get("files", {})
    except (OSError, ValueError, AttributeError):
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
        from pathlib import Path

        from runform.interfaces import Manifest
        from runform.storage_backends._verify import verify

        report = verify(Manifest.from_json(rec), Path(dest))
        missing = sorted(set(missing) | set(report.bad))
    links_ok = all(os.path.lexists(os.path.join(root, link)) for link in d.get("links", {}))
    return {"digest": rec.get("digest"), "missing": missing, "links_ok": links_ok}


def start(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.start(req)


def wait(req: dict[str, Any]) -> dict[str, Any]:
    return jobs.wait(req)


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

    root, name = req["root"], req["name"]
    manifest = Manifest.from_json(req["manifest"])
    dest = os.path.join(root, req["dest"])
    os.makedirs(dest, exist_ok=True)
    scheme = manifest.uri.split("://", 1)[0]
    from pathlib import Path

    prog = _ProgressFile(dataset_record(root, name) + ".progress", manifest.total_bytes)
    if req.get("urls") is not None:  # presigned GETs signed by the client: no credentials here
        from runform.storage_backends._urlfetch import agent_fetch

        got = agent_fetch(manifest, Path(dest), req["urls"], float(req["expires_at"]), prog)
        prog._write()
        if "bytes" not in got:  # expired (the client signs fresh URLs) or stopped
            return {**got, "bytes": prog.done}
        moved = got["bytes"]
    else:
        backend = get_plugin_manager().get("storage_backends", scheme).factory()
        moved = backend.fetch(manifest, Path(dest), _secret_env(root), progress=prog)
    prog._write()  # the final count
    make_links(root, req["dest"], req.get("links", {}))
    record = manifest.to_json()
    record["digest"] = manifest.digest
    atomic_write(dataset_record(root, name), json.dumps(record).encode())
    return {"bytes": moved, "digest": manifest.digest}


class _ProgressFile:
    """Counts bytes fetched and writes ``{"bytes", "total", "started"}`` at most twice a second,
    so the client can show bytes, rate and ETA while the hydration runs."""

    def __init__(self, path: str, total: int) -> None:
        import threading
        import time

        self.path, self.total, self.done = path, total, 0
        self.started = self._last = time.time()
        self._lock = threading.Lock()
        self._write()

    def __call__(self, n: int) -> None:
        import time

        with self._lock:
            self.done += n
            if time.time() - self._last >= 0.5:
                self._last = time.time()
                self._write()

    def _write(self) -> None:
        doc = {"bytes": self.done, "total": self.total, "started": self.started}
        atomic_write(self.path, json.dumps(doc).encode())


def progress(req: dict[str, Any]) -> dict[str, Any]:
    try:
        with open(dataset_record(req["root"], req["name"]) + ".progress") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"bytes": 0, "total": 0, "started": None}


def record_dataset(req: dict[str, Any]) -> dict[str, Any]:
    """Record a dataset the client put in place itself (``file://`` sources), then make links."""
    root = req["root"]
    make_links(root, req["dest"], req.get("links", {}))
    record = dict(req["manifest"])
    record["digest"] = req["digest"]
    atomic_write(dataset_record(root, req["name"]), json.dumps(record).encode())
    return {}


def make_links(root: str, dest: str, links: dict[str, str]) -> None:
    for link, target in links.items():
        lp = os.path.join(root, link)
        tp = os.path.join(root, dest, target)
        os.makedirs(os.path.dirname(lp), exist_ok=True)
        rel = os.path.relpath(tp, os.path.dirname(lp))
        if os.path.islink(lp) and os.readlink(lp) == rel:
            continue
        tmp = lp + ".runform-link"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(rel, tmp)
        os.replace(tmp, lp)


def push(req: dict[str, Any]) -> dict[str, Any]:
    """Push outputs to storage from the machine (artifacts). With ``missing_ok`` (the salvage
    push before a teardown after a failure) paths that do not exist are listed, not an error."""
    from pathlib import Path

    from runform.interfaces import Manifest
    from runform.plugins import get_plugin_manager

    root, to = req["root"], req["to"].rstrip("/") + "/"
    scheme = to.split("://", 1)[0]
    backend = get_plugin_manager().get("storage_backends", scheme).factory()
    env = {**_secret_env(root), **(req.get("env") or {})}
    manifests, missing = {}, []
    if scheme == "wandb":  # one artifact, one version: every path goes into it, under its name
        env.setdefault("WANDB_DIR", meta(root, "wandb"))  # the push run's files: not the cwd
        return _push_one_version(backend, root, req, env)
    for rel in req["paths"]:
        src = Path(root) / rel
        if not src.exists():
            if req.get("missing_ok"):
                missing.append(rel)
                continue
            return {"ok": False, "error": f"artifact path {rel!r} does not exist on the machine"}
        prior = (req.get("prior") or {}).get(rel)
        m = backend.push(src, to + rel.rstrip("/") + ("/" if src.is_dir() else ""), env,
                         prior=Manifest.from_json(prior) if prior else None)
        manifests[rel] = {**m.to_json(), "digest": m.digest}
    return {"manifests": manifests, "missing": missing}


def _push_one_version(backend: Any, root: str, req: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """A W&B artifact is one versioned unit: stage the paths (hard links, no copies) in one
    folder under the run's own meta folder and log that as one version of ``to``."""
    import tempfile
    from pathlib import Path

    from runform.interfaces import Manifest
    from runform.storage_backends._record import walk_files

    present = [rel for rel in req["paths"] if os.path.exists(os.path.join(root, rel))]
    missing = [rel for rel in req["paths"] if rel not in present]
    if missing and not req.get("missing_ok"):
        return {"ok": False, "error": f"artifact path {missing[0]!r} does not exist on the machine"}
    staging_root = meta(root, "push")
    os.makedirs(staging_root, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root) as staging:
        for rel in present:
            src = Path(root, rel)
            for sub, path in walk_files(src):  # the same files a push of ``src`` would take
                _link_or_copy(str(path), os.path.join(staging, rel if src.is_file() else os.path.join(rel, sub)))
        prior = next(iter((req.get("prior") or {}).values()), None)
        m = backend.push(Path(staging), req["to"], env, prior=Manifest.from_json(prior) if prior else None)
    key = ",".join(req["paths"])
    return {"manifests": {key: {**m.to_json(), "digest": m.digest}}, "missing": missing}


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
        p = meta(root, rel)
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
    "tail": tail,
    "metrics": metrics,
    "gpus": gpus,
    "hydrate": hydrate,
    "record_dataset": record_dataset,
    "progress": progress,
    "push": push,
    "remove": remove,
}
