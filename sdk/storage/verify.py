"""``verify(manifest, dest)``: read every file of a fetched folder back and compare it
with what was fetched, so that a corrupted or truncated file is fetched again.

Unlike the cheap check in ``fetch`` (record + ``stat``), this reads every byte. Files found
missing or corrupted are dropped from the local record; the next ``fetch`` moves them.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from runform.interfaces import Manifest, ManifestEntry

from . import digest as _digest
from .record import Fetched, Record, safe_join


@attrs.frozen
class VerifyReport:
    """What ``verify`` found, by manifest path."""

    ok: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    corrupted: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # present, not recorded, and the digest cannot be checked

    @property
    def clean(self) -> bool:
        """Every file is present and proven intact."""
        return not (self.missing or self.corrupted or self.unknown)

    @property
    def bad(self) -> tuple[str, ...]:
        """The paths the next fetch will move again."""
        return self.missing + self.corrupted + self.unknown

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in attrs.asdict(self).items()}


def _one(entry: ManifestEntry, dest: Path, rec: Fetched | None) -> tuple[str, Fetched | None]:
    target = safe_join(dest, entry.path)
    try:
        st = target.stat()
    except OSError:
        return "missing", None
    if st.st_size != entry.size:
        return "corrupted", None
    if rec is not None and rec.digest == entry.digest and rec.size == entry.size:
        if _digest.content_of(target, rec.content) != rec.content:
            return "corrupted", None
        return "ok", attrs.evolve(rec, mtime_ns=st.st_mtime_ns)
    if not _digest.is_checkable(entry.digest):
        return "unknown", None
    result = _digest.check(target, entry.digest, entry.size)
    if not (result.ok and result.checked):
        return "corrupted", None
    return "ok", Fetched(entry.size, entry.digest, result.content, st.st_mtime_ns)


def verify(manifest: Manifest, dest: Path, *, workers: int = 4) -> VerifyReport:
    """Check every file of ``manifest`` under ``dest`` byte for byte; fix the local record."""
    from concurrent.futures import ThreadPoolExecutor

    dest = Path(dest)
    record = Record.load(dest)
    entries = list(manifest.entries)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(entries) or 1))) as pool:
        results = list(pool.map(lambda e: _one(e, dest, record.files.get(e.path)), entries))
    found: dict[str, list[str]] = {"ok": [], "missing": [], "corrupted": [], "unknown": []}
    changed = False
    for entry, (status, fetched) in zip(entries, results, strict=True):
        found[status].append(entry.path)
        if fetched is not None and record.files.get(entry.path) != fetched:
            record.files[entry.path] = fetched
            changed = True
        elif fetched is None and entry.path in record.files:
            del record.files[entry.path]
            changed = True
    if changed and dest.is_dir():
        record.save()
    return VerifyReport(*(tuple(found[k]) for k in ("ok", "missing", "corrupted", "unknown")))
