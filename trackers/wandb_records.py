"""Read a W&B run file (``run-<id>.wandb``) back: records parsed with wandb's own protobuf
classes (``wandb.proto.wandb_internal_pb2.Record``).

wandb 0.31 no longer ships a Python reader for its datastore (``wandb.sdk.internal.datastore``
is gone; ``wandb-core`` reads it in Go), so the framing is read here. The format is
LevelDB's log format behind a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0):
32 KiB blocks of chunks, each ``crc32 (4) | length (2, LE) | type (1) | data``, with types
FULL=1, FIRST=2, MIDDLE=3, LAST=4.

Used by tests and by anyone checking what an offline run holds before ``wandb sync``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

HEADER = b":W&B"
BLOCK = 32 * 1024
_CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_payloads(path: Path) -> Iterator[bytes]:
    """The raw record payloads of a ``.wandb`` file, CRC-checked."""
    data = Path(path).read_bytes()
    if data[:4] != HEADER:
        raise ValueError(f"{path}: not a W&B run file")
    pos, parts = 7, []
    while pos + _CHUNK.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < _CHUNK.size:
            pos += left_in_block  # trailer padding
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        start = pos + _CHUNK.size
        chunk = data[start:start + length]
        if length == 0 and kind == 0:
            pos += left_in_block  # zero padding to the end of the block
            continue
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            break  # torn tail of a run that is still being written or was killed
        pos = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        elif kind == MIDDLE:
            parts.append(chunk)
        elif kind == LAST:
            parts.append(chunk)
            yield b"".join(parts)
            parts = []


def iter_records(path: Path) -> Iterator[Any]:
    """``wandb_internal_pb2.Record`` messages of a ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    for payload in iter_payloads(path):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated code
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@attrs.frozen
class RunFile:
    """What a run file says: its run id, history rows, summary, config and artifacts (each
    ``name``, ``type``, ``digest``, ``aliases``, ``metadata``, ``paths``), and the run's
    ``group`` and ``job_type``."""

    run_id: str | None
    history: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    config: dict[str, Any]
    artifacts: tuple[dict[str, Any], ...]
    group: str | None = None
    job_type: str | None = None

    @classmethod
    def read(cls, path: Path) -> RunFile:
        run_id: str | None = None
        group: str | None = None
        job_type: str | None = None
        history: list[dict[str, Any]] = []
        summary: dict[str, Any] = {}
        config: dict[str, Any] = {}
        artifacts: list[dict[str, Any]] = []
        for rec in iter_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run_id = rec.run.run_id or run_id
                group = rec.run.run_group or group
                job_type = rec.run.job_type or job_type
                for item in rec.run.config.update:
                    config[_key(item)] = json.loads(item.value_json)
            elif kind == "history":
                history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                for item in rec.summary.update:
                    summary[_key(item)] = json.loads(item.value_json)
            elif kind == "config":
                for item in rec.config.update:
                    config[_key(item)] = json.loads(item.value_json)
            elif kind == "artifact":
                a = rec.artifact
                artifacts.append({"name": a.name, "type": a.type, "digest": a.digest,
                                  "aliases": list(a.aliases),
                                  "metadata": json.loads(a.metadata) if a.metadata else {},
                                  "paths": [e.path for e in a.manifest.contents]})
        return cls(run_id, tuple(history), summary, config, tuple(artifacts), group, job_type)


def has_exit_record(path: Path) -> bool:
    """Whether a run file is complete (its ``exit`` record is written)."""
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in iter_records(path))
    except (OSError, ValueError):
        return False


def wait_for_exit_record(path: Path, timeout: float) -> bool:
    """Poll until ``path`` holds its exit record (wandb-core flushes after ``finish``)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not has_exit_record(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def run_files(wandb_dir: Path, run_id: str) -> list[Path]:
    """Every ``run-<id>.wandb`` file under a W&B folder (one per process that joined)."""
    return sorted(Path(wandb_dir).glob(f"*run-*-{run_id}/run-{run_id}.wandb"))
