"""Cost of each detector and forecaster: microseconds per point and memory per series.

For every registered detector it warms N series up with a long history (so every
bounded window is full), then reports the batch cost per point, the single-point cost,
the resident memory per series (tracemalloc) and the checkpoint size, and projects the
memory of 10,000 active series.

With ``--batch N`` it also times the stream worker's call pattern: after the warm-up,
the next ``--points`` points of each series are fed in calls of N points (median of
``--repeat`` rounds), since per-call overhead matters as much as per-point cost.

Run:  .venv/bin/python scripts/bench_models.py --series 200 --points 2000
      .venv/bin/python scripts/bench_models.py --series 20 --only ensemble --batch 1 --batch 10 --batch 100 --batch 5000
"""

from __future__ import annotations

import pickle
import statistics
import time
import tracemalloc

import numpy as np
import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.forecasting.registry import make_forecaster
from models.registry import DETECTORS, make_detector

console = Console()


def series_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_767_225_600.0 + 300.0 * np.arange(n)
    daily = 5.0 * np.sin(2 * np.pi * np.arange(n) / 288)
    return 100.0 + daily + rng.normal(0, 2.0, n), t


def measure_detector(name: str, series: int, points: int) -> dict[str, float]:
    """Memory after a ``points`` warm-up (traced), then the time of the next ``points`` in one call (untraced)."""
    data = [series_data(2 * points, seed) for seed in range(series)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    models = [make_detector(name) for _ in range(series)]
    for model, (x, t) in zip(models, data):
        model.score_learn_many(x[:points], t[:points])
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    resident = sum(s.size_diff for s in after.compare_to(before, "filename")) / series
    start = time.perf_counter()
    for model, (x, t) in zip(models, data):
        model.score_learn_many(x[points:], t[points:])
    batch_us = (time.perf_counter() - start) / (series * points) * 1e6
    x, t = series_data(200, seed=999)
    timed = models[:20]
    start = time.perf_counter()
    for model in timed:
        for xi, ti in zip(x.tolist(), t.tolist()):
            model.score_one(xi, ti)
            model.learn_one(xi, ti)
    single_us = (time.perf_counter() - start) / (len(timed) * len(x)) * 1e6
    checkpoint = np.mean([len(pickle.dumps(m)) for m in models[:20]])
    return {"batch_us": batch_us, "single_us": single_us, "resident": resident, "checkpoint": checkpoint}


def measure_small_batches(name: str, series: int, points: int, batch: int, repeat: int) -> float:
    """Median over ``repeat`` rounds of µs/point when ``points`` points follow a warm-up in calls of ``batch``."""
    warm = []
    for seed in range(series):
        model = make_detector(name)
        x, t = series_data(2 * points, seed)
        model.score_learn_many(x[:points], t[:points])
        warm.append((pickle.dumps(model), x[points:], t[points:]))
    rounds = []
    for _ in range(repeat):
        models = [(pickle.loads(blob), x, t) for blob, x, t in warm]
        start = time.perf_counter()
        for model, x, t in models:
            for i in range(0, points, batch):
                model.score_learn_many(x[i : i + batch], t[i : i + batch])
        rounds.append((time.perf_counter() - start) / (series * points) * 1e6)
    return statistics.median(rounds)


def measure_forecaster(name: str, series: int, points: int) -> dict[str, float]:
    """µs per learn + 12-step forecast on one series; memory of ``series`` forecasters as the
    stream builds them (published horizons 1, 6, 12) after ``points`` values each."""
    x, t = series_data(points, seed=3)
    model = make_forecaster(name)
    start = time.perf_counter()
    for xi, ti in zip(x.tolist(), t.tolist()):
        model.learn_one(xi, ti)
        model.forecast(12)
    us = (time.perf_counter() - start) / points * 1e6
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    models = [make_forecaster(name, horizon=12, steps=[1, 6, 12]) for _ in range(series)]
    for model, seed in zip(models, range(series)):
        for xi in series_data(points, seed)[0].tolist():
            model.learn_one(xi)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    resident = sum(s.size_diff for s in after.compare_to(before, "filename")) / series
    checkpoint = float(np.mean([len(pickle.dumps(m)) for m in models[:20]]))
    return {"us": us, "resident": resident, "checkpoint": checkpoint}


def main(
    series: int = typer.Option(200, help="Series per detector."),
    points: int = typer.Option(2000, help="History per series (fills every bounded window)."),
    only: list[str] = typer.Option([], help="Only these detectors (repeatable); default all, plus forecasters."),
    batch: list[int] = typer.Option([], help="Also time calls of this many points after the warm-up (repeatable)."),
    repeat: int = typer.Option(5, help="Rounds per --batch measurement (the median is reported)."),
) -> None:
    """Print microseconds per point and memory per series for every model."""
    names = only or list(DETECTORS)
    if batch:
        small = Table(title=f"µs/point in calls of N points after a {points}-point warm-up ({series} series, median of {repeat})")
        small.add_column("model")
        for b in batch:
            small.add_column(f"N={b}", justify="right")
        for name in names:
            small.add_row(name, *(f"{measure_small_batches(name, series, points, b, repeat):.1f}" for b in batch))
        console.print(small)
    table = Table(title=f"model cost ({series} series x {points} points each)")
    for column in ("model", "µs/point (batch)", "µs/point (one by one)", "KiB/series resident",
                   "KiB/series checkpoint", "GiB for 10,000 series"):
        table.add_column(column, justify="right")
    for name in track(names, description="detectors", console=console):
        m = measure_detector(name, series, points)
        table.add_row(name, f"{m['batch_us']:.1f}", f"{m['single_us']:.1f}", f"{m['resident'] / 1024:.1f}",
                      f"{m['checkpoint'] / 1024:.1f}", f"{m['resident'] * 10_000 / 2**30:.2f}")
    for name in () if only else ("holtwinters", "snarimax"):
        f = measure_forecaster(name, series, points)
        table.add_row(f"forecaster {name} (learn + 12-step forecast)", f"{f['us']:.1f}", "", f"{f['resident'] / 1024:.1f}",
                      f"{f['checkpoint'] / 1024:.1f}", f"{f['resident'] * 10_000 / 2**30:.2f}")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
