"""Distribution change: relative entropy of a short recent window against a longer reference.

After NAB's "relative entropy" detector (Wang et al.): the ``window`` most recent
values (the current one included) are binned on ``bins`` equal-width bins
spanning the *reference* window's range -- the ``reference`` values just before the
recent window -- plus one bin below and one above that range. The raw measure is
the Kullback-Leibler divergence ``sum p log(p / q)`` of the recent histogram ``p``
from the (add-1/2 smoothed) reference histogram ``q``. The bin edges and ``q`` are
recomputed every ``refresh`` points. A change of level, of spread or of shape
moves ``p`` away from ``q`` and stays visible for a whole window, which the
point-wise detectors miss when each single point is unremarkable. Memory is
bounded: ``reference + window`` floats.

>>> import numpy as np
>>> from models.detectors.entropy import RelativeEntropy
>>> rng = np.random.default_rng(3)
>>> xs = rng.normal(0, 1, 1500); xs[1200:] = rng.normal(0, 4, 300)  # the spread quadruples
>>> scores = RelativeEntropy().score_learn_many(xs, 60.0 * np.arange(1500))
>>> bool(scores[1200:1300].max() > 0.6 > scores[300:1200].max())
True
"""

from __future__ import annotations

from collections import deque

import numpy as np

from models.detectors.base import CalibratedDetector


class RelativeEntropy(CalibratedDetector):
    """KL divergence of the recent-window histogram from the reference histogram, then calibrated."""

    def __init__(
        self,
        window: int = 64,
        reference: int = 1000,
        bins: int = 10,
        refresh: int = 16,
        min_reference: int = 50,
        **calibration: float,
    ):
        super().__init__(**calibration)  # type: ignore[arg-type]
        self.window = window
        self.reference = reference
        self.bins = bins
        self.refresh = refresh
        self.min_reference = min_reference
        self.values: deque[float] = deque(maxlen=reference + window - 1)  # past x
        self.n = 0  # points learned
        self.edges: np.ndarray | None = None
        self.q: np.ndarray | None = None

    # -- helpers --------------------------------------------------------------
    def _fit_reference(self, ref: np.ndarray) -> None:
        lo, hi = float(ref.min()), float(ref.max())
        mag = max(1.0, abs(lo), abs(hi))
        if hi - lo <= 1e-12 * mag:
            hi = lo + 1e-9 * mag
        edges = np.linspace(lo, hi, self.bins + 1)
        edges[0] -= 1e-12 * mag
        edges[-1] += 1e-12 * mag
        counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
        self.edges = edges
        self.q = (counts + 0.5) / (counts.sum() + 0.5 * len(counts))

    def _kl(self, recent: np.ndarray) -> float:
        assert self.edges is not None and self.q is not None
        p = np.bincount(np.searchsorted(self.edges, recent, side="right"), minlength=len(self.edges) + 1) / len(recent)
        m = p > 0
        return float((p[m] * np.log(p[m] / self.q[m])).sum())

    def _refit_due(self, n: int) -> bool:
        return n >= self.window + self.min_reference and (self.edges is None or n % self.refresh == 0)

    # -- raw measure ----------------------------------------------------------
    def raw_one(self, x: float, t: float) -> float:
        if self.edges is None:
            return float("nan")
        past = np.fromiter(self.values, dtype=np.float64)
        return self._kl(np.append(past[len(past) - (self.window - 1) :], x))

    def learn_raw(self, x: float, t: float) -> None:
        self.values.append(x)
        self.n += 1
        if self._refit_due(self.n):
            past = np.fromiter(self.values, dtype=np.float64)
            self._fit_reference(past[max(0, len(past) - (self.window - 1) - self.reference) : len(past) - (self.window - 1)])

    def raw_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The same computation over one array of past + new values (no per-point deque copies)."""
        xs = np.asarray(xs, dtype=np.float64)
        past = np.fromiter(self.values, dtype=np.float64)
        allx = np.concatenate([past, xs])
        off = len(past)  # allx[off + i] is xs[i]; allx[:off + i] are the values before it
        w, ref_len = self.window, self.reference
        out = np.full(len(xs), np.nan)
        n = self.n
        for i in range(len(xs)):
            j = off + i
            if self.edges is not None:
                out[i] = self._kl(allx[j - (w - 1) : j + 1])
            n += 1
            if self._refit_due(n):
                end = j + 1 - (w - 1)
                self._fit_reference(allx[max(0, end - ref_len) : end])
        self.n = n
        self.values.extend(xs[-(ref_len + w - 1) :].tolist())
        return out
