"""Byte-range resume of a large file sent over SSH (issue 15, ``runform.partials``): its bytes
collect in a partial file on the machine, named for its digest; a sync or an apply stopped
half-way leaves a prefix there, never the file under its final name, and the next one sends
only the rest, checks the whole file against the plan's sha256 on the machine and lands it.
A partial file that is not the file's prefix is removed and the file sent whole. Real sshd on
loopback; the CLI test stalls the machine's writer (SIGSTOP, as a full disk or a slow link
would) so that the Ctrl-C lands mid-file whatever the machine's speed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import poll, run_cli

from runform import partials
from runform.codesync import local_manifest, read_remote_manifest, sync_tree
from runform.errors import RunformError
from runform.testing.sshd import SSHD
from runform.transport.ssh import SSHTransport

pytestmark = pytest.mark.slow
needs_sshd = pytest.mark.skipif(not SSHD.available(), reason="openssh-server is not installed")
MIB = 1 << 20


@pytest.fixture
def transport(sshd: SSHD):  # type: ignore[no-untyped-def]
    with SSHTransport(sshd.host, sshd.port, sshd.user, sshd.key_file) as t:
        yield t


def _partial(root: Path, data: bytes) -> Path:
    return root / partials.FOLDER / f"{partials.TMP_MARK}partial-{hashlib.sha256(data).hexdigest()}"


def _writers(path: Path) -> list[int]:
    """The processes (on this host: the test sshd's) that have ``path`` open."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in fds):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def _tree(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    data = os.urandom(size)
    (src / "sub" / "big.bin").write_bytes(data)
    (src / "small.txt").write_text("small\n")
    return src, data


@needs_sshd
def test_a_sync_stopped_half_way_continues_from_the_partial_file(
    transport: SSHTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partials, "RESUME_MIN", 4 * MIB)  # the real threshold is 64 MiB
    src, data = _tree(tmp_path, 20 * MIB)
    root = tmp_path / "machine"
    seen = [0]

    def stop_after_8_mib(n: int) -> None:
        seen[0] += n
        if seen[0] > 8 * MIB:
            transport.abort()

    with pytest.raises(RunformError):
        sync_tree(transport, src, str(root), progress=stop_after_8_mib)
    partial = _partial(root, data)
    poll(lambda: partial.exists() and not _writers(partial), "the machine's writer to finish")
    kept = partial.stat().st_size
    assert 0 < kept < len(data) and partial.read_bytes() == data[:kept]
    assert not (root / "sub" / "big.bin").exists()  # nothing under the final name
    remote = read_remote_manifest(transport, str(root))
    assert remote is None or "sub/big.bin" not in remote.by_path()  # nor in a manifest

    class Meter:  # what SendMeter takes from a sync: the rest to send, what was there, each slice
        total = resumed = done = 0

        def __call__(self, n: int) -> None:
            self.done += n

    meter = Meter()
    report = sync_tree(transport, src, str(root), progress=meter)  # small.txt landed in the batch before
    assert (report.sent, report.resumed, report.bytes_sent) == (("sub/big.bin",), kept, len(data) - kept)
    assert (meter.total, meter.resumed, meter.done) == (len(data) - kept, kept, len(data) - kept)
    assert (root / "sub" / "big.bin").read_bytes() == data
    assert not (root / partials.FOLDER).exists()
    assert not sync_tree(transport, src, str(root), local_manifest(src)).changed


@needs_sshd
def test_a_partial_file_that_is_not_the_files_prefix_is_removed_and_the_file_sent_whole(
    transport: SSHTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partials, "RESUME_MIN", 4 * MIB)
    src, data = _tree(tmp_path, 12 * MIB)
    root = tmp_path / "machine"
    partial = _partial(root, data)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(bytes(b ^ 0xFF for b in data[:MIB]) + data[MIB:5 * MIB])  # a wrong prefix
    other = partial.with_name(f"{partials.TMP_MARK}partial-{'0' * 64}")  # another version's
    other.write_bytes(data[:2 * MIB])
    sent: list[int] = []
    report = sync_tree(transport, src, str(root), progress=sent.append)
    # continued from byte 5 MiB, failed its sha256 check on the machine, sent again whole
    assert report.resumed == 0
    assert report.bytes_sent == sum(sent) == (len(data) - 5 * MIB) + len(data) + len("small\n")
    assert (root / "sub" / "big.bin").read_bytes() == data
    assert not (root / partials.FOLDER).exists()  # both partial files gone
    assert not sync_tree(transport, src, str(root), local_manifest(src)).changed


def test_a_transport_without_sftp_asks_the_partial_files_sizes_with_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local provider's transport (no ``file_sizes``): the same partial files, found by a
    command."""
    from runform.providers.local import LocalTransport

    monkeypatch.setattr(partials, "RESUME_MIN", 4 * MIB)
    src, data = _tree(tmp_path, 6 * MIB)
    root = tmp_path / "machine"
    transport = LocalTransport()
    assert not isinstance(transport, partials.ListsSizes)
    partial = _partial(root, data)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:4 * MIB])  # what an interrupted sync left
    report = sync_tree(transport, src, str(root))
    assert (report.resumed, report.bytes_sent) == (4 * MIB, 2 * MIB + len("small\n"))
    assert (root / "sub" / "big.bin").read_bytes() == data
    assert not (root / partials.FOLDER).exists()


@needs_sshd
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_ctrl_c_while_a_large_file_dataset_is_sent_and_the_next_apply_sends_only_the_rest(
    hello: Path, sshd: SSHD, tmp_path: Path, sig: int
) -> None:
    """The real CLI over the real sshd, a ``file://`` dataset of one 96 MiB file: SIGINT (or a
    kill) once its partial file holds bytes (the machine's writer stalled); stopped at once,
    nothing recorded; the next apply sends the rest, checked, and the file lands byte-identical."""
    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    spec["datasets"]["big"] = {"source": "file://big.bin", "dest": "data/big"}
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    data = os.urandom(96 * MIB)
    (hello / "big.bin").write_bytes(data)
    landed = root / "data" / "big"
    partial = _partial(landed, data)

    def writer() -> int | None:  # the machine's `cat`, once the partial file holds some bytes
        assert proc.poll() is None, "apply ended before the partial file held any bytes"
        pids = _writers(partial) if partial.exists() and partial.stat().st_size >= MIB else []
        return pids[0] if pids else None

    env = {k: v for k, v in os.environ.items() if k != "RUNFORM_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "runform.cli.main", "apply", "--auto-approve"], cwd=hello,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stalled = None
    try:
        stalled = poll(writer, "the partial file to hold some bytes", timeout=240, step=0.005)
        os.kill(stalled, signal.SIGSTOP)
        proc.send_signal(sig)
        poll(lambda: proc.poll() is not None, "apply to stop after the Ctrl-C", timeout=3)  # 0.1-0.2 s here
    finally:
        if stalled is not None:
            os.kill(stalled, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert proc.returncode != 0, out
    assert "dataset.big: Creation complete" not in out, out
    if sig == signal.SIGINT:
        assert "Traceback" not in out and "interrupted" in out.lower(), out
        assert "dataset.big: transfer stopped (Ctrl-C)" in out, out
    poll(lambda: not _writers(partial), "the machine's writer to finish")
    kept = partial.stat().st_size
    assert MIB <= kept < len(data) and partial.read_bytes() == data[:kept]
    assert not (landed / "big.bin").exists()  # nothing anyone could take for the file
    plan = run_cli("plan", "--detailed-exitcode", cwd=hello)  # not recorded as there
    assert plan.returncode == 2 and "+ dataset.big" in plan.stdout, plan.stdout + plan.stderr

    again = run_cli("apply", "--auto-approve", "--json", cwd=hello)
    assert again.returncode == 0, again.stdout + again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines() if line.startswith("{")]
    (done,) = [e for e in events if e["type"] == "transfer" and e.get("address") == "dataset.big"
               and e.get("eta") == 0]
    assert (done["bytes"], done["resumed"]) == (len(data) - kept, kept), done  # only the rest went
    assert f"resumed at {kept / 1e6:.1f} MB" in done["@message"], done
    assert (landed / "big.bin").read_bytes() == data
    assert not (landed / partials.FOLDER).exists()
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_the_progress_of_a_continued_send_counts_what_it_sends_and_says_where_it_resumed() -> None:
    from types import SimpleNamespace

    from runform.progress import SendMeter

    events: list[dict] = []
    meter = SendMeter(SimpleNamespace(tell=lambda t, m, **f: events.append({"message": m, **f})),
                      "dataset.big", 100 * MIB, every=0.0)  # type: ignore[arg-type]
    meter.total, meter.resumed = 40 * MIB, 60 * MIB  # what sync_tree sets: the rest, and what was there
    meter(10 * MIB)
    assert events[-1]["message"].startswith("dataset.big: sent 10.5/41.9 MB (resumed at 62.9 MB, ")
    assert (events[-1]["bytes"], events[-1]["total"], events[-1]["resumed"]) == (10 * MIB, 40 * MIB, 60 * MIB)


@needs_sshd
def test_files_lost_on_the_machine_are_sent_again_though_its_sync_record_lists_them(
    hello: Path, sshd: SSHD, tmp_path: Path
) -> None:
    """A ``file://`` dataset over SSH whose files the machine lost after they landed (deleted
    by hand; or the spec's ``dest`` moved, so the new folder is empty): the refresh finds them
    missing, and the apply sends exactly those, although the machine's sync record of the
    dataset still lists them (it used to send nothing and record the dataset as done)."""
    root = tmp_path / "remote" / "hello"
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"] = {**sshd.compute, "root": str(root)}
    spec["datasets"]["shards"] = {"source": "file://shards", "dest": "data/shards"}
    (hello / "shards").mkdir()
    sizes = {"a.bin": 3000, "b.bin": 70_000, "c.bin": 5}
    for name, size in sizes.items():
        (hello / "shards" / name).write_bytes(os.urandom(size))
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    def apply_sent() -> int:
        r = run_cli("apply", "--auto-approve", "--json", cwd=hello)
        assert r.returncode == 0, r.stdout + r.stderr
        events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        (done,) = [e for e in events if e["type"] == "transfer" and e.get("address") == "dataset.shards"
                   and e.get("eta") == 0]
        assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
        return int(done["bytes"])

    assert apply_sent() == sum(sizes.values())
    (root / "data" / "shards" / "b.bin").unlink()  # lost on the machine
    plan = run_cli("plan", "--detailed-exitcode", cwd=hello)
    assert plan.returncode == 2 and "missing or corrupted on the machine: b.bin" in plan.stdout, plan.stdout
    assert apply_sent() == sizes["b.bin"]
    for name in sizes:
        assert (root / "data" / "shards" / name).read_bytes() == (hello / "shards" / name).read_bytes()

    spec["datasets"]["shards"]["dest"] = "data/moved"  # a new, empty folder
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert apply_sent() == sum(sizes.values())
    for name in sizes:
        assert (root / "data" / "moved" / name).read_bytes() == (hello / "shards" / name).read_bytes()


@needs_sshd
def test_a_sync_told_what_the_machine_lost_sends_it_again(transport: SSHTransport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(name.encode() * 1000)
    root = tmp_path / "machine"
    assert sync_tree(transport, src, str(root)).files_sent == 3
    (root / "b").unlink()
    assert not sync_tree(transport, src, str(root)).changed  # the record alone: b looks there
    assert sync_tree(transport, src, str(root), missing=["b"]).sent == ("b",)
    (root / "a").unlink()
    (root / "c").unlink()
    report = sync_tree(transport, src, str(root), missing=None)  # too many to list: all of them
    assert report.sent == ("a", "b", "c") and not report.deleted
    assert all((root / n).read_bytes() == (src / n).read_bytes() for n in ("a", "b", "c"))
