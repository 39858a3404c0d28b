"""Overload rate and replica-hours of risk-targeted planners, against HPA and the hindsight oracle.

A series is replayed through a planner (:class:`~models.forecasting.risk.RiskPlanner`).
After ``warmup`` values (a multiple of the window, so decisions fall on the planner's own
window ends), every window is a decision: the planner's planned load, the actual peak of the
next window and the peak of the last one are kept (:class:`Decisions`). With ``capacity`` load
units per replica (a fraction of the warm-up median; nothing later is peeked at):

* the planner runs ``replicas_needed(planned)``, the oracle ``replicas_needed(actual peak)``;
* a window is *overloaded* when its replicas cannot serve its actual peak;
* the reactive rule of Kubernetes' Horizontal Pod Autoscaler runs
  ``replicas_needed(last peak * (1 + headroom))``; :func:`hpa_headroom_for` bisects the
  smallest headroom whose pooled overload rate (or every series' rate) is at most a goal.

Replica-hours are counted in windows (every window has the same length, so ratios of sums
are ratios of replica-hours).

>>> import numpy as np
>>> d = Decisions("s", "g", np.array([10.0, 10.0]), np.array([9.0, 11.0]), np.array([10.0, 9.0]), 1.0)
>>> score(d.planned, d), score(d.last_peak, d)  # (overloads, windows, replicas, oracle replicas)
(Score(overloads=1, windows=2, replicas=20, oracle=20), Score(overloads=1, windows=2, replicas=19, oracle=20))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from models.evaluation.scaling import decision_points, warmup_capacity
from models.evaluation.series import LoadSeries, default_warmup
from models.forecasting.risk import RiskPlanner


def replicas_needed(load: np.ndarray, capacity: float) -> np.ndarray:
    """``ScalingPolicy(capacity, headroom=0, min_replicas=1)`` without an upper bound, vectorised:
    ``max(ceil(load / capacity), 1)``."""
    return np.maximum(np.ceil(np.asarray(load, dtype=np.float64) / capacity - 1e-9), 1.0)


@dataclass(frozen=True)
class Decisions:
    """Per decision window of one series: planned load, actual peak and the last window's peak."""

    name: str
    group: str
    planned: np.ndarray
    peak: np.ndarray
    last_peak: np.ndarray
    capacity: float


def replay(series: LoadSeries, make: Callable[[float], RiskPlanner], window: int = 12,
           capacity_fraction: float = 0.1) -> Decisions:
    """Replay ``series`` through ``make(capacity)`` (warm-up :func:`default_warmup`, rounded
    down to whole windows of ``window``, the planner's)."""
    values = series.values
    warmup = default_warmup(len(values)) // window * window
    if warmup < window or warmup + window > len(values):
        raise ValueError(f"{series.name}: too short for a warm-up and one window of {window}")
    capacity = warmup_capacity(values[:warmup], capacity_fraction)
    planner = make(capacity)
    if planner.window != window:
        raise ValueError(f"the planner's window ({planner.window}) is not the decision window ({window})")
    decisions = decision_points(len(values), warmup, window)
    planned = []
    for i, y in enumerate(values[: decisions[-1]]):
        planner.learn_one(y)
        if i + 1 >= warmup and (i + 1 - warmup) % window == 0:
            planned.append(planner.forecast_peak())
    v = np.asarray(values, dtype=np.float64)
    peak = np.array([v[s : s + window].max() for s in decisions])
    last = np.array([v[s - window : s].max() for s in decisions])
    return Decisions(series.name, series.group, np.array(planned), peak, last, capacity)


class Score(NamedTuple):
    """Overloaded windows, windows, replica-windows run and the oracle's replica-windows."""

    overloads: int
    windows: int
    replicas: int
    oracle: int

    def __add__(self, other: object) -> Score:  # type: ignore[override]
        assert isinstance(other, Score)
        return Score(*(a + b for a, b in zip(self, other)))

    @property
    def rate(self) -> float:
        return self.overloads / self.windows

    @property
    def cost(self) -> float:
        """Replica-hours relative to the hindsight oracle."""
        return self.replicas / self.oracle


def score(load: np.ndarray, d: Decisions) -> Score:
    """How replicas planned for ``load`` fared on the decisions ``d``."""
    replicas = replicas_needed(load, d.capacity)
    return Score(int(np.sum(replicas * d.capacity < d.peak)), len(d.peak), int(replicas.sum()),
                 int(replicas_needed(d.peak, d.capacity).sum()))


def pooled(scores: Sequence[Score]) -> Score:
    """The sum of ``scores`` (pooled over series)."""
    return sum(scores[1:], scores[0])


def hpa_score(decisions: Sequence[Decisions], headroom: float) -> Score:
    """HPA's pooled score at ``headroom``: replicas for the last window's peak times ``1 + headroom``."""
    return pooled([score(d.last_peak * (1.0 + headroom), d) for d in decisions])


def hpa_headroom_for(decisions: Sequence[Decisions], goal: float, iterations: int = 50, worst: bool = False) -> float:
    """The smallest headroom (to ``2**-iterations`` relative) at which HPA's pooled overload rate
    is at most ``goal`` (with ``worst``: every series' own rate): doubled from 1 until it is
    reached, then bisected (overloads never grow with the headroom)."""
    def rate(headroom: float) -> float:
        if worst:
            return max(score(d.last_peak * (1.0 + headroom), d).rate for d in decisions)
        return hpa_score(decisions, headroom).rate

    hi = 1.0
    while rate(hi) > goal:
        hi *= 2.0
        if hi > 1e12:
            raise ValueError(f"no headroom reaches an overload rate of {goal}")
    lo = 0.0
    if rate(lo) <= goal:
        return lo
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if rate(mid) <= goal else (mid, hi)
    return hi


def replay_all(corpus: Sequence[LoadSeries], make: Callable[[float], RiskPlanner], window: int = 12) -> list[Decisions]:
    """:func:`replay` every series of ``corpus``, each with a fresh planner ``make(capacity)``."""
    return [replay(s, make, window) for s in corpus]
