"""``m1 demo``: the whole pipeline on the embedded defaults, in about a minute.

It starts the local broker and a worker if none is running, streams the workload at
the requested rate with a progress bar, waits until the store has every valid point,
then prints what went in, what was stored and dead-lettered, and which injected
anomalies the detectors caught.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from m1.kafka_local import LocalKafka
from m1.producer import make_producer
from m1.query_client import run_query, worker_is_up
from m1.settings import Settings
from m1.topics import ensure_topics
from m1.worker_process import WorkerProcess
from m1.workload import Workload


@dataclass(frozen=True)
class DemoOptions:
    duration: float
    rate: float
    tenants: int
    regions: int
    series: int
    anomalies: int
    invalid_share: float
    seed: int
    keep_running: bool


@dataclass
class Produced:
    valid: int = 0
    invalid: int = 0
    started: float = 0.0
    ended: float = 0.0
    tick_seconds: float = 1.0


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> None:
    """Run the demo end to end and print its summary."""
    broker = LocalKafka(settings)
    started_broker = False
    if not settings.kafka_bootstrap and broker.status() is None:
        with console.status("starting the local Kafka broker (first run downloads the jars)..."):
            broker.start()
        started_broker = True
    settings = settings.model_copy(update={"kafka_bootstrap": settings.bootstrap})
    ensure_topics(settings)
    worker = None
    if not worker_is_up(settings):
        with console.status("starting the pipeline worker..."):
            worker = WorkerProcess(settings, settings.home / "worker.log").start()
    try:
        ticks = max(1, round(options.duration * options.rate / options.series))
        workload = Workload(options.tenants, options.regions, options.series, options.anomalies, ticks, options.seed)
        produced = asyncio.run(_produce(settings, workload, ticks, options, console))
        stored, drain_s = _wait_stored(settings, workload, produced, console)
        _summarise(settings, workload, produced, stored, drain_s, console)
    finally:
        if not options.keep_running:
            if worker is not None:
                worker.stop()
            if started_broker:
                broker.stop()


async def _produce(settings: Settings, workload: Workload, ticks: int, options: DemoOptions, console: Console) -> Produced:
    producer = make_producer(settings)
    await producer.start()
    interval = options.series / options.rate
    produced = Produced(started=time.time(), tick_seconds=interval)
    columns = [TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TextColumn("points"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("produce", total=ticks * options.series)
            futures = []
            for tick in range(ticks):
                due = produced.started + tick * interval
                await asyncio.sleep(max(0.0, due - time.time()))
                for key, value, is_valid in workload.records(tick, due, options.invalid_share):
                    futures.append(await producer.send(settings.topic_metrics, value, key=key))
                    produced.valid += is_valid
                    produced.invalid += not is_valid
                progress.update(bar, completed=(tick + 1) * options.series)
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    produced.ended = time.time()
    return produced


def _series_filter(workload: Workload, produced: Produced) -> str:
    tenants = ",".join(sorted({f"'{s.tenant}'" for s in workload.series}))
    return f"tenant IN ({tenants}) AND ts >= toDateTime64({produced.started - 1:.3f}, 3, 'UTC')"


def _wait_stored(settings: Settings, workload: Workload, produced: Produced, console: Console, timeout: float = 120.0) -> tuple[int, float]:
    """Poll the store until it holds every valid point produced; returns (count, seconds waited)."""
    sql = f"SELECT count() FROM metric_points FINAL WHERE {_series_filter(workload, produced)}"
    start = time.time()
    stored = 0
    with console.status("waiting for the pipeline to store every point...") as status:
        while time.time() - start < timeout:
            stored = run_query(settings, sql).rows[0][0]
            status.update(f"stored {stored:,} of {produced.valid:,} valid points...")
            if stored >= produced.valid:
                break
            time.sleep(1.0)
    return stored, time.time() - start


def _summarise(settings: Settings, workload: Workload, produced: Produced, stored: int, drain_s: float, console: Console) -> None:
    where = _series_filter(workload, produced)
    dead = run_query(settings, f"SELECT count() FROM dead_letters FINAL WHERE received_at >= toDateTime64({produced.started - 1:.3f}, 3, 'UTC')").rows[0][0]
    alerts = run_query(settings, f"SELECT series, toUnixTimestamp64Milli(ts) / 1000 FROM anomalies FINAL WHERE {where}").rows
    detected, false_alerts = _match(workload, alerts, produced.started, produced.tick_seconds)

    elapsed = produced.ended - produced.started + drain_s
    table = Table(title="M1 demo summary", show_header=False)
    table.add_row("events in (valid + invalid)", f"{produced.valid + produced.invalid:,} ({produced.valid:,} + {produced.invalid:,})")
    table.add_row("points stored (FINAL)", f"{stored:,}")
    table.add_row("dead-lettered", f"{dead:,}")
    table.add_row("anomalies injected", f"{len(workload.episodes)}")
    table.add_row("  detected", f"{detected} ({detected / max(1, len(workload.episodes)):.0%})")
    table.add_row("  alerts outside injected episodes", f"{false_alerts}")
    table.add_row("throughput (stored / wall time)", f"{stored / max(elapsed, 1e-9):,.0f} points/s")
    table.add_row("data", str(settings.chdb_path) if not settings.clickhouse_url else settings.clickhouse_url)
    table.add_row("try", "m1 query \"SELECT severity, count() FROM anomalies FINAL GROUP BY severity\"")
    console.print(table)
    if stored < produced.valid:
        console.print(f"[red]only {stored:,} of {produced.valid:,} valid points were stored in time[/]")


def _match(workload: Workload, alerts: list[tuple], t0: float, tick_s: float) -> tuple[int, int]:
    """(episodes with an alert during them or 5 ticks after, alerts outside every episode)."""
    keys = [s.key for s in workload.series]
    windows = [(keys[e.series], t0 + e.start * tick_s, t0 + (e.start + e.length + 5) * tick_s) for e in workload.episodes]
    hit = [False] * len(windows)
    outside = 0
    for series, ts in alerts:
        inside = [i for i, (k, lo, hi) in enumerate(windows) if k == series and lo - tick_s <= float(ts) <= hi]
        for i in inside:
            hit[i] = True
        outside += not inside
    return sum(hit), outside
