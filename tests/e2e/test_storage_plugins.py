"""The storage and tracker plugins register through runform's hooks, and import nothing
heavy (``runform --help`` loads every plugin)."""

from __future__ import annotations

import subprocess
import sys

from runform.interfaces import StorageBackend, Tracker
from runform.plugins import PluginManager
from runform.storage_backends import file, s3, wandb
from runform.trackers import jsonl, none
from runform.trackers import wandb as wandb_tracker
from runform.interfaces import TrackerContext, deterministic_run_id


def test_registration(tmp_path):
    pm = PluginManager(load_entry_points=False)
    for name, mod in [("file", file), ("s3", s3), ("wandb_storage", wandb), ("jsonl", jsonl),
                      ("none_tracker", none), ("wandb_tracker", wandb_tracker)]:
        pm.register(mod, name=name)
    assert pm.names("storage_backends") == ["b2", "file", "s3", "wandb"]
    assert pm.names("trackers") == ["jsonl", "none", "wandb"]
    for scheme in ("b2", "file", "s3", "wandb"):
        backend = pm.get("storage_backends", scheme).factory()
        assert isinstance(backend, StorageBackend) and scheme in backend.schemes
    ctx = TrackerContext("r", "lin", tmp_path, tmp_path, env={"WANDB_MODE": "offline"})
    for kind in ("jsonl", "none", "wandb"):
        assert isinstance(pm.get("trackers", kind).factory({}, ctx), Tracker)


def test_entry_points_declared():
    from importlib import metadata

    names = {ep.name: ep.value for ep in metadata.entry_points(group="runform")}
    assert names["s3"] == "runform.storage_backends.s3"
    assert names["wandb_tracker"] == "runform.trackers.wandb"


def test_imports_are_light():
    code = (
        "import sys\n"
        "import runform.storage_backends.file, runform.storage_backends.s3\n"
        "import runform.storage_backends.wandb, runform.trackers.jsonl\n"
        "import runform.trackers.wandb, runform.trackers.none, runform.redact\n"
        "heavy = {'boto3', 'botocore', 's3transfer', 'wandb', 'moto'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_deterministic_run_id():
    a = deterministic_run_id("burgers1d-quality-v2", "lineage-1")
    assert a == deterministic_run_id("burgers1d-quality-v2", "lineage-1")
    assert a != deterministic_run_id("burgers1d-quality-v2", "lineage-2")
    assert a.startswith("burgers1d-quality-v2-") and len(a) <= 64
    odd = deterministic_run_id("Run/With:Odd#Chars?" * 5, "x")
    assert all(c.isalnum() or c in "-_" for c in odd) and len(odd) <= 64
