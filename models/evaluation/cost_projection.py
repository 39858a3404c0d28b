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
from datetime import datetime, timezone
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
    r"_cpc_results": ("an ad exchange's cost per click, hourly", "its own price, times a constant number of clicks "
                                                                "bought every hour (a price, not usage)"),
    r"_cpm_results": ("an ad exchange's cost per 1000 impressions, hourly", "its own price, times a constant number of "
                                                                           "impressions bought every hour (a price, not "
                                                                           "usage)"),
}


def is_cost_proxy(name: str) -> bool:
    """Whether a series name matches one of :data:`PROXIES`."""
    return any(re.search(pattern, name) for pattern in PROXIES)


def source_of(name: str) -> str:
    """The series name without its proxy's pattern: series of one source priced two ways (an
    exchange's CPC and CPM) share it, and are held out together.

    >>> source_of("exchange-2_cpc_results"), source_of("exchange-2_cpm_results")
    ('exchange-2', 'exchange-2')
    """
    return next((re.sub(pattern, "", name) for pattern in PROXIES if re.search(pattern, name)), name)


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
    period: str = ""  # the calendar month, for :func:`project_months`
    fold: str = ""  # held out together in :func:`cross_validate` (default: the series)


def recent_rate(ts: np.ndarray, values: np.ndarray, now: float, days: float) -> float:
    """Cost per second over the last ``days`` before ``now`` (or since the first point)."""
    since = max(float(ts[0]), now - days * DAY)
    return float(values[ts >= since].sum()) / (now - since)


def project_series(series: LoadSeries, fractions: Sequence[float] = (0.25, 0.5, 0.75), fold: str = "",
                   step_seconds: int = 3600) -> list[PeriodProjection]:
    """Project ``series``' period total at each of ``fractions`` of its span (module docstring)."""
    start, end = float(series.ts[0]), float(series.ts[-1]) + _spacing(series)  # the last point accrues one spacing
    return project_periods(series, [(start, end, [(f, start + f * (end - start)) for f in sorted(fractions)])],
                           step_seconds, fold)


def project_months(series: LoadSeries, days: Sequence[int] = (7, 14, 21), fold: str = "",
                   step_seconds: int = 3600) -> list[PeriodProjection]:
    """Project each calendar month (UTC) that ``series`` covers whole, after each of ``days`` whole
    days of it; a projection's ``fraction`` is ``day / 28`` (day 14 is 0.5, as in
    :func:`project_series`), its ``period`` the month (``YYYY-MM``)."""
    spacing = _spacing(series)
    first, last = float(series.ts[0]), float(series.ts[-1]) + spacing
    when = datetime.fromtimestamp(first, timezone.utc)
    month = datetime(when.year, when.month, 1, tzinfo=timezone.utc)
    periods = []
    while True:
        following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=timezone.utc)
        start, end = month.timestamp(), following.timestamp()
        if end > last + spacing:
            break
        if start >= first - spacing:
            periods.append((start, end, [(d / 28, start + d * DAY) for d in sorted(days)], month.strftime("%Y-%m")))
        month = following
    return project_periods(series, periods, step_seconds, fold)


def _spacing(series: LoadSeries) -> float:
    return float(np.median(np.diff(np.asarray(series.ts))))


def project_periods(series: LoadSeries, periods: Sequence[tuple], step_seconds: int = 3600,
                    fold: str = "") -> list[PeriodProjection]:
    """Projections of each period ``(start, end, [(fraction, at), ...][, label])`` (in time
    order) by every method, each made at ``at`` from the points before it (module docstring)."""
    ts, values = np.asarray(series.ts), np.asarray(series.values, dtype=np.float64)
    spacing = _spacing(series)
    cost = CostProjector(step_seconds=step_seconds)
    out, i = [], 0
    for start, end, cuts, *label in periods:
        inside = (ts >= start) & (ts < end)
        for fraction, now in cuts:
            while i < len(ts) and ts[i] < now:
                cost.learn_one(float(values[i]), float(ts[i]))
                i += 1
            seen = ts[:i]
            spent = float(values[:i][seen >= start].sum())
            accrued = float(ts[i - 1]) + spacing if i else start  # the points before now cover until then
            projected = {"cost-projector": cost.remaining(now, end).point,
                         "run-rate": run_rate(spent, start, max(accrued, start), end)}
            for method in METHODS[2:]:
                projected[method] = recent_rate(seen, values[:i], now, float(method[7:-1])) * (end - now)
            out.append(PeriodProjection(series.name, fraction, spent, float(values[inside].sum()),
                                        {m: spent + rest for m, rest in projected.items()}, label[0] if label else "",
                                        fold))
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
    period: str
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
    folds = sorted({p.fold or p.name for p in projections})
    out = []
    for fold in folds:
        train = [p for p in projections if (p.fold or p.name) != fold]
        method = min(METHODS, key=lambda m: sum(error(p, m) for p in train))
        for p in (p for p in projections if (p.fold or p.name) == fold):
            same = [t for t in train if t.fraction == p.fraction]
            q = conformal_quantile([abs(t.actual - t.projected[method]) / max(t.projected[method] - t.spent, 1e-12)
                                    for t in same], coverage)
            rest = max(p.projected[method] - p.spent, 0.0)
            out.append(HeldOut(p.name, p.period, p.fraction, method, p.projected[method], p.projected[method] - q * rest,
                               p.projected[method] + q * rest, p.actual))
    return out
