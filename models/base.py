"""The small interface every detector implements.

A detector sees one series, in time order. ``score_one`` says how unusual a point is
*before* learning it (prequential), in [0, 1]; ``learn_one`` updates the state.
``score_learn_many`` does both for a batch and is where subclasses put their numpy
fast path; the default loops over the single-point methods, so both paths agree.
Detectors are plain Python objects: ``pickle`` is their checkpoint format.
"""

from __future__ import annotations

import abc

import numpy as np


class Detector(abc.ABC):
    """Base class of the per-series anomaly detectors."""

    @abc.abstractmethod
    def score_one(self, x: float, t: float) -> float:
        """Anomaly score of value ``x`` at epoch-seconds ``t``, in [0, 1], without learning it."""

    @abc.abstractmethod
    def learn_one(self, x: float, t: float) -> None:
        """Update the state with value ``x`` at epoch-seconds ``t``."""

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Score then learn each point in order; returns one score per point."""
        scores = np.empty(len(xs), dtype=np.float64)
        for i, (x, t) in enumerate(zip(xs.tolist(), ts.tolist())):
            scores[i] = self.score_one(x, t)
            self.learn_one(x, t)
        return scores
