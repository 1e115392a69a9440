"""Lineage of artifacts pushed to ``wandb://``: the push run is grouped with the pipeline run and
names it, the version is typed, and the pipeline run's tracker names the pushed ``vN``.

The real wandb library runs offline; the versioning W&B's server does is the folder fake
(:class:`runform.testing.fakes.DirArtifactStore`), and every ``.wandb`` file is read back with wandb's own records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import offline_wandb_context
from runform.interfaces import Manifest
from runform.storage_backends.wandb import WandbBackend, pipeline_run
from runform.storage_backends.wandb_api import log_push, push_settings
from runform.testing.fakes import DirArtifactStore
from runform.interfaces import TrackerContext
from runform.trackers.wandb import WandbTracker
from runform.trackers.wandb_records import RunFile, run_files, wait_for_exit_record

pytestmark = pytest.mark.slow  # end to end, several seconds a test (pytest -m 'not slow' skips it)

CANARY = "CANARY-wandb-lineage-51c0e2"


class OfflinePushStore(DirArtifactStore):
    """What :class:`WandbPublicAPI` does on upload (a push run that logs the artifact), with
    wandb offline; the version comes from the folder fake, as the server would assign it."""

    def __init__(self, root: Path, run_dir: Path) -> None:
        super().__init__(root)
        self.run_dir = run_dir
        self.sync_files: list[Path] = []

    def upload(self, entity: str, project: str, name: str, files: Mapping[str, Path], *,
               type: str = "dataset", aliases: Iterable[str] = (),
               metadata: Mapping[str, Any] | None = None, group: str | None = None,
               job_type: str | None = None, progress: Any = None) -> str:
        aliases = list(aliases)
        run, _ = log_push(entity, project, name, files, type=type, aliases=aliases,
                          metadata=metadata, group=group, job_type=job_type,
                          settings=push_settings(api_key=CANARY, mode="offline"),
                          dir=self.run_dir)
        sync_file = Path(run.settings.sync_file)
        run.finish()
        assert wait_for_exit_record(sync_file, 30)
        self.sync_files.append(sync_file)
        return super().upload(entity, project, name, files, type=type, aliases=aliases,
                              metadata=metadata, group=group, job_type=job_type, progress=progress)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackerContext:
    return offline_wandb_context(tmp_path, monkeypatch, CANARY)


def _checkpoint(root: Path) -> Path:
    src = root / "checkpoints"
    src.mkdir(parents=True)
    (src / "operator.pt").write_bytes(b"w" * 64)
    (src / "config.json").write_text('{"lr": 0.001}')
    return src


def test_push_is_typed_grouped_and_linked_to_the_pipeline_run(
        ctx: TrackerContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = WandbTracker({}, ctx)
    tracker_env = dict(tracker.start(run_id=ctx.run_id, name=ctx.run, config={}))
    assert tracker_env["WANDB_RUN_GROUP"] == ctx.run_id

    # The machine: its env has the secrets and the tracker variables the stages get. Even with
    # WANDB_RUN_ID/WANDB_RESUME in its process env, the push must not join the pipeline run
    # (the client holds that one open).
    monkeypatch.setenv("WANDB_RUN_ID", ctx.run_id)
    monkeypatch.setenv("WANDB_RESUME", "allow")
    store = OfflinePushStore(tmp_path / "wandb-server", tmp_path / "machine")
    machine_env = {"WANDB_API_KEY": CANARY, **tracker_env}
    pushed = WandbBackend(store).push(_checkpoint(tmp_path / "machine"),
                                      "wandb://ent/proj/burgers-ckpt:best", machine_env,
                                      artifact_type="checkpoint")
    assert pushed.version == "v0" and pushed.uri == "wandb://ent/proj/burgers-ckpt:best"

    # The client records the pushed version on the pipeline run.
    tracker.link_artifact("checkpoints", "wandb://ent/proj/burgers-ckpt:best", pushed)
    tracker.finish()

    # The push run: its own id, in the pipeline run's group, named for runform's push.
    (push_file,) = store.sync_files
    push = RunFile.read(push_file)
    assert push.run_id and push.run_id != ctx.run_id and push.run_id.startswith("push-")
    assert push.group == ctx.run_id
    assert push.job_type == "runform-push-burgers-ckpt"
    (art,) = push.artifacts
    assert art["name"] == "burgers-ckpt" and art["type"] == "checkpoint"
    assert art["metadata"]["runform_run_id"] == ctx.run_id
    assert art["metadata"]["runform_run_path"] == f"runform-tests/{ctx.run_id}"
    assert sorted(art["paths"]) == ["config.json", "operator.pt"]
    assert "best" in art["aliases"]

    # The pipeline run: grouped, nothing of the push written into it, and its own artifact
    # names the pushed version (offline: in metadata only; W&B cannot use_artifact offline).
    (pipeline_file,) = run_files(ctx.state_dir / "wandb", ctx.run_id)
    pipeline = RunFile.read(pipeline_file)
    assert pipeline.run_id == ctx.run_id and pipeline.group == ctx.run_id
    (mine,) = pipeline.artifacts
    assert mine["name"] == "burgers1d-quality-v2-checkpoints"
    assert mine["metadata"]["wandb_artifact"] == "ent/proj/burgers-ckpt:v0"
    assert mine["metadata"]["version"] == "v0"
    assert "burgers-ckpt" not in {a["name"] for a in pipeline.artifacts}

    # The server (the fake) saw the same: type, metadata, the push run's group and job type.
    info = store.info("ent", "proj", "burgers-ckpt", "best")
    assert info["type"] == "checkpoint" and info["metadata"]["runform_run_id"] == ctx.run_id
    assert info["run"] == {"group": ctx.run_id, "job_type": "runform-push-burgers-ckpt"}

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_push_type_precedence_and_defaults(tmp_path: Path) -> None:
    store = DirArtifactStore(tmp_path / "srv")
    src = _checkpoint(tmp_path)

    def pushed_type(name: str, env: dict[str, str], **kw: Any) -> str:
        WandbBackend(store, **kw.pop("backend", {})).push(src, f"wandb://e/p/{name}", env, **kw)
        return str(store.info("e", "p", name, "latest")["type"])

    assert pushed_type("a", {}) == "model"  # an artifact is a model unless the spec says
    assert pushed_type("b", {"RUNFORM_ARTIFACT_TYPE": "dataset"}) == "dataset"
    assert pushed_type("c", {"RUNFORM_ARTIFACT_TYPE": "dataset"}, artifact_type="eval") == "eval"
    assert pushed_type("d", {}, backend={"artifact_type": "dataset"}) == "dataset"

    # Without a pipeline run in the env (no tracker): no group, no run in the metadata.
    assert store.info("e", "p", "a", "latest")["metadata"] == {}
    assert store.info("e", "p", "a", "latest")["run"] == {"group": None,
                                                          "job_type": "runform-push-a"}


def test_pipeline_run_from_tracker_env() -> None:
    assert pipeline_run({}) == (None, {})
    assert pipeline_run({"RUNFORM_RUN_ID": "r-1", "RUNFORM_TRACKER": "jsonl"}) == (
        "r-1", {"runform_run_id": "r-1"})
    group, meta = pipeline_run({"RUNFORM_RUN_ID": "r-1", "WANDB_RUN_ID": "r-1",
                                "WANDB_PROJECT": "p", "WANDB_ENTITY": "e",
                                "WANDB_RUN_GROUP": "sweep-3"})
    assert group == "sweep-3"  # the pipeline run's own group, so the push sits with it
    assert meta == {"runform_run_id": "r-1", "runform_run_path": "e/p/r-1",
                    "runform_run_group": "sweep-3"}


class _Run:
    """Stands in for an online ``wandb.Run`` (online needs a server)."""

    def __init__(self, fail: bool = False) -> None:
        self.logged: list[Any] = []
        self.used: list[str] = []
        self.fail = fail

    def log_artifact(self, art: Any, aliases: list[str]) -> None:
        self.logged.append(art)

    def use_artifact(self, path: str) -> None:
        if self.fail:
            raise RuntimeError("server said no")
        self.used.append(path)


@pytest.mark.parametrize("mode, used", [("online", ["ent/proj/ckpt:v3"]), ("offline", []),
                                        ("disabled", [])])
def test_link_artifact_uses_the_pushed_version_online_only(ctx: TrackerContext, mode: str,
                                                          used: list[str]) -> None:
    t = WandbTracker({"mode": mode}, ctx)
    t.run, t.run_id = _Run(), ctx.run_id
    # ``uri`` is the spec's ``to`` (entity from WANDB_ENTITY); the manifest's is normalised
    t.link_artifact("ckpt", "wandb://proj/ckpt:best",
                    Manifest("wandb://ent/proj/ckpt:best", (), version="v3"))
    assert t.run.used == used
    assert t.run.logged[0].metadata["wandb_artifact"] == "ent/proj/ckpt:v3"


def test_link_artifact_lineage_failure_is_not_fatal(ctx: TrackerContext,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    t = WandbTracker({"mode": "online"}, ctx)
    t.run, t.run_id = _Run(fail=True), ctx.run_id
    t.link_artifact("ckpt", "wandb://ent/proj/ckpt", Manifest("wandb://ent/proj/ckpt:latest",
                                                              (), version="v0"))
    assert "could not mark ent/proj/ckpt:v0" in caplog.text


def test_link_artifact_other_schemes_name_no_wandb_version(ctx: TrackerContext) -> None:
    t = WandbTracker({"mode": "online"}, ctx)
    t.run, t.run_id = _Run(), ctx.run_id
    t.link_artifact("ckpt", "s3://b/ckpt/", Manifest("s3://b/ckpt/", (), version="v1"))
    assert t.run.used == [] and "wandb_artifact" not in t.run.logged[0].metadata


def test_schema_artifact_type() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from runform.spec.load import schema
    from runform.spec.model import Artifact

    s = schema()
    art = s["properties"]["artifacts"]["additionalProperties"]
    assert "type" in art["properties"] and "type" not in art["required"]
    check = jsonschema.Draft202012Validator(art["properties"]["type"])
    assert all(check.is_valid(t) for t in ("model", "dataset", "checkpoint", "eval.v2"))
    assert not any(check.is_valid(t) for t in ("", "a/b", "a:b", "wandb-x", "job", "x" * 129))
    assert Artifact("c", ("checkpoints/",), "wandb://e/p/c").type == "model"


def test_an_offline_push_never_waits_and_says_where_it_waits(ctx: TrackerContext, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker's mode (WANDB_MODE in the push's env) reaches the push, whatever the process
    env says; offline, Artifact.wait() would raise, so the push logs into an offline run in the
    folder it is told, returns at once, and its manifest says it is pending sync."""
    from runform.storage_backends.wandb_api import WandbPublicAPI, api_from_env

    monkeypatch.setenv("WANDB_MODE", "online")  # the machine's own env: not what decides
    tracker = WandbTracker({}, ctx)
    tracker_env = dict(tracker.start(run_id=ctx.run_id, name=ctx.run, config={}))
    tracker.finish()  # only its env matters here; an open run would hold the id in wandb-core
    assert tracker_env["WANDB_MODE"] == "offline"
    env = {**tracker_env, "WANDB_API_KEY": CANARY, "WANDB_DIR": str(tmp_path / "push-run")}
    api = api_from_env(env)
    assert isinstance(api, WandbPublicAPI) and api.mode == "offline"
    src = _checkpoint(tmp_path / "machine")
    m = WandbBackend().push(src, "wandb://ent/proj/burgers-ckpt:best", env)
    where = m.pending_sync
    assert where is not None and Path(where).is_dir() and str(tmp_path / "push-run") in where
    assert sorted(e.path for e in m.entries) == ["config.json", "operator.pt"]
    assert all(e.digest.startswith("md5:") for e in m.entries)
    (sync_file,) = Path(where).glob("run-*.wandb")
    assert wait_for_exit_record(sync_file, 30)
    push = RunFile.read(sync_file)
    (art,) = push.artifacts
    assert art["name"] == "burgers-ckpt" and push.group == ctx.run_id and "best" in art["aliases"]
    # the pipeline's record of it names no W&B version (there is none yet)
    assert WandbTracker({}, ctx)._pushed_version("wandb://ent/proj/burgers-ckpt:best", m) is None


def test_a_disabled_push_is_a_clear_error(tmp_path: Path) -> None:
    from runform.errors import RunformError
    from runform.storage_backends.wandb_api import api_from_env

    with pytest.raises(RunformError, match="W&B is disabled"):
        WandbBackend(api_from_env({"WANDB_MODE": "disabled"})).push(
            _checkpoint(tmp_path), "wandb://e/p/n", {"WANDB_MODE": "disabled"})
