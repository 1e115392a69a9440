"""Benchmark runform's SSH path on loopback: code sync and agent bootstrap over a real sshd.

    python bench/bench_ssh.py [--files 500] [--repeat 5]

Prints a markdown table (median of ``--repeat`` runs where it applies). Note that each
command over SSH also pays for the login shell's startup files on the server side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from runform.codesync import local_manifest, sync_tree
from runform.agent.install import ensure_agent
from runform.transport.ssh import SSHTransport
from runform.agent.wheel import build_wheel
from runform.testing.sshd import SSHD

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_of(repeat: int, fn: Callable[[], object]) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if not SSHD.available():
        print("sshd not installed (apt-get install openssh-server)", file=sys.stderr)
        return 2
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp, SSHD(Path(tmp) / "sshd") as server:
        work = Path(tmp)
        code = work / "code"
        for i in range(args.files):
            p = code / f"pkg{i % 10}" / f"mod{i % 7}" / f"file{i}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"VALUE = {i}\n" * 20)
        root = str(work / "machine" / "run")
        t = SSHTransport(server.host, server.port, server.user, server.key_file)
        rows.append(("connect (handshake + auth)", timed(t.connect)[0], ""))
        rows.append(
            ("one command (`true`)", median_of(args.repeat, lambda: t.run(["true"])), "median")
        )
        rows.append(
            (
                f"local manifest, {args.files} files",
                median_of(args.repeat, lambda: local_manifest(code)),
                "median",
            )
        )
        took, report = timed(lambda: sync_tree(t, code, root))
        rows.append(
            (
                f"first sync, {args.files} files",
                took,
                f"{report.files_sent} files, {report.bytes_sent} B",
            )
        )
        manifest = local_manifest(code)
        rows.append(
            (
                "no-op sync (manifest given)",
                median_of(args.repeat, lambda: sync_tree(t, code, root, manifest)),
                "0 files, median",
            )
        )
        (code / "pkg1/mod1/file1.py").write_text("changed\n")
        took, report = timed(lambda: sync_tree(t, code, root))
        rows.append(("sync of one changed file", took, f"{report.files_sent} file"))
        took, wheel = timed(lambda: build_wheel(work / "wheels"))
        rows.append(("build runform wheel", took, ""))
        took, agent = timed(lambda: ensure_agent(t, root, wheel=wheel, cache_dir=work / "wheels"))
        rows.append(("bootstrap, first (venv + pip install)", took, f"installed={agent.installed}"))
        rows.append(
            (
                "bootstrap, skipped (sentinel matches)",
                median_of(args.repeat, lambda: ensure_agent(t, root, wheel=wheel)),
                "median",
            )
        )
        t.close()
    print("| step | seconds | note |\n| --- | ---: | --- |")
    for step, seconds, note in rows:
        print(f"| {step} | {seconds:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
