"""Listing an S3/B2 prefix into a :class:`Manifest`, and runform's index object.

One ``ListObjectsV2`` listing (paginated) per prefix. Digests, best first:

1. ``sha256:`` from runform's index object ``<prefix>.runform-index.json`` (written by
   ``push``), used only for objects whose size and ETag still match the index;
2. ``sha256:`` from the object's metadata (``x-amz-meta-sha256`` or
   ``x-amz-meta-runform-sha256``), read with a HEAD only for multipart objects (whose ETag
   is not an MD5 of the content) and for a URI naming a single object, and kept for the next
   plans by key, ETag and size (:mod:`.s3_heads`);
3. ``etag:<etag>`` (an MD5 for single-part uploads, which ``fetch`` checks as such).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from runform.errors import RunformError
from runform.interfaces import Manifest, ManifestEntry
from runform.storage.record import is_internal, safe_join
from runform.storage.s3conn import Location, credentials_missing, error_code

INDEX_NAME = ".runform-index.json"
META_KEYS = ("sha256", "runform-sha256")


@attrs.frozen
class Listed:
    """One object of a listing."""

    key: str
    size: int
    etag: str  # without quotes

    @property
    def multipart(self) -> bool:
        return "-" in self.etag


@attrs.frozen
class IndexEntry:
    size: int
    etag: str
    sha256: str  # hex


def list_objects(client: Any, bucket: str, prefix: str) -> list[Listed]:
    """Every object under ``prefix`` (ListObjectsV2 paginator)."""
    out: list[Listed] = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                out.append(Listed(obj["Key"], int(obj["Size"]), obj.get("ETag", "").strip('"')))
    except Exception as exc:
        if credentials_missing(exc):
            raise RunformError(f"listing {bucket}/{prefix}: no credentials",
                               hint="b2:// needs B2_KEY_ID/B2_APP_KEY; s3:// takes boto3's chain "
                                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, ...)") from exc
        if error_code(exc) in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
                               "SignatureDoesNotMatch"):
            raise RunformError(f"listing {bucket}/{prefix}: {error_code(exc)}",
                               hint="check the bucket name (case-sensitive) and the key's rights") from exc
        raise
    return out


def read_index(client: Any, bucket: str, key: str) -> dict[str, IndexEntry]:
    """runform's index object, or ``{}`` when missing or unreadable."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        raw = json.loads(body)
        return {p: IndexEntry(int(e["size"]), str(e["etag"]), str(e["sha256"]))
                for p, e in raw.get("files", {}).items()}
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404") or isinstance(exc, ValueError | KeyError | TypeError):
            return {}
        raise


def index_body(entries: Mapping[str, IndexEntry]) -> bytes:
    doc = {"format": 1, "files": {p: attrs.asdict(e) for p, e in sorted(entries.items())}}
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def head_sha256(client: Any, bucket: str, objects: Iterable[Listed]) -> dict[str, str]:
    """``key -> sha256 hex`` from object metadata, for the objects that carry it; what a HEAD
    found for an object is kept for the next plans (:mod:`.s3_heads`)."""
    from runform.storage_backends.s3_heads import cached_heads

    def heads(keys: list[str]) -> dict[str, str | None]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(keys)))) as pool:
            return dict(zip(keys, pool.map(lambda key: _metadata_sha256(client, bucket, key), keys)))

    return cached_heads(str(client.meta.endpoint_url), bucket,
                        [(o.key, o.etag, o.size) for o in objects], heads)


def _metadata_sha256(client: Any, bucket: str, key: str) -> str | None:
    meta = client.head_object(Bucket=bucket, Key=key).get("Metadata", {})
    sha = next((meta[k] for k in META_KEYS if meta.get(k)), None)
    return sha.lower() if sha else None


@attrs.frozen
class Snapshot:
    """A listing of one location, split into what the manifest holds and the index."""

    location: Location
    folder: str  # the key prefix that manifest paths are relative to
    single: bool  # the URI named one object
    objects: dict[str, Listed]  # by manifest path
    index: dict[str, IndexEntry]
    index_listed: bool

    @classmethod
    def take(cls, client: Any, location: Location, *, read_idx: bool = True) -> Snapshot:
        listed = list_objects(client, location.bucket, location.key)
        single = not location.is_prefix and any(o.key == location.key for o in listed)
        folder = location.folder if single else (location.key if location.is_prefix
                                                 else location.key + "/")
        objects: dict[str, Listed] = {}
        index_listed = False
        for obj in listed:
            if single and obj.key != location.key:
                continue
            if not obj.key.startswith(folder):
                continue  # `data` was asked for as a folder; skip `data.bak`
            rel = obj.key[len(folder):]
            if rel == INDEX_NAME:
                index_listed = True
                continue
            if not rel or rel.endswith("/") or is_internal(rel.rsplit("/", 1)[-1]):
                continue  # folder markers and runform's own files
            try:
                safe_join(Path("/"), rel)
            except ValueError as exc:
                raise RunformError(f"{location.uri(obj.key)}: {exc}") from exc
            objects[rel] = obj
        index: dict[str, IndexEntry] = {}
        if read_idx and index_listed:
            index = read_index(client, location.bucket, folder + INDEX_NAME)
        return cls(location, folder, single, objects, index, index_listed)

    def uri(self) -> str:
        """The normalised URI: an object key, or a folder ending with ``/``."""
        return self.location.uri(self.location.key if self.single else self.folder)

    def manifest(self, client: Any | None) -> Manifest:
        """The manifest; HEADs multipart objects missing from the index when ``client``."""
        digests: dict[str, str] = {}
        need_head: list[str] = []
        for rel, obj in self.objects.items():
            idx = self.index.get(rel)
            if idx is not None and idx.size == obj.size and idx.etag == obj.etag:
                digests[rel] = "sha256:" + idx.sha256
            elif obj.multipart or self.single:  # one object: one HEAD is cheap
                need_head.append(rel)
        if need_head and client is not None:
            found = head_sha256(client, self.location.bucket,
                                [self.objects[r] for r in need_head])
            for rel in need_head:
                if sha := found.get(self.objects[rel].key):
                    digests[rel] = "sha256:" + sha
        entries = tuple(
            ManifestEntry(rel, obj.size, digests.get(rel, f"etag:{obj.etag}"))
            for rel, obj in sorted(self.objects.items())
        )
        return Manifest(self.uri(), entries, version=self.version())

    def version(self) -> str:
        h = hashlib.sha256()
        for rel, obj in sorted(self.objects.items()):
            h.update(f"{rel}\0{obj.size}\0{obj.etag}\n".encode())
        return "listing:" + h.hexdigest()[:32]
