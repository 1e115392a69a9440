"""The latent cache: one HDF5 file per key = (data digests, encoder sha256, dtype).

    data/latent_cache/latents-<key>.h5     # train/val/test: [N, T, dim, tokens]; attrs: key, ...
    data/latent_cache/current.json         # pointer: key, file, digests, encoder, stats

A file is written under a temp name and renamed only when complete, so a killed precompute never
leaves a half cache that looks valid. The seed's cache had no config in its key, so a changed
encoder served stale latents; here every reader re-derives the data digests and checks them and
the key against the pointer (:func:`open_current`) before using a single latent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .hashing import atomic_write_text, sha256_json

POINTER = "current.json"


class StaleCacheError(RuntimeError):
    """The cache is missing, incomplete, or keyed by data/encoder that is no longer current."""


def cache_key(
    data_digests: Mapping[str, str], encoder_sha256: str, dtype: str, code: str = ""
) -> str:
    """The cache key: 20 hex of sha256 over (data digests per split, encoder weights sha256,
    dtype, and the digest of the encoding code)."""
    return sha256_json(
        {
            "data": dict(sorted(data_digests.items())),
            "encoder": encoder_sha256,
            "dtype": dtype,
            "code": code,
        }
    )[:20]


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"latents-{key}.h5"


def is_complete(path: Path, key: str) -> bool:
    """True when ``path`` is a finished cache file for ``key``."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("key") == key and int(f.attrs.get("complete", 0)) == 1
    except OSError:
        return False


class CacheWriter:
    """Writes one cache file under a temp name; :meth:`commit` marks it complete and renames."""

    def __init__(self, cache_dir: str | Path, key: str, dtype: str) -> None:
        self.final = cache_path(cache_dir, key)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        for leftover in self.final.parent.glob(f".{self.final.name}.tmp*"):
            leftover.unlink(missing_ok=True)  # a killed earlier attempt at this key
        self.tmp = self.final.with_name(f".{self.final.name}.tmp{os.getpid()}")
        self.file = h5py.File(self.tmp, "w")
        self.key, self.dtype = key, dtype
        self.file.attrs["key"] = key
        self.file.attrs["dtype"] = dtype
        self.file.attrs["complete"] = 0

    def create(self, split: str, shape: tuple[int, ...]) -> h5py.Dataset:
        return self.file.create_dataset(
            split, shape=shape, dtype=self.dtype, chunks=(1, *shape[1:])
        )

    def commit(self, attrs: Mapping[str, Any]) -> Path:
        for name, value in attrs.items():
            self.file.attrs[name] = value
        self.file.attrs["complete"] = 1
        self.file.close()
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self.file.id.valid:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_pointer(cache_dir: str | Path, info: Mapping[str, Any]) -> bool:
    """Write ``current.json``; False when it already said exactly this."""
    path = Path(cache_dir) / POINTER
    text = json.dumps(dict(info), indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def read_pointer(cache_dir: str | Path) -> dict[str, Any]:
    path = Path(cache_dir) / POINTER
    if not path.is_file():
        raise StaleCacheError(f"no latent cache pointer at {path}: run precompute first")
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class LatentCache:
    """An open, verified cache: ``split(name)`` reads a split; stats come from the pointer."""

    info: dict[str, Any]
    file: h5py.File

    def split(self, name: str) -> np.ndarray:
        """All latents of a split as float32 [N, T, dim, tokens] (latents are compact)."""
        return np.asarray(self.file[name][...], dtype=np.float32)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.file[name].shape)

    @property
    def latent_mean(self) -> np.ndarray:
        return np.asarray(self.info["latent_mean"], dtype=np.float32)

    @property
    def latent_std(self) -> np.ndarray:
        return np.asarray(self.info["latent_std"], dtype=np.float32)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> LatentCache:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_current(cache_dir: str | Path, current_digests: Mapping[str, str]) -> LatentCache:
    """Open the cache the pointer names, after checking it is complete and that its data digests
    equal ``current_digests`` (the data on disk now)."""
    info = read_pointer(cache_dir)
    stale = {s: d for s, d in current_digests.items() if info["data_digests"].get(s) != d}
    if stale:
        raise StaleCacheError(
            f"latent cache {info['key']} was built from other data ({', '.join(sorted(stale))} "
            "changed): re-run precompute"
        )
    key = cache_key(
        info["data_digests"], info["encoder_sha256"], info["dtype"], info.get("code_digest", "")
    )
    path = Path(cache_dir) / info["file"]
    if key != info["key"] or not is_complete(path, key):
        raise StaleCacheError(f"latent cache {path} is incomplete or not keyed {key}")
    return LatentCache(info=info, file=h5py.File(path, "r"))
