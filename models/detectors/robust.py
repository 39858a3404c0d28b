"""Robust (median / MAD) z-score over a bounded window, optionally of seasonal differences.

The raw measure is ``|y - median(window)| / spread`` where ``y`` is the value (or,
with ``season`` seconds set, the difference to the value one season earlier) and
the window holds the previous ``window`` values of ``y``. With ``season_halfwidth``
``k > 0`` the value one season earlier is the *median* of the ``2k + 1`` values
around that time, so a lone spike yesterday does not echo as an anomaly today and
a daily spike that drifts by a few points is not a break of the pattern. The spread is
``1.4826 * MAD`` with a floor (a fraction of the window's range, of the median's
magnitude, and an absolute floor), so a flat line never produces a huge score
from a tiny wiggle. Memory is bounded: ``window`` floats plus one season of values.

The windows are kept sorted as they slide (:class:`~models.sorted_window.SortedWindow`), so a point costs
O(log window) comparisons plus one memmove, not a median over the whole window; the
median and MAD are bit-identical to ``np.median``'s.

>>> import numpy as np
>>> from models.detectors.robust import RobustZ
>>> rng = np.random.default_rng(1)
>>> xs = rng.normal(50, 2, 600); xs[500] = 90.0
>>> scores = RobustZ(window=300).score_learn_many(xs, 300.0 * np.arange(600))
>>> int(np.argmax(scores)), bool(scores[500] > 0.6 > scores[300:500].max())
(500, True)
>>> flat = RobustZ().score_learn_many(np.full(400, 7.0), 60.0 * np.arange(400))
>>> float(flat.max())
0.0
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any

import numpy as np

from models.detectors.base import CalibratedDetector
from models.sorted_window import SortedWindow

MAD_TO_STD = 1.4826
_UNKNOWN: Any = object()  # learn_raw's y not computed by the caller


class RobustZ(CalibratedDetector):
    """Median/MAD z-score of the value, or of its seasonal difference, then calibrated."""

    def __init__(
        self,
        window: int = 1000,
        season: float | None = None,
        max_season_points: int = 4096,
        range_floor: float = 0.01,
        rel_floor: float = 1e-3,
        abs_floor: float = 1e-9,
        min_points: int = 20,
        season_halfwidth: int = 0,
        **calibration: float,
    ):
        super().__init__(**calibration)  # type: ignore[arg-type]
        self.window = window
        self.season = season
        self.max_season_points = max_season_points
        self.range_floor = range_floor
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self.min_points = min_points
        self.season_halfwidth = season_halfwidth
        self.hist = SortedWindow(window)  # past y
        # past x (for the range floor): the same window when y is x
        self.values = self.hist if season is None else SortedWindow(window)
        self.lag: int | None = None if season is None else 0  # season in points, set from the first gaps
        self.past: deque[float] = deque()  # last `lag + season_halfwidth` values of x
        self._t0: list[float] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also loads checkpoints from before :class:`SortedWindow` (``hist``/``values`` deques)."""
        for name in ("hist", "values"):
            if isinstance(state[name], deque):
                state[name] = SortedWindow(state["window"], state[name])
        self.__dict__.update(state)

    # -- seasonal bookkeeping ----------------------------------------------
    def _settle_lag(self, t: float) -> None:
        if self.lag != 0 or self.season is None:
            return
        self._t0.append(t)
        if len(self._t0) >= 11:
            step = float(np.median(np.diff(self._t0)))
            lag = int(round(self.season / step)) if step > 0 else 0
            k = self._k
            self.lag = lag if max(2, k + 1) <= lag <= self.max_season_points else -1  # -1: seasonless
            self.past = deque(self.past, maxlen=max(self.lag + k, 1))
            self._t0 = []

    @property
    def _k(self) -> int:
        return int(getattr(self, "season_halfwidth", 0))  # 0 in checkpoints from before the option

    def _y(self, x: float) -> float | None:
        """The series the z-score is computed on: x, or x minus (the median around) x one season ago."""
        if self.season is None or (self.lag is not None and self.lag < 0):
            return x
        k = self._k
        if not self.lag or len(self.past) < self.lag + k:
            return None
        if k == 0:
            return x - self.past[0]
        # past holds x[t-lag-k] .. x[t-1]: its first 2k+1 values surround x[t-lag]
        return x - sorted(islice(self.past, 2 * k + 1))[k]  # the median of an odd count

    def _spread(self, med: float, mad: float, rng: float) -> float:
        return max(MAD_TO_STD * mad, self.range_floor * rng, self.rel_floor * abs(med), self.abs_floor)

    # -- raw measure --------------------------------------------------------
    def _raw_y(self, y: float | None) -> float:
        if y is None or len(self.hist) < self.min_points:
            return float("nan")
        med = self.hist.median()
        return abs(y - med) / self._spread(med, self.hist.mad(med), self.values.range())

    def raw_one(self, x: float, t: float) -> float:
        return self._raw_y(self._y(x))

    def learn_raw(self, x: float, t: float, y: Any = _UNKNOWN) -> None:
        """Learn ``x``; ``y`` is ``self._y(x)`` if the caller computed it before this call."""
        lag = self.lag
        self._settle_lag(t)
        if y is _UNKNOWN or self.lag != lag:
            y = self._y(x)
        if y is not None:
            self.hist.push(y)
        if self.values is not self.hist:
            self.values.push(x)
        if self.season is not None and self.lag != -1:
            self.past.append(x)
            if self.lag == 0 and len(self.past) > self.max_season_points + self._k:
                self.past.popleft()

    def raw_learn_one(self, x: float, t: float) -> float:
        """Raw measure of ``x``, then learn it, computing its ``y`` once. Once the season's lag
        is settled (or without a season) this is ``_raw_y`` and ``learn_raw`` inlined: the
        stream's per-point path."""
        season, lag = self.season, self.lag
        if season is not None and lag == 0:  # the lag is still being measured
            y = self._y(x)
            raw = self._raw_y(y)
            self.learn_raw(x, t, y)
            return raw
        if season is None or lag < 0:  # lag is not None once settled: _y(x), inlined
            y = x
        else:
            k, past = self._k, self.past
            if len(past) < lag + k:
                y = None
            elif k == 0:
                y = x - past[0]
            else:
                y = x - sorted(islice(past, 2 * k + 1))[k]
        hist = self.hist
        if y is None or len(hist) < self.min_points:
            raw = float("nan")
        else:
            med, mad = hist.median_mad()
            spread = MAD_TO_STD * mad  # _spread(): max(...) as the comparisons max makes
            floor = self.range_floor * self.values.range()
            if floor > spread:
                spread = floor
            floor = self.rel_floor * abs(med)
            if floor > spread:
                spread = floor
            floor = self.abs_floor
            if floor > spread:
                spread = floor
            raw = abs(y - med) / spread
        if y is not None:
            hist.push(y)
        if self.values is not hist:
            self.values.push(x)
        if season is not None and lag != -1:
            self.past.append(x)
        return raw


class SeasonalRobustZ(RobustZ):
    """:class:`RobustZ` of the difference to the median of the 5 values around one day earlier.

    ``season_halfwidth=2`` (median of x[t-P-2 .. t-P+2]) instead of the bare
    x[t-P]: 59.4 instead of 54.2 NAB standard alone (docs/benchmarks-nab.md).
    """

    def __init__(self, season: float = 86400.0, season_halfwidth: int = 2, **kwargs: float):
        super().__init__(season=season, season_halfwidth=season_halfwidth, **kwargs)  # type: ignore[arg-type]
