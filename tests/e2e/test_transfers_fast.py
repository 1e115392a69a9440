"""Data at line rate (issue 15): large files over SSH streamed through an exec channel, syncs in
batches that survive an interruption, hydration from presigned URLs without credentials on the
machine, and the first Ctrl-C (``abort`` / the agent's hang-up watch) stopping a transfer so
that the next one moves only what is missing. Real sshd and moto's S3 server on loopback;
speed itself is measured in bench/, not here."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import interrupt_cli, machine_root, poll, run_cli

from runform import codesync
from runform.codesync import local_manifest, sync_tree
from runform.errors import RunformError
from runform.transport.ssh import SSHTransport
from runform.storage import urlfetch as _urlfetch
from runform.storage_backends.s3 import S3Backend
from runform.testing.sshd import SSHD

needs_sshd = pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")
pytestmark = pytest.mark.slow


def _until(cond, what: str, deadline_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    poll(cond, what, timeout=deadline_s)


@pytest.fixture
def transport(sshd: SSHD):  # type: ignore[no-untyped-def]
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


@needs_sshd
def test_a_large_file_is_streamed_atomically_with_its_mode_and_progress(
    transport: SSHTransport, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(6 << 20)  # over the streaming threshold
    src.write_bytes(data)
    dest = tmp_path / "remote" / "big.bin"
    dest.parent.mkdir()
    seen: list[int] = []
    transport.put_file(src, str(dest), mode=0o640, progress=seen.append)
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o640
    assert sum(seen) == len(data)
    assert os.listdir(dest.parent) == ["big.bin"]  # no temporary file left


@needs_sshd
def test_abort_stops_a_large_upload_and_leaves_nothing_with_the_final_name(
    transport: SSHTransport, tmp_path: Path
) -> None:
    src = tmp_path / "huge.bin"
    with open(src, "wb") as f:  # sparse: 4 GB to send, nothing to write here
        f.truncate(4 << 30)
    remote = tmp_path / "remote"
    remote.mkdir()
    sent: list[int] = []
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            transport.put_file(src, str(remote / "huge.bin"), progress=sent.append)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    _until(lambda: sum(sent) > 8 << 20, "the upload to start")
    transport.abort()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the upload did not stop"
    assert errors, "an aborted upload must not report success"
    assert sum(sent) < 4 << 30
    assert not (remote / "huge.bin").exists()
    _until(lambda: not os.listdir(remote), "the temporary file to be removed")
    transport.run(["true"])  # the transport works after an abort


@needs_sshd
def test_an_interrupted_sync_resumes_with_only_the_files_that_did_not_land(
    transport: SSHTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codesync, "_BATCH_BYTES", 3 << 20)
    monkeypatch.setattr(codesync, "_STREAM_MIN", 1 << 20)
    src = tmp_path / "data"
    src.mkdir()
    for i in range(4):
        (src / f"part{i}.bin").write_bytes(os.urandom(2 << 20))  # one file per batch
    root = str(tmp_path / "machine")
    total = [0]

    def interrupt_in_the_third_batch(n: int) -> None:
        total[0] += n
        if total[0] > 5 << 20:
            transport.abort()

    with pytest.raises(RunformError):
        sync_tree(transport, src, root, progress=interrupt_in_the_third_batch)
    report = sync_tree(transport, src, root)
    assert report.files_sent == 2 and report.bytes_sent == 2 * (2 << 20), report.sent
    for i in range(4):
        assert (Path(root) / f"part{i}.bin").read_bytes() == (src / f"part{i}.bin").read_bytes()
    again = sync_tree(transport, src, root, local_manifest(src))
    assert not again.changed


# ---------------------------------------------------------------------- presigned hydration


def _bucket_with(server, sizes: dict[str, int]) -> tuple[str, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    bucket = server.make_bucket()
    c = server.runform_client()
    bodies = {name: os.urandom(size) for name, size in sizes.items()}
    for name, body in bodies.items():
        c.put_object(Bucket=bucket, Key=f"ds/{name}", Body=body)
    return bucket, bodies


def test_hydration_from_presigned_urls_needs_no_credentials(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket, bodies = _bucket_with(s3_server, {"a.bin": 3000, "sub/b.bin": 70 << 20})  # b: ranged
    backend = S3Backend()
    env = s3_server.env("s3")
    manifest = backend.resolve(f"s3://{bucket}/ds/", env)
    signed = backend.presign(manifest, env, ttl_s=600)
    dest = tmp_path / "dest"
    # no credential anywhere in what the machine gets: only URLs and their expiry
    moved = _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"])
    assert moved == sum(len(b) for b in bodies.values())
    for name, body in bodies.items():
        assert (dest / name).read_bytes() == body
    s3_server.stats.reset()
    assert _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"]) == 0
    assert s3_server.stats.object_bytes_out == 0  # the no-change fetch makes no request


def test_expired_urls_are_reported_and_fresh_ones_finish_the_fetch(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket, _ = _bucket_with(s3_server, {"a.bin": 1000, "b.bin": 2000})
    backend = S3Backend()
    env = s3_server.env("s3")
    manifest = backend.resolve(f"s3://{bucket}/ds/", env)
    stale = backend.presign(manifest, env, ttl_s=600)
    out = _urlfetch.agent_fetch(manifest, tmp_path / "d", stale["urls"], time.time() + 1)
    assert out == {"expired": True}  # about to expire: not started, the client signs again
    fresh = backend.presign(manifest, env, ttl_s=600)
    assert _urlfetch.agent_fetch(manifest, tmp_path / "d", fresh["urls"], fresh["expires_at"]) == {
        "bytes": 3000}


def _signed(server, sizes: dict[str, int]) -> tuple[dict[str, bytes], Any, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Objects of these sizes in a new bucket, their manifest and presigned URLs."""
    bucket, bodies = _bucket_with(server, sizes)
    backend = S3Backend()
    env = server.env("s3")
    manifest = backend.resolve(f"s3://{bucket}/ds/", env)
    return bodies, manifest, backend.presign(manifest, env, ttl_s=600)


def _fetch_stopped_after(limit: int, manifest: Any, dest: Path, signed: dict[str, Any]) -> None:
    """A URL fetch whose stop is set once more than ``limit`` bytes arrived (what the agent's
    hang-up watch does on the client's Ctrl-C): it must end with ``Stopped``."""
    stop = threading.Event()
    seen = [0]

    def progress(n: int) -> None:
        seen[0] += n
        if seen[0] > limit:
            stop.set()

    with pytest.raises(_urlfetch.Stopped):
        _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"],
                             progress=progress, workers=2, stop=stop)


def test_a_stopped_hydration_leaves_no_partial_file_and_resumes_with_the_rest(
    s3_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    sizes = {f"f{i}.bin": 4 << 20 for i in range(6)}
    bodies, manifest, signed = _signed(s3_server, sizes)
    dest = tmp_path / "dest"
    _fetch_stopped_after(6 << 20, manifest, dest, signed)
    whole = {p.name for p in dest.iterdir() if p.name in bodies}
    for name in whole:  # a file with its final name is complete
        assert (dest / name).read_bytes() == bodies[name]
    assert not [p for p in dest.iterdir() if ".runform-tmp" in p.name or ".tmp" in p.name]
    s3_server.stats.reset()
    moved = _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"])
    assert moved == sum(sizes[n] for n in bodies if n not in whole)
    assert s3_server.stats.object_bytes_out == moved
    for name, body in bodies.items():
        assert (dest / name).read_bytes() == body


def _bucket_with_checksums(server, sizes: dict[str, int]) -> tuple[str, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    """Objects uploaded as boto3 >= 1.36 and the AWS CLI do by default: S3 stores a CRC32 of
    each (composite for the multipart ones, 8 MiB parts above 8 MiB)."""
    import io

    from boto3.s3.transfer import TransferConfig

    bucket = server.make_bucket()
    c = server.client()  # boto3's defaults: flexible checksums on uploads
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    bodies = {name: os.urandom(size) for name, size in sizes.items()}
    for name, body in bodies.items():
        c.upload_fileobj(io.BytesIO(body), bucket, f"ds/{name}", Config=cfg)
    return bucket, bodies


def test_hydration_checks_the_bytes_against_the_crc32_s3_stored(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from runform.storage.record import Record
    from runform.storage.verify import verify

    bucket, bodies = _bucket_with_checksums(s3_server, {"one.bin": 3 << 20, "multi.bin": 20 << 20})
    backend = S3Backend()
    env = s3_server.env("s3")
    manifest = backend.resolve(f"s3://{bucket}/ds/", env)
    assert all(e.digest.startswith("etag:") for e in manifest.entries)  # identity: the ETag
    signed = backend.presign(manifest, env, ttl_s=600)
    assert signed["headers"] == {"x-amz-checksum-mode": "ENABLED"}
    dest = tmp_path / "dest"
    moved = _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"],
                                 headers=signed["headers"])
    assert moved == sum(len(b) for b in bodies.values())
    asked = [r for r in s3_server.stats.of("GetObject")]
    assert asked and all(("x-amz-checksum-mode", "ENABLED") in r.headers for r in asked)
    for name, body in bodies.items():
        assert (dest / name).read_bytes() == body
    contents = {p: f.content.split(":")[0] for p, f in Record.load(dest).files.items()}
    assert contents == {"one.bin": "crc32", "multi.bin": "crc32mp"}  # no MD5 computed
    assert verify(manifest, dest).clean
    with open(dest / "multi.bin", "r+b") as f:  # changed in place: the CRC record sees it
        f.seek(5 << 20)
        f.write(b"\x00" if bodies["multi.bin"][5 << 20] else b"\x01")
    assert verify(manifest, dest).corrupted == ("multi.bin",)


def test_an_object_replaced_since_the_plan_is_not_taken_on_its_new_crc(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The CRC in a response vouches for the object the server has now; only when its ETag is
    the plan's is that the planned object. Replaced since: its bytes fail the plan's digest."""
    from runform.storage.hydrate import DigestMismatch

    bucket, _ = _bucket_with_checksums(s3_server, {"a.bin": 2 << 20})
    backend = S3Backend()
    env = s3_server.env("s3")
    manifest = backend.resolve(f"s3://{bucket}/ds/", env)
    s3_server.client().put_object(Bucket=bucket, Key="ds/a.bin", Body=os.urandom(2 << 20))
    signed = backend.presign(manifest, env, ttl_s=600)
    dest = tmp_path / "dest"
    with pytest.raises(DigestMismatch):
        _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"],
                             headers=signed["headers"])
    assert not (dest / "a.bin").exists()


def test_b2_urls_ask_for_no_checksum_and_hydrate(s3_server_b2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """B2 rejects x-amz-checksum-mode (the B2 mode answers 400 as B2 does): b2:// signs without
    it and the bytes are checked against the ETag."""
    from runform.storage_backends.s3 import B2Backend

    bucket, bodies = _bucket_with(s3_server_b2, {"a.bin": 3000, "b.bin": 9 << 20})
    backend = B2Backend()
    env = s3_server_b2.env("b2")
    manifest = backend.resolve(f"b2://{bucket}/ds/", env)
    signed = backend.presign(manifest, env, ttl_s=600)
    assert signed["headers"] == {}
    dest = tmp_path / "dest"
    assert _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"],
                                headers=signed["headers"]) == 3000 + (9 << 20)
    for name, body in bodies.items():
        assert (dest / name).read_bytes() == body


def test_a_large_object_stopped_half_way_is_continued_from_its_partial_file(
    s3_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Byte-range resume: the bytes of a large object that landed before a stop stay in a
    partial file (never under the final name); the next fetch asks only for the rest, and the
    whole file is checked against the plan's digest."""
    bodies, manifest, signed = _signed(s3_server, {"big.bin": 70 << 20})  # ranged: 5 parts
    dest = tmp_path / "dest"
    _fetch_stopped_after(40 << 20, manifest, dest, signed)
    assert not (dest / "big.bin").exists()
    (partial,) = [p for p in dest.iterdir() if "partial" in p.name]
    kept = partial.stat().st_size
    assert 0 < kept < 70 << 20 and kept % _urlfetch.PART_SIZE == 0
    assert partial.read_bytes() == bodies["big.bin"][:kept]
    s3_server.stats.reset()
    moved = _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"])
    assert moved == s3_server.stats.object_bytes_out == (70 << 20) - kept  # only the rest moved, and counted
    assert (dest / "big.bin").read_bytes() == bodies["big.bin"]
    assert not [p for p in dest.iterdir() if "runform-tmp" in p.name]


def test_a_partial_file_that_does_not_match_is_fetched_again_whole(s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bodies, manifest, signed = _signed(s3_server, {"big.bin": 70 << 20})
    dest = tmp_path / "dest"
    dest.mkdir()
    partial = _urlfetch._partial(dest / f"big.bin{_urlfetch.TMP_MARK}1-1", manifest.entries[0])
    partial.write_bytes(b"\0" * (16 << 20))  # not the object's first bytes
    s3_server.stats.reset()
    assert _urlfetch.fetch_urls(manifest, dest, signed["urls"], signed["expires_at"]) == 70 << 20
    assert (dest / "big.bin").read_bytes() == bodies["big.bin"]
    # the continued file failed its check (a digest mismatch); the engine's retry fetched
    # the whole object
    assert s3_server.stats.object_bytes_out == (70 << 20) - (16 << 20) + (70 << 20)


def test_the_agent_stops_when_the_client_hangs_up() -> None:
    r, w = os.pipe()
    stop = threading.Event()
    unwatch = _urlfetch.watch_hangup(stop, fd=w)
    try:
        assert not stop.wait(0.3)
        os.close(r)  # sshd closing the channel's pipe (the client's Ctrl-C)
        assert stop.wait(10)
    finally:
        unwatch()
        os.close(w)


def test_a_read_only_spec_puts_no_storage_key_on_the_machine(hello: Path, s3_server_b2) -> None:  # type: ignore[no-untyped-def]
    server = s3_server_b2
    bucket = server.make_bucket()
    server.runform_client().put_object(Bucket=bucket, Key="greetings/names.txt", Body=b"ada\n")
    keys = server.env("b2")
    env = "".join(f"{k}={v}\n" for k, v in keys.items())
    (hello / "hello.env").write_text('HELLO_TOKEN="not-a-real-secret-0000"\n' + env)
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["datasets"]["greetings"]["source"] = f"b2://{bucket}/greetings/"
    spec.pop("artifacts", None)
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stdout + a.stderr
    root = machine_root(hello)
    assert (root / "data" / "greetings" / "names.txt").read_bytes() == b"ada\n"
    on_machine = "\n".join(p.read_text(errors="replace") for p in root.rglob("*")
                           if p.is_file() and ".venv" not in p.parts)
    assert "not-a-real-secret-0000" in on_machine  # other secrets still go
    for name in ("B2_KEY_ID", "B2_APP_KEY"):
        assert name not in on_machine and keys[name] not in on_machine, name
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


@needs_sshd
def test_ctrl_c_during_a_dataset_upload_stops_it_and_the_next_apply_sends_only_the_rest(
    hello: Path, sshd: SSHD, tmp_path: Path
) -> None:
    """The real CLI over the real sshd: SIGINT while a ``file://`` folder is being sent."""
    import re

    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    spec["datasets"]["big"] = {"source": "file://big", "dest": "data/big"}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    big = hello / "big"
    big.mkdir()
    for i in range(8):  # sparse 64 MB files: one landing batch each
        with open(big / f"f{i}.bin", "wb") as f:
            f.truncate(64 << 20)
    landed = root / "data" / "big"
    code, out = interrupt_cli("apply", "--auto-approve", cwd=hello, what="the first batch to land",
                              when=lambda: landed.is_dir() and any(p.name.endswith(".bin") for p in landed.iterdir()))
    assert code != 0, out
    assert "Traceback" not in out and "dataset.big" in out and "interrupted" in out.lower(), out
    sent_first = sorted(p.name for p in landed.iterdir() if p.name.endswith(".bin"))
    assert 0 < len(sent_first) < 8, (sent_first, out.splitlines())
    again = run_cli("apply", "--auto-approve", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    moved = re.search(r"dataset\.big: ([\d.]+) MB moved", again.stdout + again.stderr)
    assert moved, again.stdout + again.stderr
    # the file in flight at the Ctrl-C continues from its partial file (tests/e2e/test_sync_resume.py)
    resumed = re.search(r"dataset\.big: sent .*resumed at ([\d.]+) MB", again.stdout + again.stderr)
    kept = float(resumed.group(1)) if resumed else 0.0
    assert float(moved.group(1)) + kept == pytest.approx((8 - len(sent_first)) * (64 << 20) / 1e6, abs=0.2)
    assert sorted(p.name for p in landed.iterdir() if p.name.endswith(".bin")) == [
        f"f{i}.bin" for i in range(8)]
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


@needs_sshd
def test_ctrl_c_during_a_hydration_over_ssh_stops_it_and_the_next_apply_fetches_only_the_rest(
    hello: Path, sshd: SSHD, s3_server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """The real CLI over the real sshd: SIGINT while the machine downloads an ``s3://``
    dataset from presigned URLs (moto sends each object at 2 MB/s, so the small ones land
    first and the large ones are in flight)."""

    sizes = {f"f{i}.bin": (1 << 20) << (i // 2) for i in range(8)}  # 1, 1, 2, 2, 4, 4, 8, 8 MiB
    bucket, bodies = _bucket_with_checksums(s3_server, sizes)
    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    spec["datasets"]["big"] = {"source": f"s3://{bucket}/ds/", "dest": "data/big"}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with open(hello / "hello.env", "a") as f:  # the client's keys: it lists and signs
        f.write("".join(f"{k}={v}\n" for k, v in s3_server.env("s3").items()))
    landed = root / "data" / "big"

    def files() -> tuple[set[str], set[str]]:
        names = {p.name for p in landed.iterdir()} if landed.is_dir() else set()
        return {n for n in names if n in bodies}, {n for n in names if n not in bodies
                                                   and not n.startswith(".runform-manifest")}

    s3_server.stats.rate = 2e6
    code, out = interrupt_cli("apply", "--auto-approve", cwd=hello, when=lambda: bool(files()[0]),
                              what="the first object to land")
    assert code != 0, out
    assert "Traceback" not in out and "interrupted" in out.lower(), out
    assert "dataset.big: transfer stopped (Ctrl-C)" in out, out  # not taken for complete
    assert "dataset.big: Creation complete" not in out, out
    _until(lambda: not files()[1], "the agent to drop its partial files")  # none kept
    first, _ = files()
    assert 0 < len(first) < len(sizes), (first, out.splitlines())
    for name in first:  # a file with its final name is complete
        assert (landed / name).read_bytes() == bodies[name], name
    s3_server.stats.reset()  # also lifts the rate limit
    again = run_cli("apply", "--auto-approve", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    assert s3_server.stats.object_bytes_out == sum(sizes[n] for n in sizes if n not in first)
    gets = s3_server.stats.of("GetObject")  # the signed header reached the machine's agent
    assert gets and all(("x-amz-checksum-mode", "ENABLED") in r.headers for r in gets)
    from runform.storage.record import Record

    assert {f.content.split(":")[0] for f in Record.load(landed).files.values()} == {"crc32", "crc32mp"}
    for name, body in bodies.items():
        assert (landed / name).read_bytes() == body, name
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


@needs_sshd
def test_closing_the_channel_is_seen_by_the_agent_as_a_hang_up(
    transport: SSHTransport, tmp_path: Path
) -> None:
    """What stops a hydration on the machine at the client's Ctrl-C: sshd closes the command's
    stdout pipe when the channel closes, and the agent's watch sees it."""
    import sys

    marker = tmp_path / "stopped"
    script = (
        "import threading, pathlib, sys\n"
        "from runform.storage.urlfetch import watch_hangup\n"
        "stop = threading.Event(); watch_hangup(stop)\n"
        "print('ready', flush=True)\n"
        "stop.wait(60) and pathlib.Path(sys.argv[1]).write_text('yes')\n"
    )
    out: list[bytes] = []
    worker = threading.Thread(target=lambda: transport.run_stream(
        [sys.executable, "-c", script, str(marker)], out.append))
    worker.start()
    _until(lambda: b"ready" in b"".join(out), "the command to start")
    transport.abort()
    worker.join(timeout=10)
    _until(marker.exists, "the command to see the hang-up")


def test_apply_signs_fresh_urls_when_the_agent_reports_them_expired(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """The client's side of expiry: the agent (in-process here, runform's own ``hydrate`` op)
    gets URLs that are about to expire, answers ``expired``, and the client signs again."""
    from types import SimpleNamespace

    from runform.agent.ops import handle
    from runform.execution.handlers import Handlers
    from runform.plugins import get_plugin_manager

    bucket, bodies = _bucket_with(s3_server, {"a.bin": 5000, "b/c.bin": 7000})
    env = s3_server.env("s3")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    manifest = S3Backend().resolve(f"s3://{bucket}/ds/", env)
    signed: list[float] = []
    real = S3Backend.presign

    def presign(self, m, e, *, ttl_s=3600):  # type: ignore[no-untyped-def]
        out = real(self, m, e, ttl_s=ttl_s)
        if not signed:  # the first batch runs out before the fetch starts
            out["expires_at"] = time.time() + 1
        signed.append(out["expires_at"])
        return out

    monkeypatch.setattr(S3Backend, "presign", presign)
    said: list[str] = []
    handlers = object.__new__(Handlers)
    handlers.ws = SimpleNamespace(pm=get_plugin_manager(), secrets={}, say=said.append)
    root = tmp_path / "machine"
    root.mkdir()
    agent = SimpleNamespace(call=lambda op, **kw: handle({"op": op, "root": str(root), **kw}))
    d = SimpleNamespace(dest="data/ds", links={})
    moved = handlers._hydrate(agent, "dataset.ds", "ds", d, manifest)  # type: ignore[arg-type]
    assert len(signed) == 2 and any("signing fresh ones" in s for s in said)
    assert moved == 12000
    for name, body in bodies.items():
        assert (root / "data" / "ds" / name).read_bytes() == body


def test_a_large_transfer_prints_bytes_rate_and_eta() -> None:
    from types import SimpleNamespace

    from runform.progress import SendMeter

    said: list[str] = []
    events: list[dict] = []

    def tell(type_: str, message: str, **fields: object) -> None:
        said.append(message)
        events.append({"type": type_, **fields})

    p = SendMeter(SimpleNamespace(tell=tell), "dataset.big", 100 << 20, every=0.0)  # type: ignore[arg-type]
    p(10 << 20)
    p(40 << 20)
    assert said and said[-1].startswith("dataset.big: sent 52.4/104.9 MB (") and "ETA" in said[-1]
    assert events[-1]["type"] == "transfer" and events[-1]["bytes"] == 50 << 20 and events[-1]["total"] == 100 << 20
    small: list[str] = []
    q = SendMeter(SimpleNamespace(tell=lambda t, m, **f: small.append(m)), "code.workdir", 1 << 20,
                      every=0.0)  # type: ignore[arg-type]
    q(1 << 20)
    assert small == []  # a small transfer stays quiet
