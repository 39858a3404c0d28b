"""Windowed Gaussian: the mean of a short recent window against a longer reference window.

After NAB's "windowedGaussian" baseline: the raw measure is
``|mean(recent) - mean(reference)| / std(reference)``, where ``recent`` is the
``window`` most recent values (the current one included) and ``reference`` the
``reference`` values before them; the spread has a floor (a fraction of the
mean's magnitude and an absolute floor). It sees a sustained shift of level
that is too small point by point for the robust z-score. Memory is bounded:
``reference + window`` floats.

>>> import numpy as np
>>> from models.detectors.windowed import WindowedGaussian
>>> rng = np.random.default_rng(5)
>>> xs = rng.normal(10, 1, 1500); xs[1200:] += 1.5  # a shift of 1.5 sigma
>>> scores = WindowedGaussian().score_learn_many(xs, 60.0 * np.arange(1500))
>>> bool(scores[1200:1250].max() > 0.6 > scores[300:1200].max())
True
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.detectors.base import CalibratedDetector


class WindowedGaussian(CalibratedDetector):
    """Shift of the recent-window mean in reference standard deviations, then calibrated."""

    pointwise = False  # a window view: the ensemble's rarity gate does not apply

    def __init__(
        self,
        window: int = 10,
        reference: int = 1000,
        min_reference: int = 50,
        rel_floor: float = 1e-3,
        abs_floor: float = 1e-9,
        **calibration: float,
    ):
        super().__init__(**calibration)  # type: ignore[arg-type]
        self.window = window
        self.reference = reference
        self.min_reference = min_reference
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self.values: deque[float] = deque(maxlen=reference + window - 1)  # past x

    def _raw(self, recent_mean: float, ref_mean: float, ref_std: float) -> float:
        return abs(recent_mean - ref_mean) / max(ref_std, self.rel_floor * abs(ref_mean), self.abs_floor)

    def raw_one(self, x: float, t: float) -> float:
        w = self.window
        if len(self.values) < w - 1 + self.min_reference + 1:
            return float("nan")
        past = np.fromiter(self.values, dtype=np.float64)
        ref = past[: len(past) - (w - 1)][-self.reference :]
        recent = np.append(past[len(past) - (w - 1) :], x)
        return self._raw(float(recent.mean()), float(ref.mean()), float(ref.std()))

    def learn_raw(self, x: float, t: float) -> None:
        self.values.append(x)

    def raw_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Scalar path until the reference is full, then numpy over sliding windows."""
        xs = np.asarray(xs, dtype=np.float64)
        w, ref_len = self.window, self.reference
        out = np.empty(len(xs))
        i = 0
        while i < len(xs) and len(self.values) < self.values.maxlen:  # type: ignore[operator]
            out[i] = self.raw_one(float(xs[i]), 0.0)
            self.learn_raw(float(xs[i]), 0.0)
            i += 1
        if i < len(xs):
            rest = xs[i:]
            allx = np.concatenate([np.fromiter(self.values, dtype=np.float64), rest])
            span = ref_len + w  # reference, then the recent window ending at the point
            for a in range(0, len(rest), 512):
                b = min(a + 512, len(rest))
                win = sliding_window_view(allx[a : b + span - 1], span)  # row j ends at rest[a + j]
                ref = win[:, :ref_len]
                recent_mean = win[:, ref_len:].mean(axis=1)
                ref_mean = ref.mean(axis=1)
                ref_std = ref.std(axis=1)
                spread = np.maximum.reduce([ref_std, self.rel_floor * np.abs(ref_mean), np.full(b - a, self.abs_floor)])
                out[i + a : i + b] = np.abs(recent_mean - ref_mean) / spread
            self.values.extend(rest[-(ref_len + w - 1) :].tolist())
        return out
