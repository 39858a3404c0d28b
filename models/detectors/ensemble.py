"""Ensemble: the maximum of its components' calibrated z-scores, then one suppressor.

Each component is a :class:`~models.detectors.base.CalibratedDetector`; its raw
measure is calibrated against that series' own history, so the z-scores are on
one scale and the maximum fires when *any* view (level, seasonal change, ...) sees
something unusual. The default combines the windowed robust z-score (spikes, level
shifts), the seasonal-difference one (breaks of the daily pattern) and the context
surprise (a transition between quantised levels the series has not made: changes of
pattern); any of :data:`COMPONENTS` can be configured instead. The default was chosen
by leave-one-group-out cross-validation on NAB and ASD (``m1 eval nab --cv``), where
relative entropy, the previous third view, cost 8 points on ASD. Point-wise views are
gated by rarity (``rarity_k``, see :mod:`models.detectors.rarity`): a deviation no
larger than the 5th largest of the last 4,000 is a recurring pattern, not an
incident. The measurements behind these choices are in docs/benchmarks-nab.md.

>>> import numpy as np
>>> from models.detectors.ensemble import Ensemble
>>> t = 300.0 * np.arange(2000)
>>> xs = 10 * np.sin(2 * np.pi * t / 86400) + np.random.default_rng(2).normal(0, 0.5, 2000)
>>> xs[1700:1720] += 8.0
>>> scores = Ensemble().score_learn_many(xs, t)
>>> bool(scores[1700:1720].max() > 0.6 > scores[600:1700].max())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from models.base import Detector
from models.detectors.base import SHORT_CALL, CalibratedDetector
from models.detectors.calibration import Suppressor, squash, squash_many
from models.detectors.context import ContextSurprise
from models.detectors.entropy import RelativeEntropy
from models.detectors.holtwinters import HoltWintersResidual
from models.detectors.hst import HSTDetector
from models.detectors.robust import RobustZ, SeasonalRobustZ
from models.detectors.windowed import WindowedGaussian

#: Component names an ensemble can be configured with (``M1_ENSEMBLE_COMPONENTS``).
COMPONENTS: dict[str, type[CalibratedDetector]] = {
    "robust": RobustZ,
    "seasonal_robust": SeasonalRobustZ,
    "relative_entropy": RelativeEntropy,
    "holtwinters": HoltWintersResidual,
    "hst": HSTDetector,
    "windowed_gaussian": WindowedGaussian,
    "context": ContextSurprise,
}
DEFAULT_COMPONENTS = ("robust", "seasonal_robust", "context")
#: Views gated with their own ``k`` instead of the ensemble's ``rarity_k`` (context: 3, chosen by
#: cross-validation, docs/benchmarks-nab.md round 4).
DEFAULT_VIEW_RARITY_K: Mapping[str, int] = MappingProxyType({"context": 3})


class Ensemble(Detector):
    """``max`` of calibrated component z-scores -> ``z / (z + scale)`` -> suppression."""

    def __init__(
        self,
        components: Sequence[str | CalibratedDetector] = DEFAULT_COMPONENTS,
        scale: float = 4.0,
        suppress_level: float = 0.6,
        suppress_span: int = 100,
        suppress_keep: float = 0.3,
        rarity_k: int = 5,
        view_rarity_k: Mapping[str, int] = DEFAULT_VIEW_RARITY_K,
    ):
        """``components``: detectors, or names from :data:`COMPONENTS` (built with the rarity
        gate ``view_rarity_k.get(name, rarity_k)`` if they judge single points; ``rarity_k=0``
        turns every gate off)."""
        unknown = [c for c in components if isinstance(c, str) and c not in COMPONENTS]
        if unknown or not components:
            raise ValueError(f"unknown ensemble components {unknown}; known: {', '.join(COMPONENTS)}")
        ks = {name: view_rarity_k.get(name, rarity_k) if rarity_k > 0 else 0 for name in COMPONENTS}
        self.components = [_component(c, ks[c]) if isinstance(c, str) else c for c in components]
        self.scale = scale
        self.suppressor = Suppressor(level=suppress_level, span=suppress_span, keep=suppress_keep)

    def _z(self, x: float, t: float) -> float:
        return max(c.peek_z(x, t) for c in self.components)

    def score_one(self, x: float, t: float) -> float:
        return self.suppressor.peek(squash(self._z(x, t), self.scale))

    def learn_one(self, x: float, t: float) -> None:
        self.suppressor.step(squash(self._z(x, t), self.scale))
        for c in self.components:
            c.learn_point(x, t)

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        if len(xs) <= SHORT_CALL:  # the stream's usual call: a scalar loop skips the numpy set-up
            step, scale, comps = self.suppressor.step, self.scale, self.components
            out = []
            for x, t in zip(np.asarray(xs).tolist(), np.asarray(ts).tolist()):
                z = 0.0  # max over the components' z (>= 0, never NaN; squash maps 0 and -0.0 alike)
                for c in comps:
                    v = c.z_learn_one(x, t)
                    if v > z:
                        z = v
                out.append(step(z / (z + scale) if z > 0.0 else 0.0))  # squash(z, scale)
            return np.array(out)
        z = np.max([c.z_learn_many(xs, ts) for c in self.components], axis=0)
        return self.suppressor.step_many(squash_many(z, self.scale))


def _component(name: str, rarity_k: int) -> CalibratedDetector:
    cls = COMPONENTS[name]
    return cls(rarity_k=rarity_k) if cls.pointwise else cls()  # type: ignore[call-arg]
