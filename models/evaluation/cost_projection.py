"""Period-end cost projections on usage series, scored against the cost that accrued.

A usage series becomes metered cost at a constant unit price (:data:`PROXIES`): each point's
value times the price is the cost accrued at its time. The *period* is the span of the data
(no shared usage series spans a calendar month, so the calendar days 7/14/21 of a month cannot
be scored; the fractions 25/50/75 % of the span stand in for them). At each fraction a
projection of the period total is made from the points before that time: the cost spent so
far plus a projection of the rest, by each of :data:`METHODS`:

* ``cost-projector``: :meth:`~models.forecasting.cost.CostProjector.remaining`, the stream's
  forecaster path (hourly buckets, Holt-Winters with a daily season; the stream's day
  projection, and its month's in the month's first day);
* ``run-rate``: :func:`~models.forecasting.cost.run_rate`, the stream's month projection: the
  mean rate since the period started (the last point's cost covers one spacing after it, as
  in the stream), for the rest of it;
* ``recent-<k>d``: the mean rate of the last ``k`` days.

:func:`cross_validate` chooses the method, and the interval, leave-one-series-out: the method
with the lowest mean error on the other series, and a 90 % split-conformal interval
``projected +- q * (projected rest)``, ``q`` the conformal quantile of the other series'
``|actual - projected| / projected rest``. MAPE and coverage are over series; the unit price
cancels out of both.

>>> from models.evaluation.series import LoadSeries
>>> flat = LoadSeries("flat", "g", [300.0 * i for i in range(4 * 288)], [2.0] * (4 * 288))
>>> p = project_series(flat, fractions=(0.5,))[0]
>>> p.fraction, p.spent, p.actual, {m: round(v, 6) for m, v in p.projected.items()}["recent-1d"]
(0.5, 1152.0, 2304.0, 2304.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.evaluation.series import LoadSeries
from models.forecasting.cost import CostProjector, run_rate

# series name pattern -> (what a point measures, unit price, why it is a cost proxy)
PROXIES: dict[str, tuple[str, str]] = {
    r"request_count": ("requests per 5 minutes", "$1.00 per million requests (request-metered gateway / load-balancer billing)"),
    r"network_in|NetworkIn": ("bytes received per 5 minutes", "$0.01 per GB (metered inter-zone data transfer)"),
    r"cpu_utilization": ("average CPU % over 5 minutes", "$0.04 per vCPU-hour consumed (usage-based compute or "
                                                         "internal showback of consumed CPU)"),
}


def is_cost_proxy(name: str) -> bool:
    """Whether a series name matches one of :data:`PROXIES`."""
    return any(re.search(pattern, name) for pattern in PROXIES)


DAY = 86400.0
METHODS = ("cost-projector", "run-rate", "recent-0.5d", "recent-1d", "recent-2d", "recent-3d")


@dataclass(frozen=True)
class PeriodProjection:
    """The projections of one series' period total made at ``fraction`` of the period, by method."""

    name: str
    fraction: float
    spent: float
    actual: float
    projected: dict[str, float]


def recent_rate(ts: np.ndarray, values: np.ndarray, now: float, days: float) -> float:
    """Cost per second over the last ``days`` before ``now`` (or since the first point)."""
    since = max(float(ts[0]), now - days * DAY)
    return float(values[ts >= since].sum()) / (now - since)


def project_series(series: LoadSeries, fractions: Sequence[float] = (0.25, 0.5, 0.75),
                   step_seconds: int = 3600) -> list[PeriodProjection]:
    """Project ``series``' period total at each of ``fractions`` of its span (module docstring)."""
    ts, values = np.asarray(series.ts), np.asarray(series.values, dtype=np.float64)
    spacing = float(np.median(np.diff(ts)))
    start, end = float(ts[0]), float(ts[-1]) + spacing  # the last point accrues until one spacing after it
    cost = CostProjector(step_seconds=step_seconds)
    out, i = [], 0
    for fraction in sorted(fractions):
        now = start + fraction * (end - start)
        while i < len(ts) and ts[i] < now:
            cost.learn_one(float(values[i]), float(ts[i]))
            i += 1
        seen, spent = ts[:i], float(values[:i].sum())
        accrued = float(ts[i - 1]) + spacing if i else start  # the points before now cover until then
        projected = {"cost-projector": cost.remaining(now, end).point, "run-rate": run_rate(spent, start, accrued, end)}
        for method in METHODS[2:]:
            projected[method] = recent_rate(seen, values[:i], now, float(method[7:-1])) * (end - now)
        out.append(PeriodProjection(series.name, fraction, spent, float(values.sum()),
                                    {m: spent + rest for m, rest in projected.items()}))
    return out


def error(p: PeriodProjection, method: str) -> float:
    """Absolute percentage error (as a fraction) of ``method``'s projected total."""
    return abs(p.projected[method] - p.actual) / abs(p.actual)


def conformal_quantile(scores: Sequence[float], coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest score (the largest when that rank is past ``n``).

    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], 0.5)
    0.3
    """
    ranked = sorted(scores)
    return ranked[min(math.ceil((len(ranked) + 1) * coverage) - 1, len(ranked) - 1)]


@dataclass(frozen=True)
class HeldOut:
    """One series' held-out projection at one fraction: the method chosen without it, its interval."""

    name: str
    fraction: float
    method: str
    projected: float
    lower: float
    upper: float
    actual: float

    @property
    def error(self) -> float:
        return abs(self.projected - self.actual) / abs(self.actual)

    @property
    def covered(self) -> bool:
        return self.lower <= self.actual <= self.upper


def cross_validate(projections: Sequence[PeriodProjection], coverage: float = 0.9) -> list[HeldOut]:
    """Leave-one-series-out method choice and intervals (module docstring), per series and fraction."""
    names = sorted({p.name for p in projections})
    out = []
    for name in names:
        train = [p for p in projections if p.name != name]
        method = min(METHODS, key=lambda m: sum(error(p, m) for p in train))
        for p in (p for p in projections if p.name == name):
            same = [t for t in train if t.fraction == p.fraction]
            q = conformal_quantile([abs(t.actual - t.projected[method]) / max(t.projected[method] - t.spent, 1e-12)
                                    for t in same], coverage)
            rest = max(p.projected[method] - p.spent, 0.0)
            out.append(HeldOut(name, p.fraction, method, p.projected[method], p.projected[method] - q * rest,
                               p.projected[method] + q * rest, p.actual))
    return out
