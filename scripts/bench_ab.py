"""Compare the metrics path of two checkouts, interleaved on one loaded topic: A B A B ...

A throughput measured minutes apart on a shared VM moves by 10 % or more (the bare ceiling of
``bench_metrics.py`` does too); a change worth 5 % only shows when both sides run in turn, on
the same broker and the same records. Each round here measures the bare consume-and-decode
ceiling, then runs one worker of each checkout over the whole topic (each its own store and
consumer group, its code from its checkout, this venv's packages), timed by the store's own
``ingested_at`` stamps as ``bench_metrics.py`` does. It prints each run and the medians. One
worker of A runs first, not counted: the first worker after the broker started is the slowest
(the broker compiles its group, transaction and produce paths then), which favoured B in round 1.

Run:  .venv/bin/python scripts/bench_ab.py ../before . --points 1500000 --series 1000 --rounds 3
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bench_metrics import bare_consume, cpu_seconds, full_path, load_topic, run_settings, settle  # scripts/
from core.gc_tuning import tune_for_batches
from core.kafka.local_broker import LocalKafka
from core.kafka.topics import ensure_topics
from core.settings import Settings
from m1.worker_process import WorkerProcess

console = Console(width=150)


def main(
    a: Path = typer.Argument(..., help="Checkout A (its m1/, streams/, ... run the worker)."),
    b: Path = typer.Argument(..., help="Checkout B."),
    points: int = typer.Option(1_500_000, help="Metric points to load into the topic."),
    series: int = typer.Option(1_000, help="Distinct series."),
    rounds: int = typer.Option(3, help="Rounds; each runs the ceiling, then A and B (B first in odd rounds)."),
    drop_caches: bool = typer.Option(False, help="Drop the page cache before each run (root): on a VM whose host "
                                                "reclaims guest memory, a growing cache slows later runs."),
    b_setting: list[str] = typer.Option([], help="NAME=VALUE: a setting of B's workers (e.g. batch_size=40000), "
                                                 "to compare settings with one checkout as A and B."),
) -> None:
    """Points/s of a worker of each checkout, in turn on the same topic, and the ceiling each round."""
    tune_for_batches()  # the ceiling is measured with the worker's collector settings, as in bench_metrics
    home = Path(tempfile.mkdtemp(prefix="m1-bench-ab-"))
    atexit.register(shutil.rmtree, home, True)  # its broker log and stores take about 1 GB a run
    console.print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    broker = LocalKafka(Settings(home=home / "broker"))
    with console.status("starting Kafka..."):
        bootstrap = broker.start().bootstrap
    base = Settings(home=home, kafka_bootstrap=bootstrap, flush_seconds=0.25, topic_partitions=2)
    ensure_topics(base)
    overrides = dict(item.split("=", 1) for item in b_setting)
    b_base = Settings(**{**base.model_dump(), **overrides})  # validated as the worker's environment would be
    results: dict[str, list[float]] = {"ceiling": [], "A": [], "B": []}
    try:
        load_topic(base, points, series)
        settle(drop_caches)  # the first worker after the broker started is slower (bench_metrics.py): not timed
        console.print(f"warm-up, A: {worker_run(base, a.resolve(), 'warm-up', points)[0]:,.0f} points/s (not counted)")
        for number in range(rounds):
            settle(drop_caches)
            results["ceiling"].append(asyncio.run(bare_consume(base, points)))
            order = [("A", a, base), ("B", b, b_base)] if number % 2 == 0 else [("B", b, b_base), ("A", a, base)]
            for name, checkout, settings in order:
                settle(drop_caches)
                rate, cpu = worker_run(settings, checkout.resolve(), f"{name.lower()}{number}", points)
                results[name].append(rate)
                console.print(f"round {number + 1}, {name}: {rate:,.0f} points/s, worker CPU {cpu:.1f} s "
                              f"(ceiling {results['ceiling'][-1]:,.0f})")
    finally:
        broker.stop()
    table = Table(title=f"{points:,} points, {series:,} series, {rounds} rounds: A = {a}, B = {b}"
                        + (f" with {', '.join(b_setting)}" if b_setting else ""))
    for column in ("measurement", "median points/s", "runs"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for name, values in results.items():
        table.add_row(name, f"{statistics.median(values):,.0f}", " ".join(f"{v:,.0f}" for v in values))
    ratio = statistics.median(b_ / a_ for a_, b_ in zip(results["A"], results["B"]))
    table.add_row("B / A, median of the rounds' ratios", f"{ratio:.3f}", "")
    for name in ("A", "B"):
        shares = [v / c for v, c in zip(results[name], results["ceiling"])]
        table.add_row(f"{name} as a share of its round's ceiling", f"{statistics.median(shares):.1%}",
                      " ".join(f"{s:.1%}" for s in shares))
    console.print(table)


def worker_run(base: Settings, checkout: Path, name: str, points: int) -> tuple[float, float]:
    """Points/s of a worker running ``checkout``'s code (``python -m`` puts the working directory
    first on its path) over the loaded topic, and the worker's CPU seconds."""
    settings = run_settings(base, name)
    cpu: list[float] = []

    def then(worker: WorkerProcess) -> None:
        assert worker.proc is not None
        cpu.append(cpu_seconds(worker.proc.pid))

    here = Path.cwd()
    os.chdir(checkout)
    try:
        rate = full_path(settings, points, then).rate
    finally:
        os.chdir(here)
    return rate, cpu[0]


if __name__ == "__main__":
    typer.run(main)
