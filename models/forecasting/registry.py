"""Forecaster names a user can configure, mapped to constructors.

>>> from models.forecasting.registry import make_forecaster
>>> type(make_forecaster("holtwinters", season=0)).__name__
'HoltWintersForecaster'
"""

from __future__ import annotations

from typing import Any

from models.forecasting.base import Forecaster
from models.forecasting.holt_winters import HoltWintersForecaster
from models.forecasting.snarimax import SnarimaxForecaster

FORECASTERS: dict[str, type[Forecaster]] = {
    "holtwinters": HoltWintersForecaster,
    "snarimax": SnarimaxForecaster,
}


def make_forecaster(name: str, **kwargs: Any) -> Forecaster:
    """A fresh forecaster of the named kind; ``ValueError`` names the known ones."""
    try:
        cls = FORECASTERS[name]
    except KeyError:
        raise ValueError(f"unknown forecaster {name!r}; known: {', '.join(sorted(FORECASTERS))}") from None
    return cls(**kwargs)
