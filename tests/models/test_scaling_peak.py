"""The window-peak forecaster and its use in the scaling replay."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.scaling import evaluate_scaling
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.peak import PeakForecaster


def learn(model: PeakForecaster, values) -> PeakForecaster:
    for y in values:
        model.learn_one(y)
    return model


def test_block_peaks_end_at_the_latest_value_and_forget_old_blocks():
    model = learn(PeakForecaster(window=3, windows=2), [50, 1, 2, 3, 4, 5, 6, 7])
    assert model.block_peaks() == [7.0, 4.0]  # blocks [5, 6, 7] and [2, 3, 4]; 50 is forgotten
    assert PeakForecaster(window=3).forecast_peak() == 0.0


def test_one_spike_is_ignored_but_a_level_change_is_followed():
    model = learn(PeakForecaster(window=4, windows=3), [10.0] * 8 + [10, 10, 500, 10])
    assert model.forecast_peak() == 10.0
    learn(model, [40.0] * 4)  # peaks 10, 500, 40
    assert model.forecast_peak() == 40.0
    learn(model, [40.0] * 4)  # peaks 500, 40, 40
    assert model.forecast_peak() == 40.0


def test_invalid_peak_forecasters_are_rejected():
    with pytest.raises(ValueError):
        PeakForecaster(window=0)
    with pytest.raises(ValueError):
        evaluate_scaling([1.0] * 100, PeakForecaster(window=6), window=12, warmup=24)


def test_peak_planning_beats_per_step_forecasts_when_spikes_move_within_the_window():
    # 100 with one spike of 300 per 12-step window, at a random step: the peak is always 300,
    # but no per-step forecast can know where the spike lands.
    rng = np.random.default_rng(0)
    values = np.full(600, 100.0)
    values[np.arange(0, 600, 12) + rng.integers(0, 12, 50)] = 300.0
    kwargs = dict(window=12, warmup=96, capacity_fraction=0.1, headroom=0.2)
    peak = evaluate_scaling(values.tolist(), PeakForecaster(window=12), **kwargs)
    per_step = evaluate_scaling(values.tolist(), HoltWintersForecaster(season=12), bound="point", **kwargs)
    assert peak.share_within == 1.0 and peak.share_overloaded == 0.0
    assert per_step.share_within < 0.75 and per_step.share_overloaded > 0.3


def test_a_step_up_is_under_provisioned_for_two_windows_then_tracked():
    values = [100.0] * 48 + [200.0] * 120
    report = evaluate_scaling(values, PeakForecaster(window=12, windows=3), window=12, warmup=48,
                              capacity_fraction=0.1, headroom=0.2)
    # decisions at 48, 60, ..., 156; the first two still plan for 100 (12 replicas of 10 < 200)
    assert report.decisions == 10
    assert report.share_overloaded == report.share_under == 0.2
    assert report.share_within == 0.8
