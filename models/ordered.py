"""Learn each point of a series once, in time order, whatever the stream delivers.

Kafka delivers at least once: after a crash a batch is replayed, and a record that
was forwarded to its series' partition may be forwarded twice. :class:`InOrder`
wraps a detector so that it learns only points later than every point it has
learned; a replayed or late point is still scored (against the current state)
but not learned again, so a replay cannot bias the model.

>>> import numpy as np
>>> from models.detectors.zscore import ZScore
>>> model = InOrder(ZScore())
>>> _ = model.score_learn_many(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
>>> model.learned, model.last_ts
(3, 30.0)
>>> _ = model.score_learn_many(np.array([2.0, 3.0, 4.0]), np.array([20.0, 30.0, 40.0]))  # a replay, then one new
>>> model.learned, model.last_ts
(4, 40.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.base import Detector


def fresh_mask(ts: Sequence[float] | np.ndarray, last_ts: float | None = None) -> np.ndarray:
    """Which of ``ts`` (in order) are later than every time before them and than ``last_ts``.

    >>> fresh_mask([5.0, 6.0, 6.0, 4.0, 7.0], last_ts=5.0).tolist()
    [False, True, False, False, True]
    """
    ts = np.asarray(ts, dtype=np.float64)
    start = -math.inf if last_ts is None else last_ts
    return ts > np.maximum.accumulate(np.concatenate(([start], ts[:-1]))) if len(ts) else np.zeros(0, dtype=bool)


class InOrder(Detector):
    """A detector that learns only points later than the last one it learned."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.last_ts = -math.inf
        self.learned = 0

    def score_one(self, x: float, t: float) -> float:
        return self.detector.score_one(x, t)

    def learn_one(self, x: float, t: float) -> None:
        if t > self.last_ts:
            self.detector.learn_one(x, t)
            self.last_ts = t
            self.learned += 1

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Score every point; learn the fresh ones (their scores come first, stale ones are peeked after)."""
        xs, ts = np.asarray(xs, dtype=np.float64), np.asarray(ts, dtype=np.float64)
        times = ts.tolist()
        if times and times[0] > self.last_ts and all(a < b for a, b in zip(times, times[1:])):
            return self._learn(xs, ts)  # the usual case, all fresh: no masking on the hot path
        mask = fresh_mask(ts, self.last_ts)
        scores = np.empty(len(xs))
        if mask.any():
            scores[mask] = self._learn(xs[mask], ts[mask])
        for i in np.flatnonzero(~mask).tolist():
            scores[i] = self.detector.score_one(float(xs[i]), float(ts[i]))
        return scores

    def _learn(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        scores = self.detector.score_learn_many(xs, ts)
        self.last_ts = float(ts[-1])
        self.learned += len(ts)
        return scores
