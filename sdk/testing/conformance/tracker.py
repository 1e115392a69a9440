"""The tracker contract (``runform.interfaces.Tracker``) as reusable tests.

Fixtures a subclass gives:

- ``make_tracker``: ``make_tracker(ctx) -> Tracker`` for a
  :class:`runform.interfaces.TrackerContext` (the suite builds the context: its folders under
  ``tmp_path``, and a redactor that knows one secret).
- ``tracker_env`` (optional): the tracker's own env (e.g. ``{"WANDB_MODE": "offline"}``).
- ``tracker_dirs`` (optional): more folders the tracker writes to, searched for the secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from runform.interfaces import Manifest, ManifestEntry, Tracker

SECRET = "conformance-secret-7d3a91"


def make_context(tmp_path: Path, env: Mapping[str, str] | None = None) -> Any:
    """A TrackerContext with its folders under ``tmp_path`` and a redactor that knows SECRET."""
    from runform.redact import Redactor

    from runform.interfaces import TrackerContext

    return TrackerContext("conformance", "lineage-c0ffee", tmp_path / ".runform", tmp_path,
                          redactor=Redactor.from_env({"MY_API_KEY": SECRET}),
                          env={**(env or {}), "MY_API_KEY": SECRET})


class TrackerContract:
    """Start (and resume), metrics, events, artifacts, finish; no secret in what it writes."""

    @pytest.fixture
    def tracker_env(self) -> Mapping[str, str]:
        return {}

    @pytest.fixture
    def tracker_dirs(self) -> list[Path]:
        return []

    @pytest.fixture
    def tracker_context(self, tmp_path: Path, tracker_env: Mapping[str, str]) -> Any:
        return make_context(tmp_path, tracker_env)

    def _run(self, tracker: Tracker, ctx: Any) -> Mapping[str, str]:
        env = tracker.start(run_id=ctx.run_id, name=ctx.run, config={"lr": 0.001, "cmd": f"--key {SECRET}"})
        tracker.log_metrics({"loss": 0.5, "acc": 1}, stage="train", step=1)
        tracker.log_metrics({"loss": 0.25}, stage="train")
        tracker.log_event({"type": "action_finished", "address": "stage.train", "status": "ok",
                           "log": f"echo {SECRET}"})
        m = Manifest("file:///models/", (ManifestEntry("model.pt", 10, "sha256:" + "0" * 64),), version="v0")
        tracker.link_artifact("artifact.model", "file:///models/", m)
        tracker.finish()
        return env

    def test_it_is_a_tracker(self, make_tracker: Callable[[Any], Tracker], tracker_context: Any) -> None:
        assert isinstance(make_tracker(tracker_context), Tracker), \
            "a method of runform.interfaces.Tracker is missing"

    def test_a_whole_run(self, make_tracker: Callable[[Any], Tracker], tracker_context: Any) -> None:
        env = self._run(make_tracker(tracker_context), tracker_context)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()), \
            "start returns env vars (strings) for the stages"
        assert SECRET not in "".join(f"{k}={v}" for k, v in env.items())

    def test_a_second_apply_resumes_the_same_run(self, make_tracker: Callable[[Any], Tracker],
                                                 tracker_context: Any) -> None:
        first = self._run(make_tracker(tracker_context), tracker_context)
        again = self._run(make_tracker(tracker_context), tracker_context)
        assert again == first, "the same run id gives the stages the same env (they join one run)"

    def test_no_secret_in_what_it_writes(self, make_tracker: Callable[[Any], Tracker], tracker_context: Any,
                                         tracker_dirs: list[Path], tmp_path: Path) -> None:
        self._run(make_tracker(tracker_context), tracker_context)
        leaks = [p for root in [tmp_path, *tracker_dirs] for p in Path(root).rglob("*")
                 if p.is_file() and SECRET.encode() in p.read_bytes()]
        assert not leaks, f"the secret is in {leaks}"

    def test_finish_twice_is_harmless(self, make_tracker: Callable[[Any], Tracker], tracker_context: Any) -> None:
        t = make_tracker(tracker_context)
        self._run(t, tracker_context)
        t.finish()
