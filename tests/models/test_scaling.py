"""Replica arithmetic, oracle comparison and the scaling replay."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.scaling import evaluate_scaling, hindsight_ceiling, within_tolerance
from models.forecasting.base import Forecast
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.peak import PeakForecaster
from models.forecasting.scaling import ScalingPolicy


def test_replicas_cover_load_plus_headroom_and_respect_bounds():
    policy = ScalingPolicy(capacity_per_replica=50.0, headroom=0.2, min_replicas=2, max_replicas=10)
    assert policy.replicas_for(100.0) == 3  # 120 / 50 = 2.4 -> 3
    assert policy.replicas_for(125.0) == 3  # exactly 150 / 50, no float round-up
    assert policy.replicas_for(0.0) == 2
    assert policy.replicas_for(1e6) == 10
    assert policy.replicas_for(float("inf")) == 10 and policy.replicas_for(1.7e308) == 10  # x 1.2 overflows
    assert policy.replicas_for(float("-inf")) == 2
    with pytest.raises(ValueError, match="NaN"):
        policy.replicas_for(float("nan"))


def test_recommendation_plans_for_the_window_peak_of_the_chosen_bound():
    policy = ScalingPolicy(capacity_per_replica=10.0, headroom=0.0)
    window = [Forecast(1, 50.0, 40.0, 61.0), Forecast(2, 70.0, 55.0, 80.0), Forecast(3, 30.0, 20.0, 40.0)]
    assert policy.recommend(window) == (8, 80.0)
    assert policy.recommend(window, bound="point") == (7, 70.0)


def test_invalid_policies_are_rejected():
    with pytest.raises(ValueError):
        ScalingPolicy(capacity_per_replica=0.0)
    with pytest.raises(ValueError):
        ScalingPolicy(capacity_per_replica=1.0, min_replicas=5, max_replicas=4)


def test_within_tolerance_is_relative_to_the_oracle():
    assert within_tolerance(12, 10) and within_tolerance(8, 10)
    assert not within_tolerance(13, 10) and not within_tolerance(7, 10)
    assert within_tolerance(1, 1) and not within_tolerance(2, 1)


def test_oracle_uses_the_actual_peak_that_followed():
    # 100 everywhere except one spike of 300 per 12-point window: the oracle always plans for 300.
    values = np.full(240, 100.0)
    values[5::12] = 300.0
    report = evaluate_scaling(values.tolist(), HoltWintersForecaster(season=12), window=12, warmup=48,
                              capacity_fraction=1.0, headroom=0.0)
    assert report.capacity == 100.0 and report.mean_oracle == 3.0
    assert report.decisions == (240 - 48) // 12


def test_perfectly_predictable_load_is_always_within_tolerance():
    i = np.arange(600)
    values = 100 + 50 * np.sin(2 * np.pi * i / 24)
    report = evaluate_scaling(values.tolist(), HoltWintersForecaster(season=24), window=6, warmup=96,
                              bound="point")
    assert report.share_within == 1.0 and report.share_under <= 0.05


def test_capacity_only_uses_warmup_values():
    head = [100.0] * 50
    a = evaluate_scaling(head + [100.0] * 50, HoltWintersForecaster(season=0), window=10, warmup=50)
    b = evaluate_scaling(head + [1000.0] * 50, HoltWintersForecaster(season=0), window=10, warmup=50)
    assert a.capacity == b.capacity == 10.0


def _two_level_windows(levels: np.ndarray, window: int = 12) -> list[float]:
    """Each window at its level (1 or 5) with noise-free steps: the oracle follows the level."""
    return np.repeat(levels.astype(float), window).tolist()


def test_hindsight_ceiling_is_perfect_when_the_last_peak_decides_the_next():
    values = _two_level_windows(np.tile([1, 5, 5], 40))  # after a 1 come two 5s: memory 2 decides
    good, n, states = hindsight_ceiling(values, warmup=48, memory=2)
    assert (good, states) == (n, 3)
    good1, _, _ = hindsight_ceiling(values, warmup=48, memory=1)
    assert good1 < n  # after a 5 comes a 5 or a 1: one peak of memory cannot tell


def test_hindsight_ceiling_of_unpredictable_levels_is_the_majority_share():
    levels = np.random.default_rng(4).integers(0, 2, 400) * 4 + 1  # independent coin flips
    good, n, _ = hindsight_ceiling(_two_level_windows(levels), warmup=48, memory=1)
    assert 0.5 <= good / n <= 0.6


def test_no_planner_of_the_last_peak_beats_the_ceiling():
    levels = np.random.default_rng(5).choice([1, 2, 5], 300, p=[0.5, 0.3, 0.2])
    values = _two_level_windows(levels)
    good, n, _ = hindsight_ceiling(values, warmup=48, memory=1)
    persistence = evaluate_scaling(values, PeakForecaster(window=12, windows=1), window=12, warmup=48)
    assert persistence.decisions == n
    assert persistence.share_within * n <= good
