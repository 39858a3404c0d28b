"""Detector names a user can configure (``M1_DETECTOR``), mapped to constructors.

:class:`~models.detectors.entropy.RelativeEntropy` and
:class:`~models.detectors.context.ContextSurprise` are deliberately not here: they
see changes of distribution and of pattern, not lone spikes, so they are only offered
as components of ``ensemble`` (see docs/benchmarks-nab.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.base import Detector
from models.detectors.ensemble import COMPONENTS, Ensemble
from models.detectors.zscore import ZScore

#: Ensemble components that are not detectors on their own (they miss a lone spike).
COMPONENT_ONLY = frozenset({"relative_entropy", "context"})

DETECTORS: dict[str, Callable[..., Detector]] = {
    "zscore": ZScore,
    **{name: cls for name, cls in COMPONENTS.items() if name not in COMPONENT_ONLY},
    "ensemble": Ensemble,
}


def make_detector(name: str, **options: Any) -> Detector:
    """A fresh detector of the named kind, built with ``options``; ``ValueError`` names the known ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](**options)
