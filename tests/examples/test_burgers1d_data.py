"""burgers1d: the HDF5 loader (both layouts), train-only normalisation, split checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d import check_splits, simulate
from burgers1d.config import load_config
from burgers1d.dataset import TrajectorySource, resolve_paths, write_converted, write_pdebench
from burgers1d.normalization import compute_field_stats
from burgers1d.splits import open_split, split_digest
from burgers1d.tiny import make_run_root


def _tensor(n: int, seed: int = 0, t: int = 5, x: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, t, x)).astype(np.float32)


def test_raw_pdebench_layout(tmp_path: Path) -> None:
    data = _tensor(6)
    path = tmp_path / "raw.h5"
    write_pdebench(path, data, x=(np.arange(8) + 0.5) / 8, t=np.arange(6) * 0.01, nu=0.02)
    with TrajectorySource([path]) as src:
        assert (len(src), src.nt, src.nx, src.layout) == (6, 5, 8, "raw")
        assert src.dt == pytest.approx(0.01) and src.dx == pytest.approx(1 / 8)
        assert src.nu == pytest.approx(0.02)
        np.testing.assert_array_equal(src.read(1, 4), data[1:4])
        np.testing.assert_array_equal(src.read_indices([4, 0, 2]), data[[4, 0, 2]])


def test_converted_layout_with_shards_ranges_and_strides(tmp_path: Path) -> None:
    a, b = _tensor(3, 1), _tensor(4, 2)
    write_converted(tmp_path / "burgers1d_train_000.h5", a[..., None])
    write_converted(tmp_path / "burgers1d_train_001.h5", b)
    with h5py.File(tmp_path / "burgers1d_train_000.h5", "r") as f:
        assert list(f) == ["data"] and f["data"].shape == (3, 5, 8, 1)
    paths = resolve_paths(tmp_path / "burgers1d_train_*.h5")
    both = np.concatenate([a, b])
    with TrajectorySource(
        paths, start=1, stop=6, t_stride=2, x_stride=2, nu_override=0.01, dt_override=0.01
    ) as src:
        assert (len(src), src.nt, src.nx, src.layout) == (5, 3, 4, "converted")
        np.testing.assert_array_equal(src.read(0, 5), both[1:6, ::2, ::2])  # crosses the shards
        assert src.dt == pytest.approx(0.02) and src.nu == 0.01 and src.length == 1.0
        blocks = [blk for _, blk in src.iter_chunks(2)]
        np.testing.assert_array_equal(np.concatenate(blocks), both[1:6, ::2, ::2])
    with TrajectorySource(paths) as src:
        with pytest.raises(ValueError, match="data.dt"):
            _ = src.dt
        with pytest.raises(ValueError, match="data.nu"):
            _ = src.nu


def test_nu_from_a_real_pdebench_file_name(tmp_path: Path) -> None:
    path = tmp_path / "1D_Burgers_Sols_Nu0.002.hdf5"
    with h5py.File(path, "w") as f:  # exactly PDEBench's keys: no nu attribute
        f["tensor"] = _tensor(2)
        f["x-coordinate"] = np.linspace(0, 1, 8, endpoint=False, dtype=np.float32)
        f["t-coordinate"] = np.arange(6, dtype=np.float32) * 0.01
    with TrajectorySource([path]) as src:  # PDEBench's solver uses nu/pi (nu_convention auto)
        assert src.nominal_nu == pytest.approx(0.002)
        assert src.nu == pytest.approx(0.002 / math.pi)


def test_large_file_is_read_lazily(tmp_path: Path) -> None:
    """A PDEBench-sized dataset (8 GB declared, nothing written) opens and reads 2 rows."""
    path = tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", shape=(10000, 201, 1024), dtype="f4", chunks=(1, 201, 1024))
        f["tensor"][5] = 1.0
        f["x-coordinate"] = (np.arange(1024, dtype=np.float32) + 0.5) / 1024
        f["t-coordinate"] = np.arange(202, dtype=np.float32) * 0.01
    assert path.stat().st_size < 50 * 2**20
    with TrajectorySource([path], start=9000, stop=10000) as src:
        assert len(src) == 1000 and src.read(0, 2).nbytes == 2 * 201 * 1024 * 4
    with TrajectorySource([path], start=5, stop=6) as src:
        assert src.read(0, 1).min() == 1.0


def test_normalisation_stats_come_from_train_only(tmp_path: Path) -> None:
    train, val = _tensor(10, 3) * 2.0 + 1.0, _tensor(5, 4) * 0.5 - 3.0
    write_pdebench(tmp_path / "train.h5", train, np.arange(8), np.arange(6), 0.01)
    with TrajectorySource([tmp_path / "train.h5"]) as src:
        stats = compute_field_stats(src, chunk=3)
    assert stats.mean == pytest.approx(float(train.astype(np.float64).mean()), rel=1e-6)
    assert stats.std == pytest.approx(float(train.astype(np.float64).std()), rel=1e-6)
    normalised_val = stats.normalize(val)  # val uses train's numbers, not its own
    assert abs(float(normalised_val.mean())) > 1.0
    np.testing.assert_allclose(stats.denormalize(normalised_val), val, rtol=1e-5, atol=1e-5)


@pytest.fixture()
def tiny_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_run_root(tmp_path / "run")
    monkeypatch.chdir(root)
    assert simulate.main(["--config", "configs/tiny/data.yaml"]) == 0
    return root


def test_split_digest_follows_content_not_names(tiny_root: Path) -> None:
    cfg = load_config("configs/tiny/base.yaml")
    before = split_digest(cfg, "val")
    data = tiny_root / "data/burgers1d"
    os.rename(data / "burgers1d_val.h5", data / "renamed.h5")
    cfg["data"]["splits"]["val"]["path"] = "renamed.h5"
    assert split_digest(cfg, "val") == before
    with h5py.File(data / "renamed.h5", "r+") as f:
        f["tensor"][0, 0, 0] += 1.0
    assert split_digest(cfg, "val") != before


def test_simulated_splits_are_disjoint(tiny_root: Path) -> None:
    ok, metrics = check_splits.check(load_config("configs/tiny/base.yaml"))
    assert ok and metrics["disjoint"] == 1
    assert metrics["overlap_trajectory_train_val"] == 0


def test_check_catches_an_injected_overlap(tiny_root: Path) -> None:
    data = tiny_root / "data/burgers1d"
    with h5py.File(data / "burgers1d_train.h5", "r") as f:
        leaked = f["tensor"][7]
    with h5py.File(data / "burgers1d_test.h5", "r+") as f:
        f["tensor"][2] = leaked
    ok, metrics = check_splits.check(load_config("configs/tiny/base.yaml"))
    assert not ok and metrics["overlap_trajectory_train_test"] == 1
    env = {**os.environ, "PYTHONPATH": str(tiny_root)}
    proc = subprocess.run(
        [sys.executable, "-m", "burgers1d.check_splits", "--config", "configs/tiny/base.yaml"],
        cwd=tiny_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "OVERLAP" in proc.stdout


def test_check_catches_overlapping_index_ranges_of_one_file(tiny_root: Path) -> None:
    cfg = load_config("configs/tiny/base.yaml")
    cfg["data"]["splits"] = {
        "train": {"path": "burgers1d_train.h5", "start": 0, "stop": 10},
        "val": {"path": "burgers1d_train.h5", "start": 9, "stop": 12},
        "test": {"path": "burgers1d_train.h5", "start": 12, "stop": 16},
    }
    ok, metrics = check_splits.check(cfg)
    assert not ok and metrics["overlap_trajectory_train_val"] == 1
    assert metrics["overlap_trajectory_val_test"] == 0
    with open_split(cfg, "test") as src:
        assert len(src) == 4
