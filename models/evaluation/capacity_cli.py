"""``m1 eval scaling`` and ``m1 eval cost``: capacity advice scored on held-out data.

``scaling``: the risk planner's overload rate and replica-hours against HPA, on NAB's
``realAWSCloudwatch`` request/ELB/CPU series (one group) and every ASD series read as load (a
group per server), hyper-parameters chosen leave-one-group-out (:mod:`models.evaluation.risk_cv`).
``cost``: period-end cost projections on usage series priced as cost
(:mod:`models.evaluation.cost_projection`), method and interval chosen leave-one-series-out.
Every number printed as held out is.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.evaluation.cost_projection import METHODS, PROXIES, cross_validate as cost_cv, error, is_cost_proxy, \
    project_series
from models.evaluation.risk_cv import GRID, Outcome, cross_validate, outcome, replay_grid
from models.evaluation.series import LoadSeries, default_asd_data, default_scaling_data, load_corpus, read_series

BAND = 0.015  # the bar: pooled overload rate within 1.5 points of the target


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _row(o: Outcome) -> list[str]:
    return [o.group, str(o.series), str(o.planner.windows), o.config, _pct(o.planner.rate),
            f"{_pct(o.worst_rate)} {o.worst_series}", str(o.over_twice), f"{o.planner.cost:.3f}",
            _pct(o.hpa_each.rate), f"{o.hpa_each.cost:.3f}", f"{o.hpa_headroom:.3f}", _pct(o.hpa_pooled.rate),
            _pct(o.hpa_pooled_worst), f"{o.hpa_pooled.cost:.3f}",
            f"{'yes' if o.pareto_each else 'no'} / {'yes' if o.pareto_pooled else 'no'}"]


def report(folds: list[Outcome], pools: list[Outcome], target: float) -> Table:
    """One table: every held-out fold, then pools of held-out decisions (in bold)."""
    table = Table(title=f"Target overload rate {target:.0%}: held-out folds (leave one group out)")
    columns = ("held out", "series", "windows", "config (chosen on the other groups)", "overload %",
               "worst series %", f"> {2 * target:.0%}", "RH / oracle", "HPA each\noverload %", "HPA each\nRH / oracle",
               "HPA pooled\nheadroom", "HPA pooled\noverload %", "HPA pooled\nworst %", "HPA pooled\nRH / oracle",
               "Pareto-better\neach / pooled")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i in (0, 3, 5) else "right", no_wrap=True)
    for o in folds:
        table.add_row(*_row(o))
    for pool in pools:
        table.add_row(*_row(pool), style="bold")
    return table


def verdict(folds: list[Outcome], total: Outcome, target: float) -> list[str]:
    """The bar's lines for one target: pooled band, no series above twice, Pareto, worst folds."""
    worst_rate = max(folds, key=lambda o: o.planner.rate)
    worst_cost = max(folds, key=lambda o: o.planner.cost / o.hpa_each.cost)
    return [
        f"pooled overload {_pct(total.planner.rate)} % (bar {_pct(target - BAND)}-{_pct(target + BAND)} %): "
        f"{'met' if abs(total.planner.rate - target) <= BAND else 'NOT met'}",
        f"series above {2 * target:.0%}: {total.over_twice} of {total.series} "
        f"(worst {_pct(total.worst_rate)} %, {total.worst_series}): {'met' if not total.over_twice else 'NOT met'}",
        f"Pareto-better pooled: vs HPA per series {'yes' if total.pareto_each else 'NO'} "
        f"({total.planner.cost:.3f} vs {total.hpa_each.cost:.3f} x oracle), vs one pooled HPA headroom "
        f"{'yes' if total.pareto_pooled else 'NO'} ({total.planner.cost:.3f} vs {total.hpa_pooled.cost:.3f}); "
        f"folds Pareto-better: {sum(o.pareto_each for o in folds)} / {sum(o.pareto_pooled for o in folds)} of {len(folds)}",
        f"worst fold by overload: {worst_rate.group} {_pct(worst_rate.planner.rate)} %; by cost vs HPA per series: "
        f"{worst_cost.group} {worst_cost.planner.cost:.3f} vs {worst_cost.hpa_each.cost:.3f}",
    ]


def scaling(
    nab: Path = typer.Option(None, help="NAB realAWSCloudwatch directory; default $M1_NAB_DIR/realAWSCloudwatch."),
    asd: Path = typer.Option(None, help="ASD data directory (<server>/<series>.csv); default $M1_ASD_DIR or "
                                        "../shared/datasets/asd/data."),
    target: list[float] = typer.Option([0.01, 0.05, 0.1], help="Target overload rates (repeatable)."),
    window: int = typer.Option(12, min=1, help="Decision window, in points."),
) -> None:
    """Held-out overload rate and replica-hours of the risk planner per target, against HPA.

    Capacity per replica is 0.1 x each series' warm-up median (its first quarter, at most
    1152 points); the oracle runs the replicas of each window's actual peak.
    """
    corpus = load_corpus(nab or default_scaling_data(), asd or default_asd_data())
    if not corpus:
        raise typer.BadParameter("no series found")
    console = Console(width=max(Console().width, 280))
    console.print(f"{len(corpus)} series in {len({s.group for s in corpus})} groups; {len(GRID)} configurations")
    for t in target:
        runs = replay_grid(corpus, t, window, track(GRID, description=f"target {t:.0%}: replaying", console=console))
        folds, held_out = cross_validate(runs, t)
        total = outcome("all (held out)", "per fold", held_out, t)
        subsets = [outcome(f"all but {g}", "per fold", [d for d in held_out if d.group != g], t)
                   for g in sorted({d.group for d in held_out}) if len(held_out) > sum(d.group == g for d in held_out) > 5]
        console.print(report(folds, [*subsets, total], t))
        for line in verdict(folds, total, t):
            console.print(line)


def cost(
    data: Path = typer.Option(None, help="Directory of usage CSVs; default $M1_NAB_DIR/realAWSCloudwatch."),
    coverage: float = typer.Option(0.9, min=0.5, max=0.99, help="Interval coverage."),
) -> None:
    """Held-out MAPE and interval coverage of period-end cost projections at 25/50/75 % of the period."""
    data = data or default_scaling_data()
    corpus = [LoadSeries(p.stem, "usage", *read_series(p)) for p in sorted(data.glob("*.csv")) if is_cost_proxy(p.stem)]
    if not corpus:
        raise typer.BadParameter(f"no usage series ({', '.join(PROXIES)}) in {data}")
    console = Console(width=max(Console().width, 160))
    days = {s.name: (s.ts[-1] - s.ts[0]) / 86400 for s in corpus}
    console.print(f"{len(corpus)} usage series; spans {min(days.values()):.1f}-{max(days.values()):.1f} days: "
                  f"{'no series spans a calendar month, so days 7/14/21 are scored as 25/50/75 % of each span' if max(days.values()) < 28 else 'some series span a month'}")
    for pattern, (measure, price) in PROXIES.items():
        console.print(f"  {pattern}: {measure}, priced at {price}")
    projections = [p for s in track(corpus, description="projecting", console=console) for p in project_series(s)]
    fractions = sorted({p.fraction for p in projections})
    methods = Table(title="MAPE % by method over all series (not held out; for comparison)")
    methods.add_column("method")
    for f in fractions:
        methods.add_column(f"at {f:.0%}", justify="right")
    for m in METHODS:
        methods.add_row(m, *(f"{100 * sum(error(p, m) for p in projections if p.fraction == f) / len(corpus):.1f}"
                             for f in fractions))
    console.print(methods)
    held = cost_cv(projections, coverage)
    per_series = Table(title=f"Held out (leave one series out): error % and whether the {coverage:.0%} interval covers")
    per_series.add_column("series (fold)", no_wrap=True)
    per_series.add_column("method chosen")
    for f in fractions:
        per_series.add_column(f"at {f:.0%}", justify="right")
    for s in corpus:
        rows = sorted((h for h in held if h.name == s.name), key=lambda h: h.fraction)
        per_series.add_row(s.name, rows[0].method, *(f"{100 * h.error:.1f} {'in' if h.covered else 'OUT'}" for h in rows))
    for f in fractions:
        at = [h for h in held if h.fraction == f]
        worst = max(at, key=lambda h: h.error)
        mape = sum(h.error for h in at) / len(at)
        cov = sum(h.covered for h in at) / len(at)
        width = sum((h.upper - h.lower) / 2 / abs(h.actual) for h in at) / len(at)
        console.print(f"at {f:.0%} of the period: MAPE {100 * mape:.1f} %, coverage {cov:.3f} ({sum(h.covered for h in at)} "
                      f"of {len(at)}), mean interval half-width {100 * width:.1f} % of the actual, "
                      f"worst fold {worst.name} {100 * worst.error:.1f} %")
    console.print(per_series)
