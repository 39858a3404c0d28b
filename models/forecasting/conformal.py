"""Online split-conformal prediction intervals, one residual window per horizon step.

Every forecast issued is kept until its targets arrive; then the absolute error of the
step-``h`` prediction joins the step-``h`` window (the ``window`` most recent errors).
The half-width for step ``h`` is the ``ceil((n + 1) * level_h)``-th smallest of those
``n`` errors, the split-conformal quantile; while ``n`` is too small for that rank the
largest error is used. ``level_h`` starts at ``coverage`` and, with ``adapt_rate > 0``, is
adapted online (adaptive conformal inference, Gibbs & Candes 2021): each miss raises it
by ``adapt_rate * coverage``, each hit lowers it by ``adapt_rate * (1 - coverage)``, so the
long-run miss rate tracks ``1 - coverage`` even when the errors drift (e.g. grow with
the level). Only the ``steps`` a caller publishes need their own window (default: every
step 1..``horizon``); another step borrows the window of the nearest shorter tracked step.
Memory is bounded: one window per tracked step plus ``horizon`` pending forecasts of
``horizon`` values. Each window is kept sorted as it slides
(:class:`~models.sorted_window.SortedWindow`), so a rank or quantile is a binary search.

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
import sys
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from typing import Any

from models.sorted_window import SortedWindow


class ConformalIntervals:
    """Per-step absolute-residual windows and their conformal quantiles."""

    def __init__(self, horizon: int, window: int = 100, coverage: float = 0.9, adapt_rate: float = 0.0,
                 steps: Sequence[int] | None = None):
        self.steps = sorted(set(steps)) if steps else list(range(1, horizon + 1))
        if horizon < 1 or window < 1 or not 0.0 < coverage < 1.0 or not 1 <= self.steps[0] <= self.steps[-1] <= horizon:
            raise ValueError("need horizon >= 1, window >= 1, 0 < coverage < 1 and steps within 1..horizon")
        self.horizon = horizon
        self.window = window
        self.coverage = coverage
        self.adapt_rate = adapt_rate
        self.levels = [coverage] * len(self.steps)  # per tracked step, like residuals
        self.residuals = [SortedWindow(window) for _ in self.steps]
        self.pending: deque[list[float]] = deque(maxlen=horizon)

    def observe(self, y: float) -> None:
        """Score the pending forecasts whose target is this value ``y`` (tracked steps only)."""
        pending, levels, adapt = self.pending, self.levels, self.adapt_rate
        waiting = len(pending)
        for index, step in enumerate(self.steps):
            lag = step - 1  # the forecast issued `step` values ago predicted y as its step
            if lag >= waiting:
                break
            issued = pending[lag]
            if lag >= len(issued):
                break
            error = abs(y - issued[lag])
            if error - error != 0.0:  # not finite: a diverged forecast says nothing about the spread of good ones
                continue
            errors = self.residuals[index]
            n = len(errors.ring)
            if adapt and n:  # _rank() and count_below(), inlined: the per-point path
                rank = min(max(math.ceil((n + 1) * levels[index]), 1), n)
                miss = bisect_left(errors.sorted, error) >= rank
                level = levels[index] + adapt * (miss - (1.0 - self.coverage))
                levels[index] = min(max(level, 0.0), 1.0)
            errors.push(error)

    def _rank(self, index: int) -> int:
        """1-based rank of the conformal quantile among the ``index``-th tracked step's ``n`` errors."""
        n = len(self.residuals[index])
        return min(max(math.ceil((n + 1) * self.levels[index]), 1), n)

    def record(self, points: list[float]) -> None:
        """Remember the forecast just issued (step 1 first) until its targets arrive."""
        self.pending.appendleft(points[: self.horizon])

    def clear(self) -> None:
        """Forget all residuals, adapted levels and pending forecasts."""
        self.residuals = [SortedWindow(self.window) for _ in self.steps]
        self.levels = [self.coverage] * len(self.steps)
        self.pending.clear()

    def half_width(self, step: int) -> float:
        """Conformal half-width at ``step`` (1-based); beyond ``horizon`` the last step's.

        An untracked step, or one with no residuals yet, borrows the nearest shorter tracked
        step's; with none at all the width is 0.
        """
        for index in range(bisect_right(self.steps, step) - 1, -1, -1):
            errors = self.residuals[index]
            if len(errors):
                return errors.kth_smallest(self._rank(index))
        return 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also loads checkpoints from before the sorted windows (residuals in deques, every step).
        Attribute names are interned, as pickle's own loading does, so a loaded object pickles as the
        same bytes as the one that was saved (pickle shares one copy of a string object used twice)."""
        state.setdefault("steps", list(range(1, state["horizon"] + 1)))
        state["residuals"] = [r if isinstance(r, SortedWindow) else SortedWindow(state["window"], r)
                              for r in state["residuals"]]
        self.__dict__.update((sys.intern(name), value) for name, value in state.items())
