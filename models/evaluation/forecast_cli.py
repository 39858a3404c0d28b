"""``m1 eval forecast`` and ``m1 eval scaling-tolerance``: walk-forward reports as rich tables.

(``m1 eval scaling``, the risk-targeted report, is :mod:`models.evaluation.capacity_cli`.)

The first quarter of every series (at most 1152 points, four days of 5-minute data) is
warm-up: learned, used for season detection and capacity, never scored.

>>> from typer.testing import CliRunner
>>> from models.evaluation.forecast_cli import app
>>> result = CliRunner().invoke(app, ["forecast", "--dataset", "airline", "--season", "12", "--multiplicative"])
>>> result.exit_code, "MAPE" in result.output
(0, True)
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from models.evaluation.forecast import walk_forward
from models.evaluation.scaling import evaluate_scaling
from models.evaluation.series import LOAD_SERIES, default_scaling_data, default_warmup, read_series
from models.forecasting.base import Forecaster
from models.forecasting.peak import PeakForecaster
from models.forecasting.registry import make_forecaster

app = typer.Typer(help="Forecast and scaling-recommendation evaluations.", no_args_is_help=True)


class Model(str, Enum):
    holtwinters = "holtwinters"
    snarimax = "snarimax"


class Bound(str, Enum):
    upper = "upper"
    point = "point"


class Planner(str, Enum):
    peak = "peak"
    forecast = "forecast"


def build(model: Model, season: str, warmup: int, coverage: float, horizon: int, multiplicative: bool) -> Forecaster:
    kwargs: dict = {"season": season if season == "auto" else int(season), "warmup": warmup}
    kwargs |= {"coverage": coverage, "horizon": horizon}
    if model is Model.holtwinters:
        kwargs["multiplicative"] = multiplicative
    return make_forecaster(model.value, **kwargs)


@app.command()
def forecast(
    data: Path = typer.Option(None, help="CSV with timestamp,value columns."),
    dataset: str = typer.Option(None, help="Bundled dataset instead of --data: 'airline'."),
    horizon: int = typer.Option(12, min=1, help="Steps ahead to forecast and score."),
    model: Model = typer.Option(Model.holtwinters, help="Forecaster."),
    season: str = typer.Option("auto", help="Season length in steps, or 'auto' (detected over the warm-up)."),
    coverage: float = typer.Option(0.9, min=0.01, max=0.99, help="Interval coverage."),
    multiplicative: bool = typer.Option(False, help="Multiplicative seasonality (Holt-Winters)."),
) -> None:
    """MAPE, sMAPE and interval coverage by horizon step, walk-forward."""
    if (data is None) == (dataset is None):
        raise typer.BadParameter("give exactly one of --data or --dataset")
    if dataset is not None:
        if dataset != "airline":
            raise typer.BadParameter(f"unknown dataset {dataset!r}; known: airline")
        from river import datasets

        values, name = [float(y) for _, y in datasets.AirlinePassengers()], "AirlinePassengers"
    else:
        values, name = read_series(data)[1], data.name
    warmup = default_warmup(len(values))
    forecaster = build(model, season, warmup, coverage, horizon, multiplicative)
    report = walk_forward(values, forecaster, horizon=horizon, warmup=warmup)
    table = Table(title=f"{name}: {model.value}, season {forecaster.season}, {len(values)} points, warm-up {warmup}")
    for column in ("step", "n", "MAPE %", "sMAPE %", f"coverage ({coverage:.0%})", "mean width"):
        table.add_column(column, justify="right")
    for s in report.steps:
        table.add_row(str(s.step), str(s.n), f"{100 * s.mape:.2f}", f"{100 * s.smape:.2f}", f"{s.coverage:.3f}", f"{s.mean_width:.4g}")
    console = Console()
    console.print(table)
    console.print(f"{report.us_per_point:.1f} µs per learn+forecast")


@app.command("scaling-tolerance")
def tolerance_report(
    data: Path = typer.Option(None, help="Directory of NAB CSVs; default $M1_NAB_DIR/realAWSCloudwatch."),
    capacity_fraction: float = typer.Option(0.1, min=0.0, help="Capacity per replica, as a fraction of the warm-up median."),
    headroom: float = typer.Option(0.2, min=0.0, help="Spare capacity planned on top of the load."),
    window: int = typer.Option(12, min=1, help="Decision window, in steps."),
    planner: Planner = typer.Option(Planner.peak, help="Median of recent window peaks, or peak of per-step forecasts."),
    peak_windows: int = typer.Option(3, min=1, help="Peak planner: how many recent window peaks the median covers."),
    bound: Bound = typer.Option(Bound.upper, help="Forecast planner: plan for the forecasts' upper bound or point."),
    model: Model = typer.Option(Model.holtwinters, help="Forecast planner: per-step load forecaster."),
    tolerance: float = typer.Option(0.2, min=0.0, help="'Within' means |rec - oracle| <= tolerance * oracle."),
) -> None:
    """Share of decision windows whose replica recommendation is within tolerance of the oracle.

    Also: the share *under* the oracle, and *overloaded* (recommended capacity below the
    actual peak, headroom aside).
    """
    data = data or default_scaling_data()
    files = sorted(p for p in data.glob("*.csv") if LOAD_SERIES.search(p.stem))
    if not files:
        raise typer.BadParameter(f"no request/ELB/CPU series in {data}")
    how = f"median of last {peak_windows} peaks" if planner is Planner.peak else f"{model.value} {bound.value} bound"
    table = Table(title=f"Scaling: {how}, window {window}, headroom {headroom:.0%}, "
                        f"capacity {capacity_fraction:g} x warm-up median")
    table.add_column("series", no_wrap=True)
    for column in ("n", f"within\n{tolerance:.0%}", "under", "over-\nload", "mean\nrec", "mean\noracle"):
        table.add_column(column, justify="right")
    reports = []
    for path in files:
        values = read_series(path)[1]
        warmup = default_warmup(len(values))
        forecaster: Forecaster | PeakForecaster
        if planner is Planner.peak:
            forecaster = PeakForecaster(window, peak_windows)
        else:
            forecaster = build(model, "auto", warmup, 0.9, window, False)
        r = evaluate_scaling(values, forecaster, window, warmup, capacity_fraction, headroom, tolerance, bound.value)
        reports.append(r)
        table.add_row(path.stem, str(r.decisions), f"{r.share_within:.3f}", f"{r.share_under:.3f}",
                      f"{r.share_overloaded:.3f}", f"{r.mean_recommended:.1f}", f"{r.mean_oracle:.1f}")
    n = sum(r.decisions for r in reports)
    shares = [sum(getattr(r, a) * r.decisions for r in reports) / n for a in ("share_within", "share_under",
                                                                              "share_overloaded")]
    table.add_row("all", str(n), *(f"{x:.3f}" for x in shares), "", "")
    met = sum(r.share_within >= 0.95 for r in reports)
    Console().print(table)
    Console().print(f"{met} of {len(reports)} series have >= 95% of windows within {tolerance:.0%}")


if __name__ == "__main__":
    app()
