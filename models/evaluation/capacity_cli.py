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
    project_months, project_series, source_of
from models.evaluation.risk import Decisions, hpa_headroom_for, hpa_score, score
from models.evaluation.risk_allocation import held_out_runs, hindsight_allocation
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


def allocation_lines(corpus: list[LoadSeries], folds: list[Outcome], held_out: list[Decisions], total: Outcome,
                     target: float, window: int) -> list[str]:
    """Why one pooled HPA headroom is cheaper, and what per-series risk budgets could gain (in hindsight)."""
    scores = [score(d.planned, d) for d in held_out]
    hpa = [score(d.last_peak * (1.0 + total.hpa_headroom), d) for d in held_out]
    top = sorted(range(len(held_out)), key=lambda i: -scores[i].replicas)[:3]
    lines = ["dearest series (planner overload %, share of its replica-hours | pooled HPA): " + "; ".join(
        f"{held_out[i].name} {_pct(scores[i].rate)} %, {scores[i].replicas / total.planner.replicas:.0%} | "
        f"{_pct(hpa[i].rate)} %, {hpa[i].replicas / total.hpa_pooled.replicas:.0%}" for i in top)]
    capped = hpa_headroom_for(held_out, 2 * target, worst=True)
    at_cap = hpa_score(held_out, capped)
    lines.append(f"one HPA headroom with no series above {2 * target:.0%}: headroom {capped:.3f}, pooled overload "
                 f"{_pct(at_cap.rate)} %, RH / oracle {at_cap.cost:.3f} (planner {total.planner.cost:.3f}): "
                 f"{'planner cheaper' if total.planner.replicas < at_cap.replicas else 'HPA cheaper'}")
    multiples, alloc = hindsight_allocation(held_out_runs(corpus, folds, target, window=window), target, 2 * target)
    matched = hpa_score(held_out, hpa_headroom_for(held_out, alloc.rate))
    raised = sorted((n for n, m in multiples.items() if m > 1.0), key=lambda n: -multiples[n])
    lines.append(f"per-series targets chosen in hindsight (multiples of {target:.0%}, each series <= {2 * target:.0%}): "
                 f"pooled overload {_pct(alloc.rate)} %, RH / oracle {alloc.cost:.3f} vs one HPA headroom at that rate "
                 f"{matched.cost:.3f}: {'Pareto-better' if alloc.replicas < matched.replicas else 'NOT Pareto-better'}; "
                 f"raised: " + ", ".join(f"{n} x{multiples[n]:g}" for n in raised[:6]) + (" ..." if len(raised) > 6 else ""))
    return lines


def scaling(
    nab: Path = typer.Option(None, help="NAB realAWSCloudwatch directory; default $M1_NAB_DIR/realAWSCloudwatch."),
    asd: Path = typer.Option(None, help="ASD data directory (<server>/<series>.csv); default $M1_ASD_DIR or "
                                        "../shared/datasets/asd/data."),
    target: list[float] = typer.Option([0.01, 0.05, 0.1], help="Target overload rates (repeatable)."),
    window: int = typer.Option(12, min=1, help="Decision window, in points."),
    allocation: bool = typer.Option(False, help="Also: one HPA headroom capped per series, and per-series targets "
                                                "chosen in hindsight (models.evaluation.risk_allocation)."),
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
        if allocation:
            for line in allocation_lines(corpus, folds, held_out, total, t, window):
                console.print(line)


def cost(
    data: Path = typer.Option(None, help="Directory of usage CSVs; default $M1_NAB_DIR/realAWSCloudwatch."),
    coverage: float = typer.Option(0.9, min=0.5, max=0.99, help="Interval coverage."),
    calendar: bool = typer.Option(False, help="Project every whole calendar month of the series on its days 7, 14 and "
                                              "21 (the bar as written) instead of 25/50/75 % of each series' span."),
) -> None:
    """Held-out MAPE and interval coverage of period-end cost projections (leave one source out)."""
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
    project = project_months if calendar else project_series
    projections = [p for s in track(corpus, description="projecting", console=console) for p in project(s, fold=source_of(s.name))]
    if not projections:
        raise typer.BadParameter("no series covers a whole calendar month")
    at = (lambda f: f"day {round(28 * f)}") if calendar else (lambda f: f"{f:.0%} of the period")
    fractions = sorted({p.fraction for p in projections})
    periods = len({(p.name, p.period) for p in projections})
    console.print(f"{periods} periods ({'calendar months' if calendar else 'series spans'}) of {len(corpus)} series, "
                  f"{len({source_of(s.name) for s in corpus})} sources (held out one source at a time)")
    methods = Table(title="MAPE % by method over all periods (not held out; for comparison)")
    methods.add_column("method")
    for f in fractions:
        methods.add_column(f"at {at(f)}", justify="right")
    for m in METHODS:
        methods.add_row(m, *(f"{100 * sum(error(p, m) for p in projections if p.fraction == f) / periods:.1f}"
                             for f in fractions))
    console.print(methods)
    held = cost_cv(projections, coverage)
    per_period = Table(title=f"Held out (leave one source out): error % and whether the {coverage:.0%} interval covers")
    per_period.add_column("series (period)", no_wrap=True)
    per_period.add_column("method chosen")
    for f in fractions:
        per_period.add_column(f"at {at(f)}", justify="right")
    for name, period in sorted({(h.name, h.period) for h in held}):
        rows = sorted((h for h in held if (h.name, h.period) == (name, period)), key=lambda h: h.fraction)
        per_period.add_row(f"{name} {period}".strip(), rows[0].method,
                           *(f"{100 * h.error:.1f} {'in' if h.covered else 'OUT'}" for h in rows))
    for f in fractions:
        at_f = [h for h in held if h.fraction == f]
        worst = max(at_f, key=lambda h: h.error)
        mape = sum(h.error for h in at_f) / len(at_f)
        cov = sum(h.covered for h in at_f) / len(at_f)
        width = sum((h.upper - h.lower) / 2 / abs(h.actual) for h in at_f) / len(at_f)
        console.print(f"at {at(f)}: MAPE {100 * mape:.1f} %, coverage {cov:.3f} ({sum(h.covered for h in at_f)} "
                      f"of {len(at_f)}), mean interval half-width {100 * width:.1f} % of the actual, "
                      f"worst {f'{worst.name} {worst.period}'.strip()} {100 * worst.error:.1f} %")
    console.print(per_period)
