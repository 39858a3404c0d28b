"""Benchmark scale-out on one machine with the embedded store (#14, item 5); results go to
docs/benchmarks.md (scale-out section) by hand.

Each run has its own metrics topic, consumer group, store, checkpoint directory and inserts topic:
it starts the processes, waits until they are up and the group has settled, then loads its topic
with N points of the demo workload (as ``bench_metrics.py`` does) and times how they are stored:

1. ``all``: one ``m1 worker`` (it scores and owns the store), the reference;
2. one ``--role scorer`` process feeding one ``--role store-owner``;
3. two scorer processes feeding one store owner.

A run's rate is the points stored over the span of the store's ``ingested_at`` stamps (first to
last batch, the first batch counted out, as in ``bench_metrics.py``); "end to end" runs from the
start of loading the topic to the last point stored. The ratio 2 / 1 scorer is the scale-out factor.

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

from core.kafka.local_broker import LocalKafka, free_port  # noqa: E402
from m1.local_key import local_admin_key  # noqa: E402
from m1.query_client import QueryError, run_query  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.kafka.topics import ensure_topics  # noqa: E402
from m1.worker_process import WorkerProcess  # noqa: E402

console = Console()
#: How long a process may take to come up, and the group to settle after the last one did (a loaded machine).
START_SECONDS, SETTLE_SECONDS = 300.0, 15.0


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
                    snapshot_seconds=30.0, topic_partitions=partitions,
                    state_key_path=root / "state.key", pii_key_path=root / "pii.key")  # shared, as in one group
    results: list[tuple[str, float, float]] = []
    try:
        for name, scorers in (("one worker (--role all)", 0), ("1 scorer + store owner", 1), ("2 scorers + store owner", 2)):
            results.append((name, *run(base, root / f"run{len(results)}", points, series, scorers)))
            console.print(f"{name}: {results[-1][1]:,.0f} points/s (ingested_at span), {results[-1][2]:,.0f} end to end")
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


def run(base: Settings, home: Path, points: int, series: int, scorers: int) -> tuple[float, float]:
    """One run in its own group; returns (points/s over the ingested_at span, points/s end to end)."""
    settings = base.model_copy(update={"home": home, "app_id": f"bench-{home.name}", "web_port": free_port(),
                                       "state_dir": home / "state", "topic_metrics": f"bench-metrics-{home.name}"})
    settings = settings.model_copy(update={"api_key": SecretStr(local_admin_key(settings, "bench"))})
    ensure_topics(settings)
    processes = [WorkerProcess(settings, home / "owner.log", role="all" if scorers == 0 else "store-owner")]
    processes += [WorkerProcess(settings.model_copy(update={"home": home / f"scorer{i}"}), home / f"scorer{i}.log",
                                role="scorer") for i in range(scorers)]
    try:
        with console.status(f"starting {len(processes)} processes..."):
            for process in processes:
                process.start(timeout=START_SECONDS)
            time.sleep(SETTLE_SECONDS)  # the group's join and assignment
        start = time.perf_counter()
        load_topic(settings, points, series)
        while stored(settings) < points:
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


def stored(settings: Settings) -> int:
    """Points in the owner's store (0 while a loaded owner misses its health check)."""
    try:
        return int(run_query(settings, "SELECT count() FROM metric_points").rows[0][0])
    except QueryError:
        return 0


if __name__ == "__main__":
    typer.run(main)
