"""Cost projection on synthetic metered cost with known answers."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from models.forecasting.cost import RUN_RATE_Q, CostProjector, day_end, month_end, run_rate, run_rate_q
from models.forecasting.holt_winters import HoltWintersForecaster

T0 = datetime(2024, 2, 26, tzinfo=timezone.utc).timestamp()  # leap-year February


def feed(cost: CostProjector, rate: float, seconds: int, every: int = 60, noise: float = 0.0) -> float:
    rng = np.random.default_rng(0)
    for t in range(0, seconds, every):
        cost.learn_one(rate * every * (1 + noise * rng.normal()), T0 + t)
    return T0 + seconds - every


def test_period_ends_are_utc_midnights():
    t = datetime(2024, 2, 27, 13, 5, tzinfo=timezone.utc).timestamp()
    assert day_end(t) == datetime(2024, 2, 28, tzinfo=timezone.utc).timestamp()
    assert month_end(t) == datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp()


def test_constant_rate_projects_rate_times_remaining_time():
    rate = 0.002  # per second
    cost = CostProjector(HoltWintersForecaster(season=0, horizon=24))
    now = feed(cost, rate, 2 * 86400 + 5 * 3600 + 1800)
    day, month = cost.project()
    assert day.point == pytest.approx(rate * (day_end(now) - now))
    assert day.spent == pytest.approx(rate * (now + 60 - day_end(now) + 86400))
    # the month at its run rate: the last point's minute is spent, the rest of the month is not
    assert month.method == "run-rate" and month.point == pytest.approx(rate * (month_end(now) - now - 60))
    assert month.spent + month.point == pytest.approx(rate * (month_end(now) - T0))
    q = run_rate_q((now + 60 - T0) / (month_end(now) - T0))  # the series began on the 26th: its share of the month
    assert (month.lower, month.upper) == pytest.approx((max(month.point * (1 - q), 0.0), month.point * (1 + q)))


def test_the_month_is_projected_at_its_run_rate_after_a_day_and_by_the_forecaster_before():
    rate = 0.002
    cost = CostProjector(HoltWintersForecaster(season=0, horizon=24))
    for t in range(0, 86400 + 600, 60):
        cost.learn_one(rate * 60, T0 + t)
        if t == 86400 - 3600:
            assert cost.project()[1].method == "forecast"
    now = T0 + 86400 + 540
    month = cost.project()[1]
    assert month.method == "run-rate" and month.point == pytest.approx(rate * (month_end(now) - now - 60))
    # a new month starts its own run rate at its first instant (not at the series' first point)
    march = month_end(now)
    for t in range(0, 2 * 86400, 60):
        cost.learn_one(3 * rate * 60, march + t)
    month = cost.project()[1]
    assert month.spent == pytest.approx(3 * rate * 2 * 86400) and month.until == month_end(march)
    assert month.point == pytest.approx(3 * rate * (month_end(march) - march - 2 * 86400))
    assert run_rate(10.0, 0.0, 5.0, 20.0) == 30.0 and run_rate(10.0, 5.0, 5.0, 20.0) == 0.0
    assert run_rate_q(0.0) == RUN_RATE_Q[0][1] and run_rate_q(1.0) == RUN_RATE_Q[-1][1]
    assert run_rate_q(0.375) == pytest.approx((RUN_RATE_Q[0][1] + RUN_RATE_Q[1][1]) / 2)


def test_default_seasonal_forecaster_also_recovers_a_constant_rate():
    rate = 0.002
    cost = CostProjector()
    now = feed(cost, rate, 3 * 86400)
    day, month = cost.project()
    assert month.point == pytest.approx(rate * (month_end(now) - now), rel=1e-3)
    assert month.lower <= month.point <= month.upper


def test_noisy_cost_gives_a_wider_interval_that_scales_with_the_remaining_time():
    cost = CostProjector(HoltWintersForecaster(season=0, horizon=24), step_seconds=3600)
    feed(cost, 0.002, 2 * 86400, every=600, noise=0.3)
    day, month = cost.project()
    assert day.upper - day.lower > 0
    assert (month.upper - month.lower) > 2 * (day.upper - day.lower)
    assert day.lower >= 0


def test_gaps_are_learned_as_zero_cost_buckets():
    cost = CostProjector(HoltWintersForecaster(season=0, horizon=4, fallback_alpha=0.5))
    cost.learn_one(5.0, T0)
    cost.learn_one(5.0, T0 + 3 * 3600)
    assert cost.forecaster.n_model == 3  # buckets 5, 0, 0 closed; the fourth is open
    assert cost.forecaster.fallback.get() == pytest.approx(5.0 * 0.5 * 0.5)


def test_a_long_silence_learns_at_most_a_week_of_zeros_and_keeps_the_daily_phase():
    for gap_days in (10, 90 * 365):  # a meter back after ten days; a timestamp 90 years ahead
        cost = CostProjector(step_seconds=3600)
        cost.learn_one(5.0, T0 + 1800)
        cost.learn_one(2.0, T0 + gap_days * 86400 + 7200)
        learned = cost.forecaster.n_model  # the first bucket, then at most 8 days of zeros
        assert 7 * 24 < learned - 1 <= 8 * 24  # not one per hour of the gap
        skipped = cost.bucket - T0 - learned * 3600
        assert cost.bucket == T0 + gap_days * 86400 + 7200 and skipped % 86400 == 0  # whole days


def test_spent_resets_at_the_utc_day_boundary():
    cost = CostProjector()
    cost.learn_one(3.0, T0 + 86400 - 1)
    cost.learn_one(2.0, T0 + 86400)
    day, month = cost.project()
    assert day.spent == 2.0 and month.spent == 5.0


def _usage(name: str, rates: list[float], days: int = 8) -> "LoadSeries":
    """Five-minute usage whose rate changes by day (cycling through ``rates``)."""
    from models.evaluation.series import LoadSeries

    values = [rates[(i // 288) % len(rates)] for i in range(days * 288)]
    return LoadSeries(name, "usage", [T0 + 300.0 * i for i in range(days * 288)], values)


def test_period_projection_methods_on_a_constant_rate_are_exact():
    from models.evaluation.cost_projection import METHODS, project_series

    for p in project_series(_usage("flat", [3.0])):
        assert p.actual == pytest.approx(3.0 * 8 * 288) and p.spent == pytest.approx(p.fraction * p.actual)
        for method in METHODS[1:]:  # the run rates; the Holt-Winters projector is checked above
            assert p.projected[method] == pytest.approx(p.actual)


def test_cost_cross_validation_holds_each_series_out_of_its_method_and_interval():
    from models.evaluation.cost_projection import cross_validate, project_series

    # a rate that doubles on the last days: "recent" methods see it, the run rate does not
    series = [_usage(f"s{k}", [1.0 + k] * 5 + [2.0 + 2 * k] * 3) for k in range(6)] + [_usage("flat", [4.0])]
    held = cross_validate([p for s in series for p in project_series(s, fractions=(0.75,))])
    assert {h.name for h in held} == {s.name for s in series} and len(held) == len(series)
    flat = next(h for h in held if h.name == "flat")
    assert flat.method.startswith("recent") and flat.error == pytest.approx(0.0)
    assert flat.upper - flat.lower == pytest.approx(0.0)  # the others' recent projections were exact too


def test_calendar_months_are_projected_on_their_days_7_14_21_from_the_past_only():
    from models.evaluation.cost_projection import METHODS, project_months
    from models.evaluation.series import LoadSeries

    start = datetime(2024, 1, 20, tzinfo=timezone.utc).timestamp()  # whole February and March, part of January/April
    hours = int((datetime(2024, 4, 5, tzinfo=timezone.utc).timestamp() - start) // 3600)
    # a rate of 1 per hour, 3 per hour from March 10th: March's day-7 run rate is exact, its day 14 is not
    march10 = datetime(2024, 3, 10, tzinfo=timezone.utc).timestamp()
    ts = [start + 3600.0 * i for i in range(hours)]
    projections = project_months(LoadSeries("s", "usage", ts, [3.0 if t >= march10 else 1.0 for t in ts]), fold="src")
    assert [(p.period, p.fraction) for p in projections] == [(m, d / 28) for m in ("2024-02", "2024-03") for d in (7, 14, 21)]
    assert all(p.fold == "src" for p in projections)
    february, march = projections[:3], projections[3:]
    for p in february:
        assert p.actual == pytest.approx(29 * 24) and p.spent == pytest.approx(28 * 24 * p.fraction)
        for method in METHODS[1:]:
            assert p.projected[method] == pytest.approx(p.actual)  # a constant rate: every run rate is exact
    assert march[0].actual == pytest.approx(9 * 24 + 3 * 22 * 24)
    assert march[0].projected["run-rate"] == pytest.approx(31 * 24)  # on day 7 the step up is still in the future
    assert march[1].projected["recent-2d"] == pytest.approx(9 * 24 + 3 * 5 * 24 + 3 * 17 * 24)  # spent + the last 2 days' rate


def test_sources_priced_two_ways_are_held_out_together():
    from models.evaluation.cost_projection import cross_validate, project_series, source_of

    assert source_of("exchange-2_cpc_results") == source_of("exchange-2_cpm_results") == "exchange-2"
    assert source_of("ec2_cpu_utilization_24ae8d") != source_of("rds_cpu_utilization_cc0c53")
    # twins of one source that no other source resembles: held out together, neither helps the other
    series = [_usage(f"exchange-{k}_cpc_results", [1.0 + k] * 8) for k in range(5)]
    twins = [_usage(f"exchange-9_{kind}_results", [1.0] * 5 + [9.0] * 3) for kind in ("cpc", "cpm")]
    held = cross_validate([p for s in series + twins for p in project_series(s, fractions=(0.75,), fold=source_of(s.name))])
    twin = [h for h in held if h.name.startswith("exchange-9")]
    assert len(twin) == 2 and all(h.error > 0.05 for h in twin)  # chosen on flat sources: the jump is missed
    held_apart = cross_validate([p for s in series + twins for p in project_series(s, fractions=(0.75,))])
    assert all(h.error < 0.01 for h in held_apart if h.name.startswith("exchange-9"))  # each learns from its twin
