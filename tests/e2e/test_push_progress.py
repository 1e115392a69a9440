"""Artifact pushes report their bytes as they go: the backends' ``push_with_progress``
(``runform.interfaces.ReportsPushProgress``) against moto's S3 (s3 and b2 modes) and file://, and
the ``transfer`` events of a real apply (``--json`` and the Python API), checked against
docs/schemas/event.schema.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helpers import REPO, run_cli

from runform.interfaces import ReportsPushProgress

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

BIG = 20 * 2**20 + 12345  # over s3transfer's 16 MiB part: a multipart upload
SMALL = 3 * 2**20

SPEC = {
    "run": "pushy",
    "compute": {"provider": "local"},
    "secrets": {"env_file": "pushy.env"},
    "code": {"path": ".", "exclude": ["out/"]},
    "stages": {"train": {"run": "python train.py", "deps": ["train.py"], "outputs": ["out/"]}},
}

TRAIN = f"""\
import os
os.makedirs("out/sub", exist_ok=True)
with open("out/model.bin", "wb") as f:
    f.write(os.urandom({BIG}))
with open("out/sub/small.bin", "wb") as f:
    f.write(os.urandom({SMALL}))
"""


def _check_event(e: dict[str, Any]) -> None:
    schema = json.loads((REPO / "docs" / "schemas" / "event.schema.json").read_text())
    jsonschema.validate(e, schema, format_checker=jsonschema.FormatChecker())


def _counts(seen: list[int]) -> list[int]:
    out, total = [], 0
    for n in seen:
        total += n
        out.append(total)
    return out


def _pushes(events: list[dict[str, Any]], address: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "transfer" and e["address"] == address]


def _assert_climbs_to(transfers: list[dict[str, Any]], address: str, total: int) -> None:
    assert transfers, f"no transfer event for {address}"
    counts = [e["bytes"] for e in transfers]
    assert counts == sorted(counts), counts
    assert counts[-1] == total and all(e["total"] == total for e in transfers), transfers
    assert all(e["@message"].startswith(f"{address}: pushed ") for e in transfers)
    assert f"{total / 1e6:.1f}/{total / 1e6:.1f} MB" in transfers[-1]["@message"]


# ---------------------------------------------------------------------- the backends


@pytest.fixture(params=["s3", "b2"])
def bucket(request: pytest.FixtureRequest) -> tuple[str, Any, str]:
    server = request.getfixturevalue("s3_server_b2" if request.param == "b2" else "s3_server")
    return request.param, server, server.make_bucket(versioned=request.param == "b2")


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.bin").write_bytes(os.urandom(BIG))
    (root / "sub" / "small.bin").write_bytes(os.urandom(SMALL))
    return root


def test_s3_and_b2_pushes_count_bytes_as_they_go(bucket: tuple[str, Any, str], tmp_path: Path) -> None:
    from runform.storage_backends.s3 import B2Backend, S3Backend

    scheme, server, name = bucket
    backend = B2Backend() if scheme == "b2" else S3Backend()
    assert isinstance(backend, ReportsPushProgress)
    src = _tree(tmp_path / "src")
    seen: list[int] = []
    m = backend.push_with_progress(src, f"{scheme}://{name}/models/", server.env(scheme), progress=seen.append)
    assert m.total_bytes == BIG + SMALL
    assert all(n > 0 for n in seen) and len(seen) > 2, seen  # chunk by chunk, not once at the end
    assert _counts(seen)[-1] == BIG + SMALL

    (src / "sub" / "small.bin").write_bytes(os.urandom(SMALL))  # one file changed
    server.stats.reset()
    again: list[int] = []
    backend.push_with_progress(src, f"{scheme}://{name}/models/", server.env(scheme), progress=again.append)
    assert again[0] == BIG, "the unchanged file counts at once"
    assert _counts(again)[-1] == BIG + SMALL
    assert server.stats.bytes_in < BIG, "only the changed file went"


def test_file_push_counts_bytes_as_they_go(tmp_path: Path) -> None:
    from runform.storage_backends.file import FileBackend

    src = _tree(tmp_path / "src")
    seen: list[int] = []
    FileBackend().push_with_progress(src, (tmp_path / "store").as_uri() + "/", {}, progress=seen.append)
    assert all(n > 0 for n in seen) and len(seen) > 2, seen
    assert _counts(seen)[-1] == BIG + SMALL
    assert (tmp_path / "store" / "model.bin").read_bytes() == (src / "model.bin").read_bytes()


# ---------------------------------------------------------------------- a real apply


def _project(tmp_path: Path, server: Any, bucket: str, scheme: str) -> tuple[Path, Path]:
    project, store = tmp_path / "pushy", tmp_path / "store"
    project.mkdir()
    spec = {**SPEC, "artifacts": {"model": {"paths": ["out/"], "to": f"{scheme}://{bucket}/runs/"},
                                  "copy": {"paths": ["out/model.bin"], "to": f"file://{store}/"}}}
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (project / "train.py").write_text(TRAIN)
    (project / "pushy.env").write_text("".join(f"{k}={v}\n" for k, v in server.env(scheme).items()))
    return project, store


def test_apply_json_streams_push_progress_that_ends_at_the_total(s3_server: Any, tmp_path: Path) -> None:
    project, store = _project(tmp_path, s3_server, s3_server.make_bucket(), "s3")
    a = run_cli("apply", "--auto-approve", "--json", cwd=project)
    assert a.returncode == 0, a.stderr + a.stdout
    events = [json.loads(line) for line in a.stdout.splitlines()]
    for e in events:
        _check_event(e)
    _assert_climbs_to(_pushes(events, "artifact.model"), "artifact.model", BIG + SMALL)
    _assert_climbs_to(_pushes(events, "artifact.copy"), "artifact.copy", BIG)
    assert (store / "out" / "model.bin").stat().st_size == BIG
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0

    # without --json, on a pipe: the same lines, plain
    (project / "train.py").write_text(TRAIN + "# again\n")
    b = run_cli("apply", "--auto-approve", cwd=project)
    assert b.returncode == 0, b.stderr
    assert f"artifact.model: pushed {(BIG + SMALL) / 1e6:.1f}/{(BIG + SMALL) / 1e6:.1f} MB in " in b.stderr
    assert "\x1b[" not in b.stderr
    assert run_cli("plan", "--detailed-exitcode", cwd=project).returncode == 0


def test_python_api_hears_push_progress(s3_server_b2: Any, tmp_path: Path) -> None:
    import runform

    project, _ = _project(tmp_path, s3_server_b2, s3_server_b2.make_bucket(versioned=True), "b2")
    spec = runform.load(project / "runform.yaml")
    seen: list[dict[str, Any]] = []
    result = runform.apply(spec, on_event=seen.append, progress_every=0.05)
    assert result is not None and result.ok
    for e in seen:
        _check_event(e)
    _assert_climbs_to(_pushes(seen, "artifact.model"), "artifact.model", BIG + SMALL)
    _assert_climbs_to(_pushes(seen, "artifact.copy"), "artifact.copy", BIG)
    assert runform.plan(spec).has_changes is False


# ---------------------------------------------------------------------- W&B (wandb itself, offline)


def test_an_offline_wandb_push_counts_each_file_as_wandb_takes_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """wandb has no byte callback: offline, a file counts once W&B has staged it (all an offline
    push does); the count still ends at the total."""
    from helpers import isolate_wandb

    from runform.storage_backends.wandb import WandbBackend
    from runform.storage_backends.wandb_api import WandbPublicAPI, pending_sync

    isolate_wandb(tmp_path, monkeypatch)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(SMALL))
    (src / "sub" / "b.bin").write_bytes(os.urandom(2 * SMALL))
    backend = WandbBackend(WandbPublicAPI(mode="offline", run_dir=str(tmp_path / "wandb-runs")))
    assert isinstance(backend, ReportsPushProgress)
    seen: list[int] = []
    m = backend.push_with_progress(src, "wandb://ent/proj/model", {}, progress=seen.append)
    assert pending_sync(m.version) is not None
    assert sorted(seen) == [SMALL, 2 * SMALL], "one count per file, as wandb takes it in"


def test_apply_json_shows_a_wandb_push(tmp_path: Path) -> None:
    project = tmp_path / "pushy"
    project.mkdir()
    spec = {**SPEC, "tracker": {"kind": "wandb", "project": "proj", "entity": "ent", "mode": "offline"},
            "artifacts": {"model": {"paths": ["out/"], "to": "wandb://ent/proj/pushy-model"}}}
    spec.pop("secrets")
    (project / "runform.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (project / "train.py").write_text(TRAIN)
    env = {"WANDB_SILENT": "true", "WANDB_API_KEY": "k" * 40, "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    a = run_cli("apply", "--auto-approve", "--json", cwd=project, env=env)
    assert a.returncode == 0, a.stderr + a.stdout
    events = [json.loads(line) for line in a.stdout.splitlines()]
    for e in events:
        _check_event(e)
    _assert_climbs_to(_pushes(events, "artifact.model"), "artifact.model", BIG + SMALL)
    assert run_cli("plan", "--detailed-exitcode", cwd=project, env=env).returncode == 0
