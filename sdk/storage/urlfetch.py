"""Hydration from presigned GET URLs: the agent's download path for ``s3://`` and ``b2://``.

The client lists the source at plan time anyway, so it signs one time-limited GET URL per
object to fetch (:func:`presign`, local HMAC work, no request) and hands them to the agent.
The agent downloads them here with the standard library's ``http.client`` (no boto3 import,
no client, no credentials on the machine):

- files in parallel through :func:`._hydrate.hydrate` (incremental, temp name + rename,
  fetch record, resumable), one GET per object below :data:`PART_MIN`;
- larger objects in ranged parts fetched in parallel; parts are hashed and written in order
  as they complete (the digest overlaps the download, no file is read twice) into a partial
  file that outlives an interruption: the next fetch hashes what it holds and continues from
  its end (byte-range resume), and the whole file is checked against the manifest at the end;
- the bytes are checked as they stream in: against S3's CRC32 of the object when the GET's
  response carries one (``x-amz-checksum-crc32``, asked for with the signed
  ``x-amz-checksum-mode`` header the client hands over in ``headers``) and its ETag is the
  manifest's (so it is the planned object); otherwise against the manifest's digest (MD5 or
  multipart ETag, sha256). CRC32 costs about a fifth of MD5's CPU here;
- a URL that expires (or is about to) stops the fetch with :class:`UrlsExpired`: the agent
  answers ``expired`` and the client signs fresh URLs and calls again; what landed stays;
- :func:`watch_hangup`: when the client goes away (Ctrl-C closes the SSH channel, the agent's
  stdout pipe reports an error) the downloads stop within a fraction of a second; a file cut
  short never gets its final name.
"""

from __future__ import annotations

import os
import select
import stat
import threading
import time
from collections.abc import Callable, Mapping
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import attrs

from runform.interfaces import Manifest, ManifestEntry

from . import digest as _digest
from .hydrate import HydrateOptions, PermanentError, Progress, hydrate
from .record import TMP_MARK

MIB = 1 << 20
PART_MIN = 64 * MIB  # objects from this size on are fetched in ranged parts
PART_SIZE = 16 * MIB
# objects fetched at once: 16 kept a loopback S3 (moto, 64 objects of 1-40 MB) busier than 8
# (median 0.34 s against 0.38 s for 302 MB, bench/bench_hydrate.py); s5cmd runs 256, rclone 4
WORKERS = 16
MARGIN_S = 30.0  # a URL with less time than this left is not started
_READ = 1 * MIB
Hasher = _digest.StreamHasher | _digest.CrcHasher


class UrlsExpired(PermanentError):
    """The presigned URLs expired (or are about to): the client must sign fresh ones (not
    retried here: the same URL cannot work again)."""


class Stopped(PermanentError):
    """The fetch was stopped (the client hung up, or Ctrl-C)."""


CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}


def presign(client: Any, bucket: str, folder: str, entries: list[ManifestEntry],
            ttl_s: int, *, checksums: bool = False) -> dict[str, str]:
    """One presigned GET URL per entry (computed locally by botocore: no request). With
    ``checksums`` the URLs are signed with :data:`CHECKSUM_MODE`, a header every GET of them
    must then send (SigV4 signs it): the response carries S3's CRC32 of the object."""
    extra = {"ChecksumMode": "ENABLED"} if checksums else {}
    return {e.path: client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": folder + e.path, **extra}, ExpiresIn=ttl_s)
        for e in entries}


class _Pool:
    """Keep-alive HTTP(S) connections, one per worker thread and endpoint (stdlib
    ``http.client``: reading into one reused buffer measured faster here than urllib3's
    ``stream``, see docs/BENCHMARKS.md; HTTPS verifies certificates with the system's CAs)."""

    def __init__(self, size: int = 0) -> None:
        self._local = threading.local()

    def _conns(self) -> dict[tuple[str, str, int | None], Any]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def open(self, url: str, headers: dict[str, str] | None) -> tuple[Any, Any]:
        """Send a GET; returns (connection, response). A failure drops the connection."""
        import http.client
        from urllib.parse import urlsplit

        p = urlsplit(url)
        key = (p.scheme, p.hostname or "", p.port)
        conns = self._conns()
        conn = conns.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
            conn = conns[key] = cls(p.hostname or "", p.port, timeout=60)
        try:
            conn.request("GET", p.path + (f"?{p.query}" if p.query else ""), headers=headers or {})
            return conn, conn.getresponse()
        except BaseException:
            self.drop(conn)
            raise

    def drop(self, conn: Any) -> None:
        """Close ``conn`` (a response not read to its end leaves it unusable)."""
        conns = self._conns()
        for key, c in list(conns.items()):
            if c is conn:
                del conns[key]
        conn.close()


def fetch_urls(manifest: Manifest, dest: Path, urls: Mapping[str, str], expires_at: float, *,
               progress: Progress | None = None, workers: int = WORKERS,
               stop: threading.Event | None = None,
               headers: Mapping[str, str] | None = None) -> int:
    """Make ``dest`` hold ``manifest``, downloading from ``urls`` (manifest path -> URL) with
    ``headers`` on every GET (those the URLs were signed with); returns the bytes downloaded.
    Raises :class:`UrlsExpired` when URLs run out of time and :class:`Stopped` when ``stop``
    is set."""
    stop = stop or threading.Event()
    pool = _Pool(workers * 2 + 4)
    sent = dict(headers or {})

    def transfer(entry: ManifestEntry, tmp: Path, report: Progress) -> _digest.CheckResult | None:
        if stop.is_set():
            raise Stopped("stopped")
        url = urls.get(entry.path)
        if url is None or expires_at - time.time() < MARGIN_S:
            raise UrlsExpired(f"{entry.path}: its download URL expired; sign fresh ones")
        if entry.size >= PART_MIN:  # a ranged response carries no checksum of the object
            hasher: Hasher = _digest.StreamHasher(entry.digest, entry.size)
            partial = _partial(tmp, entry)
            offset = _resume(partial, hasher, entry.size)
            with open(partial, "ab" if offset else "wb") as out:
                _ranged(pool, url, entry, out, hasher, report, stop, workers, expires_at, sent,
                        start=offset)
            os.replace(partial, tmp)  # complete: checked and renamed by the engine
            return attrs.evolve(hasher.result(), resumed=offset)  # moved: only the rest
        with open(tmp, "wb") as out:
            hasher = _whole(pool, url, entry, out, report, stop, expires_at, sent)
        return hasher.result()

    return hydrate(manifest, Path(dest), transfer=transfer, progress=progress,
                   options=HydrateOptions(workers=workers))


def _get(pool: _Pool, url: str, entry: ManifestEntry, expires_at: float,
         headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    conn, resp = pool.open(url, headers)
    if resp.status in (200, 206):
        return conn, resp
    body = resp.read(2048).decode(errors="replace")
    pool.drop(conn)
    if resp.status == 403 and ("expired" in body.lower() or time.time() >= expires_at - MARGIN_S):
        raise UrlsExpired(f"{entry.path}: its download URL expired; sign fresh ones")
    if resp.status in (403, 404, 400, 412):
        raise PermanentError(f"{entry.path}: HTTP {resp.status} from the storage endpoint",
                             hint="the object is gone or changed since the plan: run `runform plan` again")
    raise OSError(f"{entry.path}: HTTP {resp.status} from the storage endpoint")  # retried


def _read(pool: _Pool, conn: Any, resp: Any, size: int, sink: Callable[[memoryview], None],
          report: Progress, stop: threading.Event) -> None:
    """Read ``size`` bytes of ``resp`` into one reused buffer, handing each piece to ``sink``;
    the connection is kept only when the response was read to its end."""
    buf = bytearray(_READ)
    view = memoryview(buf)
    got = 0
    try:
        while got < size:
            if stop.is_set():
                raise Stopped("stopped")
            n = resp.readinto(view[:min(_READ, size - got)])
            if not n:
                raise OSError(f"connection closed after {got} of {size} bytes")  # retried
            sink(view[:n])
            got += n
            report(n)
        if resp.read(1):
            raise OSError("more bytes than the manifest's size")
    except BaseException:
        pool.drop(conn)
        raise


def _hasher(entry: ManifestEntry, resp: Any) -> Hasher:
    """S3's CRC32 of the object when the response has one and names the planned object (its
    ETag is the manifest's); else the manifest's own digest."""
    kind, _, value = entry.digest.partition(":")
    crc = resp.getheader("x-amz-checksum-crc32")
    etag = (resp.getheader("ETag") or "").strip('"').lower()
    if kind == "etag" and etag and etag == value.strip('"').lower() \
            and _digest.CrcHasher.usable(crc, entry.size):
        return _digest.CrcHasher(crc, entry.size)
    return _digest.StreamHasher(entry.digest, entry.size)


def _whole(pool: _Pool, url: str, entry: ManifestEntry, out: Any, report: Progress,
           stop: threading.Event, expires_at: float, headers: dict[str, str]) -> Hasher:
    conn, resp = _get(pool, url, entry, expires_at, headers)
    hasher = _hasher(entry, resp)

    def sink(piece: memoryview) -> None:
        hasher.update(piece)
        out.write(piece)

    _read(pool, conn, resp, entry.size, sink, report, stop)
    return hasher


def _partial(tmp: Path, entry: ManifestEntry) -> Path:
    """Where a large object's bytes collect until it is complete: beside the target, named for
    the object's digest (a partial file of another version is never continued), with runform's
    temporary mark (never listed, pushed or taken for the file). Partial files of other
    versions of the same target are removed."""
    import hashlib

    base = tmp.name[:tmp.name.rindex(TMP_MARK)] if TMP_MARK in tmp.name else tmp.name
    mine = tmp.with_name(f"{base}{TMP_MARK}partial-{hashlib.sha256(entry.digest.encode()).hexdigest()[:16]}")
    for other in tmp.parent.glob(f"{glob_escape(base)}{TMP_MARK}partial-*"):
        if other != mine:
            other.unlink(missing_ok=True)
    return mine


def _resume(partial: Path, hasher: Hasher, size: int) -> int:
    """The bytes of ``partial`` (a prefix of the object, written in order by an earlier fetch
    that was stopped or cut off), fed to ``hasher``; the download continues from there and the
    whole file is checked at the end. 0 when there is nothing to continue."""
    try:
        have = partial.stat().st_size
    except OSError:
        return 0
    if not 0 < have < size:
        partial.unlink(missing_ok=True)
        return 0
    with open(partial, "rb", buffering=0) as f:
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        got = 0
        while got < have and (n := f.readinto(buf)):
            n = min(n, have - got)
            hasher.update(view[:n])
            got += n
    return have


def _ranged(pool: _Pool, url: str, entry: ManifestEntry, out: Any, hasher: Hasher,
            report: Progress, stop: threading.Event, workers: int, expires_at: float,
            headers: dict[str, str], start: int = 0) -> None:
    """Parts in parallel from byte ``start`` on; each completed part is hashed and written in
    order by whichever worker completes the next one in line (held parts are bounded by the
    workers), so ``out`` always holds a prefix of the object that a later fetch can continue."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    starts = list(range(start, entry.size, PART_SIZE))
    done: dict[int, bytes] = {}
    lock = threading.Lock()
    state = {"next": 0}

    def part(i: int) -> None:
        a = starts[i]
        b = min(entry.size, a + PART_SIZE) - 1
        conn, resp = _get(pool, url, entry, expires_at, {**headers, "Range": f"bytes={a}-{b}"})
        data = bytearray()
        _read(pool, conn, resp, b - a + 1, data.extend, report, stop)
        with lock:
            done[i] = bytes(data)
            while state["next"] in done:
                piece = done.pop(state["next"])
                hasher.update(piece)
                out.write(piece)
                out.flush()  # what a later fetch continues from is on disk
                state["next"] += 1

    with ThreadPoolExecutor(max_workers=max(1, min(workers // 2, len(starts)))) as parts:
        futures = [parts.submit(part, i) for i in range(len(starts))]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.cancel()
        for f in finished:
            if (exc := f.exception()) is not None:
                raise exc


def watch_hangup(stop: threading.Event, fd: int = 1) -> Callable[[], None]:
    """Set ``stop`` when the reader of ``fd`` (the agent's stdout: sshd) goes away, which is
    what a client's Ctrl-C does to an agent call over SSH. A no-op when ``fd`` is not a pipe.
    Returns a function that ends the watch."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return lambda: None
    except OSError:
        return lambda: None
    done = threading.Event()

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, select.POLLERR | select.POLLHUP)
        while not done.is_set():
            if poller.poll(200):
                stop.set()
                return

    threading.Thread(target=watch, daemon=True, name="runform-hangup").start()
    return done.set


def agent_fetch(manifest: Manifest, dest: Path, urls: Mapping[str, str], expires_at: float,
                progress: Progress | None = None,
                headers: Mapping[str, str] | None = None,
                watch: Callable[[threading.Event], Callable[[], None]] = watch_hangup) -> dict[str, Any]:
    """The agent's ``hydrate`` with URLs: ``{"bytes": n}``, or ``{"expired": True}`` when the
    client must sign fresh URLs and call again (what landed stays), or ``{"stopped": True}``.
    ``watch`` sets the stop event when the client wants the fetch to stop (by default: the
    client hung up on the agent's process)."""
    stop = threading.Event()
    unwatch = watch(stop)
    try:
        return {"bytes": fetch_urls(manifest, dest, urls, expires_at, progress=progress, stop=stop,
                                    headers=headers)}
    except UrlsExpired:
        return {"expired": True}
    except Stopped:
        return {"stopped": True}
    finally:
        unwatch()
