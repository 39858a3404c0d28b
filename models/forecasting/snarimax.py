"""SNARIMAX (River) behind the :class:`~models.forecasting.base.Forecaster` interface.

The seasonal terms (``sp``, ``sd``, ``sq``) use the configured or detected season and
are dropped when there is none. The model is used once its lags are filled and it has
learned ``min_fit`` more values; before that the base class serves its flat fallback.

>>> import math
>>> from models.forecasting.snarimax import SnarimaxForecaster
>>> model = SnarimaxForecaster(season=12)
>>> for i in range(240):
...     model.learn_one(100 + 10 * math.sin(2 * math.pi * i / 12))
>>> fc = model.forecast(12)
>>> model.ready, max(abs(f.point - (100 + 10 * math.sin(2 * math.pi * (239 + f.step) / 12))) for f in fc) < 1e-6
(True, True)
"""

from __future__ import annotations

from typing import Any

from river import base, time_series

from models.forecasting.base import Forecaster


class SnarimaxForecaster(Forecaster):
    """SNARIMAX(p, d, q)(sp, sd, sq)_season over River's default or a given regressor.

    ``regressor`` is cloned for each model built. Other keyword arguments go to
    :class:`~models.forecasting.base.Forecaster`.
    """

    def __init__(
        self,
        p: int = 2,
        d: int = 0,
        q: int = 1,
        sp: int = 1,
        sd: int = 1,
        sq: int = 0,
        regressor: base.Regressor | None = None,
        min_fit: int = 30,
        **kwargs: Any,
    ):
        self.p, self.d, self.q = p, d, q
        self.sp, self.sd, self.sq = sp, sd, sq
        self.regressor = regressor
        self.min_fit = min_fit
        super().__init__(**kwargs)

    def _build(self, season: int) -> time_series.SNARIMAX:
        seasonal = season > 1
        return time_series.SNARIMAX(
            p=self.p,
            d=self.d,
            q=self.q,
            m=season if seasonal else 1,
            sp=self.sp if seasonal else 0,
            sd=self.sd if seasonal else 0,
            sq=self.sq if seasonal else 0,
            regressor=None if self.regressor is None else self.regressor.clone(),
        )

    def _ready(self) -> bool:
        m = self.model
        lags = m.differencer.n_required_past_values + max(m.p, m.m * m.sp, m.q, m.m * m.sq)
        return self.n_model >= lags + self.min_fit
