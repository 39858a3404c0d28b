"""Replay a load series and compare each replica recommendation with its oracle.

The model learns every value. After the first ``warmup`` values, every ``window``
values is a decision: the policy recommends replicas for the planned peak of the next
``window`` values -- a :class:`~models.forecasting.peak.PeakForecaster`'s peak forecast,
or the largest of a per-step :class:`~models.forecasting.base.Forecaster`'s next
``window`` forecasts (their ``bound``: upper or point). The oracle is the replica count
the same policy gives the actual peak of those ``window`` values. A decision is *within
tolerance* if ``|rec - oracle| <= tolerance * oracle``; it is *under* if ``rec <
oracle`` and *overloaded* if ``rec`` replicas cannot serve the actual peak even without
headroom. The capacity per replica is ``capacity_fraction`` times the median of the
warm-up values, so nothing after the first decision is peeked at.

>>> from models.evaluation.scaling import evaluate_scaling
>>> from models.forecasting.holt_winters import HoltWintersForecaster
>>> from models.forecasting.peak import PeakForecaster
>>> report = evaluate_scaling([100.0] * 200, HoltWintersForecaster(season=0), window=12, warmup=48)
>>> report.decisions, report.share_within, report.capacity, report.mean_oracle
(12, 1.0, 10.0, 12.0)
>>> evaluate_scaling([100.0] * 200, PeakForecaster(window=12), window=12, warmup=48).share_within
1.0
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from models.forecasting.base import Forecaster
from models.forecasting.peak import PeakForecaster
from models.forecasting.scaling import ScalingPolicy


def within_tolerance(recommended: int, oracle: int, tolerance: float = 0.2) -> bool:
    """Whether ``recommended`` is within ``tolerance`` (a fraction) of ``oracle``."""
    return abs(recommended - oracle) <= tolerance * oracle + 1e-9


def warmup_capacity(warmup_values: Sequence[float], fraction: float = 0.1) -> float:
    """``fraction`` x the warm-up median (x the mean absolute value if the median is 0): the
    capacity per replica of the evaluations, fixed before the first decision."""
    base = statistics.median(warmup_values) or statistics.fmean(abs(v) for v in warmup_values)
    if base <= 0:
        raise ValueError("warm-up values are all zero: no capacity to scale from")
    return fraction * base


def warmup_policy(warmup_values: Sequence[float], capacity_fraction: float = 0.1, headroom: float = 0.2) -> ScalingPolicy:
    """The policy whose capacity per replica is :func:`warmup_capacity`."""
    return ScalingPolicy(capacity_per_replica=warmup_capacity(warmup_values, capacity_fraction), headroom=headroom)


def decision_points(n: int, warmup: int, window: int) -> range:
    """How many values have been seen at each decision: every ``window`` values from
    ``warmup`` on, while a whole window of ``n`` values is left to compare with."""
    return range(warmup, n - window + 1, window)


@dataclass(frozen=True)
class ScalingReport:
    """How the recommendations of one series compared with their oracles."""

    decisions: int
    share_within: float
    share_under: float
    share_overloaded: float
    mean_recommended: float
    mean_oracle: float
    capacity: float


def evaluate_scaling(
    values: Sequence[float],
    forecaster: Forecaster | PeakForecaster,
    window: int = 12,
    warmup: int = 288,
    capacity_fraction: float = 0.1,
    headroom: float = 0.2,
    tolerance: float = 0.2,
    bound: Literal["upper", "point"] = "upper",
) -> ScalingReport:
    """Replay ``values`` through ``forecaster`` and score its decisions (see module docstring)."""
    if warmup < 1 or warmup + window > len(values):
        raise ValueError("need 1 <= warmup and warmup + window <= len(values)")
    if isinstance(forecaster, PeakForecaster) and forecaster.window != window:
        raise ValueError(f"the peak forecaster's window ({forecaster.window}) is not the decision window ({window})")
    policy = warmup_policy(values[:warmup], capacity_fraction, headroom)
    decisions = decision_points(len(values), warmup, window)
    recommended: list[int] = []
    oracle: list[int] = []
    overloaded = 0
    for i, y in enumerate(values):
        forecaster.learn_one(y, float(i))
        seen = i + 1
        if seen in decisions:
            if isinstance(forecaster, PeakForecaster):
                replicas = policy.replicas_for(forecaster.forecast_peak())
            else:
                replicas = policy.recommend(forecaster.forecast(window), bound=bound).replicas
            peak = max(values[seen : seen + window])
            recommended.append(replicas)
            oracle.append(policy.replicas_for(peak))
            overloaded += replicas * policy.capacity_per_replica < peak
    n = len(oracle)
    return ScalingReport(
        decisions=n,
        share_within=sum(within_tolerance(r, o, tolerance) for r, o in zip(recommended, oracle)) / n,
        share_under=sum(r < o for r, o in zip(recommended, oracle)) / n,
        share_overloaded=overloaded / n,
        mean_recommended=statistics.fmean(recommended),
        mean_oracle=statistics.fmean(oracle),
        capacity=policy.capacity_per_replica,
    )


def hindsight_ceiling(
    values: Sequence[float], warmup: int, memory: int, window: int = 12, tolerance: float = 0.2
) -> tuple[int, int, int]:
    """An upper bound for planners that decide from the last ``memory`` window peaks.

    Each decision's *state* is the oracle replica counts of the ``memory`` windows before it;
    every decision of a state gets, in hindsight, the one recommendation within tolerance of
    the most of that state's oracles. Returns (decisions within tolerance, decisions, states).
    Policy, warm-up and decision points are those of :func:`evaluate_scaling` (default
    capacity and headroom); decisions with fewer than ``memory`` earlier windows are skipped.

    >>> hindsight_ceiling([1.0, 5.0] * 60, warmup=24, memory=1, window=1)  # alternation is predictable
    (96, 96, 2)
    """
    policy = warmup_policy(values[:warmup])
    decisions = [seen for seen in decision_points(len(values), warmup, window) if seen >= memory * window]
    by_state: dict[tuple[int, ...], list[int]] = defaultdict(list)
    def oracle(start: int) -> int:  # replicas for the peak of the window starting at ``start``
        return policy.replicas_for(max(values[start : start + window]))

    for seen in decisions:
        by_state[tuple(oracle(seen - j * window) for j in range(1, memory + 1))].append(oracle(seen))
    best = sum(
        max(sum(within_tolerance(r, o, tolerance) for o in oracles) for r in range(min(oracles), max(oracles) + 1))
        for oracles in by_state.values()
    )
    return best, len(decisions), len(by_state)
