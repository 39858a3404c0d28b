"""Projected cost for the rest of the current UTC day and month.

Metered cost points ``(value, t)`` (the cost accrued at epoch-seconds ``t``) are summed
into UTC-aligned buckets of ``step_seconds``; each closed bucket is learned by a
per-series :class:`~models.forecasting.base.Forecaster` (buckets without points are
learned as 0; a point older than the open bucket is added to it). A silence longer than
:data:`MAX_GAP_SECONDS` is learned as that long a stretch of zeros: whole days beyond it are
skipped (keeping the daily phase), so a meter that comes back after months, or a wrong
timestamp years ahead, costs at most a week of buckets instead of one per hour of the gap. A forecast bucket is a
rate: the remaining cost is the sum of the step forecasts, each weighted by the share
of its bucket that lies between ``now`` and the end of the day or month.

The interval adds the steps' conformal half-widths with the same weights. That is exact
if the step errors move together (comonotone) and conservative otherwise; it is the right
assumption here because multi-step errors mostly come from a mis-estimated level or
season, which pushes every remaining step the same way. Adding in quadrature (independent
errors) would be ~sqrt(steps) narrower, i.e. about 27x for a month of hourly buckets, and
would badly under-cover. Past the forecaster's ``horizon`` its forecasts repeat cyclically
(with the default one-day horizon, the next day's profile every day) and their residual
windows with them: extrapolating a Holt-Winters trend over weeks made month-end projections
several times worse on real usage (docs/benchmarks-forecast.md, ``m1 eval cost``). The lower
bound is clipped at 0 (cost does not go negative).

>>> from models.forecasting.cost import CostProjector
>>> from models.forecasting.holt_winters import HoltWintersForecaster
>>> cost = CostProjector(HoltWintersForecaster(season=0, horizon=24))
>>> for minute in range(3 * 24 * 60):  # 0.01 per minute from 1970-01-01
...     cost.learn_one(0.01, 60.0 * minute)
>>> day, month = cost.project()
>>> round(day.point, 6), round(month.point, 2), round(month.spent, 2)  # 1 minute left today, 28 days + 1 minute left in January
(0.01, 403.21, 43.2)
"""

from __future__ import annotations

import calendar
import math
from datetime import datetime, timezone
from typing import NamedTuple

from models.forecasting.base import Forecaster
from models.forecasting.holt_winters import HoltWintersForecaster

DAY = 86400
MAX_GAP_SECONDS = 7 * DAY


class Projection(NamedTuple):
    """Cost already ``spent`` in the period and the forecast of the rest until ``until``."""

    until: float
    spent: float
    point: float
    lower: float
    upper: float


def day_end(t: float) -> float:
    """Epoch-seconds of the next UTC midnight after ``t``."""
    return (math.floor(t / DAY) + 1) * DAY


def month_end(t: float) -> float:
    """Epoch-seconds of the first instant of the UTC month after ``t``."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return day_end(t) + (calendar.monthrange(d.year, d.month)[1] - d.day) * DAY


class CostProjector:
    """Buckets cost points, forecasts the buckets, projects the day and month remainders.

    The default forecaster is an additive Holt-Winters with a daily season (when
    ``step_seconds`` divides a day) and one day of per-step residual windows.
    """

    def __init__(self, forecaster: Forecaster | None = None, step_seconds: int = 3600):
        if step_seconds <= 0:
            raise ValueError("step_seconds must be positive")
        per_day = DAY // step_seconds if DAY % step_seconds == 0 else 0
        self.forecaster = forecaster or HoltWintersForecaster(
            alpha=0.2, beta=0.01, gamma=0.2, season=per_day if per_day > 1 else 0, horizon=max(per_day, 1)
        )
        self.step = step_seconds
        self.bucket: float | None = None
        self.bucket_sum = 0.0
        self.last_t: float | None = None
        self.day_spent = 0.0
        self.month_spent = 0.0

    def learn_one(self, value: float, t: float) -> None:
        """Add the cost ``value`` accrued at epoch-seconds ``t``."""
        start = math.floor(t / self.step) * self.step
        if self.bucket is None:
            self.bucket = start
        if start > self.bucket:
            self._close_bucket()
            gap = start - self.bucket
            if gap > MAX_GAP_SECONDS:  # skip whole days (or steps, without a daily season) beyond it
                unit = DAY if DAY % self.step == 0 else self.step
                self.bucket += (gap - MAX_GAP_SECONDS) // unit * unit
        while start > self.bucket:
            self._close_bucket()
        if self.last_t is None or t >= day_end(self.last_t):
            self.day_spent = 0.0
        if self.last_t is None or t >= month_end(self.last_t):
            self.month_spent = 0.0
        self.bucket_sum += value
        self.day_spent += value
        self.month_spent += value
        self.last_t = t if self.last_t is None else max(t, self.last_t)

    def _close_bucket(self) -> None:
        """Learn the open bucket's sum and open the next one."""
        self.forecaster.learn_one(self.bucket_sum, self.bucket)
        self.bucket += self.step
        self.bucket_sum = 0.0

    def project(self, now: float | None = None) -> tuple[Projection, Projection]:
        """(rest of the UTC day, rest of the UTC month) from ``now`` (default: the last point)."""
        if self.bucket is None or self.last_t is None:
            raise ValueError("no cost points learned yet")
        now = self.last_t if now is None else now
        return (
            self.remaining(now, day_end(now), self.day_spent),
            self.remaining(now, month_end(now), self.month_spent),
        )

    def remaining(self, now: float, until: float, spent: float = 0.0) -> Projection:
        """The cost from ``now`` to ``until`` (any period end), carrying ``spent`` along."""
        steps = max(math.ceil((until - self.bucket) / self.step), 1)
        ahead = self.forecaster.forecast(min(steps, self.forecaster.intervals.horizon))
        point = width = 0.0
        for k in range(steps):
            f = ahead[k % len(ahead)]  # past the horizon, its forecasts again (a day: the daily profile)
            lo = self.bucket + k * self.step
            share = max(0.0, min(lo + self.step, until) - max(lo, now)) / self.step
            point += share * f.point
            width += share * (f.upper - f.point)
        return Projection(until, spent, point, max(point - width, 0.0), point + width)
