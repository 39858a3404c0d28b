"""Rarity gate: a deviation counts only if fewer than ``k`` as large were seen recently.

A series whose spikes recur (a nightly batch job, a load balancer's periodic
bursts) keeps producing large point-wise deviations; each one looks new to a
z-score, yet an operator sees a pattern, not an incident. :class:`RarityGate`
remembers enough of the last ``horizon`` raw measures to know their ``k``-th
largest value exactly and passes a new measure only if it is strictly larger.

It keeps only *candidates*: a measure with ``k`` later measures at least as large
can never again be among the ``k`` largest of a window that still holds it, so it
is dropped. For noisy measures that leaves a few dozen values; the list is capped
at ``max_candidates`` by dropping the oldest, which can only lower the ``k``-th
largest and so only lets more through (the gate fails open, never silences).

>>> gate = RarityGate(k=2, horizon=5)
>>> [gate.learn(r) for r in [3.0, 1.0, 3.0]]  # fewer than 2 earlier measures: all pass
[True, True, True]
>>> gate.passes(3.0), gate.passes(3.5)  # 3.0 ties the 2nd largest (3.0); 3.5 beats it
(False, True)
>>> gate.passes(2.0)
False
>>> [gate.learn(r) for r in [0.5, 0.5, 0.5]]
[False, False, False]
>>> gate.passes(2.0)  # the first 3.0 left the last 5: the 2nd largest is now 1.0
True
"""

from __future__ import annotations

import math


class RarityGate:
    """Passes a measure iff it exceeds the ``k``-th largest of the previous ``horizon`` measures."""

    def __init__(self, k: int = 5, horizon: int = 4000, max_candidates: int = 256):
        if k < 1 or horizon < k or max_candidates < k:
            raise ValueError("need 1 <= k <= horizon and k <= max_candidates")
        self.k = k
        self.horizon = horizon
        self.max_candidates = max_candidates
        self.seen = 0  # measures learned so far
        # [position, value, later measures >= value], oldest first
        self.candidates: list[list[float]] = []

    def kth_largest(self) -> float:
        """The ``k``-th largest of the last ``horizon`` measures; ``-inf`` until ``k`` were seen."""
        live = [c[1] for c in self.candidates if c[0] > self.seen - self.horizon]
        if len(live) < self.k:
            return -math.inf
        live.sort(reverse=True)
        return live[self.k - 1]

    def passes(self, raw: float) -> bool:
        """Whether ``raw`` is rarer than the ``k``-th largest recent measure (NaN never passes)."""
        return raw == raw and raw > self.kth_largest()

    def learn(self, raw: float) -> bool:
        """``passes(raw)``, then remember ``raw``; NaN is neither judged nor remembered."""
        if raw != raw:
            return False
        verdict = self.passes(raw)
        self.seen += 1
        kept = []
        for c in self.candidates:
            if c[0] <= self.seen - self.horizon:
                continue  # out of the window
            if c[1] <= raw:
                c[2] += 1
                if c[2] >= self.k:
                    continue  # k later measures at least as large: never needed again
            kept.append(c)
        kept.append([self.seen, raw, 0])
        self.candidates = kept[-self.max_candidates :]
        return verdict
