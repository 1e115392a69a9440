"""Benchmark: runform's SSH uploads side by side with scp / rsync / tar over ssh, against the same
test sshd (Debian's OpenSSH on 127.0.0.1), in one run.

    python bench/bench_transfers.py [--mb 200] [--files 500] [--repeat 3]

- one large file: ``scp`` vs ``SSHTransport.put_file`` (SFTP create + ``cat`` over an exec
  channel + SFTP rename), vs ``sync_tree`` of a folder holding it (a ``file://`` dataset: its
  bytes through a resumable partial file, ``runform.partials``) and, for reference,
  paramiko's pipelined SFTP ``putfo``;
- ``--files`` small files (code-like, 1–4 KB): ``rsync -a`` and ``tar c | ssh tar x`` vs
  ``sync_tree`` (one tar stream plus the landing script), each into an empty folder.

Each row is the best of ``--repeat`` runs (the machine is shared); the load average is printed.
Every external tool pays its own process start and SSH handshake; runform's rows reuse one
connected transport (as an apply does), so the handshake is shown on its own row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from runform.codesync import local_manifest, sync_tree
from runform.transport.ssh import SSHTransport
from runform.testing.sshd import SSHD


def best(repeat: int, fn: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    out = []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not SSHD.available():
        print("sshd not installed (apt-get install openssh-server)", file=sys.stderr)
        return 2
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp, SSHD(Path(tmp) / "sshd") as server:
        work = Path(tmp)
        big = work / "big.bin"
        with open(big, "wb") as f:
            f.writelines(os.urandom(1 << 20) for _ in range(args.mb))
        small = work / "code"
        for i in range(args.files):
            p = small / f"pkg{i % 10}" / f"mod{i % 7}" / f"file{i}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"VALUE_{i} = {i}\n" * (60 + i % 200))
        small_bytes = sum(p.stat().st_size for p in small.rglob("*") if p.is_file())
        remote = work / "remote"
        opts = ["-i", str(server.key_file), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        ssh = ["ssh", "-p", str(server.port), *opts]
        login = f"{server.user}@{server.host}"

        def fresh() -> None:
            shutil.rmtree(remote, ignore_errors=True)
            remote.mkdir()

        def sh(cmd: list[str], **kw: object) -> None:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]

        t = SSHTransport(server.host, server.port, server.user, server.key_file)
        t0 = time.perf_counter()
        t.connect()
        rows.append(("runform: connect (handshake + auth, once per apply)", time.perf_counter() - t0, ""))

        mb = args.mb * (1 << 20) / 1e6
        scp = best(args.repeat, lambda: sh(["scp", "-q", "-P", str(server.port), *opts, str(big),
                                            f"{login}:{remote}/big.bin"]), fresh)
        rows.append((f"scp, one {args.mb} MiB file", scp, f"{mb / scp:.0f} MB/s"))
        put = best(args.repeat, lambda: t.put_file(big, str(remote / "big.bin")), fresh)
        rows.append((f"runform put_file, one {args.mb} MiB file", put,
                     f"{mb / put:.0f} MB/s; throughput {scp / put:.2f}x scp's"))

        one = work / "one"
        one.mkdir()
        os.link(big, one / "big.bin")
        listed = local_manifest(one)  # an apply's plan has hashed it already
        resumable = best(args.repeat, lambda: sync_tree(t, one, str(remote / "one"), listed), fresh)
        rows.append((f"runform sync_tree, a folder of one {args.mb} MiB file (resumable)", resumable,
                     f"{mb / resumable:.0f} MB/s; throughput {scp / resumable:.2f}x scp's"))

        def sftp() -> None:
            with open(big, "rb") as f:
                t._sftp_client().putfo(f, str(remote / "sftp.bin"), confirm=False)

        old = best(args.repeat, sftp, fresh)
        rows.append((f"paramiko SFTP putfo (pipelined), one {args.mb} MiB file", old,
                     f"{mb / old:.0f} MB/s; {scp / old:.2f}x scp's (reference)"))

        if shutil.which("rsync"):
            rs = best(args.repeat, lambda: sh(["rsync", "-a", "-e", " ".join(ssh), f"{small}/",
                                               f"{login}:{remote}/code/"]), fresh)
            rows.append((f"rsync -a, {args.files} small files", rs, f"{small_bytes} B"))
        else:
            rs = float("nan")
            rows.append(("rsync -a", rs, "not installed"))
        tar_cmd = f"tar -C {small} -cf - . | {' '.join(ssh)} {login} 'mkdir -p {remote}/code && tar -C {remote}/code -xf -'"
        tar = best(args.repeat, lambda: sh(["sh", "-c", tar_cmd]), fresh)
        rows.append((f"tar c | ssh tar x, {args.files} small files", tar, ""))
        sync = best(args.repeat, lambda: sync_tree(t, small, str(remote / "code")), fresh)
        rows.append((f"runform sync_tree, {args.files} small files", sync,
                     f"{rs / sync:.2f}x rsync's throughput, {tar / sync:.2f}x tar's"))
        t.close()
    load = os.getloadavg()
    print(f"SSH uploads to a test sshd on 127.0.0.1; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; best of {args.repeat}.\n")
    print("| step | seconds | note |\n| --- | ---: | --- |")
    for step, seconds, note in rows:
        print(f"| {step} | {seconds:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
