"""What the HEADs of multipart objects found, kept between commands.

A multipart object's ETag is not a digest of its content, so a plan reads its metadata with a
HEAD, looking for a sha256 (:data:`~runform.storage_backends._s3index.META_KEYS`), unless
runform's index vouches for it. A dataset of 1,000 multipart shards that runform did not push
would take 1,000 HEADs at every plan. What each HEAD found is kept under
``$XDG_CACHE_HOME/runform/s3-heads`` (one file per endpoint and bucket), keyed by the object's
key, ETag and size: an object with the same ETag and size holds the same bytes (the ETag of a
multipart upload is the MD5 of its parts' MD5s), so a sha256 found for it stays true, and the
next plan HEADs only objects that are new or changed. (An object copied onto itself with new
metadata and the same part layout keeps its ETag; a sha256 added that way is not seen, and the
object keeps its ETag digest, which still names its bytes.)

A file that cannot be read or written is ignored; ``RUNFORM_CACHE=0`` turns this off. It holds
keys, ETags, sizes and sha256 digests of objects, no credential and nothing of a spec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runform.atomic import atomic_write
from runform.cachedir import cache_dir, time_caches_on

FORMAT = 1
_MAX_ENTRIES = 200_000  # per bucket: beyond it, the entries of this lookup are kept alone


def _file(endpoint: str, bucket: str) -> Path:
    return cache_dir("s3-heads", hashlib.sha256(f"{endpoint}\0{bucket}".encode()).hexdigest()[:32] + ".json")


def _load(path: Path) -> dict[str, list[Any]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    objects = doc.get("objects") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
    return objects if isinstance(objects, dict) else {}


def _save(path: Path, found: dict[str, list[Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        merged = {**_load(path), **found}  # another command's entries since this one read it
        if len(merged) > _MAX_ENTRIES:
            merged = found
        atomic_write(path, json.dumps({"format": FORMAT, "objects": merged}), mode=0o600, parents=False)
    except OSError:
        pass  # not kept: HEADed again next time


def cached_heads(endpoint: str, bucket: str, objects: Iterable[tuple[str, str, int]],
                 head: Callable[[list[str]], dict[str, str | None]]) -> dict[str, str]:
    """``key -> sha256 hex`` for ``objects`` (key, ETag, size) that carry one: from the cache
    for those it knows with the same ETag and size, from ``head`` (the keys to HEAD -> their
    sha256 or None) for the rest, which the cache keeps."""
    objects = list(objects)
    if not time_caches_on():
        return {k: v for k, v in head([key for key, _, _ in objects]).items() if v}
    path = _file(endpoint, bucket)
    known = _load(path)
    out: dict[str, str] = {}
    todo: list[tuple[str, str, int]] = []
    for key, etag, size in objects:
        hit = known.get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[0] == etag and hit[1] == size:
            if isinstance(hit[2], str) and hit[2]:
                out[key] = hit[2]
        else:
            todo.append((key, etag, size))
    if todo:
        fresh = head([key for key, _, _ in todo])
        _save(path, {key: [etag, size, fresh.get(key) or None] for key, etag, size in todo})
        out.update({k: v for k, v in fresh.items() if v})
    return out
