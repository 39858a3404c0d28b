"""Plan the next window's peak load for a target overload rate (adaptive conformal quantiles).

An operator sets the *risk*: the share of decision windows whose actual peak may exceed the
capacity provisioned for them (``target``, e.g. 0.05). :class:`RiskPlanner` splits a series
into consecutive windows of ``window`` values (aligned to the values it has learned) and, at
the end of every window, plans the peak of the next one:

* ``base`` is the median of the last ``base_windows`` window peaks; with ``season > 0``, at
  least the peak of the window one season (``season`` windows, e.g. 24 one-hour windows for a
  day) before the one planned, so a load that repeats daily is planned from its last repeat;
* each finished window leaves a *score*, its peak against the base planned for it, in one of
  two scales (``scale``). ``"spread"``: ``(peak - base) / s`` with ``s`` an exponentially weighted
  mean of the absolute change between consecutive window peaks plus ``floor`` times an
  exponentially weighted mean ``m`` of the peaks (so a calm stretch plans tight and a
  turbulent one wide). ``"ratio"``: ``log((peak + c) / (base + c))`` with ``c = floor * m``
  (``c`` keeps an idle series with base 0 finite);
* the plan inverts the score at ``q``, the split-conformal quantile at level ``1 - alpha``
  of the last ``memory`` scores (rank ``ceil((n + 1)(1 - alpha))``; above ``n``, the largest):
  ``base + q * s`` or ``(base + c) * exp(q) - c``;
* with ``tail > 0``, a quantile that falls among the ``tail`` largest scores is read from an
  exponential tail fitted to them instead (less noisy for small targets: the empirical 99 %
  quantile of 100 scores is just the largest);
* ``alpha`` starts at ``target`` and is adapted online (adaptive conformal inference,
  Gibbs & Candes 2021): a window whose peak exceeded its plan lowers it by
  ``adapt_rate * (1 - target)``, any other raises it by ``adapt_rate * target``, so the
  long-run overload rate tracks ``target`` even when the score distribution drifts. With a
  ``capacity`` per replica, a miss is a peak above the whole replicas the plan buys
  (:meth:`provisioned`), so rounding up does not make the planner safer than asked;
* with replica limits (``min_replicas``, ``max_replicas``, as the stream's
  :class:`~models.forecasting.scaling.ScalingPolicy` clamps), a window whose replicas were set
  by a limit instead of the plan does not adapt ``alpha`` (its score is still learned: it
  describes the load, not the plan). Clamped at ``max_replicas``, the window overloads or not
  whatever the plan: counted as a miss, it would lower ``alpha`` window after window and raise
  the plans without bound (integrator wind-up: plans far above the limit, then
  over-provisioning for a long time once the load falls back under it); counted as a hit --
  the peak under a plan that was not bought -- it would teach the planner to plan lower from
  windows the service may have overloaded. Clamped at ``min_replicas``, the spare capacity is the limit's, not the plan's:
  absorbing it would wind ``alpha`` up during a long quiet spell and under-provision the
  first windows after it. So the long-run overload rate tracks ``target`` over the windows
  the planner decided; windows at a limit overload as the limit makes them.

Both means use the weight ``smoothing`` (a plain mean while fewer than ``1 / smoothing``
values have been seen, so an early window does not weigh as much as the whole history). State is bounded: ``memory`` scores,
``max(base_windows, season)`` peaks and a few floats. The defaults are the configuration that
leave-one-group-out selection chose in every fold for a 5 % target (seasonal base of 24
windows, adapt rate 0.05) and in 9 of 13 for 10 %; for 1 %, every fold chose them with 300
scores and adapt rate 0.02 (``m1 eval scaling``, docs/benchmarks-forecast.md, session 6).

>>> from models.forecasting.risk import RiskPlanner
>>> planner = RiskPlanner(window=2, target=0.25, base_windows=1, memory=8, adapt_rate=0.0, scale="ratio", floor=0.0)
>>> for y in [10, 10, 10, 10, 10, 20, 10, 10, 10, 10]:  # window peaks 10, 10, 20, 10, 10
...     planner.learn_one(y)
>>> planner.base, planner.forecast_peak()  # ratios seen 1, 2, 0.5, 1: the 75% quantile is 2
(10.0, 20.0)
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from typing import Literal

from models.sorted_window import SortedWindow


class RiskPlanner:
    """Plans window peaks so that a ``target`` share of windows overload (module docstring)."""

    def __init__(self, window: int = 12, target: float = 0.05, base_windows: int = 1, memory: int = 100,
                 adapt_rate: float = 0.05, scale: Literal["spread", "ratio"] = "spread", floor: float = 0.01,
                 smoothing: float = 0.05, capacity: float = 0.0, tail: int = 20, min_replicas: int = 1,
                 max_replicas: int | None = None, season: int = 24):
        if window < 1 or base_windows < 1 or memory < 1 or not 0.0 < target < 1.0:
            raise ValueError("need window, base_windows, memory >= 1 and 0 < target < 1")
        if min_replicas < 0 or (max_replicas is not None and max_replicas < min_replicas):
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if adapt_rate < 0 or floor < 0 or capacity < 0 or tail < 0 or season < 0 or not 0.0 < smoothing <= 1.0 or scale not in ("spread", "ratio"):
            raise ValueError("need adapt_rate, floor, capacity, tail, season >= 0, 0 < smoothing <= 1, scale 'spread' or 'ratio'")
        self.window = window
        self.target = target
        self.adapt_rate = adapt_rate
        self.scale = scale
        self.floor = floor
        self.smoothing = smoothing
        self.capacity = capacity
        self.tail = tail
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas  # None: no upper limit
        self.base_windows = base_windows
        self.season = season
        self.alpha = target
        self.peaks: deque[float] = deque(maxlen=max(base_windows, season))
        self.scores = SortedWindow(memory)
        self.level = 0.0  # EW mean of window peaks
        self.change = 0.0  # EW mean of |change| between consecutive window peaks
        self.base = 0.0
        self.plan = 0.0
        self.count = 0  # values learned in the open window
        self.open_peak = -math.inf
        self.windows = 0  # windows closed

    def learn_one(self, y: float, t: float | None = None) -> None:
        """Learn value ``y`` (``t`` is accepted for the forecaster interface and ignored); a
        non-finite value is skipped."""
        if not math.isfinite(y):
            return
        self.open_peak = max(self.open_peak, y)
        self.count += 1
        if self.count == self.window:
            self._close(self.open_peak)
            self.count, self.open_peak = 0, -math.inf

    def _close(self, peak: float) -> None:
        """Score the finished window against the plan made for it, then plan the next one."""
        self.windows += 1
        if self.peaks:
            self._score(peak)
            if self.adapt_rate and not self.clamped():
                missed = peak > self.provisioned()
                self.alpha = min(max(self.alpha + self.adapt_rate * (self.target - missed), 0.0), 1.0)
            weight = max(self.smoothing, 1.0 / (self.windows - 1))  # a plain mean until 1 / smoothing changes
            self.change += weight * (abs(peak - self.peaks[-1]) - self.change)
        self.level += max(self.smoothing, 1.0 / self.windows) * (peak - self.level)
        self.peaks.append(peak)
        self.base = self._base()
        self.plan = self._planned()

    def _base(self) -> float:
        """The median of the last ``base_windows`` peaks, at least the peak one season before the next window."""
        n = len(self.peaks)
        base = float(statistics.median(itertools.islice(self.peaks, max(n - self.base_windows, 0), n)))
        return max(base, self.peaks[n - self.season]) if self.season and n >= self.season else base

    def _unit(self) -> float:
        """``s`` (spread) or ``c`` (ratio) of the module docstring, for the current state."""
        return self.change + self.floor * abs(self.level) if self.scale == "spread" else self.floor * self.level

    def _score(self, peak: float) -> None:
        unit = self._unit()  # the unit the last plan was made with
        if self.scale == "spread" and self.windows == 2:
            return  # no change between peaks seen yet: the unit is the floor alone, a score ~100x too large
        if self.scale == "spread" and unit > 0:
            self.scores.push((peak - self.base) / unit)
        elif self.scale == "ratio" and self.base + unit > 0 and peak + unit > 0:
            self.scores.push(math.log((peak + unit) / (self.base + unit)))

    def _planned(self) -> float:
        """The base moved by the conformal quantile of the scores; the base itself before any score."""
        n = len(self.scores)
        if not n:
            return self.base
        rank = math.ceil((n + 1) * (1.0 - self.alpha) - 1e-9)
        if self.tail and 2 * self.tail <= n and rank > n - self.tail:
            q = self._tail_quantile(n)
        else:
            q = self.scores.kth_smallest(min(max(rank, 1), n))
        unit = self._unit()
        return self.base + q * unit if self.scale == "spread" else (self.base + unit) * math.exp(q) - unit

    def _tail_quantile(self, n: int) -> float:
        """The ``1 - alpha`` quantile of an exponential tail fitted to the ``tail`` largest of the
        ``n`` scores (peaks over the ``tail + 1``-th largest, ``u``): ``u + mean excess *
        ln(tail / (n * alpha))``, ``alpha`` at least ``1 / (n + 1)``."""
        u = self.scores.kth_smallest(n - self.tail)
        excess = sum(self.scores.kth_smallest(n - i) for i in range(self.tail)) / self.tail - u
        return u + excess * math.log(self.tail / (n * max(self.alpha, 1.0 / (n + 1))))

    def forecast_peak(self) -> float:
        """The load to plan the next window for (0 before the first window closes)."""
        return self.plan

    def _bought(self) -> int:
        """Whole replicas of ``capacity`` the plan asks for, at least one (before the limits)."""
        return max(math.ceil(self.plan / self.capacity - 1e-9), 1)

    def clamped(self) -> bool:
        """Whether the replica limits, not the plan, set the replicas of the open window (never
        without a ``capacity``)."""
        if not self.capacity:
            return False
        bought = self._bought()
        return bought < self.min_replicas or (self.max_replicas is not None and bought > self.max_replicas)

    def provisioned(self) -> float:
        """The capacity provisioned for the open window: whole replicas of ``capacity`` (at least
        one, within the replica limits), or the plan itself when ``capacity`` is 0. Misses are
        counted against it, so the adapted level also absorbs the spare capacity that rounding
        up to whole replicas gives."""
        if not self.capacity:
            return self.plan
        replicas = max(self._bought(), self.min_replicas)
        return (replicas if self.max_replicas is None else min(replicas, self.max_replicas)) * self.capacity


def target_for(service: str, default: float, per_service: dict[str, float]) -> float:
    """The overload target of ``service``: its entry in ``per_service``, else ``default``.

    >>> target_for("checkout", 0.05, {"checkout": 0.01}), target_for("search", 0.05, {"checkout": 0.01})
    (0.01, 0.05)
    """
    return per_service.get(service, default)
