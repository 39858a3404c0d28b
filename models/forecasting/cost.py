"""Projected cost for the rest of the current UTC day and month.

The **month** is projected at the run rate: the cost spent in the month divided by the time
it accrued over (since the month began, or since the series' first point if it began later),
times the time left (:func:`run_rate`). Held out on usage series priced as cost it is off by
16 / 14 / 7 % at 25 / 50 / 75 % of the period, against 31 / 27 / 15 % for the day model's
profile repeated (``m1 eval cost``, docs/benchmarks-forecast.md, which scores this same
function). Its interval is ``point +- q * point``, ``q`` the split-conformal quantile
(:data:`RUN_RATE_Q`) of the relative error of the projected rest on those series at the share
of the period elapsed (interpolated between 25, 50 and 75 %, held at the ends). In the first
:data:`MIN_RUN_RATE_SECONDS` of a month's accrual the rate has under a day to average over (a
daily profile biases it), so the month is projected by the day model below, as the day is.

Metered cost points ``(value, t)`` (the cost accrued at epoch-seconds ``t``) are summed
into UTC-aligned buckets of ``step_seconds``; each closed bucket is learned by a
per-series :class:`~models.forecasting.base.Forecaster` (buckets without points are
learned as 0; a point older than the open bucket is added to it). A silence longer than
:data:`MAX_GAP_SECONDS` is learned as that long a stretch of zeros: whole days beyond it are
skipped (keeping the daily phase), so a meter that comes back after months, or a wrong
timestamp years ahead, costs at most a week of buckets instead of one per hour of the gap. A forecast bucket is a
rate: the remaining cost is the sum of the step forecasts, each weighted by the share
of its bucket that lies between ``now`` and the end of the day or month.

The **day** (and a young month): the interval adds the steps' conformal half-widths with the same weights. That is exact
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
>>> round(day.point, 6), round(month.point, 2), round(month.spent, 2)  # 1 minute left today; January: the last point's
(0.01, 403.2, 43.2)
>>> month.method, round(run_rate(43.2, 0.0, 3 * DAY, month.until), 2)  # minute is spent, 28 days at 0.01 a minute are not
('run-rate', 403.2)
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
#: The month is projected at its run rate once its cost has accrued over at least this long.
MIN_RUN_RATE_SECONDS = DAY
#: ``(share of the period elapsed, q)``: the run rate's interval is ``point +- q * point``. ``q``
#: is the split-conformal 90 % quantile (rank ``ceil(15 * 0.9)`` of 14: the largest) of
#: ``|actual - projected| / projected rest`` over the 14 usage series of ``m1 eval cost`` at
#: 25 / 50 / 75 % of their span; held out (leave one series out) such intervals covered 13 of 14
#: at each share. For another coverage than 0.9 it is not recalibrated.
RUN_RATE_Q = ((0.25, 0.895), (0.5, 0.750), (0.75, 1.313))


class Projection(NamedTuple):
    """Cost already ``spent`` in the period and the forecast of the rest until ``until``."""

    until: float
    spent: float
    point: float
    lower: float
    upper: float
    method: str = "forecast"  # or "run-rate"


def day_end(t: float) -> float:
    """Epoch-seconds of the next UTC midnight after ``t``."""
    return (math.floor(t / DAY) + 1) * DAY


def month_end(t: float) -> float:
    """Epoch-seconds of the first instant of the UTC month after ``t``."""
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return day_end(t) + (calendar.monthrange(d.year, d.month)[1] - d.day) * DAY


def month_start(t: float) -> float:
    """Epoch-seconds of the first instant of the UTC month of ``t``."""
    return day_end(t) - datetime.fromtimestamp(t, tz=timezone.utc).day * DAY


def run_rate(spent: float, since: float, now: float, until: float) -> float:
    """The cost from ``now`` to ``until`` at the mean rate of ``spent`` over ``since``..``now``
    (0 when no time has passed). The one implementation of the run rate: the stream's month
    projection and ``m1 eval cost``'s ``run-rate`` both call it.

    >>> run_rate(10.0, 0.0, 5.0, 20.0)
    30.0
    """
    return spent / (now - since) * max(until - now, 0.0) if now > since else 0.0


def run_rate_q(elapsed_share: float) -> float:
    """:data:`RUN_RATE_Q` at ``elapsed_share`` of the period (linear between its points, held at the ends)."""
    points = RUN_RATE_Q
    if elapsed_share <= points[0][0]:
        return points[0][1]
    for (x0, q0), (x1, q1) in zip(points, points[1:]):
        if elapsed_share <= x1:
            return q0 + (q1 - q0) * (elapsed_share - x0) / (x1 - x0)
    return points[-1][1]


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
        self.month_since: float | None = None  # when the month's cost began to accrue
        self.gap = 0.0  # seconds between the last two points

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
            self.month_since = t if self.last_t is None else month_start(t)
        self.bucket_sum += value
        self.day_spent += value
        self.month_spent += value
        if self.last_t is not None and t > self.last_t:
            self.gap = t - self.last_t
        self.last_t = t if self.last_t is None else max(t, self.last_t)

    @property
    def spacing(self) -> float:
        """The time a point's cost covers: the last gap between points, at most one bucket
        (0 before the second point)."""
        return min(self.gap, self.step)

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
        return self.remaining(now, day_end(now), self.day_spent), self.month(now)

    def month(self, now: float) -> Projection:
        """The rest of the UTC month from ``now``: at the run rate (module docstring), or in the
        month's first :data:`MIN_RUN_RATE_SECONDS` by the forecaster. A point's cost covers one
        :attr:`spacing` from its time, so the cost spent at the last point has accrued until one
        spacing after it."""
        until = month_end(now)
        since = month_start(now) if self.month_since is None else max(self.month_since, month_start(now))
        accrued = min(max(now, (self.last_t or now) + self.spacing), until)
        if accrued - since < MIN_RUN_RATE_SECONDS:
            return self.remaining(now, until, self.month_spent)
        point = run_rate(self.month_spent, since, accrued, until)
        half = run_rate_q((accrued - since) / (until - since)) * point
        return Projection(until, self.month_spent, point, max(point - half, 0.0), point + half, "run-rate")

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
