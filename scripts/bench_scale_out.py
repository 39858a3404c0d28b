"""Benchmark scale-out on one machine with the embedded store (#14, item 5); results go to
docs/benchmarks.md (scale-out section) by hand.

It loads the metrics topic once with N points of the demo workload (as ``bench_metrics.py`` does),
then, each run with its own consumer group, store, checkpoint directory and inserts topic, times:

1. ``all``: one ``m1 worker`` (it scores and owns the store), the reference;
2. one ``--role scorer`` process feeding one ``--role store-owner``;
3. two scorer processes feeding one store owner.

A run's rate is the points stored over the span of the store's ``ingested_at`` stamps (first to
last batch, the first batch counted out, as in ``bench_metrics.py``); "end to end" adds the
processes' start and the group's join. The ratio 2 / 1 scorer is the scale-out factor.

Run:  .venv/bin/python scripts/bench_scale_out.py --points 100000 --series 1000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the workload loader of bench_metrics.py
from bench_metrics import load_topic  # noqa: E402

from m1.kafka_local import LocalKafka, free_port  # noqa: E402
from m1.local_key import local_admin_key  # noqa: E402
from m1.query_client import run_query  # noqa: E402
from m1.settings import Settings  # noqa: E402
from m1.topics import ensure_topics  # noqa: E402
from m1.worker_process import WorkerProcess  # noqa: E402

console = Console()


def main(
    points: int = typer.Option(100_000, help="Metric points to load into the topic."),
    series: int = typer.Option(1_000, help="Distinct series."),
    batch_size: int = typer.Option(5_000, help="Batch size (M1_BATCH_SIZE) of every process."),
    partitions: int = typer.Option(2, help="Partitions of the metrics topic (at least the scorers' count)."),
) -> None:
    """Points/s stored by one worker, by one scorer + store owner, and by two scorers + store owner."""
    root = Path(tempfile.mkdtemp(prefix="m1-bench-scale-"))
    broker = LocalKafka(Settings(home=root / "broker"))
    with console.status("starting Kafka..."):
        bootstrap = broker.start().bootstrap
    base = Settings(home=root / "load", kafka_bootstrap=bootstrap, batch_size=batch_size, flush_seconds=0.5,
                    snapshot_seconds=30.0, topic_partitions=partitions, topic_metrics="bench-metrics")
    results: list[tuple[str, float, float]] = []
    try:
        ensure_topics(base)
        load_topic(base, points, series)
        for name, scorers in (("one worker (--role all)", 0), ("1 scorer + store owner", 1), ("2 scorers + store owner", 2)):
            with console.status(f"{name}..."):
                results.append((name, *run(base, root / f"run{len(results)}", points, scorers)))
    finally:
        broker.stop()
    table = Table(title=f"scale-out, embedded store: {points:,} points, {series:,} series, {partitions} partitions")
    for column in ("processes", "points/s (ingested_at span)", "points/s (end to end)"):
        table.add_column(column, justify="right" if column != "processes" else "left")
    for name, span, end_to_end in results:
        table.add_row(name, f"{span:,.0f}", f"{end_to_end:,.0f}")
    console.print(table)
    console.print(f"2 scorers / 1 scorer: {results[2][1] / results[1][1]:.2f}x (ingested_at span), "
                  f"{results[2][2] / results[1][2]:.2f}x (end to end)")


def run(base: Settings, home: Path, points: int, scorers: int) -> tuple[float, float]:
    """One run in its own group; returns (points/s over the ingested_at span, points/s end to end)."""
    settings = base.model_copy(update={"home": home, "app_id": f"bench-{home.name}", "web_port": free_port(),
                                       "state_dir": home / "state"})
    settings = settings.model_copy(update={"api_key": SecretStr(local_admin_key(settings, "bench"))})
    start = time.perf_counter()
    processes = [WorkerProcess(settings, home / "owner.log", role="all" if scorers == 0 else "store-owner").start()]
    try:
        for i in range(scorers):
            scorer = settings.model_copy(update={"home": home / f"scorer{i}"})
            processes.append(WorkerProcess(scorer, home / f"scorer{i}.log", role="scorer").start())
        while run_query(settings, "SELECT count() FROM metric_points").rows[0][0] < points:
            time.sleep(0.2)
        end_to_end = points / (time.perf_counter() - start)
        first, last = run_query(settings, "SELECT toUnixTimestamp64Milli(min(ingested_at)), "
                                          "toUnixTimestamp64Milli(max(ingested_at)) FROM metric_points").rows[0]
        first_batches = run_query(settings, "SELECT count() FROM metric_points WHERE ingested_at = "
                                            "(SELECT min(ingested_at) FROM metric_points)").rows[0][0]
        return (points - first_batches) / max((last - first) / 1000.0, 1e-9), end_to_end
    finally:
        for process in reversed(processes):
            process.stop()


if __name__ == "__main__":
    typer.run(main)
