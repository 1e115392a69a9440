"""Which files and rows make up train / val / test, and the content digest of each split.

Config (``data:`` section, see ``configs/base.yaml``)::

    data:
      root: data/burgers1d
      splits:
        train: {path: burgers1d_train.h5}               # relative to root; a glob for shards
        val:   {path: burgers1d_val.h5}
        test:  {path: 1D_Burgers_Sols_Nu0.01.hdf5, start: 9500, stop: 10000}   # an index range
      t_stride: 1
      x_stride: 1
      nu: null          # override (the converted layout has no nu)
      dt: null          # override (the converted layout has no t-coordinate)
      nu_convention: auto   # pdebench: the PDE's viscosity is nu/pi (auto: 1D_Burgers_Sols_Nu*)
      digest_memo: data/.digest_memo.json

A split's digest hashes the bytes of its files plus the row range and strides, so it changes
whenever the data the models see changes, and never because a file was renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import section
from .dataset import TrajectorySource, resolve_paths
from .hashing import file_sha256, sha256_json

SPLITS = ("train", "val", "test")


def split_spec(cfg: Mapping[str, Any], split: str) -> dict[str, Any]:
    """The ``data.splits.<split>`` entry with its path made absolute-or-root-relative."""
    data = section(cfg, "data")
    splits = data.get("splits") or {}
    if split not in splits:
        raise KeyError(f"data.splits has no {split!r} entry")
    spec = dict(splits[split])
    spec["path"] = str(Path(data.get("root", ".")) / spec["path"])
    return spec


def open_split(cfg: Mapping[str, Any], split: str) -> TrajectorySource:
    """A lazy :class:`TrajectorySource` for ``split`` as the config describes it."""
    data = section(cfg, "data")
    spec = split_spec(cfg, split)
    return TrajectorySource(
        paths=resolve_paths(spec["path"]),
        start=int(spec.get("start", 0)),
        stop=spec.get("stop"),
        t_stride=int(data.get("t_stride", 1)),
        x_stride=int(data.get("x_stride", 1)),
        nu_override=data.get("nu"),
        dt_override=data.get("dt"),
        length_override=data.get("length"),
        nu_convention=str(data.get("nu_convention") or "auto"),
    )


def split_digest(cfg: Mapping[str, Any], split: str) -> str:
    """sha256 over the split's file contents, row range and strides."""
    data = section(cfg, "data")
    spec = split_spec(cfg, split)
    memo = data.get("digest_memo")
    files = [file_sha256(p, memo) for p in resolve_paths(spec["path"])]
    return sha256_json(
        {
            "files": files,
            "start": int(spec.get("start", 0)),
            "stop": spec.get("stop"),
            "t_stride": int(data.get("t_stride", 1)),
            "x_stride": int(data.get("x_stride", 1)),
        }
    )


def data_digests(cfg: Mapping[str, Any]) -> dict[str, str]:
    """{split: digest} for train, val and test."""
    return {split: split_digest(cfg, split) for split in SPLITS}
