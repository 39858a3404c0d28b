"""Ensemble: the maximum of its components' calibrated z-scores, then one suppressor.

Each component is a :class:`~models.detectors.base.CalibratedDetector`; its raw
measure is calibrated against that series' own history, so the z-scores are on
one scale and the maximum fires when *any* view (level, seasonal change, ...) sees
something unusual. The default combines the windowed robust z-score (spikes, level
shifts), the seasonal-difference one (breaks of the daily pattern) and the
relative entropy of a recent window (changes of distribution that no single point
shows). The two point-wise views are gated by rarity (``rarity_k``, see
:mod:`models.detectors.rarity`): a deviation no larger than the 5th largest of the
last 4,000 is a recurring pattern, not an incident. The measurements behind these
choices are in docs/benchmarks-nab.md.

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

from collections.abc import Sequence

import numpy as np

from models.detectors.base import CalibratedDetector
from models.detectors.calibration import Suppressor, squash, squash_many
from models.base import Detector
from models.detectors.entropy import RelativeEntropy
from models.detectors.robust import RobustZ, SeasonalRobustZ


class Ensemble(Detector):
    """``max`` of calibrated component z-scores -> ``z / (z + scale)`` -> suppression."""

    def __init__(
        self,
        components: Sequence[CalibratedDetector] | None = None,
        scale: float = 4.0,
        suppress_level: float = 0.6,
        suppress_span: int = 100,
        suppress_keep: float = 0.3,
        rarity_k: int = 5,
    ):
        if components is None:
            components = [RobustZ(rarity_k=rarity_k), SeasonalRobustZ(rarity_k=rarity_k), RelativeEntropy()]
        self.components = list(components)
        self.scale = scale
        self.suppressor = Suppressor(level=suppress_level, span=suppress_span, keep=suppress_keep)

    def _z(self, x: float, t: float) -> float:
        return max(c.z_one(x, t) for c in self.components)

    def score_one(self, x: float, t: float) -> float:
        return self.suppressor.peek(squash(self._z(x, t), self.scale))

    def learn_one(self, x: float, t: float) -> None:
        self.suppressor.step(squash(self._z(x, t), self.scale))
        for c in self.components:
            c.learn_z(x, t)

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        z = np.max([c.z_learn_many(xs, ts) for c in self.components], axis=0)
        return self.suppressor.step_many(squash_many(z, self.scale))
