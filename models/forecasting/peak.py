"""Forecast the peak of the next window directly, from the peaks of recent windows.

Replica planning needs the *maximum* load of the next decision window, not the load at
each step. :class:`PeakForecaster` keeps the last ``windows * window`` values; its forecast
is the median of the maxima of the last ``windows`` consecutive blocks of ``window`` values
(ending at the latest value). The median of three ignores a one-off spike (and a one-off
dip) but follows a level change after two windows. Before ``window`` values have been
seen it uses the blocks it has; with no values it returns 0.

>>> from models.forecasting.peak import PeakForecaster
>>> model = PeakForecaster(window=4, windows=3)
>>> for y in [10, 12, 11, 10,   10, 90, 10, 10,   13, 12, 11, 10]:  # one spike of 90
...     model.learn_one(y)
>>> model.forecast_peak()  # median of the block peaks 12, 90, 13
13.0
>>> for y in [30, 31, 30, 29]:  # the level steps up: peaks 90, 13, 31
...     model.learn_one(y)
>>> model.forecast_peak()
31.0
"""

from __future__ import annotations

import statistics
from collections import deque


class PeakForecaster:
    """Median of the last ``windows`` window peaks, as the next window's peak."""

    def __init__(self, window: int = 12, windows: int = 3):
        if window < 1 or windows < 1:
            raise ValueError("need window >= 1 and windows >= 1")
        self.window = window
        self.windows = windows
        self.recent: deque[float] = deque(maxlen=window * windows)

    def learn_one(self, y: float, t: float | None = None) -> None:
        """Learn value ``y`` (``t`` is accepted for the forecaster interface and ignored)."""
        self.recent.append(float(y))

    def block_peaks(self) -> list[float]:
        """Maxima of the last (up to ``windows``) blocks of ``window`` values, newest first."""
        values = list(self.recent)
        ends = range(len(values), 0, -self.window)
        return [max(values[max(end - self.window, 0) : end]) for end in ends]

    def forecast_peak(self) -> float:
        """The forecast peak of the next ``window`` values."""
        peaks = self.block_peaks()
        return float(statistics.median(peaks)) if peaks else 0.0
