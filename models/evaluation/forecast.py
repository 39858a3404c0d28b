"""Walk-forward forecast evaluation: MAPE, sMAPE and interval coverage by horizon step.

At every point the forecaster learns the value, then, once it has learned ``warmup``
values, forecasts ``horizon`` steps; each step-``h`` forecast is scored against the value
``h`` steps later. So the warm-up values are learned but never scored, and forecasts
whose target lies past the end of the series are dropped.

>>> from models.evaluation.forecast import walk_forward
>>> from models.forecasting.holt_winters import HoltWintersForecaster
>>> report = walk_forward([10.0] * 50, HoltWintersForecaster(season=0), horizon=3, warmup=10)
>>> [round(s.mape, 6) for s in report.steps], report.steps[0].n
([0.0, 0.0, 0.0], 40)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.forecasting.base import Forecaster


def mape(actual: Sequence[float], predicted: Sequence[float]) -> float:
    """Mean absolute percentage error, as a fraction, over the non-zero actuals (nan if none)."""
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    keep = a != 0
    return float(np.mean(np.abs(a[keep] - p[keep]) / np.abs(a[keep]))) if keep.any() else float("nan")


def smape(actual: Sequence[float], predicted: Sequence[float]) -> float:
    """Symmetric MAPE in [0, 2]: mean of ``2|a - p| / (|a| + |p|)``, a pair of zeros counting 0."""
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    denom = np.abs(a) + np.abs(p)
    terms = np.divide(2 * np.abs(a - p), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(np.mean(terms)) if len(terms) else float("nan")


def coverage(actual: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> float:
    """Share of actuals inside ``[lower, upper]``."""
    a = np.asarray(actual, dtype=np.float64)
    inside = (np.asarray(lower) <= a) & (a <= np.asarray(upper))
    return float(np.mean(inside)) if len(a) else float("nan")


@dataclass(frozen=True)
class StepScore:
    """Scores of the step-``step`` forecasts over ``n`` scored targets."""

    step: int
    n: int
    mape: float
    smape: float
    coverage: float
    mean_width: float


@dataclass(frozen=True)
class ForecastReport:
    """Per-step scores of one walk-forward run, plus cost per learn+forecast."""

    steps: list[StepScore]
    n_points: int
    warmup: int
    us_per_point: float


def walk_forward(values: Sequence[float], forecaster: Forecaster, horizon: int, warmup: int) -> ForecastReport:
    """Run ``forecaster`` over ``values`` and score its forecasts (see module docstring)."""
    n = len(values)
    rows: list[list[tuple[float, float, float, float]]] = [[] for _ in range(horizon)]
    elapsed = 0.0
    for i, y in enumerate(values):
        start = time.perf_counter()
        forecaster.learn_one(y, float(i))
        forecasts = forecaster.forecast(horizon) if i + 1 >= warmup else []
        elapsed += time.perf_counter() - start
        for f in forecasts:
            if i + f.step < n:
                rows[f.step - 1].append((values[i + f.step], f.point, f.lower, f.upper))
    steps = []
    for step, scored in enumerate(rows, start=1):
        a, p, lo, hi = (np.array(col) for col in zip(*scored)) if scored else ([],) * 4
        width = float(np.mean(np.asarray(hi) - np.asarray(lo))) if scored else float("nan")
        steps.append(StepScore(step, len(scored), mape(a, p), smape(a, p), coverage(a, lo, hi), width))
    return ForecastReport(steps=steps, n_points=n, warmup=warmup, us_per_point=1e6 * elapsed / max(n, 1))
