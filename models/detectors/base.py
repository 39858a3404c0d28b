"""A detector built from a raw anomaly measure plus per-series calibration.

Subclasses implement ``raw_one`` (the raw measure of a point, no learning),
``learn_raw`` (update the model) and optionally ``raw_learn_many`` (a numpy fast
path that scores then learns a batch). This class turns the raw measure into a
calibrated, suppressed score in [0, 1) (see :mod:`models.detectors.calibration`)
and exposes ``z_learn_many`` so an ensemble can combine calibrated components.
With ``rarity_k > 0`` a :class:`~models.detectors.rarity.RarityGate` zeroes the z
of every raw measure that is not larger than the ``rarity_k``-th largest of the
last ``rarity_horizon`` ones (a deviation that keeps recurring is a pattern).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from models.base import Detector
from models.detectors.calibration import ScoreCalibrator, Suppressor, squash, squash_many
from models.detectors.rarity import RarityGate

SHORT_CALL = 2  # batches up to this many points take the scalar path (same scores, less overhead)


class CalibratedDetector(Detector):
    """Raw measure -> z against its own history -> ``z / (z + scale)`` -> suppression."""

    gate: RarityGate | None = None  # also what checkpoints from before the option restore to
    pointwise = True  # judges single points (False: a window view), see Ensemble's rarity gate

    def __init__(
        self,
        calib_alpha: float = 0.003,
        warmup: int = 150,
        scale: float = 4.0,
        suppress_level: float = 0.6,
        suppress_span: int = 100,
        suppress_keep: float = 0.3,
        rarity_k: int = 0,
        rarity_horizon: int = 4000,
    ):
        self.calibrator = ScoreCalibrator(alpha=calib_alpha, warmup=warmup)
        self.gate = RarityGate(k=rarity_k, horizon=rarity_horizon) if rarity_k > 0 else None
        self.scale = scale
        self.suppressor = Suppressor(level=suppress_level, span=suppress_span, keep=suppress_keep)
        self._cache: tuple[float, float, float] | None = None  # (x, t, raw) of the last score_one

    # -- to implement -------------------------------------------------------
    @abc.abstractmethod
    def raw_one(self, x: float, t: float) -> float:
        """Non-negative raw anomaly measure of ``x`` at ``t``, without learning it; NaN while not ready."""

    @abc.abstractmethod
    def learn_raw(self, x: float, t: float) -> None:
        """Update the model with ``x`` at ``t``."""

    def raw_learn_one(self, x: float, t: float) -> float:
        """``raw_one(x, t)``, then ``learn_raw(x, t)`` (override to share work between the two)."""
        raw = self.raw_one(x, t)
        self.learn_raw(x, t)
        return raw

    def raw_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Raw measure of each point before learning it (override with a numpy fast path)."""
        out = np.empty(len(xs))
        step = self.raw_learn_one
        for i, (x, t) in enumerate(zip(xs.tolist(), ts.tolist())):
            out[i] = step(x, t)
        return out

    def __getstate__(self) -> dict[str, Any]:
        """The state without the memo of the last peek (:meth:`_raw_cached`): a memo, not state."""
        return dict(self.__dict__, _cache=None)

    # -- Detector interface -------------------------------------------------
    def _raw_cached(self, x: float, t: float) -> float:
        if self._cache is not None and self._cache[0] == x and self._cache[1] == t:
            return self._cache[2]
        raw = self.raw_one(x, t)
        self._cache = (x, t, raw)
        return raw

    def peek_z(self, x: float, t: float) -> float:
        """Calibrated (and gated) z of ``x`` at ``t``, without learning it."""
        raw = self._raw_cached(x, t)
        if self.gate is not None and not self.gate.passes(raw):
            return 0.0
        return self.calibrator.z(raw)

    def learn_point(self, x: float, t: float) -> None:
        """Learn ``x`` at ``t`` everywhere except the suppressor (see :meth:`learn_one`)."""
        raw = self._raw_cached(x, t)
        self.calibrator.learn(raw)
        if self.gate is not None:
            self.gate.learn(raw)
        self.learn_raw(x, t)
        self._cache = None

    def score_one(self, x: float, t: float) -> float:
        return self.suppressor.peek(squash(self.peek_z(x, t), self.scale))

    def learn_one(self, x: float, t: float) -> None:
        self.suppressor.step(squash(self.peek_z(x, t), self.scale))
        self.learn_point(x, t)

    def z_learn_one(self, x: float, t: float) -> float:
        """Calibrated (and gated) z of ``x`` before learning it, unsuppressed; learns it."""
        self._cache = None  # the memo of a peek is of the state before this point
        raw = self.raw_learn_one(x, t)
        if raw != raw:  # NaN: not ready; neither calibrated nor gated (z_learn and gate.learn skip it)
            return 0.0
        z = self.calibrator.z_learn(raw)
        gate = self.gate
        if gate is not None and not gate.learn(raw):
            return 0.0
        return z

    def z_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Calibrated (and gated) z of each point before learning it, unsuppressed; learns the batch."""
        self._cache = None
        if len(xs) <= SHORT_CALL:  # the stream's usual call: a scalar loop skips the numpy set-up
            return np.array([self.z_learn_one(x, t) for x, t in zip(np.asarray(xs).tolist(), np.asarray(ts).tolist())])
        raws = self.raw_learn_many(np.asarray(xs, dtype=np.float64), np.asarray(ts, dtype=np.float64))
        z = self.calibrator.z_learn_many(raws)
        if self.gate is not None:
            z[[not self.gate.learn(r) for r in raws.tolist()]] = 0.0
        return z

    def score_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.suppressor.step_many(squash_many(self.z_learn_many(xs, ts), self.scale))
