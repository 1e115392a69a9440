"""Wheels for the machine, built from what runs here, with no source tree and no build backend.

- :func:`build_wheel`: the *running* runform. Its packages live in different folders in an
  editable install (``sdk/`` is ``runform``, ``providers/`` is ``runform.providers``, ...), so
  the wheel is assembled from the imported packages' ``__path__``: every file below them
  (minus caches) goes into the zip as ``runform/...``. The version is
  ``<runform.__version__>+<12 hex of the content>``, so a changed checkout gives a new wheel
  (and a new bootstrap on the machines).
- :func:`repack_installed`: an installed pure-python distribution (attrs, pluggy, ...) as a
  wheel, from its installed files, for machines whose python lacks it.

Wheels are cached by name and version under ``$XDG_CACHE_HOME/runform/wheels``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import re
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path

import attrs
from runform.digests import walk_tree

PACKAGES = ("runform", "runform.providers", "runform.storage_backends", "runform.trackers")
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _skipped_dir(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name in _SKIP_DIRS or name.startswith(".")


def _skipped_file(rel: str) -> bool:
    return rel.endswith(_SKIP_SUFFIXES) or rel.rsplit("/", 1)[-1].startswith(".")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same content gives the same bytes
_REGENERATED = {"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"}
KEEP = 5  # cached wheels kept per project


@attrs.frozen
class Wheel:
    path: Path
    version: str  # e.g. "0.1.0+3f9a0c1d2e4b"
    imports: tuple[str, ...] = ()  # top-level modules it provides

    @property
    def name(self) -> str:
        return self.path.name


def default_cache_dir() -> Path:
    from runform.cachedir import cache_dir

    return cache_dir("wheels")


# ---------------------------------------------------------------------------- runform itself


def package_files(packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """``arcname -> file`` for every file of the imported ``packages`` (first one wins, so a
    regular install, where ``runform/providers`` sits inside ``runform``, is not doubled)."""
    files: dict[str, Path] = {}
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a part not installed (e.g. a checkout without trackers): nothing to ship
        prefix = name.replace(".", "/")
        for folder in getattr(module, "__path__", []):
            for rel, path in walk_tree(Path(folder), prune=_skipped_dir, skip=_skipped_file):
                files.setdefault(f"{prefix}/{rel}", path)
    return files


def content_hash(files: Mapping[str, Path]) -> str:
    h = hashlib.sha256()
    for arcname in sorted(files):
        data = files[arcname].read_bytes()
        h.update(f"{arcname}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def runform_version(files: Mapping[str, Path] | None = None) -> str:
    """The version the wheel of the running runform has: ``<__version__>+<content hash>``."""
    import runform

    return f"{runform.__version__.split('+')[0]}+{content_hash(files or package_files())}"


def build_wheel(cache_dir: Path | None = None) -> Wheel:
    """The running runform as ``runform-<version>-py3-none-any.whl`` (built once per version)."""
    files = package_files()
    version = runform_version(files)
    dist_info = {"METADATA": _runform_metadata(version).encode(), "top_level.txt": b"runform\n"}
    entry_points = _installed_text("runform", "entry_points.txt")
    if entry_points:  # the built-in plugins register through entry points
        dist_info["entry_points.txt"] = entry_points.encode()
    path = _cached(
        cache_dir,
        "runform",
        version,
        lambda target: write_wheel(target, "runform", version, files, dist_info),
    )
    return Wheel(path, version, ("runform",))


def _runform_metadata(version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        "Name: runform",
        f"Version: {version}",
        "Summary: runform, built from the running client for its on-machine agent",
        "Requires-Python: >=3.10",
    ]
    try:
        lines += [f"Requires-Dist: {r}" for r in metadata.requires("runform") or []]
    except metadata.PackageNotFoundError:
        pass
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- dependencies


def repack_installed(name: str, cache_dir: Path | None = None) -> Wheel:
    """The installed distribution ``name`` as a wheel (pure-python distributions only)."""
    dist = metadata.distribution(name)
    if "Root-Is-Purelib: true" not in (dist.read_text("WHEEL") or "Root-Is-Purelib: true"):
        raise ValueError(f"{name} is not pure python; the machine's image must provide it")
    version = dist.version
    files: dict[str, Path] = {}
    dist_info: dict[str, bytes] = {}
    for f in dist.files or ():
        parts = f.parts
        if parts[0] == ".." or "__pycache__" in parts or f.suffix in _SKIP_SUFFIXES:
            continue  # scripts outside site-packages, caches
        if parts[0].endswith(".dist-info"):
            if len(parts) == 2 and parts[1] not in _REGENERATED:
                dist_info[parts[1]] = Path(str(dist.locate_file(f))).read_bytes()
            continue
        files[f.as_posix()] = Path(str(dist.locate_file(f)))
    project = dist.metadata["Name"]
    path = _cached(
        cache_dir,
        project,
        version,
        lambda target: write_wheel(target, project, version, files, dist_info),
    )
    return Wheel(path, version, top_level(dist))


def top_level(dist: metadata.Distribution) -> tuple[str, ...]:
    """The importable top-level names a distribution provides."""
    listed = (dist.read_text("top_level.txt") or "").split()
    if listed:
        return tuple(sorted(set(listed)))
    names = {
        f.parts[0].removesuffix(".py")
        for f in dist.files or ()
        if f.suffix == ".py" and f.parts[0] != ".." and not f.parts[0].endswith(".dist-info")
    }
    return tuple(sorted(n for n in names if n.isidentifier()))


# ---------------------------------------------------------------------------- writing


def _cached(
    cache_dir: Path | None, project: str, version: str, write: Callable[[Path], None]
) -> Path:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"{_escape(project)}-{version}-py3-none-any.whl"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        # a name of this thread's own: a fleet's nodes are brought up by threads of one process
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        write(tmp)
        os.replace(tmp, path)
        _prune(cache, project, keep=path)
    return path


def _prune(cache: Path, project: str, *, keep: Path, count: int = KEEP) -> None:
    """Drop all but the ``count`` newest wheels of ``project`` (each checkout change adds one)."""
    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except FileNotFoundError:  # pruned meanwhile by another thread or process
            return 0.0

    wheels = sorted(cache.glob(f"{_escape(project)}-*-py3-none-any.whl"), key=mtime, reverse=True)
    for old in wheels[count:]:
        if old != keep:
            old.unlink(missing_ok=True)


def write_wheel(
    target: Path,
    project: str,
    version: str,
    files: Mapping[str, Path],
    dist_info: Mapping[str, bytes],
) -> None:
    """A deterministic ``py3-none-any`` wheel: ``files`` (arcname -> local file) plus the
    ``.dist-info`` files given, a WHEEL file and a RECORD of everything."""
    folder = f"{_escape(project)}-{version}.dist-info"
    record: list[str] = []

    with zipfile.ZipFile(target, "w") as zf:

        def add(arcname: str, data: bytes) -> None:
            info = zipfile.ZipInfo(arcname, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={digest},{len(data)}")

        for arcname in sorted(files):
            add(arcname, files[arcname].read_bytes())
        for name in sorted(dist_info):
            add(f"{folder}/{name}", dist_info[name])
        add(
            f"{folder}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: runform\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        record.append(f"{folder}/RECORD,,")
        add_record = zipfile.ZipInfo(f"{folder}/RECORD", _EPOCH)
        add_record.external_attr = 0o644 << 16
        zf.writestr(add_record, "\n".join(record) + "\n")


def _escape(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def _installed_text(name: str, file: str) -> str | None:
    try:
        return metadata.distribution(name).read_text(file)
    except metadata.PackageNotFoundError:
        return None
