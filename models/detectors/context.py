"""Context surprise: how unexpected a value's level is, given the previous value's level.

After NAB's contextOSE (values quantised to a few levels; an anomaly is a context the
detector has not learned), reduced to its cheapest form: a first-order Markov chain over
quantised levels. Each value is mapped to one of ``bins`` equal-width levels of the recent range (the
minimum and maximum of the values learned in the current and the previous block of
``halve_every`` points, so one outlier stops compressing the levels after two blocks), or to
one of two extra levels below and above that range. The raw measure of a value is its surprise
``-log P(level | previous level)``, estimated from the transition counts with add-``alpha``
smoothing. A pattern change (a series that starts to oscillate, to jump between levels it
never jumped between, to leave its range) gives transitions that were never counted, which
no level- or distribution-based view needs to see. Counts are halved every ``halve_every``
learned points, so a pattern that becomes the norm stops being surprising.

Contract: the raw measure is non-negative, NaN for the first point (no previous level), and
depends only on the values learned before; state is ``(bins + 2) ** 2 + bins + 2`` floats
plus a few scalars (2.7 KiB pickled with 16 bins); a point costs O(1) (a halving costs
``(bins + 2) ** 2``). Chosen by cross-validation, not in-sample (docs/benchmarks-nab.md,
round 4): 16 bins; 4 / 32 bins and a second-order context were worse across folds; the
block-wise range scores as the ever-expanding one did (NAB 70.7 / 70.8, ASD 58.5 / 58.3).

>>> import numpy as np
>>> from models.detectors.context import ContextSurprise
>>> t = 300.0 * np.arange(1500)
>>> xs = np.where(np.arange(1500) % 2 == 0, 0.0, 1.0)  # a square wave of period 2 ...
>>> xs[1200:] = np.where(np.arange(300) % 3 == 0, 1.0, 0.0)  # ... that changes its pattern
>>> z = ContextSurprise().z_learn_many(xs, t)
>>> bool(z[1200:1210].max() > 5.0 > z[300:1200].max())
True
"""

from __future__ import annotations

import math
from array import array

from models.detectors.base import CalibratedDetector


class ContextSurprise(CalibratedDetector):
    """``-log P(level | previous level)`` of each value over quantised levels, then calibrated."""

    def __init__(self, bins: int = 16, alpha: float = 0.5, halve_every: int = 2000, **calibration: float):
        super().__init__(**calibration)  # type: ignore[arg-type]
        if bins < 1 or alpha <= 0 or halve_every < 1:
            raise ValueError("need bins >= 1, alpha > 0 and halve_every >= 1")
        self.bins = bins
        self.alpha = alpha
        self.halve_every = halve_every
        levels = bins + 2
        self.counts = array("d", bytes(8 * levels * levels))  # counts[prev * levels + level]
        self.totals = array("d", bytes(8 * levels))  # totals[prev]: transitions out of prev
        self.lo = math.inf  # range of the values learned in this block of halve_every points
        self.hi = -math.inf
        self.lo_before = math.inf  # ... and in the block before
        self.hi_before = -math.inf
        self.prev = -1  # level of the last learned value; -1 before the first
        self.n = 0

    def _level(self, x: float) -> int:
        """0 below the learned range, ``bins + 1`` above it, else ``1 + `` the bin (0 before any value)."""
        lo, hi = min(self.lo, self.lo_before), max(self.hi, self.hi_before)
        if self.n == 0 or x < lo:
            return 0
        if x > hi:
            return self.bins + 1
        if hi <= lo:
            return 1
        return 1 + min(self.bins - 1, int((x - lo) / (hi - lo) * self.bins))

    def _surprise(self, level: int) -> float:
        if self.prev < 0:
            return float("nan")
        levels = self.bins + 2
        seen = self.counts[self.prev * levels + level]
        return -math.log((seen + self.alpha) / (self.totals[self.prev] + self.alpha * levels))

    def _learn_level(self, x: float, level: int) -> None:
        if self.prev >= 0:
            self.counts[self.prev * (self.bins + 2) + level] += 1.0
            self.totals[self.prev] += 1.0
        self.prev = level
        self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        self.n += 1
        if self.n % self.halve_every == 0:
            self.lo_before, self.hi_before, self.lo, self.hi = self.lo, self.hi, math.inf, -math.inf
            self.counts = array("d", (c * 0.5 for c in self.counts))
            self.totals = array("d", (c * 0.5 for c in self.totals))

    def raw_one(self, x: float, t: float) -> float:
        return self._surprise(self._level(x))

    def learn_raw(self, x: float, t: float) -> None:
        self._learn_level(x, self._level(x))

    def raw_learn_one(self, x: float, t: float) -> float:
        """Surprise of ``x``, then learn it, quantising it once (``_level``, ``_surprise`` and
        ``_learn_level`` inlined: the stream's per-point path)."""
        bins, prev = self.bins, self.prev
        lo, hi, lo_before, hi_before = self.lo, self.hi, self.lo_before, self.hi_before
        lo_all = lo_before if lo_before < lo else lo  # min(lo, lo_before), as min compares
        hi_all = hi_before if hi_before > hi else hi
        if self.n == 0 or x < lo_all:
            level = 0
        elif x > hi_all:
            level = bins + 1
        elif hi_all <= lo_all:
            level = 1
        else:
            level = 1 + min(bins - 1, int((x - lo_all) / (hi_all - lo_all) * bins))
        if prev < 0:
            raw = float("nan")
        else:
            levels = bins + 2
            at = prev * levels + level
            seen = self.counts[at]
            raw = -math.log((seen + self.alpha) / (self.totals[prev] + self.alpha * levels))
            self.counts[at] = seen + 1.0
            self.totals[prev] += 1.0
        self.prev = level
        if x < lo:
            self.lo = x
        if x > hi:
            self.hi = x
        self.n += 1
        if self.n % self.halve_every == 0:
            self.lo_before, self.hi_before, self.lo, self.hi = self.lo, self.hi, math.inf, -math.inf
            self.counts = array("d", (c * 0.5 for c in self.counts))
            self.totals = array("d", (c * 0.5 for c in self.totals))
        return raw
