"""Benchmark: where the floor is for a Python hydration of ~300 MB from moto's S3 server.

bench_hydrate.py compares runform with aws, rclone and s5cmd. This script asks what any
Python process could reach on the same server and machine, so that the gap can be read
correctly. Each row is a fresh child process, timed from outside (best of ``--repeat``):

- ``python -c pass``: the interpreter's own start-up.
- ``import boto3 + S3 client``: what any boto3-based tool pays before its first request.
- ``raw GETs, no check`` / ``raw GETs + MD5``: presigned URLs made by the parent, fetched by
  8 threads with urllib3 alone (no boto3 in the child, no retries, no atomic rename, no
  record), 1 MiB reads written to files; optionally each file's MD5 compared with its
  single-part ETag. This is a measuring stick, not transfer code anyone should ship.
- ``runform fetch``: the agent's real fetch with the plan's manifest and presigned URLs (every
  file checked, against S3's CRC32 where the objects carry one, written atomically, recorded).
- ``s5cmd sync`` when installed: the yardstick of the issue's target.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hydrate as bh  # the same server, objects and environment

RAW_CHILD = r"""
import hashlib, json, sys, os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
import urllib3
urls, dest, check = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3] == "md5"
first = urlsplit(urls[0]["url"])
pool = urllib3.HTTPConnectionPool(first.hostname, first.port, maxsize=8)
def get(u):
    p = urlsplit(u["url"])
    r = pool.request("GET", p.path + "?" + p.query, preload_content=False)
    h, got = hashlib.md5(), 0
    with open(os.path.join(dest, u["name"]), "wb") as f:
        while b := r.read(1 << 20):
            got += len(b)
            if check:
                h.update(b)
            f.write(b)
    r.release_conn()
    if r.status != 200 or got != u["size"] or (check and h.hexdigest() != u["etag"]):
        raise SystemExit(f"bad download: {u['name']}")
with ThreadPoolExecutor(8) as ex:
    list(ex.map(get, sorted(urls, key=lambda u: -u["size"])))
"""

CLIENT_CHILD = r"""
import os, boto3
from botocore.config import Config
boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + system)."""
    wall, _ = bh.run_tool(cmd, env)
    return wall, bh.CPU[0]


def main() -> None:
    import argparse

    import boto3
    from botocore.config import Config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rf-bench-floor"))
    args = ap.parse_args()
    bucket, prefix = "bench", "data/"
    port = bh.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = bh.start_moto(port)
    try:
        total = bh.upload(endpoint, bucket, prefix, 300, 64)
        env = bh.tool_env(endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=bh.KEY,
                              aws_secret_access_key=bh.SECRET, region_name=bh.REGION,
                              config=Config(s3={"addressing_style": "path"}))
        objects = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        args.workdir.mkdir(parents=True, exist_ok=True)
        urls_file = args.workdir / "urls.json"
        urls = [{"name": o["Key"].rsplit("/", 1)[1], "size": o["Size"], "etag": o["ETag"].strip('"'),
                 "url": client.generate_presigned_url("get_object", ExpiresIn=3600,
                                                      Params={"Bucket": bucket, "Key": o["Key"]})}
                for o in objects]
        urls_file.write_text(json.dumps(urls))
        # The raw MD5 row compares with single-part ETags only: keep to objects that have one.
        single = [u for u in urls if "-" not in u["etag"]]
        single_file = args.workdir / "urls-single.json"
        single_file.write_text(json.dumps(single))
        single_bytes = sum(u["size"] for u in single)

        from runform.storage_backends.s3 import S3Backend

        manifest_file = args.workdir / "job.json"  # what the client hands the agent
        backend = S3Backend()
        manifest = backend.resolve(f"s3://{bucket}/{prefix}", env)
        manifest_file.write_text(json.dumps({"manifest": manifest.to_json(), **backend.presign(manifest, env)}))
        dest = args.workdir / "dest"
        me = [sys.executable, str(Path(bh.__file__).resolve())]
        rows: list[tuple[str, list[str], int, bool]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], 0, False),
            ("import boto3 + S3 client", [sys.executable, "-c", CLIENT_CHILD], 0, False),
            ("raw GETs, no check", [sys.executable, "-c", RAW_CHILD, str(urls_file), str(dest), "-"], total, True),
            ("raw GETs, no check (single-part objects)", [sys.executable, "-c", RAW_CHILD, str(single_file),
                                                          str(dest), "-"], single_bytes, True),
            ("raw GETs + MD5 (single-part objects)", [sys.executable, "-c", RAW_CHILD, str(single_file),
                                                      str(dest), "md5"], single_bytes, True),
            ("runform fetch (agent, presigned URLs)", [*me, "--child-fetch", str(manifest_file), str(dest)],
             total, True),
        ]
        s5cmd = bh.find("s5cmd")
        if s5cmd:
            rows.append(("s5cmd sync", [s5cmd, "--endpoint-url", endpoint, "sync",
                                        f"s3://{bucket}/{prefix}*", f"{dest}/"], total, True))
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, cmd, _size, fresh in rows:
                if fresh:
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir(parents=True)
                    os.sync()
                wall, cpu = timed(cmd, env)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"\n{total / bh.MB:.0f} MB in 64 objects from moto_server on 127.0.0.1; {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f}); best of {args.repeat}, each a fresh process.\n")
    print("| what | wall (s) | MB/s | its CPU (s) |")
    print("|---|---:|---:|---:|")
    for name, _cmd, size, _fresh in rows:
        wall, cpu = best[name]
        rate = f"{size / bh.MB / wall:.0f}" if size else ""
        print(f"| {name} | {wall:.2f} | {rate} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
