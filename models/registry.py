"""Detector names a user can configure (``M1_DETECTOR``), mapped to constructors.

:class:`~models.detectors.entropy.RelativeEntropy` is deliberately not here: it
sees changes of distribution, not lone spikes, so it is only offered as a
component of ``ensemble`` (see docs/benchmarks-nab.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.base import Detector
from models.detectors.ensemble import Ensemble
from models.detectors.holtwinters import HoltWintersResidual
from models.detectors.hst import HSTDetector
from models.detectors.robust import RobustZ, SeasonalRobustZ
from models.detectors.windowed import WindowedGaussian
from models.detectors.zscore import ZScore

DETECTORS: dict[str, Callable[..., Detector]] = {
    "zscore": ZScore,
    "robust": RobustZ,
    "seasonal_robust": SeasonalRobustZ,
    "holtwinters": HoltWintersResidual,
    "hst": HSTDetector,
    "windowed_gaussian": WindowedGaussian,
    "ensemble": Ensemble,
}


def make_detector(name: str, **options: Any) -> Detector:
    """A fresh detector of the named kind, built with ``options``; ``ValueError`` names the known ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**options)
