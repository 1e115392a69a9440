"""botocore's data for an S3 client, read fast: every runform command that lists or signs
builds one S3 client in a fresh process, and botocore spends most of that in its data files.

Building the client reads S3's model, its endpoint rules, the endpoint and partition tables
and the retry and default-config files: ~5 MB of JSON parsed on every start (~40 ms here), and
botocore lists every one of its ~400 service folders twice to check that ``s3`` is among them
(~35 ms). :func:`s3_loader` hands the session a :class:`botocore.loaders.Loader` (the session's
documented ``data_loader`` component, built with its public constructor) that

- searches a folder of links to S3's folder and botocore's top-level files only (so the
  listing sees one service; what it finds there counts as botocore's own data, as it is), and
- reads each file through :class:`MarshalCachedFiles`: the parsed data of a file, keyed by its
  path, size, mtime and botocore's version, is kept with :mod:`marshal` under
  ``$XDG_CACHE_HOME/runform/botocore`` and read back ~5x faster than the JSON is parsed.

Anything unusual falls back to botocore's own loader: ``AWS_DATA_PATH`` set, a
``~/.aws/models`` folder, a cache folder that cannot be written, a cache file that does not
read back as a dict. ``RUNFORM_CACHE=0`` turns it off. The cache holds only botocore's
own published data; nothing of a spec, a state or a credential goes there.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from runform.atomic import atomic_write
from runform.cachedir import cache_dir, time_caches_on

_EXTS = (".json", ".json.gz")


def _plain(data: Any) -> Any:
    """botocore parses into OrderedDicts; marshal takes plain dicts (which keep their order)."""
    if isinstance(data, (dict, OrderedDict)):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def s3_loader() -> Any | None:
    """A loader for an S3 client, or None where botocore's own should be used."""
    if not time_caches_on() or os.environ.get("AWS_DATA_PATH"):
        return None
    if (Path.home() / ".aws" / "models").exists():
        return None
    import botocore

    root = cache_dir("botocore")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir = Path(botocore.__file__).parent / "data"
        where = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]  # one per install
        links = _links(root / f"data-{botocore.__version__}-{where}-s3", data_dir)
    except OSError:
        return None
    if not (links / "s3").is_dir():  # botocore moved or lost its S3 data: its own loader
        return None
    files = MarshalCachedFiles(root, botocore.__version__)
    return _loader_class()(str(links), str(data_dir), extra_search_paths=[str(links)],
                           file_loader=files, include_default_search_paths=False)


@functools.cache
def _loader_class() -> type:
    from botocore.loaders import Loader

    class LinkedDataLoader(Loader):  # type: ignore[misc]
        """botocore's loader over the links folder; a file found there is botocore's own
        (``is_builtin_path``: the session then resolves endpoints exactly as it does with
        botocore's own loader, which it does differently for data from elsewhere)."""

        def __init__(self, links: str, data: str, **kw: Any) -> None:
            super().__init__(**kw)
            self._links, self._data = links, data

        def is_builtin_path(self, path: str) -> bool:
            if path.startswith(self._links + os.sep):
                path = os.path.join(self._data, path[len(self._links) + 1:])
            return bool(super().is_builtin_path(path))

    return LinkedDataLoader


def _links(folder: Path, data_dir: Path) -> Path:
    """A folder of links: ``s3`` and botocore's top-level data files (made once, atomically)."""
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(mode=0o700)
    for entry in data_dir.iterdir():
        if entry.name == "s3" or entry.is_file():
            (tmp / entry.name).symlink_to(entry)
    try:
        tmp.rename(folder)
    except OSError:  # another process made it first
        for link in tmp.iterdir():
            link.unlink()
        tmp.rmdir()
    return folder


class MarshalCachedFiles:
    """botocore's ``file_loader`` (``exists``/``load_file`` on a path without its extension,
    what its ``JSONFileLoader`` answers), with each parsed file kept in :mod:`marshal` form."""

    def __init__(self, root: Path, version: str) -> None:
        self._root = root
        self._version = version
        from botocore.loaders import JSONFileLoader

        self._json = JSONFileLoader()

    def exists(self, file_path: str) -> bool:
        return bool(self._json.exists(file_path))

    def load_file(self, file_path: str) -> Any:
        for ext in _EXTS:
            try:
                st = os.stat(file_path + ext)
            except OSError:
                continue
            key = hashlib.sha256(
                f"{self._version}\0{file_path}{ext}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
            cached = self._root / key[:32]
            try:
                data = marshal.loads(cached.read_bytes())
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError, EOFError, TypeError):
                pass
            data = self._json.load_file(file_path)
            if data is not None:
                self._keep(cached, data)
            return data
        return None

    def _keep(self, path: Path, data: Any) -> None:
        try:
            atomic_write(path, marshal.dumps(_plain(data)), mode=0o600, parents=False)
        except (OSError, ValueError):
            pass  # not kept: parsed again next time
