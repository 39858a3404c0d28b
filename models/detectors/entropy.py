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

Between two refits the edges are fixed, so a batch is binned once per refit and the
recent histogram slides by one count per point; each bin's term ``p log(p / q)`` is
looked up in a table built at the refit. The terms are summed with ``math.fsum``
(exactly rounded), so the score does not depend on the order of the bins.

>>> import numpy as np
>>> from models.detectors.entropy import RelativeEntropy
>>> rng = np.random.default_rng(3)
>>> xs = rng.normal(0, 1, 1500); xs[1200:] = rng.normal(0, 4, 300)  # the spread quadruples
>>> scores = RelativeEntropy().score_learn_many(xs, 60.0 * np.arange(1500))
>>> bool(scores[1200:1300].max() > 0.6 > scores[300:1200].max())
True
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

from models.detectors.base import CalibratedDetector


class RelativeEntropy(CalibratedDetector):
    """KL divergence of the recent-window histogram from the reference histogram, then calibrated."""

    pointwise = False  # a window view: the ensemble's rarity gate does not apply

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
        self._buf = np.empty(2 * self._keep)  # past x in _buf[:_len]; the last _keep are the history
        self._len = 0
        self.n = 0  # points learned
        self.edges: np.ndarray | None = None
        self.q: np.ndarray | None = None
        self._terms: array | None = None  # _terms[b * (window + 1) + c]: p log(p/q) of c counts in bin b

    @property
    def _keep(self) -> int:
        """Past values the next point needs: its ``window - 1`` predecessors and the reference before them."""
        return self.reference + self.window - 1

    @property
    def values(self) -> np.ndarray:
        """The retained past values, oldest first (at most ``reference + window - 1``)."""
        return self._buf[max(0, self._len - self._keep) : self._len]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__(), _buf=self.values.copy(), _terms=None)
        state["_len"] = len(state["_buf"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuilds the term table; also loads checkpoints from before the buffer (a ``values`` deque)."""
        if "values" in state:
            past = np.fromiter(state.pop("values"), dtype=np.float64)
            state["_buf"], state["_len"] = past, len(past)
        self.__dict__.update(state)
        self._buf = np.concatenate([self._buf, np.empty(self._keep)])
        if self.q is not None:
            self._fit_terms()

    # -- helpers --------------------------------------------------------------
    def _append(self, xs: np.ndarray) -> int:
        """Append ``xs`` to the buffer (dropping history older than ``_keep``); the index of ``xs[0]``."""
        if self._len + len(xs) > len(self._buf):
            past = self.values
            buf = np.empty(max(2 * self._keep, len(past) + 2 * len(xs)))
            buf[: len(past)] = past
            self._buf, self._len = buf, len(past)
        start = self._len
        self._buf[start : start + len(xs)] = xs
        self._len += len(xs)
        return start

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
        self._fit_terms()

    def _fit_terms(self) -> None:
        assert self.q is not None
        p = np.arange(self.window + 1) / self.window
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = p * np.log(p / self.q[:, None])
        terms[:, 0] = 0.0  # an empty bin adds nothing
        self._terms = array("d", terms.ravel().tobytes())

    def _kl(self, counts: list[int]) -> float:
        """``sum p log(p / q)`` over the non-empty bins of the recent histogram ``counts``."""
        assert self._terms is not None
        row = self.window + 1
        return math.fsum(self._terms[b * row + c] for b, c in enumerate(counts) if c)

    def _refit_due(self, n: int) -> bool:
        return n >= self.window + self.min_reference and (self.edges is None or n % self.refresh == 0)

    def _refit_if_due(self, learned: int) -> None:
        """Refit the edges if due, ``learned`` being the buffer index just past the last learned point."""
        if self._refit_due(self.n):
            end = learned - (self.window - 1)  # the reference ends where the next recent window starts
            self._fit_reference(self._buf[max(0, end - self.reference) : end])

    def _points_before_refit(self) -> int:
        """How many points to learn until (and including) the one after which the edges are refit."""
        first = self.window + self.min_reference
        if self.edges is None:
            return max(first - self.n, 1)
        nxt = (self.n // self.refresh + 1) * self.refresh
        while not self._refit_due(nxt):
            nxt += self.refresh
        return nxt - self.n

    def _score_segment(self, end: int, count: int, out: np.ndarray) -> None:
        """Raw measure of the ``count`` points ending at buffer index ``end`` (exclusive), edges fixed."""
        if self.edges is None:
            out[:] = np.nan
            return
        w = self.window
        first = end - count  # buffer index of the first point
        bins = np.searchsorted(self.edges, self._buf[first - (w - 1) : end], side="right").tolist()
        counts = [0] * (self.bins + 2)
        for b in bins[: w - 1]:
            counts[b] += 1
        for i in range(count):
            counts[bins[w - 1 + i]] += 1
            out[i] = self._kl(counts)
            counts[bins[i]] -= 1

    # -- raw measure ----------------------------------------------------------
    def raw_one(self, x: float, t: float) -> float:
        out = np.empty(1)
        self._append(np.array([x]))
        self._score_segment(self._len, 1, out)
        self._len -= 1  # not learned
        return float(out[0])

    def learn_raw(self, x: float, t: float) -> None:
        self._append(np.array([x]))
        self.n += 1
        self._refit_if_due(self._len)

    def raw_learn_many(self, xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Score then learn, one segment of fixed edges at a time."""
        xs = np.asarray(xs, dtype=np.float64)
        start = self._append(xs)
        out = np.empty(len(xs))
        i = 0
        while i < len(xs):
            count = min(self._points_before_refit(), len(xs) - i)
            self._score_segment(start + i + count, count, out[i : i + count])
            i += count
            self.n += count
            self._refit_if_due(start + i)
        return out
