"""Online split-conformal prediction intervals, one residual window per horizon step.

Every forecast issued is kept until its targets arrive; then the absolute error of the
step-``h`` prediction joins the step-``h`` window (the ``window`` most recent errors).
The half-width for step ``h`` is the ``ceil((n + 1) * level_h)``-th smallest of those
``n`` errors, the split-conformal quantile; while ``n`` is too small for that rank the
largest error is used. ``level_h`` starts at ``coverage`` and, with ``adapt_rate > 0``, is
adapted online (adaptive conformal inference, Gibbs & Candes 2021): each miss raises it
by ``adapt_rate * coverage``, each hit lowers it by ``adapt_rate * (1 - coverage)``, so the
long-run miss rate tracks ``1 - coverage`` even when the errors drift (e.g. grow with
the level). Memory is bounded: ``horizon`` windows plus ``horizon`` pending forecasts
of ``horizon`` values.

>>> from models.forecasting.conformal import ConformalIntervals
>>> ci = ConformalIntervals(horizon=2, window=50, coverage=0.9)
>>> for y in range(20):
...     ci.observe(float(y))
...     ci.record([y + 0.5, y + 0.5])  # off by 0.5 at step 1, by 1.5 at step 2
>>> ci.half_width(1), ci.half_width(2)
(0.5, 1.5)
"""

from __future__ import annotations

import math
from collections import deque


class ConformalIntervals:
    """Per-step absolute-residual windows and their conformal quantiles."""

    def __init__(self, horizon: int, window: int = 100, coverage: float = 0.9, adapt_rate: float = 0.0):
        if horizon < 1 or window < 1 or not 0.0 < coverage < 1.0:
            raise ValueError("need horizon >= 1, window >= 1 and 0 < coverage < 1")
        self.horizon = horizon
        self.window = window
        self.coverage = coverage
        self.adapt_rate = adapt_rate
        self.levels = [coverage] * horizon
        self.residuals: list[deque[float]] = [deque(maxlen=window) for _ in range(horizon)]
        self.pending: deque[list[float]] = deque(maxlen=horizon)

    def observe(self, y: float) -> None:
        """Score the pending forecasts whose target is this value ``y``."""
        for lag, points in enumerate(self.pending):
            if lag < len(points):
                error = abs(y - points[lag])
                errors = self.residuals[lag]
                if self.adapt_rate and errors:
                    miss = sum(e < error for e in errors) >= self._rank(lag)
                    level = self.levels[lag] + self.adapt_rate * (miss - (1.0 - self.coverage))
                    self.levels[lag] = min(max(level, 0.0), 1.0)
                errors.append(error)

    def _rank(self, index: int) -> int:
        """1-based rank of the conformal quantile among the step's ``n`` errors, in 1..n."""
        n = len(self.residuals[index])
        return min(max(math.ceil((n + 1) * self.levels[index]), 1), n)

    def record(self, points: list[float]) -> None:
        """Remember the forecast just issued (step 1 first) until its targets arrive."""
        self.pending.appendleft(points[: self.horizon])

    def clear(self) -> None:
        """Forget all residuals, adapted levels and pending forecasts."""
        for errors in self.residuals:
            errors.clear()
        self.levels = [self.coverage] * self.horizon
        self.pending.clear()

    def half_width(self, step: int) -> float:
        """Conformal half-width at ``step`` (1-based); beyond ``horizon`` the last step's.

        A step with no residuals yet borrows the nearest shorter step's; with none at all
        the width is 0.
        """
        for index in range(min(step, self.horizon) - 1, -1, -1):
            errors = self.residuals[index]
            if errors:
                return sorted(errors)[self._rank(index) - 1]
        return 0.0
