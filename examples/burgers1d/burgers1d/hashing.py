"""Content digests: files (streamed, memoised by stat), JSON payloads, single trajectories.

Digests key the latent cache and name checkpoints, so they hash content, never names. Hashing a
98.8 GB PDEBench folder is slow, so :func:`file_sha256` memoises by (real path, size, mtime_ns,
inode) in a small JSON file; any change to the file changes the stat and forces a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_BLOCK = 16 * 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(payload: Any) -> str:
    """Hex sha256 of the canonical JSON of ``payload`` (sorted keys, no spaces)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(blob.encode("utf-8"))


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _read_memo(memo: Path) -> dict[str, str]:
    try:
        with memo.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path, memo: str | Path | None = None) -> str:
    """Hex sha256 of a file's bytes, streamed; memoised in ``memo`` (JSON) when given."""
    path = Path(path)
    key = _stat_key(path)
    memo_path = Path(memo) if memo is not None else None
    if memo_path is not None:
        cached = _read_memo(memo_path).get(key)
        if cached:
            return cached
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo_path is not None:
        table = _read_memo(memo_path)
        table[key] = digest
        atomic_write_text(memo_path, json.dumps(table, indent=1, sort_keys=True))
    return digest


def source_digest(*modules: str) -> str:
    """sha256 over the source of ``burgers1d`` modules (by name): keys that reuse earlier work
    (simulated files, a fitted encoder, a latent cache) include the code that produced it."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(name.encode("utf-8") + b"\0" + (here / f"{name}.py").read_bytes())
    return h.hexdigest()


def trajectory_hash(traj: np.ndarray) -> str:
    """sha256 of one trajectory's float32 values in C order (shape [T, X]).

    The layout ([N, T, X] or [N, T, X, 1]) and the file's chunking do not matter: the values are
    squeezed and converted to contiguous little-endian float32 before hashing.
    """
    arr = np.ascontiguousarray(np.squeeze(np.asarray(traj)), dtype="<f4")
    return sha256_bytes(arr.tobytes())


def initial_condition_hash(traj: np.ndarray, decimals: int = 5) -> str:
    """sha256 of the rounded initial state u(t=0); catches re-saved or time-shifted copies."""
    arr = np.squeeze(np.asarray(traj))
    u0 = np.round(np.asarray(arr[0], dtype=np.float64), decimals) + 0.0  # +0.0 folds -0.0
    return sha256_bytes(np.ascontiguousarray(u0, dtype="<f8").tobytes())
