"""River HalfSpaceTrees over engineered features, behind a MinMax scaler, calibrated.

Features (each optional): the value, its delta to the previous value, the
rolling mean and standard deviation of the last ``roll`` values, and the time
of day as ``(sin, cos)``. River's HST score (in [0, 1], higher = more isolated)
is the raw measure; :class:`~models.detectors.base.CalibratedDetector` turns it
into a z-score against the series' own recent HST scores so one threshold fits
every series. Memory is bounded: HST's trees and window plus ``roll`` values.

>>> import numpy as np
>>> from models.detectors.hst import HSTDetector
>>> xs = np.random.default_rng(3).normal(5, 0.2, 800); xs[700] = 12.0
>>> scores = HSTDetector(seed=1).score_learn_many(xs, 60.0 * np.arange(800))
>>> bool(scores[700] > np.quantile(scores[300:700], 0.99))
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from river import anomaly, compose, preprocessing

from models.detectors.base import CalibratedDetector

FEATURES = ("value", "delta", "roll_mean", "roll_std", "time_of_day")


class HSTDetector(CalibratedDetector):
    """HalfSpaceTrees over :data:`FEATURES` (or a subset) -> calibrated score."""

    def __init__(
        self,
        features: Sequence[str] = ("value", "delta", "roll_mean", "roll_std"),
        roll: int = 12,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = 42,
        **calibration: float,
    ):
        super().__init__(**calibration)  # type: ignore[arg-type]
        unknown = set(features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {FEATURES}")
        self.features = tuple(features)
        self.recent: deque[float] = deque(maxlen=roll)
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
        )
        self.n = 0

    def _features(self, x: float, t: float) -> dict[str, float]:
        f: dict[str, float] = {}
        last = self.recent[-1] if self.recent else x
        window = [*self.recent, x]
        mean = sum(window) / len(window)
        if "value" in self.features:
            f["value"] = x
        if "delta" in self.features:
            f["delta"] = x - last
        if "roll_mean" in self.features:
            f["roll_mean"] = mean
        if "roll_std" in self.features:
            f["roll_std"] = math.sqrt(sum((v - mean) ** 2 for v in window) / len(window))
        if "time_of_day" in self.features:
            phase = 2 * math.pi * (t % 86400.0) / 86400.0
            f["tod_sin"], f["tod_cos"] = math.sin(phase), math.cos(phase)
        return f

    def raw_one(self, x: float, t: float) -> float:
        if self.n < self.model[-1].window_size:  # HST's reference window is still filling
            return float("nan")
        return float(self.model.score_one(self._features(x, t)))

    def learn_raw(self, x: float, t: float) -> None:
        self.model.learn_one(self._features(x, t))
        self.recent.append(x)
        self.n += 1
