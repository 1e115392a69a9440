"""burgers1d: nRMSE math (PDEBench convention), flat metrics JSON, the runform JSONL stream."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "burgers1d"
sys.path.insert(0, str(EXAMPLE))

from burgers1d.metrics import (
    METRICS_ENV,
    MetricsStream,
    nrmse,
    nrmse_per_step,
    nrmse_per_trajectory,
    relative_l2,
    relative_l2_per_trajectory,
    rmse_per_trajectory,
    write_metrics_json,
)
from burgers1d.stats import bootstrap, paired_bootstrap, spearman


def _pdebench_err_nmse(pred: np.ndarray, target: np.ndarray) -> float:
    """PDEBench's definition (pdebench/models/metrics.py, metric_func's err_nMSE), restated in
    numpy on its own layout [batch, x, t, channel]: per (batch, channel, t) the RMS error over
    space divided by the RMS of the target over space; mean over batch, then over channel and t.
    """
    p = np.moveaxis(pred, -1, 1)  # [b, c, x, t]
    g = np.moveaxis(target, -1, 1)
    err = np.sqrt(np.mean((p - g) ** 2, axis=2))  # [b, c, t]
    nrm = np.sqrt(np.mean(g**2, axis=2))
    return float(np.mean(np.mean(err / nrm, axis=0)))


def test_nrmse_matches_pdebench_definition_on_fixed_arrays() -> None:
    rng = np.random.default_rng(7)
    true = rng.normal(size=(5, 12, 16))  # [N, T, X]
    true[:, 6:] *= 0.05  # late steps decayed: PDEBench weighs them like the early ones
    pred = true + 0.01 * rng.normal(size=true.shape)
    given = 3
    # PDEBench's layout [b, x, t, c]; the given frames are left out of the comparison
    as_pdebench = lambda a: np.transpose(a[:, given:], (0, 2, 1))[..., None]
    reference = _pdebench_err_nmse(as_pdebench(pred), as_pdebench(true))
    assert nrmse(pred, true, given=given) == pytest.approx(reference, rel=1e-12)
    assert nrmse_per_step(pred, true, given).shape == (5, 9)
    assert np.mean(nrmse_per_trajectory(pred, true, given)) == pytest.approx(reference)
    # the whole-trajectory relative L2 is another number (early, large steps dominate it)
    assert relative_l2(pred[:, given:], true[:, given:]) < 0.5 * reference
    # a hand case: two steps, errors 0.1 and 0.3 of the step's RMS -> 0.2
    t2 = np.array([[[3.0, 4.0], [1.0, 0.0]]])
    p2 = t2.copy()
    p2[0, 0] *= 1.1
    p2[0, 1, 0] += 0.3
    assert nrmse(p2, t2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="given"):
        nrmse(pred, true, given=12)


def test_relative_l2_on_known_arrays() -> None:
    true = np.array([[[3.0, 4.0]], [[1.0, 0.0]]])  # norms 5 and 1
    pred = true.copy()
    pred[0, 0, 0] += 0.5  # error 0.5 / 5 = 0.1
    pred[1, 0, 1] += 0.3  # error 0.3 / 1 = 0.3
    np.testing.assert_allclose(relative_l2_per_trajectory(pred, true), [0.1, 0.3])
    assert relative_l2(pred, true) == pytest.approx(0.2)  # mean of ratios, not ratio of sums
    global_ratio = np.linalg.norm(pred - true) / np.linalg.norm(true)
    assert relative_l2(pred, true) != pytest.approx(global_ratio)
    assert relative_l2(true, true) == 0.0
    assert relative_l2(1.1 * true, true) == pytest.approx(0.1)
    np.testing.assert_allclose(
        rmse_per_trajectory(pred, true), [0.5 / math.sqrt(2), 0.3 / math.sqrt(2)]
    )
    with pytest.raises(ValueError, match="shape"):
        relative_l2(pred[:1], true)


def test_paired_bootstrap_sees_a_small_consistent_gain_that_an_unpaired_one_hides() -> None:
    rng = np.random.default_rng(0)
    hard = rng.lognormal(-2.5, 0.5, size=64)  # trajectory difficulty varies a lot
    a = hard[None, None] * (1 + 0.02 * rng.normal(size=(3, 3, 64)))
    b = a * 0.97  # 3% better on every trajectory
    diff = paired_bootstrap(a, b, seed=1)
    assert diff.excludes_zero and diff.lo > 0
    unpaired_a, unpaired_b = bootstrap(a, seed=1), bootstrap(b, seed=2)
    assert unpaired_a.lo < unpaired_b.hi  # the marginal intervals overlap
    same = paired_bootstrap(a, a * (1 + 0.001 * rng.normal(size=a.shape)), seed=1)
    assert not same.excludes_zero
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


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
