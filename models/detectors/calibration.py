"""Per-series score calibration and alert suppression shared by the detectors.

Raw anomaly measures differ by series and by detector, so one threshold cannot
fit them all. :class:`ScoreCalibrator` turns a raw measure into a z-score against
the series' *own* recent raw scores (exponentially weighted mean and variance,
with a floor on the spread), :func:`squash` maps that z to [0, 1), and
:class:`Suppressor` damps the scores for ``span`` points after one crosses
``level`` so that one incident gives one alert, not a burst.

>>> cal = ScoreCalibrator(alpha=0.01, warmup=10)
>>> for r in [1.0, 1.2, 0.8] * 20:
...     cal.learn(r)
>>> cal.z(1.0) < 1.0 < 5.0 < cal.z(3.0)
True
>>> squash(0.0), squash(4.0, scale=4.0)
(0.0, 0.5)
>>> sup = Suppressor(level=0.5, span=2, keep=0.1)
>>> [round(sup.step(s), 2) for s in [0.2, 0.9, 0.9, 0.9, 0.9]]
[0.2, 0.9, 0.09, 0.09, 0.9]
"""

from __future__ import annotations

import math

import numpy as np


def squash(z: float, scale: float = 4.0) -> float:
    """Monotone map of a non-negative z to [0, 1): ``z / (z + scale)``; never 1.0 for finite z."""
    return z / (z + scale) if z > 0.0 else 0.0


def squash_many(z: np.ndarray, scale: float = 4.0) -> np.ndarray:
    z = np.maximum(np.asarray(z, dtype=np.float64), 0.0)
    return z / (z + scale)


class ScoreCalibrator:
    """One-sided z-score of a raw measure against its exponentially weighted history.

    ``alpha`` is the weight of each new raw score (memory ~ ``1/alpha`` points);
    the spread has a floor ``max(min_std, rel_std * |mean|)`` so that a series
    whose raw score has been constant does not turn tiny changes into huge z.
    The first ``warmup`` points have z = 0; NaN raw scores (a measure that is not
    ready yet) give z = 0 and are not learned.
    """

    def __init__(self, alpha: float = 0.003, warmup: int = 150, min_std: float = 1e-3, rel_std: float = 1e-3):
        self.alpha = alpha
        self.warmup = warmup
        self.min_std = min_std
        self.rel_std = rel_std
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def z(self, raw: float) -> float:
        if self.n <= self.warmup or raw != raw:  # NaN: the raw measure is not ready yet
            return 0.0
        std = max(math.sqrt(max(self.var, 0.0)), self.min_std, self.rel_std * abs(self.mean))
        return max((raw - self.mean) / std, 0.0)

    def learn(self, raw: float) -> None:
        if raw != raw:
            return
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        d = raw - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    def z_learn(self, raw: float) -> float:
        """``z(raw)``, then ``learn(raw)``, in one call: the same arithmetic, each ``max(a, b, ...)``
        written out as the comparisons ``max`` makes (``b if b > a else a``: NaN and -0.0 alike)."""
        if raw != raw:
            return 0.0
        mean, var, n = self.mean, self.var, self.n
        if n <= self.warmup:
            z = 0.0
        else:
            std = math.sqrt(0.0 if 0.0 > var else var)
            floor = self.min_std
            if floor > std:
                std = floor
            floor = self.rel_std * abs(mean)
            if floor > std:
                std = floor
            z = (raw - mean) / std
            if 0.0 > z:
                z = 0.0
        n += 1
        self.n = n
        a = 1.0 / n
        if not a > self.alpha:
            a = self.alpha
        d = raw - mean
        self.mean = mean + a * d
        self.var = (1.0 - a) * (var + a * d * d)
        return z

    def z_learn_many(self, raws: np.ndarray) -> np.ndarray:
        """z of each raw score before learning it, in order (a tight scalar loop)."""
        out = np.empty(len(raws))
        step = self.z_learn
        for i, r in enumerate(np.asarray(raws, dtype=np.float64).tolist()):
            out[i] = step(r)
        return out


class Suppressor:
    """After a score reaches ``level``, multiply the next ``span`` scores by ``keep``."""

    def __init__(self, level: float = 0.6, span: int = 100, keep: float = 0.3):
        self.level = level
        self.span = span
        self.keep = keep
        self.since = span + 1  # points since the last alert

    def peek(self, score: float) -> float:
        """What :meth:`step` would return for ``score``, without changing the state."""
        return score * self.keep if self.since + 1 <= self.span else score

    def step(self, score: float) -> float:
        """The suppressed score; updates the state (call once per point, in order)."""
        self.since += 1
        if self.since <= self.span:
            return score * self.keep
        if score >= self.level:
            self.since = 0
        return score

    def step_many(self, scores: np.ndarray) -> np.ndarray:
        return np.array([self.step(s) for s in np.asarray(scores, dtype=np.float64).tolist()])
