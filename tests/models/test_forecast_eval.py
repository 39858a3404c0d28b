"""Forecast metrics on hand-made arrays and the walk-forward bars on AirlinePassengers."""

from __future__ import annotations

import math

import pytest
from river import datasets

from models.evaluation.forecast import coverage, mape, smape, walk_forward
from models.forecasting.holt_winters import HoltWintersForecaster


def test_mape_skips_zero_actuals():
    assert mape([100.0, 200.0, 0.0], [110.0, 150.0, 5.0]) == pytest.approx((0.1 + 0.25) / 2)
    assert math.isnan(mape([0.0], [1.0]))


def test_smape_is_symmetric_and_zero_safe():
    assert smape([100.0], [50.0]) == pytest.approx(2 * 50 / 150)
    assert smape([100.0], [50.0]) == smape([50.0], [100.0])
    assert smape([0.0, 10.0], [0.0, 10.0]) == 0.0


def test_coverage_counts_inclusive_bounds():
    assert coverage([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 3.5, 0.0], [1.0, 1.5, 4.0, 5.0]) == 0.5


def test_walk_forward_scores_each_step_against_the_value_h_steps_later():
    values = [float(i) for i in range(30)]
    report = walk_forward(values, HoltWintersForecaster(season=0, alpha=1.0, beta=0.0), horizon=2, warmup=10)
    # alpha=1, no trend: the forecast is the last value, off by h at step h.
    assert report.steps[1].n == 30 - 10 - 1
    assert report.steps[1].mape == pytest.approx(sum(2 / v for v in values[11:]) / 19)


def test_airline_holt_winters_meets_the_bars():
    values = [float(y) for _, y in datasets.AirlinePassengers()]
    report = walk_forward(values, HoltWintersForecaster(season=12, multiplicative=True), horizon=12, warmup=36)
    assert report.steps[-1].mape <= 0.10
    assert all(0.85 <= s.coverage <= 0.95 for s in report.steps)
