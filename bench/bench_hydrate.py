"""Benchmark: hydrate ~300 MB (64 objects, 1–40 MB) from moto's S3 server with runform,
side by side with ``aws s3 sync``, ``rclone copy`` and ``s5cmd sync`` (each when installed),
then a no-change re-hydration. Prints a markdown table.

    python bench/bench_hydrate.py [--total-mb 300] [--objects 64] [--workdir /tmp/rf-bench]

moto runs as its own process (the ``moto_server`` CLI) on 127.0.0.1. Every tool runs as a
subprocess into an empty folder, so each pays its own start-up. The data is uploaded the way
``aws s3 cp`` would (8 MiB multipart above 8 MiB), without runform's sha256 metadata, so runform
verifies MD5 and multipart ETags. "bytes moved" on the no-change run is counted from the files
the tool rewrote (their inode or mtime changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KEY, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"
MB = 1_000_000


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def tool_env(endpoint: str) -> dict[str, str]:
    # A custom CA bundle makes rclone's S3 client refuse its own HTTP transport; loopback
    # HTTP needs none.
    base = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {**base, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
            "RCLONE_CONFIG_MOTO_ENDPOINT": endpoint, "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": KEY,
            "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET, "RCLONE_CONFIG_MOTO_REGION": REGION,
            "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true"}


def sizes(total_mb: int, count: int, seed: int = 7) -> list[int]:
    """``count`` sizes between 1 and 40 MB summing to about ``total_mb``."""
    rng = random.Random(seed)
    raw = [rng.uniform(1, 40) for _ in range(count)]
    scale = total_mb / sum(raw)
    return [int(min(40, max(1, r * scale)) * MB) + rng.randint(0, 4095) for r in raw]


def upload(endpoint: str, bucket: str, prefix: str, total_mb: int, count: int) -> int:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name=REGION,
                          config=Config(request_checksum_calculation="when_required",
                                        max_pool_connections=16))
    client.create_bucket(Bucket=bucket)
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    block = os.urandom(41 * MB)
    rng = random.Random(11)

    def put(i_size: tuple[int, int]) -> int:
        i, size = i_size
        start = rng.randint(0, len(block) - size)
        import io

        client.upload_fileobj(io.BytesIO(block[start:start + size]), bucket,
                              f"{prefix}shard_{i:03d}.h5", Config=cfg)
        return size

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(put, enumerate(sizes(total_mb, count))))


# --------------------------------------------------------------------------- tools


def snapshot(dest: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in dest.rglob("*"):
        if p.is_file() and not p.name.startswith(".runform"):
            st = p.stat()
            out[p.relative_to(dest).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def rewritten_bytes(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]) -> int:
    return sum(v[2] for k, v in after.items() if before.get(k) != v)


def commands(endpoint: str, bucket: str, prefix: str, dest: Path) -> dict[str, list[str] | None]:
    url = f"s3://{bucket}/{prefix}"
    me = [sys.executable, str(Path(__file__).resolve())]
    aws, rclone, s5cmd = shutil.which("aws"), shutil.which("rclone"), shutil.which("s5cmd")
    return {
        "runform": [*me, "--child-runform", url, str(dest)],
        "aws s3 sync": [aws, "s3", "sync", url, str(dest), "--endpoint-url", endpoint,
                        "--only-show-errors"] if aws else None,
        "rclone copy": [rclone, "copy", f"moto:{bucket}/{prefix}", str(dest)] if rclone else None,
        "s5cmd sync": [s5cmd, "--endpoint-url", endpoint, "sync", f"{url}*", f"{dest}/"]
        if s5cmd else None,
    }


def run_tool(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def child_runform(url: str, dest: str) -> None:
    """What ``runform apply`` does for a dataset, in one process: resolve (the plan's
    refresh) and fetch. Writes the manifest beside ``dest`` for the agent-flow re-run."""
    t0 = time.perf_counter()
    from runform.storage_backends.s3 import S3Backend

    env = dict(os.environ)
    backend = S3Backend()
    t1 = time.perf_counter()
    manifest = backend.resolve(url, env)
    t2 = time.perf_counter()
    moved = backend.fetch(manifest, Path(dest), env)
    t3 = time.perf_counter()
    Path(dest + ".manifest.json").write_text(json.dumps(manifest.to_json()))
    print(json.dumps({"import_s": t1 - t0, "resolve_s": t2 - t1, "fetch_s": t3 - t2,
                      "moved": moved, "files": len(manifest.entries)}))


def child_fetch(manifest_file: str, dest: str) -> None:
    """What the agent on the machine does on a re-apply: fetch with the plan's manifest."""
    t0 = time.perf_counter()
    from runform.interfaces import Manifest
    from runform.storage_backends.s3 import S3Backend

    manifest = Manifest.from_json(json.loads(Path(manifest_file).read_text()))
    t1 = time.perf_counter()
    moved = S3Backend().fetch(manifest, Path(dest), dict(os.environ))
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "fetch_s": t2 - t1, "moved": moved,
                      "boto3_imported": "boto3" in sys.modules}))


# --------------------------------------------------------------------------- main


@dataclasses.dataclass
class Result:
    cold: list[float]
    warm: list[float]
    moved: int = 0
    extra: str = ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mb", type=int, default=300)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool (the best is shown)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rf-bench"))
    ap.add_argument("--child-runform", nargs=2, metavar=("URL", "DEST"), help=argparse.SUPPRESS)
    ap.add_argument("--child-fetch", nargs=2, metavar=("MANIFEST", "DEST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_runform:
        child_runform(*args.child_runform)
        return
    if args.child_fetch:
        child_fetch(*args.child_fetch)
        return

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port)
    bucket, prefix = "bench", "pdebench/burgers1d_full_v1/"
    notes: list[str] = []
    results: dict[str, Result] = {}
    try:
        total = upload(endpoint, bucket, prefix, args.total_mb, args.objects)
        env = tool_env(endpoint)
        reference: dict[str, int] | None = None
        names = list(commands(endpoint, bucket, prefix, args.workdir))
        for rep in range(args.repeat):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate order
                dest = args.workdir / name.split()[0]
                cmd = commands(endpoint, bucket, prefix, dest)[name]
                if cmd is None:
                    if rep == 0:
                        notes.append(f"- `{name}`: not installed, skipped.")
                    continue
                res = results.setdefault(name, Result([], []))
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                cold, out = run_tool(cmd, env)
                files = snapshot(dest)
                got = {k: v[2] for k, v in files.items()}
                reference = reference or got
                if got != reference or sum(got.values()) != total:
                    notes.append(f"- `{name}`: output differs from the others!")
                if name == "runform":
                    info = json.loads(out)
                    agent = [*cmd[:2], "--child-fetch", f"{dest}.manifest.json", str(dest)]
                    warm, out2 = run_tool(agent, env)
                    again = json.loads(out2)
                    res.extra = (f"in-process: imports {info['import_s']:.2f} s, resolve "
                                 f"{info['resolve_s']:.2f} s, fetch {info['fetch_s']:.2f} s; "
                                 f"re-run = the agent's fetch with the plan's manifest: "
                                 f"{again['fetch_s'] * 1000:.1f} ms in-process, "
                                 f"boto3 imported: {again['boto3_imported']}")
                    moved = again["moved"] + rewritten_bytes(files, snapshot(dest))
                else:
                    warm, _ = run_tool(cmd, env)
                    moved = rewritten_bytes(files, snapshot(dest))
                res.cold.append(cold)
                res.warm.append(warm)
                res.moved = max(res.moved, moved)
                shutil.rmtree(dest, ignore_errors=True)
                Path(f"{dest}.manifest.json").unlink(missing_ok=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    load = os.getloadavg()[0]
    print(f"\nHydrate {total / MB:.0f} MB in {args.objects} objects (1–40 MB) from moto_server "
          f"on 127.0.0.1; {os.cpu_count()} CPUs (load average {load:.1f}); best of "
          f"{args.repeat} runs, each tool a fresh process into an empty folder.\n")
    print("| tool | hydrate (s) | MB/s | no-change re-run (s) | bytes moved on re-run | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        cold, warm = min(r.cold), min(r.warm)
        print(f"| {name} | {cold:.2f} | {total / MB / cold:.0f} | {warm:.2f} | {r.moved:,} | "
              f"{r.extra} |")
    if notes:
        print("\n" + "\n".join(sorted(set(notes))))


if __name__ == "__main__":
    main()
