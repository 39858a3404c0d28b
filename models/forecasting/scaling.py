"""Replica recommendations from a load forecast.

A replica serves ``capacity_per_replica`` load units; the policy plans for the peak of
the forecast window (its upper bound by default, or the point forecast) plus
``headroom``, and clamps to ``[min_replicas, max_replicas]``.

>>> from models.forecasting.base import Forecast
>>> from models.forecasting.scaling import ScalingPolicy
>>> policy = ScalingPolicy(capacity_per_replica=100.0, headroom=0.2, min_replicas=2, max_replicas=50)
>>> policy.replicas_for(1000.0)  # 1000 * 1.2 / 100
12
>>> policy.recommend([Forecast(1, 800.0, 700.0, 950.0), Forecast(2, 900.0, 800.0, 1010.0)])
Recommendation(replicas=13, load=1010.0)
>>> policy.recommend([Forecast(1, 800.0, 700.0, 950.0)], bound="point").replicas
10
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from models.forecasting.base import Forecast


class Recommendation(NamedTuple):
    """Replicas to run for the next decision window, and the peak load planned for."""

    replicas: int
    load: float


@dataclass(frozen=True)
class ScalingPolicy:
    """Capacity, headroom and bounds that turn a load into a replica count."""

    capacity_per_replica: float
    headroom: float = 0.2
    min_replicas: int = 1
    max_replicas: int = 1000

    def __post_init__(self) -> None:
        if self.capacity_per_replica <= 0 or self.headroom < 0 or not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need capacity_per_replica > 0, headroom >= 0, 0 <= min_replicas <= max_replicas")

    def replicas_for(self, load: float) -> int:
        """``ceil(load * (1 + headroom) / capacity)``, clamped to the bounds (an infinite load,
        e.g. a diverged forecast, gets the bound it points to); a NaN load is a ``ValueError``."""
        if load != load:
            raise ValueError("the load to plan for is NaN")
        needed = load * (1.0 + self.headroom) / self.capacity_per_replica - 1e-9
        if math.isinf(needed):
            return self.max_replicas if needed > 0 else self.min_replicas
        return min(max(math.ceil(needed), self.min_replicas), self.max_replicas)

    def recommend(self, forecasts: Sequence[Forecast], bound: Literal["upper", "point"] = "upper") -> Recommendation:
        """Replicas for the peak ``bound`` of ``forecasts`` (the next decision window)."""
        peak = max(f.upper if bound == "upper" else f.point for f in forecasts)
        return Recommendation(self.replicas_for(peak), peak)
