"""The hello example with a b2:// dataset (moto's S3 server in B2 mode) and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import machine_root, run_cli

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)


def _setup(project: Path, server, bucket: str, **extra: object) -> None:  # type: ignore[no-untyped-def]
    c = server.runform_client()
    for name, body in {"names.txt": b"ada\ngrace\nlinus\n", "big.bin": b"x" * 300_000,
                       "sub/more.txt": b"more names\n"}.items():
        c.put_object(Bucket=bucket, Key=f"greetings/{name}", Body=body)
    env = "".join(f"{k}={v}\n" for k, v in server.env("b2").items())
    (project / "hello.env").write_text('HELLO_TOKEN="not-a-real-secret-0000"\n' + env)
    spec = yaml.safe_load((project / "runform.yaml").read_text())
    spec["datasets"]["greetings"]["source"] = f"b2://{bucket}/greetings/"
    spec.update(extra)
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_b2_dataset_hydrates_incrementally_and_heals(hello: Path, s3_server_b2) -> None:  # type: ignore[no-untyped-def]
    server = s3_server_b2
    bucket = server.make_bucket()
    _setup(hello, server, bucket)
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    root = machine_root(hello)
    assert (root / "data" / "greetings" / "big.bin").stat().st_size == 300_000
    # the agent reports progress (bytes, total, start) for the client's rate/ETA line
    progress = json.loads((root / ".runform" / "datasets" / "greetings.json.progress").read_text())
    assert progress["total"] == 300_000 + len(b"ada\ngrace\nlinus\n") + len(b"more names\n")
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    # a re-apply moves 0 bytes
    server.stats.reset()
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert server.stats.object_bytes_out == 0

    # one object replaced in the bucket: ~ dataset.greetings naming it; apply moves only it
    server.runform_client().put_object(Bucket=bucket, Key="greetings/sub/more.txt", Body=b"even more names\n")
    p = run_cli("plan", "--json", cwd=hello)
    ds = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "dataset.greetings")
    assert ds["action"] == "update" and "sub/more.txt" in ds["reason"]
    human = run_cli("plan", cwd=hello)
    assert "~ dataset.greetings" in human.stdout
    server.stats.reset()
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert server.stats.object_bytes_out == len(b"even more names\n")
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    # a file corrupted on the machine (same size) is detected and fetched again
    big = root / "data" / "greetings" / "big.bin"
    big.write_bytes(b"y" * 300_000)
    p = run_cli("plan", "--json", cwd=hello)
    ds = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "dataset.greetings")
    assert ds["action"] == "update" and "big.bin" in ds["reason"]
    server.stats.reset()
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert big.read_bytes() == b"x" * 300_000
    assert server.stats.object_bytes_out == 300_000
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0

    # an object deleted from the bucket: planned as removed, gone from the machine after apply
    server.runform_client().delete_object(Bucket=bucket, Key="greetings/sub/more.txt")
    p = run_cli("plan", "--json", cwd=hello)
    ds = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "dataset.greetings")
    assert ds["action"] == "update" and "sub/more.txt (removed)" in ds["reason"]
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    assert not (root / "data" / "greetings" / "sub").exists()
    assert (root / "data" / "greetings" / "names.txt").exists()
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0


def test_artifacts_are_pushed_listed_and_survive_teardown(hello: Path, s3_server_b2) -> None:  # type: ignore[no-untyped-def]
    server = s3_server_b2
    bucket = server.make_bucket()
    _setup(hello, server, bucket, artifacts={"results": {"paths": ["out/"], "to": f"b2://{bucket}/runs/${{run}}/"}})
    spec = yaml.safe_load((hello / "runform.yaml").read_text())
    spec["compute"]["teardown"] = "always"
    (hello / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    a = run_cli("apply", "--auto-approve", cwd=hello)
    assert a.returncode == 0, a.stderr
    assert "destroyed (teardown: always)" in a.stdout
    assert not [p for p in (hello / ".runform" / "machines").iterdir() if not p.name.endswith(".deleting")]
    keys = {o["Key"] for o in server.runform_client().list_objects_v2(Bucket=bucket, Prefix="runs/hello/")
            .get("Contents", [])}
    assert "runs/hello/out/joined.txt" in keys
    show = run_cli("show", cwd=hello)
    assert "artifact.results" in show.stdout and f"b2://{bucket}/runs/hello/" in show.stdout
    assert "joined.txt" not in show.stderr

    def versions() -> tuple[dict[str, int], int]:
        r = server.runform_client().list_object_versions(Bucket=bucket, Prefix="runs/hello/")
        counts: dict[str, int] = {}
        for v in r.get("Versions", []):
            counts[v["Key"]] = counts.get(v["Key"], 0) + 1
        return counts, len(r.get("DeleteMarkers", []))

    # a re-push (the outputs changed) leaves no older version billed (B2 keeps them all)
    first, _ = versions()
    assert run_cli("apply", "--auto-approve", "--var", "greeting=hi", cwd=hello).returncode == 0
    counts, markers = versions()
    assert set(counts) == set(first) and set(counts.values()) == {1} and markers == 0, (counts, markers)
    body = server.runform_client().get_object(Bucket=bucket, Key="runs/hello/out/joined.txt")["Body"].read()
    assert b"hi" in body
    # destroy forgets the artifact but never touches it in storage
    server.stats.reset()
    d = run_cli("destroy", "--auto-approve", cwd=hello)
    assert d.returncode == 0, d.stderr
    assert versions() == (counts, 0)
    assert not [q for q in server.stats.of() if q.method == "DELETE" and "runs/hello/" in q.path]


def test_verify_data_finds_a_file_changed_in_place(hello: Path, s3_server_b2) -> None:  # type: ignore[no-untyped-def]
    import os

    server = s3_server_b2
    bucket = server.make_bucket()
    _setup(hello, server, bucket)
    assert run_cli("apply", "--auto-approve", cwd=hello).returncode == 0
    big = machine_root(hello) / "data" / "greetings" / "big.bin"
    st = big.stat()
    with open(big, "r+b") as f:  # same size, and the mtime put back: stat cannot tell
        f.write(b"y" * 1000)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0  # the cheap check
    p = run_cli("plan", "--verify-data", "--json", cwd=hello)
    ds = next(c for c in json.loads(p.stdout)["resource_changes"] if c["address"] == "dataset.greetings")
    assert ds["action"] == "update" and "big.bin" in ds["reason"], ds
    server.stats.reset()
    a = run_cli("apply", "--auto-approve", cwd=hello)  # found once, fetched by a plain apply too
    assert a.returncode == 0, a.stderr
    assert big.read_bytes() == b"x" * 300_000
    assert server.stats.object_bytes_out == 300_000
    assert run_cli("plan", "--verify-data", "--detailed-exitcode", cwd=hello).returncode == 0
    assert run_cli("plan", "--detailed-exitcode", cwd=hello).returncode == 0
