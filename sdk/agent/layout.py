"""Where the agent keeps its files under the run's root folder on the machine."""

from __future__ import annotations

import os

META = ".runform"


def meta(root: str, *parts: str) -> str:
    return os.path.join(root, META, *parts)


def job_dir(root: str, stage: str, fingerprint: str) -> str:
    from runform.rootpath import check_name

    check_name(stage, what="stage")
    return meta(root, "jobs", stage, check_name(str(fingerprint).split(":")[-1][:16], what="fingerprint"))


def secrets_path(root: str) -> str:
    return meta(root, "secrets.env")


def code_manifest_path(root: str) -> str:
    return meta(root, "code-manifest.json")


def dataset_record(root: str, name: str) -> str:
    from runform.rootpath import check_name

    return meta(root, "datasets", f"{check_name(name, what='dataset')}.json")


def push_progress_path(root: str, name: str) -> str:
    """Where the push of artifact ``name`` counts its bytes (see :mod:`.progressfile`)."""
    from runform.rootpath import check_name

    return meta(root, "artifacts", f"{check_name(name, what='artifact')}.progress")


def manifest_digest(entries: list) -> str:
    """The digest of a manifest's ``[path, size, digest]`` entries (one formula everywhere)."""
    import hashlib

    h = hashlib.sha256()
    for path, size, digest in sorted((tuple(e) for e in entries), key=lambda e: e[0]):
        h.update(f"{path}\0{size}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def secret_env(root: str) -> dict[str, str]:
    """The environment a storage backend sees on the machine: the agent's own plus the run's
    secrets file (when there is one)."""
    from runform.envfile import parse_env

    env = dict(os.environ)
    try:
        with open(secrets_path(root), encoding="utf-8") as f:
            env.update(parse_env(f.read()))
    except OSError:
        pass
    return env
