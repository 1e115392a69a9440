"""Content digests: computing them for files and checking them against manifest entries.

A :class:`~runform.interfaces.ManifestEntry` digest is ``sha256:<hex>``, ``md5:<hex>`` or
``etag:<opaque>``. An S3 single-part ETag is the MD5 of the content, so it is checked as
such; a multipart ETag (``<hex>-<parts>``) is the MD5 of the parts' MD5s and is checked by
trying the part sizes that common uploaders use. When nothing can be checked, only the
size is, and :func:`check` says so.

:class:`CrcHasher` checks a download against the CRC32 that S3 stored with the object (S3's
additional checksums, ``x-amz-checksum-crc32``: full-object, or composite ``<b64>-<parts>``
for a multipart upload). The manifest's digest (the ETag) still names the object; the CRC
only replaces the MD5 as the way its bytes are checked, about five times cheaper here.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import zlib
from pathlib import Path
from typing import Any

import attrs
from runform.digests import file_digest

CHUNK = 4 << 20
MIB = 1 << 20
_PLAIN = ("sha256", "md5", "xxh128")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^([0-9a-f]{32})-(\d+)$")
# Part sizes of boto3/s3transfer and the AWS CLI (8 MiB), rclone and B2 tools (5 MiB, 96 or
# 100 MB), s5cmd (50 MiB) and others; tried in order when a multipart ETag is checked.
_PART_SIZES = (8 * MIB, 5 * MIB, 16 * MIB, 50 * MIB, 64 * MIB, 96 * MIB, 100 * MIB, 100_000_000,
               15 * MIB, 32 * MIB, 128 * MIB, 256 * MIB, 512 * MIB)


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file (the core's own file digest)."""
    return file_digest(path)


def md5_hex(path: Path) -> str:
    """Hex MD5 of a file (what a single-part S3 ETag is)."""
    return _hash(path, "md5")


class _Crc32:
    """``zlib.crc32`` with hashlib's interface (``hexdigest``: 8 hex digits, big-endian)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()


def _hasher(algo: str) -> Any:
    if algo == "crc32":
        return _Crc32()
    if algo == "xxh128":  # W&B's opt-in digest; xxhash comes with wandb
        import xxhash

        return xxhash.xxh128()
    return hashlib.new(algo)


def _feed(path: Path, h: Any) -> Any:
    """``h`` updated with the bytes of ``path`` (one reused buffer, no copies); returned."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h


def _hash(path: Path, algo: str) -> str:
    return str(_feed(path, _hasher(algo)).hexdigest())


def multipart_etag(path: Path, part_size: int) -> str:
    """The S3 multipart ETag of a file uploaded in parts of ``part_size`` bytes."""
    parts: list[bytes] = []
    with open(path, "rb", buffering=0) as f:
        while True:
            h = hashlib.md5()
            left = part_size
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    break
                h.update(data)
                left -= len(data)
            if left == part_size:
                break
            parts.append(h.digest())
            if left:
                break
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def part_size_candidates(size: int, parts: int) -> list[int]:
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts, likeliest first."""
    fits = [p for p in _PART_SIZES if math.ceil(size / p) == parts]
    guess = math.ceil(size / parts / MIB) * MIB  # an even MiB split, as some tools choose
    if parts > 1 and math.ceil(size / guess) == parts and guess not in fits:
        fits.append(guess)
    return fits


@attrs.frozen
class CheckResult:
    """Outcome of checking a file against a digest.

    ``content`` is the digest to record for the file (``sha256:``/``md5:``/``mpetag:``),
    used later to notice that the file changed on disk.
    """

    ok: bool
    content: str
    checked: bool  # False: the digest could not be checked, only the size was
    reason: str = ""
    resumed: int = 0  # bytes a continued partial file already held (checked, not moved again)


def content_of(path: Path, content: str) -> str:
    """Recompute a recorded content digest (same kind) for ``path``."""
    kind, _, value = content.partition(":")
    if kind == "mpetag":
        part = int(value.split(":", 1)[0])
        return f"mpetag:{part}:{multipart_etag(path, part)}"
    if kind == "crc32mp":
        part = int(value.split(":", 1)[0])
        return f"crc32mp:{part}:{crc32_composite(path, part)}"
    return f"{kind}:{_hash(path, kind)}"


def crc32_composite(path: Path, part_size: int) -> str:
    """S3's composite CRC32 of a file uploaded in parts of ``part_size`` bytes (hex)."""
    return str(_feed(path, CrcHasher("AAAAAA==-1", 0, part_size)).composite())


def check(path: Path, digest: str, size: int) -> CheckResult:
    """Check a file's size and content against a manifest digest (one read of the file,
    more only for a multipart ETag whose part size is not the usual one)."""
    actual = path.stat().st_size
    if actual != size:
        return CheckResult(False, "", True, f"size {actual} != {size}")
    kind, _, value = digest.partition(":")
    if kind == "etag":
        value = value.strip('"').lower()
        if _HEX32.match(value):
            kind = "md5"
        elif m := _MULTIPART.match(value):
            return _check_multipart(path, size, value, int(m.group(2)))
        else:
            return CheckResult(True, sha256_file(path), False, f"opaque etag {value!r}")
    if kind in _PLAIN:
        got = _hash(path, kind)
        if got != value.lower():
            return CheckResult(False, f"{kind}:{got}", True, f"{kind} {got} != {value}")
        return CheckResult(True, f"{kind}:{got}", True)
    return CheckResult(True, sha256_file(path), False, f"unknown digest kind {kind!r}")


def _check_multipart(path: Path, size: int, etag: str, parts: int) -> CheckResult:
    for part in part_size_candidates(size, parts):
        if multipart_etag(path, part) == etag:
            return CheckResult(True, f"mpetag:{part}:{etag}", True)
    return CheckResult(True, sha256_file(path), False,
                       f"multipart etag {etag}: uploader's part size unknown, size checked only")


def is_checkable(digest: str) -> bool:
    """Whether :func:`check` can verify content (not only size) for this digest."""
    kind, _, value = digest.partition(":")
    if kind in _PLAIN:
        return True
    value = value.strip('"').lower()
    return kind == "etag" and bool(_HEX32.match(value) or _MULTIPART.match(value))


class StreamHasher:
    """Computes, from bytes seen in order while they are written, what :func:`check` would
    compute from the file afterwards, so the file need not be read again.

    Bytes must arrive in order (``write_at`` with the next offset); anything else (ranged,
    out-of-order writes) marks the hasher broken and :meth:`result` returns None, as it does
    when a multipart ETag does not match the likeliest part size: the caller then falls back
    to :func:`check` on the file.
    """

    def __init__(self, digest: str, size: int) -> None:
        self.size = size
        self.pos = 0
        self.broken = False
        kind, _, value = digest.partition(":")
        value = value.strip('"').lower()
        self.part = 0
        self.expect: str | None = value
        if kind == "etag" and _HEX32.match(value):
            kind = "md5"
        elif kind == "etag" and (m := _MULTIPART.match(value)):
            candidates = part_size_candidates(size, int(m.group(2)))
            if candidates:
                kind, self.part = "mpetag", candidates[0]
            else:
                kind, self.expect = "sha256", None
        elif kind not in _PLAIN:
            kind, self.expect = "sha256", None  # unverifiable: record a sha256 of what came
        self.kind = kind
        self._h = _hasher("md5" if kind == "mpetag" else kind)
        self._parts: list[bytes] = []
        self._in_part = 0

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        if self.broken:
            return
        if offset != self.pos:
            self.broken = True
            return
        self.update(data)

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.pos += len(view)
        if self.kind != "mpetag":
            self._h.update(view)
            return
        while len(view):
            take = min(len(view), self.part - self._in_part)
            self._h.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part:
                self._parts.append(self._h.digest())
                self._h, self._in_part = hashlib.md5(), 0

    def result(self) -> CheckResult | None:
        """The check result, or None when the file must be checked by reading it."""
        if self.broken or self.pos != self.size:
            return None
        if self.kind == "mpetag":
            parts = self._parts + ([self._h.digest()] if self._in_part else [])
            etag = f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"
            if etag != self.expect:
                return None  # maybe another part size: let check() try the others
            return CheckResult(True, f"mpetag:{self.part}:{etag}", True)
        got = self._h.hexdigest()
        content = f"{self.kind}:{got}"
        if self.expect is None:
            return CheckResult(True, content, False, "digest not checkable, size checked only")
        if got != self.expect:
            return CheckResult(False, content, True, f"{self.kind} {got} != {self.expect}")
        return CheckResult(True, content, True)


class HashingWriter:
    """A write-only file wrapper that feeds what is written to a :class:`StreamHasher`.

    It says it is not seekable, so boto3's transfer manager writes to it in order even for
    a ranged (multipart) download, holding early-arriving ranges in memory (bounded by its
    concurrency): every byte is hashed as it lands and no file is read twice.
    """

    def __init__(self, raw: Any, hasher: StreamHasher) -> None:
        self.raw, self.hasher = raw, hasher
        self._offset = 0

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        self.hasher.write_at(self._offset, data)
        n = self.raw.write(data)
        self._offset += n
        return int(n)


class CrcHasher:
    """Checks bytes seen in order against S3's CRC32 of the object (``x-amz-checksum-crc32``
    of a GET with ``x-amz-checksum-mode: ENABLED``): the CRC32 of the whole object, or for a
    multipart upload (``<base64>-<parts>``, type ``COMPOSITE``) the CRC32 of the parts'
    big-endian CRC32s, with the part size guessed as for a multipart ETag. The interface of
    :class:`StreamHasher`; :meth:`result` is None when the guess was wrong (the caller then
    checks the file against the manifest's digest)."""

    def __init__(self, expect: str, size: int, part: int = 0) -> None:
        value, _, parts = expect.partition("-")
        self.expect = _b64hex(value)
        self.parts = int(parts) if parts else 0
        self.size, self.pos = size, 0
        self.part = part or (part_size_candidates(size, self.parts) or [0])[0] if self.parts else 0
        self._crc = 0
        self._in_part = 0
        self._done: list[bytes] = []

    @staticmethod
    def usable(header: str | None, size: int) -> bool:
        """Whether an ``x-amz-checksum-crc32`` value can be checked while streaming."""
        if not header:
            return False
        value, _, parts = header.partition("-")
        if len(_b64hex(value)) != 8:
            return False
        return not parts or (parts.isdigit() and bool(part_size_candidates(size, int(parts))))

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.pos += len(view)
        if not self.parts:
            self._crc = zlib.crc32(view, self._crc)
            return
        while len(view):
            take = min(len(view), self.part - self._in_part)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part:
                self._done.append(self._crc.to_bytes(4, "big"))
                self._crc, self._in_part = 0, 0

    def composite(self) -> str:
        parts = self._done + ([self._crc.to_bytes(4, "big")] if self._in_part else [])
        return f"{zlib.crc32(b''.join(parts)).to_bytes(4, 'big').hex()}-{len(parts)}"

    def result(self) -> CheckResult | None:
        if self.pos != self.size:
            return None
        if self.parts:
            got = self.composite()
            if got != f"{self.expect}-{self.parts}":
                return None  # another part size, or bad bytes: check() on the file decides
            return CheckResult(True, f"crc32mp:{self.part}:{got}", True)
        got = self._crc.to_bytes(4, "big").hex()
        if got != self.expect:
            return CheckResult(False, f"crc32:{got}", True, f"crc32 {got} != {self.expect}")
        return CheckResult(True, f"crc32:{got}", True)


def _b64hex(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return ""
