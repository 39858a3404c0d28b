"""The small interface every per-series forecaster implements, and its shared machinery.

A forecaster sees one series in time order: ``learn_one(y, t)`` then ``forecast(h)``
returns ``h`` :class:`Forecast` values (step 1 first), each with a conformal interval
at the configured ``coverage``. Subclasses only say how to build the wrapped River
model for a season length (``_build``) and when it is trustworthy (``_ready``).

Until then the point forecast is a flat exponentially weighted mean (the fallback),
so ``forecast`` never raises. With ``season="auto"`` the first ``warmup`` values are
buffered, the season is detected from their autocorrelation, the model is built and the
buffer replayed into it (then dropped). Forecasters are plain picklable objects.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, NamedTuple

from river import stats

from models.forecasting.conformal import ConformalIntervals
from models.forecasting.seasonality import detect_season


class Forecast(NamedTuple):
    """One step of a forecast: ``lower <= point <= upper`` at the forecaster's coverage."""

    step: int
    point: float
    lower: float
    upper: float


class Forecaster(abc.ABC):
    """Base of the per-series online forecasters (see the module docstring).

    ``horizon`` is the longest step with its own residual window (longer forecasts reuse
    the last window), ``steps`` the steps that get one (default: all of 1..``horizon``;
    a caller that publishes a few horizons tracks only those); ``window`` is how many
    recent residuals each window keeps and
``adapt_rate`` the step of the adaptive coverage level (0: plain split conformal); see
:mod:`models.forecasting.conformal`.
    """

    def __init__(
        self,
        season: int | str = "auto",
        coverage: float = 0.9,
        horizon: int = 12,
        window: int = 50,
        adapt_rate: float = 0.02,
        warmup: int = 96,
        fallback_alpha: float = 0.3,
        steps: Sequence[int] | None = None,
    ):
        if season != "auto" and not (isinstance(season, int) and season >= 0):
            raise ValueError(f"season must be a non-negative int or 'auto', not {season!r}")
        self.warmup = warmup
        self.intervals = ConformalIntervals(horizon=horizon, window=window, coverage=coverage, adapt_rate=adapt_rate,
                                            steps=steps)
        self.fallback = stats.EWMean(fading_factor=fallback_alpha)
        self.season: int | None = None if season == "auto" else int(season)
        self.model: Any = None if self.season is None else self._build(self.season)
        self.buffer: list[float] = []
        self.n_model = 0
        self.points: list[float] = []

    @abc.abstractmethod
    def _build(self, season: int) -> Any:
        """A fresh River forecaster for this season length (0: none)."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the River model has seen enough values (``n_model``) to forecast."""

    @property
    def coverage(self) -> float:
        return self.intervals.coverage

    @property
    def ready(self) -> bool:
        """True once forecasts come from the River model rather than the fallback."""
        return self.model is not None and self._ready()

    def learn_one(self, y: float, t: float | None = None) -> None:
        """Learn value ``y`` (at epoch-seconds ``t``; values are assumed evenly spaced)."""
        y = float(y)
        self.fallback.update(y)
        if self.model is not None:
            self._step(y)
            return
        self.buffer.append(y)
        if len(self.buffer) < self.warmup:
            self.intervals.observe(y)
            self._record()
            return
        self.season = detect_season(self.buffer)
        self.model = self._build(self.season)
        buffered, self.buffer = self.buffer, []
        for value in buffered:
            self._step(value)

    def _step(self, y: float) -> None:
        """Score pending forecasts, learn ``y``, issue the next forecast.

        Residuals of the fallback are dropped when the model takes over, so the
        intervals only ever describe the forecasts they are attached to.
        """
        was_ready = self.ready
        self.intervals.observe(y)
        self._learn_model(y)
        if self.ready and not was_ready:
            self.intervals.clear()
        self._record()

    def _learn_model(self, y: float) -> None:
        self.model.learn_one(y)
        self.n_model += 1

    def _record(self) -> None:
        self.points = self._points(self.intervals.horizon)
        self.intervals.record(self.points)

    def _points(self, horizon: int) -> list[float]:
        if self.ready:
            return [float(p) for p in self.model.forecast(horizon)]
        return [self.fallback.get()] * horizon

    def forecast(self, horizon: int) -> list[Forecast]:
        """Forecasts for steps 1..horizon after the last learned value."""
        points = self.points[:horizon] if horizon <= len(self.points) else self._points(horizon)
        out = []
        for step, point in enumerate(points, start=1):
            width = self.intervals.half_width(step)
            out.append(Forecast(step, point, point - width, point + width))
        return out
