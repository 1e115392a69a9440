"""burgers1d: nRMSE math (PDEBench convention), flat metrics JSON, the runform JSONL stream."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.metrics import (
    METRICS_ENV,
    MetricsStream,
    nrmse,
    nrmse_per_trajectory,
    rmse_per_trajectory,
    write_metrics_json,
)


def test_nrmse_on_known_arrays() -> None:
    true = np.array([[[3.0, 4.0]], [[1.0, 0.0]]])  # norms 5 and 1
    pred = true.copy()
    pred[0, 0, 0] += 0.5  # error 0.5 / 5 = 0.1
    pred[1, 0, 1] += 0.3  # error 0.3 / 1 = 0.3
    np.testing.assert_allclose(nrmse_per_trajectory(pred, true), [0.1, 0.3])
    assert nrmse(pred, true) == pytest.approx(0.2)  # mean of ratios, not ratio of sums
    global_ratio = np.linalg.norm(pred - true) / np.linalg.norm(true)
    assert nrmse(pred, true) != pytest.approx(global_ratio)
    assert nrmse(true, true) == 0.0
    assert nrmse(1.1 * true, true) == pytest.approx(0.1)
    np.testing.assert_allclose(
        rmse_per_trajectory(pred, true), [0.5 / math.sqrt(2), 0.3 / math.sqrt(2)]
    )
    with pytest.raises(ValueError, match="shape"):
        nrmse(pred[:1], true)


def test_metrics_json_is_flat_numbers(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "m.json"
    assert write_metrics_json(path, {"loss": np.float32(0.5), "steps": np.int64(3)}) is True
    assert json.loads(path.read_text()) == {"loss": 0.5, "steps": 3}
    assert write_metrics_json(path, {"steps": 3, "loss": 0.5}) is False  # unchanged: not rewritten
    for bad in ({"nested": {"a": 1}}, {"name": "x"}, {"flag": True}, {"loss": float("nan")}):
        with pytest.raises((TypeError, ValueError)):
            write_metrics_json(path, bad)


def test_metrics_stream_appends_json_lines_when_runform_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runform" / "metrics.jsonl"
    monkeypatch.setenv(METRICS_ENV, str(target))
    stream = MetricsStream()
    stream.log(1, loss=0.5, lr=1e-3)
    stream.log(2, loss=0.25)
    MetricsStream(enabled=False).log(3, loss=1.0)  # a non-zero rank writes nothing
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.5, "lr": 1e-3}, {"step": 2, "loss": 0.25}]
    monkeypatch.delenv(METRICS_ENV)
    MetricsStream().log(4, loss=1.0)  # unset: a no-op
    assert len(target.read_text().splitlines()) == 2
