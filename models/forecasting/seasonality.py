"""Season length from the autocorrelation of a warm-up buffer.

The series is detrended (least-squares line) and the season is the lag, between
``min_lag`` and ``len // 2``, whose autocorrelation is the highest local peak above
``threshold``; 0 means no seasonality was found.

>>> import math
>>> from models.forecasting.seasonality import detect_season
>>> detect_season([math.sin(2 * math.pi * i / 24) + 0.01 * i for i in range(120)])
24
>>> detect_season([5.0] * 50)
0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def autocorrelation(values: Sequence[float], max_lag: int) -> np.ndarray:
    """Autocorrelation of the detrended ``values`` at lags 0..max_lag (0 for a flat series)."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    resid = y - np.polyval(np.polyfit(x, y, 1), x)
    denom = float(resid @ resid)
    if denom <= 1e-12 * max(1.0, float(y @ y)):
        return np.zeros(max_lag + 1)
    # entry len - 1 + lag of the full correlation is resid[:len - lag] @ resid[lag:]
    return np.correlate(resid, resid, mode="full")[len(y) - 1 : len(y) + max_lag] / denom


def detect_season(values: Sequence[float], min_lag: int = 2, threshold: float = 0.3) -> int:
    """Season length of ``values`` (at least two seasons long), or 0 if none stands out."""
    max_lag = len(values) // 2
    if max_lag < min_lag + 1:
        return 0
    acf = autocorrelation(values, max_lag)
    lags = np.arange(min_lag, max_lag)
    here = acf[lags]
    peaks = lags[(here > threshold) & (here > acf[lags - 1]) & (here >= acf[lags + 1])]
    return int(peaks[np.argmax(acf[peaks])]) if len(peaks) else 0  # the highest; of equal ones, the shortest
