"""Rarity gate: a deviation counts only if fewer than ``k`` as large were seen recently.

A series whose spikes recur (a nightly batch job, a load balancer's periodic
bursts) keeps producing large point-wise deviations; each one looks new to a
z-score, yet an operator sees a pattern, not an incident. :class:`RarityGate`
passes a raw measure only if it is strictly larger than the ``k``-th largest of
the recent ones.

"Recent" is counted in blocks of ``block`` measures: the gate keeps the ``k``
largest of each of the last ``horizon // block`` complete blocks and of the block
being filled, so it remembers at most ``k * (horizon // block + 1)`` floats and
its window holds between ``horizon`` and ``horizon + block - 1`` measures (all of
them until that many were seen). Each measure costs a few comparisons.

>>> gate = RarityGate(k=2, horizon=4, block=2)
>>> [gate.learn(r) for r in [3.0, 1.0, 3.0]]  # fewer than 2 earlier measures: all pass
[True, True, True]
>>> gate.passes(3.0), gate.passes(3.5)  # 3.0 ties the 2nd largest (3.0); 3.5 beats it
(False, True)
>>> [gate.learn(r) for r in [0.5, 0.5, 0.5]]
[False, False, False]
>>> gate.passes(2.0)  # the block [3.0, 1.0] has left the window: the 2nd largest is 0.5
True
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from typing import Any


class RarityGate:
    """Passes a measure iff it exceeds the ``k``-th largest of the recent measures."""

    _kth: float | None = None  # kth_largest(), cached until open or closed_top change; not pickled

    def __init__(self, k: int = 5, horizon: int = 4000, block: int = 250):
        if k < 1 or block < 1 or horizon < block:
            raise ValueError("need k >= 1, block >= 1 and horizon >= block")
        self.k = k
        self.block = block
        self.closed: deque[list[float]] = deque(maxlen=horizon // block)  # k largest of each full block
        self.open: list[float] = []  # k largest of the block being filled, ascending
        self.filled = 0  # measures in the block being filled
        self.closed_top: list[float] = []  # k largest over the closed blocks

    def kth_largest(self) -> float:
        """The ``k``-th largest recent measure; ``-inf`` until ``k`` were seen."""
        if self._kth is None:
            top = heapq.nlargest(self.k, self.closed_top + self.open)
            self._kth = top[-1] if len(top) == self.k else -math.inf
        return self._kth

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if name != "_kth"}

    def passes(self, raw: float) -> bool:
        """Whether ``raw`` is rarer than the ``k``-th largest recent measure (NaN never passes)."""
        return raw == raw and raw > self.kth_largest()

    def learn(self, raw: float) -> bool:
        """``passes(raw)``, then remember ``raw``; NaN is neither judged nor remembered."""
        if raw != raw:
            return False
        kth = self._kth
        verdict = raw > (self.kth_largest() if kth is None else kth)  # passes(raw), inlined
        top = self.open
        if len(top) < self.k or raw > top[0]:
            bisect.insort(top, raw)
            del top[: -self.k]
            self._kth = None
        self.filled += 1
        if self.filled == self.block:
            self.closed.append(self.open)
            self.closed_top = heapq.nlargest(self.k, (v for top in self.closed for v in top))
            self.open, self.filled = [], 0
            self._kth = None
        return verdict
