"""How far could spending the overload budget unevenly across series take the planner?

The bar pools the overload rate over series but caps each series at twice the target. One
HPA headroom shared by all series meets the pooled rate cheaply by letting the series that are
dearest to cover (spiky ones, where insuring a window costs many replicas) overload far above
the target. A planner can do the same within the cap by giving each series its own target,
``multiple x target``. :func:`hindsight_allocation` bounds what any such allocation could
gain: it replays every series at several multiples and picks, *in hindsight*, the multiple of
each series that minimises the pooled replica-hours with the pooled overload rate at most a
goal and every series at most ``cap`` (a Lagrangian sweep: each series minimises ``replicas +
price * overloads`` over its multiples within the cap, the price bisected until the pooled
overloads fit). No causal rule that sets per-series targets for this planner can do better
on these decisions.

>>> import numpy as np
>>> from models.evaluation.risk import Decisions
>>> peak = np.array([10.0, 10.0, 30.0, 10.0])
>>> safe, risky = (Decisions("s", "g", np.full(4, p), peak, peak, 1.0) for p in (30.0, 10.0))
>>> hindsight_allocation({1.0: [safe], 2.0: [risky]}, goal=0.25, cap=0.5)[0]
{'s': 2.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from models.evaluation.risk import Decisions, Score, pooled, replay_all, score
from models.evaluation.risk_cv import GRID, Outcome, describe
from models.evaluation.series import LoadSeries
from models.forecasting.risk import RiskPlanner

MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 1.95)


def _pick(options: list[tuple[float, Score]], price: float, cap: float) -> tuple[float, Score]:
    """The multiple of one series minimising ``replicas + price * overloads`` within ``cap``
    (the safest one when none is within it)."""
    allowed = [o for o in options if o[1].rate <= cap] or [min(options, key=lambda o: o[1].overloads)]
    return min(allowed, key=lambda o: (o[1].replicas + price * o[1].overloads, o[1].overloads))


def hindsight_allocation(runs: Mapping[float, Sequence[Decisions]], goal: float, cap: float,
                         iterations: int = 60) -> tuple[dict[str, float], Score]:
    """Per series, the multiple of ``runs`` (multiple -> every series' decisions, same order)
    chosen in hindsight, and the pooled score (module docstring)."""
    multiples = sorted(runs)
    series = [[(m, score(runs[m][i].planned, runs[m][i])) for m in multiples] for i in range(len(runs[multiples[0]]))]
    names = [d.name for d in runs[multiples[0]]]
    windows = sum(options[0][1].windows for options in series)

    def choice(price: float) -> list[tuple[float, Score]]:
        return [_pick(options, price, cap) for options in series]

    hi = 1.0
    while sum(s.overloads for _, s in choice(hi)) > goal * windows and hi < 1e15:
        hi *= 4.0
    lo = 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if sum(s.overloads for _, s in choice(mid)) <= goal * windows else (mid, hi)
    picked = choice(hi)
    return {name: m for name, (m, _) in zip(names, picked)}, pooled([s for _, s in picked])


def held_out_runs(corpus: Sequence[LoadSeries], folds: Sequence[Outcome], target: float,
                  multiples: Sequence[float] = MULTIPLES, window: int = 12) -> dict[float, list[Decisions]]:
    """Every series replayed at ``multiple x target`` with the configuration its fold chose
    without it (held-out order: folds in order, series in corpus order within a fold)."""
    configs = {describe(c): c for c in GRID}
    return {m: [d for o in folds for d in replay_all(
        [s for s in corpus if s.group == o.group],
        lambda capacity, c=configs[o.config]: RiskPlanner(window, min(m * target, 0.99), capacity=capacity, **c), window)]
        for m in multiples}
