"""Leave-one-group-out choice of the risk planner's hyper-parameters, and its held-out report.

Every configuration of :data:`GRID` replays every series once (a planner sees one series
only, so a series' decisions do not depend on the others). For each target and each group
(NAB's series are one group, each ASD server another), the configuration is chosen on the
*other* groups only: first one whose pooled overload rate is within ``band`` of the target,
then the fewest series above twice the target, then the lowest mean over series of
replica-hours relative to the oracle (a mean, so that one series with many replicas does not
choose for all). The held-out group is then scored with it, and HPA is tuned on the held-out series
themselves (which favours HPA):

* *HPA per series*: each series its own headroom (Kubernetes configures an HPA per
  workload), the smallest at which its overload rate is at most the planner's on that series;
* *HPA pooled*: one headroom for the group, the smallest at which the pooled rate is at most
  the planner's pooled rate.

The planner is Pareto-better than an HPA setting when it uses fewer replica-hours: every
headroom at least as safe costs as much or more (replicas grow with the headroom).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from models.evaluation.risk import Decisions, Score, hpa_headroom_for, hpa_score, pooled, replay_all, score
from models.evaluation.series import LoadSeries
from models.forecasting.risk import RiskPlanner

GRID: list[dict] = [
    dict(scale=scale, base_windows=b, memory=m, adapt_rate=a, smoothing=s, tail=t, season=p)
    for scale, b, m, a, s, t, p in itertools.product(("spread", "ratio"), (1, 3), (100, 300, 1000), (0.0, 0.005, 0.02, 0.05),
                                                     (0.05, 0.2), (0, 20), (0, 24))
]


def describe(config: dict) -> str:
    """A short label of a configuration, e.g. ``spread b1 m300 a0.005 s0.2 t0 p24``."""
    return (f"{config['scale']} b{config['base_windows']} m{config['memory']} "
            f"a{config['adapt_rate']:g} s{config['smoothing']:g} t{config['tail']} p{config.get('season', 0)}")


@dataclass(frozen=True)
class Outcome:
    """The held-out result of one group (or of all groups pooled) at one target."""

    group: str
    config: str
    planner: Score
    worst_rate: float
    worst_series: str
    over_twice: int
    series: int
    hpa_each: Score
    hpa_pooled: Score
    hpa_headroom: float
    hpa_pooled_worst: float  # the highest overload rate of a series under the pooled headroom

    @property
    def pareto_each(self) -> bool:
        """Fewer replica-hours than HPA with, on every series, the cheapest headroom at least as safe as the planner."""
        return self.planner.replicas < self.hpa_each.replicas

    @property
    def pareto_pooled(self) -> bool:
        """Fewer replica-hours than HPA with the cheapest single headroom at least as safe, pooled."""
        return self.planner.replicas < self.hpa_pooled.replicas


def replay_grid(corpus: Sequence[LoadSeries], target: float, window: int = 12,
                configs: Iterable[dict] = GRID) -> dict[str, list[Decisions]]:
    """Decisions of every series under every configuration, by :func:`describe` label."""
    return {describe(c): replay_all(corpus, lambda capacity, c=c: RiskPlanner(window, target, capacity=capacity, **c),
                                    window) for c in configs}


def choose(runs: dict[str, list[Decisions]], groups: set[str], target: float, band: float = 0.015) -> str:
    """The configuration label chosen on the series of ``groups`` (see module docstring)."""
    def key(label: str) -> tuple:
        scores = [score(d.planned, d) for d in runs[label] if d.group in groups]
        total = pooled(scores)
        return (abs(total.rate - target) > band, sum(s.rate > 2 * target for s in scores),
                sum(s.cost for s in scores) / len(scores))
    return min(runs, key=key)


def outcome(group: str, label: str, decisions: Sequence[Decisions], target: float) -> Outcome:
    """Score ``decisions`` (made with ``label``) and the HPA settings tuned to match them."""
    scores = [score(d.planned, d) for d in decisions]
    total = pooled(scores)
    worst = max(range(len(scores)), key=lambda i: scores[i].rate)
    each = pooled([hpa_score([d], hpa_headroom_for([d], s.rate)) for d, s in zip(decisions, scores)])
    headroom = hpa_headroom_for(decisions, total.rate)
    return Outcome(group, label, total, scores[worst].rate, decisions[worst].name,
                   sum(s.rate > 2 * target for s in scores), len(scores), each, hpa_score(decisions, headroom), headroom,
                   max(hpa_score([d], headroom).rate for d in decisions))


def cross_validate(runs: dict[str, list[Decisions]], target: float) -> tuple[list[Outcome], list[Decisions]]:
    """The outcome of each held-out group, and every held-out decision (each series is held out
    once; pool them with :func:`outcome`)."""
    series = next(iter(runs.values()))
    groups = sorted({d.group for d in series})
    folds, held_out = [], []
    for group in groups:
        label = choose(runs, set(groups) - {group}, target)
        decisions = [d for d in runs[label] if d.group == group]
        folds.append(outcome(group, label, decisions, target))
        held_out.extend(decisions)
    return folds, held_out
