"""PDEBench Burgers HDF5 files: writing the raw layout, lazily reading both layouts.

Layouts read (detected by key):

* raw PDEBench: ``tensor`` float32 [N, T, X], ``x-coordinate`` [X], ``t-coordinate`` [T+1] (or
  [T]); nu as a file attribute ``nu`` or only in the file name (``..._Nu0.01.hdf5``);
* converted (the seed's ``convert_pdebench.py``): one key ``data`` float32 [N, T, X, C=1]; no
  coordinates and no nu, so those come from the config.

A split is one file or several shards (a glob, concatenated in sorted order), optionally an index
range ``[start, stop)`` of them (for splitting a single PDEBench file without overlap) and strides
in t and x. Nothing is read until asked for: :meth:`TrajectorySource.read` and
:meth:`TrajectorySource.iter_chunks` read only the rows they return, so a 8 GB file never has
to fit in memory.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

RAW_KEY = "tensor"
CONVERTED_KEY = "data"
_NU_IN_NAME = re.compile(r"Nu([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
_PDEBENCH_BURGERS = re.compile(r"^1D_Burgers_Sols_Nu")
NU_CONVENTIONS = ("auto", "pdebench", "plain")


def nu_convention_for(path: str | Path, convention: str = "auto") -> str:
    """``pdebench`` or ``plain`` for a file: ``auto`` means ``pdebench`` for PDEBench's own
    ``1D_Burgers_Sols_Nu*`` files and ``plain`` for everything else."""
    if convention not in NU_CONVENTIONS:
        raise ValueError(
            f"data.nu_convention must be one of {', '.join(NU_CONVENTIONS)}, got {convention!r}"
        )
    if convention != "auto":
        return convention
    return "pdebench" if _PDEBENCH_BURGERS.match(Path(path).name) else "plain"


def write_pdebench(
    path: str | Path,
    tensor: np.ndarray,
    x: np.ndarray,
    t: np.ndarray,
    nu: float,
    attrs: dict[str, object] | None = None,
) -> None:
    """Write the raw PDEBench layout (``tensor`` [N, T, X] float32, coordinates, attr ``nu``)."""
    tensor = np.asarray(tensor, dtype=np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset(RAW_KEY, data=tensor, chunks=(1, *tensor.shape[1:]))
        f.create_dataset("x-coordinate", data=np.asarray(x, dtype=np.float32))
        f.create_dataset("t-coordinate", data=np.asarray(t, dtype=np.float32))
        f.attrs["nu"] = float(nu)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def write_converted(path: str | Path, tensor: np.ndarray) -> None:
    """Write the converted single-key layout ``data`` [N, T, X, 1] (used by tests and tools)."""
    tensor = np.asarray(tensor, dtype=np.float32)
    if tensor.ndim == 3:
        tensor = tensor[..., None]
    with h5py.File(path, "w") as f:
        f.create_dataset(CONVERTED_KEY, data=tensor, chunks=(1, *tensor.shape[1:]))


@dataclass
class _Shard:
    path: Path
    file: h5py.File
    dset: h5py.Dataset
    layout: str  # "raw" or "converted"

    @property
    def n(self) -> int:
        return int(self.dset.shape[0])


def _open_shard(path: Path) -> _Shard:
    f = h5py.File(path, "r")
    if RAW_KEY in f:
        dset, layout = f[RAW_KEY], "raw"
        if dset.ndim != 3:
            raise ValueError(f"{path}: '{RAW_KEY}' must be [N, T, X], got {dset.shape}")
    elif CONVERTED_KEY in f:
        dset, layout = f[CONVERTED_KEY], "converted"
        if dset.ndim != 4 or dset.shape[-1] != 1:
            raise ValueError(f"{path}: '{CONVERTED_KEY}' must be [N, T, X, 1], got {dset.shape}")
    else:
        f.close()
        raise ValueError(f"{path}: no '{RAW_KEY}' or '{CONVERTED_KEY}' key (found {list(f)})")
    return _Shard(path, f, dset, layout)


def resolve_paths(pattern: str | Path) -> list[Path]:
    """One file, or the sorted shards a glob pattern matches; an error when none exist."""
    pattern = str(pattern)
    if any(ch in pattern for ch in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(pattern))]
    else:
        paths = [Path(pattern)] if Path(pattern).exists() else []
    if not paths:
        raise FileNotFoundError(f"no data file matches {pattern}")
    return paths


@dataclass
class TrajectorySource:
    """A lazy, read-only view of one split: rows ``[start, stop)`` of the concatenated shards.

    Use as a context manager (or call :meth:`close`). Arrays come back as float32 [n, T, X].
    """

    paths: Sequence[Path]
    start: int = 0
    stop: int | None = None
    t_stride: int = 1
    x_stride: int = 1
    nu_override: float | None = None
    dt_override: float | None = None
    length_override: float | None = None
    nu_convention: str = "auto"
    _shards: list[_Shard] = field(default_factory=list, init=False, repr=False)
    _offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, int), init=False, repr=False)

    def __post_init__(self) -> None:
        self._shards = [_open_shard(Path(p)) for p in self.paths]
        shapes = {tuple(s.dset.shape[1:3]) for s in self._shards}
        if len(shapes) != 1:
            raise ValueError(f"shards disagree on (T, X): {sorted(shapes)}")
        self._offsets = np.concatenate([[0], np.cumsum([s.n for s in self._shards])])
        total = int(self._offsets[-1])
        stop = total if self.stop is None else int(self.stop)
        if not 0 <= self.start <= stop <= total:
            raise ValueError(f"index range [{self.start}, {stop}) outside 0..{total}")
        self.stop = stop

    # --- shape and physics -------------------------------------------------------------
    def __len__(self) -> int:
        assert self.stop is not None
        return self.stop - self.start

    @property
    def layout(self) -> str:
        return self._shards[0].layout

    @property
    def nt(self) -> int:
        return len(range(0, int(self._shards[0].dset.shape[1]), self.t_stride))

    @property
    def nx(self) -> int:
        return len(range(0, int(self._shards[0].dset.shape[2]), self.x_stride))

    def _coordinate(self, name: str) -> np.ndarray | None:
        f = self._shards[0].file
        return np.asarray(f[name][...], dtype=np.float64) if name in f else None

    @property
    def length(self) -> float:
        """Domain length: the config's, else from ``x-coordinate``, else 1 (PDEBench's [0, 1])."""
        if self.length_override is not None:
            return float(self.length_override)
        x = self._coordinate("x-coordinate")
        if x is not None and x.size > 1:
            return float((x[1] - x[0]) * x.size)
        return 1.0

    @property
    def dx(self) -> float:
        return self.length / self.nx

    @property
    def dt(self) -> float:
        """Time between returned snapshots (after ``t_stride``)."""
        if self.dt_override is not None:
            return float(self.dt_override) * self.t_stride
        t = self._coordinate("t-coordinate")
        if t is None or t.size < 2:
            raise ValueError(
                f"{self.paths[0]} has no t-coordinate; set data.dt in the config "
                "(PDEBench Burgers: 0.01)"
            )
        return float(t[1] - t[0]) * self.t_stride

    @property
    def nominal_nu(self) -> float:
        """The labelled nu: the config's, else the ``nu`` attribute, else the file name."""
        if self.nu_override is not None:
            return float(self.nu_override)
        f = self._shards[0].file
        if "nu" in f.attrs:
            return float(f.attrs["nu"])
        match = _NU_IN_NAME.search(self._shards[0].path.name)
        if match:
            return float(match.group(1))
        raise ValueError(f"{self.paths[0]}: nu unknown; set data.nu in the config")

    @property
    def nu(self) -> float:
        """The viscosity of u_t + (u^2/2)_x = nu u_xx. PDEBench's Burgers files solve
        u_t + (u^2/2)_x = (nu/pi) u_xx with nu the label in their name, so under the
        ``pdebench`` convention (``auto`` picks it for ``1D_Burgers_Sols_Nu*``) this is
        nominal_nu / pi."""
        convention = nu_convention_for(self._shards[0].path, self.nu_convention)
        return self.nominal_nu / math.pi if convention == "pdebench" else self.nominal_nu

    # --- reading -----------------------------------------------------------------------
    def _read_rows(self, shard: _Shard, lo: int, hi: int) -> np.ndarray:
        sel = (slice(lo, hi), slice(None, None, self.t_stride), slice(None, None, self.x_stride))
        block = shard.dset[sel] if shard.layout == "raw" else shard.dset[sel + (0,)]
        return np.asarray(block, dtype=np.float32)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Trajectories ``lo..hi-1`` of this split (split-relative indices), float32 [n, T, X]."""
        if not 0 <= lo <= hi <= len(self):
            raise IndexError(f"rows [{lo}, {hi}) outside split of {len(self)}")
        glo, ghi = self.start + lo, self.start + hi
        parts = []
        for i, shard in enumerate(self._shards):
            s0, s1 = int(self._offsets[i]), int(self._offsets[i + 1])
            a, b = max(glo, s0), min(ghi, s1)
            if a < b:
                parts.append(self._read_rows(shard, a - s0, b - s0))
        if not parts:
            return np.zeros((0, self.nt, self.nx), dtype=np.float32)
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def read_indices(self, indices: Sequence[int]) -> np.ndarray:
        """Trajectories at arbitrary split-relative ``indices`` (any order), [n, T, X]."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((idx.size, self.nt, self.nx), dtype=np.float32)
        for pos in np.argsort(idx, kind="stable"):
            out[pos] = self.read(int(idx[pos]), int(idx[pos]) + 1)[0]
        return out

    def iter_chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first index, [<=chunk, T, X]) blocks covering the split in order."""
        for lo in range(0, len(self), max(1, chunk)):
            yield lo, self.read(lo, min(len(self), lo + chunk))

    def close(self) -> None:
        for shard in self._shards:
            shard.file.close()
        self._shards = []

    def __enter__(self) -> TrajectorySource:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
