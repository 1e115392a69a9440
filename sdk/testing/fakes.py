"""Fakes at runform's own interfaces, for tests (runform's and plugin authors').

- :class:`DirArtifactStore`: a W&B artifact server on a folder, behind
  :class:`runform.storage_backends.wandb_api.WandbArtifactAPI`. The ``wandb://`` backend uses it
  when ``RUNFORM_WANDB_FAKE_DIR`` names its folder (so a CLI subprocess can use it too).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from runform.errors import RunformError
from runform.storage_backends.wandb_api import (
    ArtifactVersion,
    artifact_digest,
    b64_to_hex,
    push_job_type,
    wandb_file_digest,
)


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
               job_type: str | None = None, progress: Callable[[int], None] | None = None) -> str:
        count = progress or (lambda n: None)
        base = self._dir(entity, project, name)
        base.mkdir(parents=True, exist_ok=True)
        digest = artifact_digest({rel: wandb_file_digest(p) for rel, p in files.items()})
        aliases_now = self._aliases(entity, project, name)
        versions = sorted(int(p.name[1:]) for p in base.glob("v*") if p.name[1:].isdigit())
        version = None
        if "latest" in aliases_now and \
                self.resolve(entity, project, name, "latest").digest == digest:
            version = aliases_now["latest"]
            count(sum(p.stat().st_size for p in files.values()))  # the same content: already there
        if version is None:
            version = f"v{(versions[-1] + 1) if versions else 0}"
            for rel, p in files.items():
                dst = base / version / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)
                count(p.stat().st_size)
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
