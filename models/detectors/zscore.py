"""Exponentially weighted z-score detector.

>>> import numpy as np
>>> from models.detectors.zscore import ZScore
>>> det = ZScore(alpha=0.05)
>>> rng = np.random.default_rng(0)
>>> noise = det.score_learn_many(rng.normal(10, 1, 500), np.arange(500.0))
>>> round(det.score_one(30.0, 500.0), 2)  # 20 sigma: 20 / (20 + 4)
0.83
>>> bool(np.median(noise[100:]) < 0.2)
True
"""

from __future__ import annotations

import math

from river import stats

from models.base import Detector
from models.detectors.calibration import squash


class ZScore(Detector):
    """Scores ``|x - mean| / std`` over exponentially weighted moments, mapped to [0, 1).

    The score is ``z / (z + scale)``, the same map as the calibrated detectors use: 0.6
    is six deviations at the default scale of 4, and no finite z is pinned at 1.0 (as the
    normal probability ``erf(z / sqrt(2))`` is in floating point beyond z = 8.3, which
    leaves a shared threshold nothing to choose among). The deviation has a floor (``rel_floor`` of the mean's magnitude, at least ``abs_floor``) so that
    a flat series does not pin every small wiggle at a score of 1.0.
    ``warmup`` points are scored 0 while the moments settle.
    """

    def __init__(self, alpha: float = 0.02, warmup: int = 30, rel_floor: float = 0.01, abs_floor: float = 1e-6,
                 scale: float = 4.0):
        self.alpha = alpha
        self.warmup = warmup
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self.scale = scale
        self.mean = stats.EWMean(fading_factor=alpha)
        self.var = stats.EWVar(fading_factor=alpha)
        self.n = 0

    def _z(self, x: float) -> float:
        mean = self.mean.get()
        floor = max(self.abs_floor, self.rel_floor * abs(mean))
        std = max(math.sqrt(max(self.var.get(), 0.0)), floor)
        return abs(x - mean) / std

    def score_one(self, x: float, t: float) -> float:
        if self.n < self.warmup:
            return 0.0
        return squash(self._z(x), getattr(self, "scale", 4.0))  # 4.0: checkpoints from before the option

    def learn_one(self, x: float, t: float) -> None:
        self.mean.update(x)
        self.var.update(x)
        self.n += 1
