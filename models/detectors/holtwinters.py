"""Predictive detector: the residual of a River Holt-Winters one-step forecast.

The raw measure is ``|x - forecast| / spread``, the spread a robust running scale
of recent residuals (median absolute residual over a bounded window, floored).
Holt-Winters with a season needs one full season of data before it can
forecast (River raises until then), so until then the forecast is the last value.
The season length in points comes from ``season`` seconds and the first gaps
between timestamps (capped, else the model is fitted without seasonality).

>>> import numpy as np
>>> from models.detectors.holtwinters import HoltWintersResidual
>>> t = 3600.0 * np.arange(24 * 30)
>>> xs = 10 + 5 * np.sin(2 * np.pi * t / 86400) + np.random.default_rng(4).normal(0, 0.3, len(t))
>>> xs[650] += 6.0
>>> scores = HoltWintersResidual().score_learn_many(xs, t)
>>> int(np.argmax(scores[200:])) + 200
650
"""

from __future__ import annotations

from collections import deque

import numpy as np
from river import time_series

from models.detectors.base import CalibratedDetector


class HoltWintersResidual(CalibratedDetector):
    """One-step Holt-Winters forecast residual, scaled by recent residuals, then calibrated."""

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.01,
        gamma: float = 0.3,
        season: float = 86400.0,
        max_season_points: int = 2016,
        window: int = 500,
        rel_floor: float = 1e-3,
        abs_floor: float = 1e-9,
        **calibration: float,
    ):
        super().__init__(**calibration)  # type: ignore[arg-type]
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.season = season
        self.max_season_points = max_season_points
        self.rel_floor = rel_floor
        self.abs_floor = abs_floor
        self.residuals: deque[float] = deque(maxlen=window)
        self._t0: list[float] = []
        self.model: time_series.HoltWinters | None = None
        self.last: float | None = None

    def _make_model(self) -> None:
        step = float(np.median(np.diff(self._t0)))
        lag = int(round(self.season / step)) if step > 0 else 0
        seasonality = lag if 2 <= lag <= self.max_season_points else 0
        gamma = self.gamma if seasonality else None
        self.model = time_series.HoltWinters(alpha=self.alpha, beta=self.beta, gamma=gamma, seasonality=seasonality)

    def _forecast(self) -> float | None:
        if self.model is None:
            return self.last
        try:
            return float(self.model.forecast(horizon=1)[0])
        except (ValueError, IndexError, ZeroDivisionError, TypeError):
            return self.last  # not a full season seen yet

    def _fix_additive_season(self) -> None:
        # River 0.26 seeds the *additive* season with ratios x / level (~1); use differences.
        model = self.model
        level = model.level[-1]
        model.season.clear()
        model.season.extend([y - level for y in model._first_values])
        model._first_values = []

    def raw_one(self, x: float, t: float) -> float:
        pred = self._forecast()
        if pred is None or len(self.residuals) < 20:
            return float("nan")
        r = np.fromiter(self.residuals, dtype=np.float64)
        scale = max(1.4826 * float(np.median(r)), self.rel_floor * abs(pred), self.abs_floor)
        return abs(x - pred) / scale

    def learn_raw(self, x: float, t: float) -> None:
        pred = self._forecast()
        if pred is not None:
            self.residuals.append(abs(x - pred))
        if self.model is None:
            self._t0.append(t)
            if len(self._t0) >= 11:
                self._make_model()
        if self.model is not None:
            was_ready = self.model._initialized
            try:
                self.model.learn_one(x)
                if not was_ready and self.model._initialized and self.model.season is not None:
                    self._fix_additive_season()
            except ZeroDivisionError:  # River seeds the season with x / level: a zero level breaks it
                self.model = time_series.HoltWinters(alpha=self.alpha, beta=self.beta)
                self.model.learn_one(x)
        self.last = x
