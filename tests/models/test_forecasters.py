"""Forecasters: fallback, season detection, conformal intervals, pickling, bounded state."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from models.forecasting.conformal import ConformalIntervals
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.registry import make_forecaster
from models.forecasting.seasonality import detect_season
from models.forecasting.snarimax import SnarimaxForecaster


def seasonal(n: int, period: int = 24, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * i / period) + rng.normal(0, noise, n)


def test_holt_winters_falls_back_to_ew_mean_before_a_full_season():
    model = HoltWintersForecaster(season=12, fallback_alpha=0.5)
    for y in [10.0, 20.0, 30.0, 40.0, 50.0]:
        model.learn_one(y)
    assert not model.ready
    expected = model.fallback.get()
    assert [f.point for f in model.forecast(3)] == [expected] * 3
    for y in range(7):
        model.learn_one(float(y))
    assert model.ready


def test_snarimax_falls_back_until_its_lags_are_filled():
    model = SnarimaxForecaster(season=12, min_fit=5)
    for y in seasonal(20):
        model.learn_one(float(y))
    assert not model.ready and len(model.forecast(4)) == 4
    for y in seasonal(40, seed=1):
        model.learn_one(float(y))
    assert model.ready


def test_detect_season_finds_period_and_rejects_noise():
    assert detect_season(seasonal(200, period=24).tolist()) == 24
    assert detect_season(np.random.default_rng(3).normal(0, 1, 200).tolist()) == 0


@pytest.mark.parametrize("name", ["holtwinters", "snarimax"])
def test_auto_season_is_detected_after_warmup_and_the_buffer_freed(name):
    model = make_forecaster(name, season="auto", warmup=96)
    values = seasonal(300, period=24)
    for y in values[:95]:
        model.learn_one(float(y))
    assert model.season is None and len(model.buffer) == 95
    for y in values[95:]:
        model.learn_one(float(y))
    assert model.season == 24 and model.buffer == [] and model.ready
    truth = 50 + 10 * np.sin(2 * np.pi * np.arange(300, 312) / 24)
    assert np.max(np.abs([f.point for f in model.forecast(12)] - truth)) < 3


def test_conformal_half_width_is_the_split_conformal_order_statistic():
    ci = ConformalIntervals(horizon=1, window=100, coverage=0.9)
    for error in range(1, 20):  # forecasts of 0, actuals 1..19
        ci.record([0.0])
        ci.observe(float(error))
    assert ci.half_width(1) == sorted(range(1, 20))[math.ceil(20 * 0.9) - 1]


def test_conformal_window_is_bounded_and_forgets_old_errors():
    ci = ConformalIntervals(horizon=1, window=10, coverage=0.9)
    for error in [100.0] * 10 + [1.0] * 10:
        ci.record([0.0])
        ci.observe(error)
    assert len(ci.residuals[0]) == 10 and ci.half_width(1) == 1.0


def test_adaptive_level_rises_after_misses():
    ci = ConformalIntervals(horizon=1, window=50, coverage=0.9, adapt_rate=0.05)
    for error in [1.0] * 20 + [5.0, 6.0, 7.0, 8.0, 9.0]:  # growing errors: every new one misses
        ci.record([0.0])
        ci.observe(error)
    assert ci.levels[0] > 0.9


def test_interval_width_grows_with_residuals():
    widths = []
    for noise in (0.5, 5.0):
        model = HoltWintersForecaster(season=24)
        for y in seasonal(400, noise=noise):
            model.learn_one(float(y))
        widths.append(np.mean([f.upper - f.lower for f in model.forecast(12)]))
        assert all(f.lower <= f.point <= f.upper for f in model.forecast(12))
    assert widths[1] > 3 * widths[0]


def test_forecast_beyond_horizon_reuses_last_window():
    model = HoltWintersForecaster(season=0, horizon=3)
    for y in seasonal(100):
        model.learn_one(float(y))
    long = model.forecast(6)
    assert len(long) == 6 and long[5].upper - long[5].point == pytest.approx(long[2].upper - long[2].point)


@pytest.mark.parametrize("name,kwargs", [("holtwinters", {"season": 24}), ("snarimax", {"season": 24}),
                                         ("holtwinters", {"season": "auto", "warmup": 200})])
def test_pickle_round_trip_continues_identically(name, kwargs):
    model = make_forecaster(name, **kwargs)
    values = seasonal(300)
    for y in values[:150]:
        model.learn_one(float(y))
    copy = pickle.loads(pickle.dumps(model))
    for y in values[150:]:
        model.learn_one(float(y))
        copy.learn_one(float(y))
    assert copy.forecast(12) == model.forecast(12)


def test_state_stays_bounded():
    model = HoltWintersForecaster(season=24, window=20, horizon=6)
    for y in seasonal(3000):
        model.learn_one(float(y))
    assert all(len(r) <= 20 for r in model.intervals.residuals) and len(model.intervals.pending) <= 6
    assert len(model.model.season) <= 25 and model.buffer == []


def test_seasonal_holt_winters_needs_a_trend():
    with pytest.raises(ValueError):
        HoltWintersForecaster(beta=0.0, season=12)
    HoltWintersForecaster(beta=0.0, season=0)
