"""The printer tracker passes runform's tracker conformance suite: a few lines are all it takes.

    pip install -e ./examples/plugin-example && pytest examples/plugin-example/tests
"""

from __future__ import annotations

import json

import pytest
from runform.testing.conformance import TrackerContract

from runform_plugin_example.printer import PrinterTracker


class TestPrinterTracker(TrackerContract):
    @pytest.fixture
    def make_tracker(self):  # type: ignore[no-untyped-def]
        return lambda ctx: PrinterTracker({}, ctx)


def test_the_whole_run_is_in_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The suite checks the contract; what the file holds is this plugin's own business."""
    from runform.testing.conformance.tracker import make_context

    ctx = make_context(tmp_path)
    t = PrinterTracker({}, ctx)
    t.start(run_id=ctx.run_id, name=ctx.run, config={"lr": 0.1})
    t.log_metrics({"loss": 0.5}, stage="train", step=1)
    t.finish()
    lines = [json.loads(line) for line in t.path.read_text().splitlines()]
    assert [e["type"] for e in lines] == ["start", "metrics", "finish"]
