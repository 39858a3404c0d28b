"""Forecasters: fallback, season detection, conformal intervals, pickling, bounded state."""

from __future__ import annotations

import math
import pickle
from collections import deque

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


def test_tracking_only_published_steps_gives_them_the_same_widths():
    rng = np.random.default_rng(4)
    every, some = (ConformalIntervals(horizon=6, window=30, coverage=0.9, adapt_rate=0.02, steps=s) for s in (None, [1, 6]))
    for y in rng.normal(0, 1, 200).tolist():
        for ci in (every, some):
            ci.observe(y)
            ci.record([0.1 * step for step in range(1, 7)])
    assert len(some.residuals) == 2 and len(every.residuals) == 6
    assert some.half_width(1) == every.half_width(1) and some.half_width(6) == every.half_width(6)
    assert some.half_width(3) == some.half_width(1)  # an untracked step borrows the shorter tracked one
    with pytest.raises(ValueError):
        ConformalIntervals(horizon=6, steps=[7])


def test_a_non_finite_forecast_is_not_a_residual():
    ci = ConformalIntervals(horizon=1, window=10, coverage=0.9, adapt_rate=0.02)
    for point in (1.0, float("nan"), float("inf"), 2.0):
        ci.record([point])
        ci.observe(0.0)
    assert len(ci.residuals[0]) == 2 and ci.half_width(1) == 2.0


def test_intervals_load_checkpoints_from_before_the_sorted_windows():
    ci = ConformalIntervals.__new__(ConformalIntervals)
    ci.__setstate__({"horizon": 2, "window": 5, "coverage": 0.9, "adapt_rate": 0.0, "levels": [0.9, 0.9],
                     "residuals": [deque([3.0, 1.0, 2.0], maxlen=5), deque([4.0], maxlen=5)], "pending": deque(maxlen=2)})
    assert ci.steps == [1, 2] and ci.half_width(1) == 3.0 and ci.half_width(2) == 4.0
    ci.observe(1.0)  # and it keeps working


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
