"""``m1 demo``: the whole pipeline on the embedded defaults, in about a minute.

It starts the local broker and a worker if none is running, streams the workload at
the requested rate with a progress bar, waits until the store has every valid point,
then prints what went in, what was stored and dead-lettered, and which injected
anomalies the detectors caught.

Its tenants are created in the registry, and its queries go through the worker's API
with a platform-admin key of its own (``<home>/demo.key``, see ``m1.local_key``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.kafka.local_broker import LocalKafka
from m1.local_key import key_file, local_admin_key, shown
from core.kafka.producer import make_producer
from m1.query_client import run_query, worker_is_up
from core.settings import Settings
from core.kafka.topics import ensure_topics
from m1.worker_process import WorkerProcess
from m1.workload import Workload
from tenancy.registry import Registry


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
    invalid_at: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) of each invalid record


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> DemoSummary:
    """Run the demo end to end, print its summary and return it."""
    broker = LocalKafka(settings)
    started_broker = False
    if not settings.kafka_bootstrap and broker.status() is None:
        with console.status("starting the local Kafka broker (first run downloads the jars)..."):
            broker.start()
        started_broker = True
    settings = settings.model_copy(update={"kafka_bootstrap": settings.bootstrap,
                                           "api_key": SecretStr(local_admin_key(settings, "demo"))})
    ensure_topics(settings)
    worker = None
    if not worker_is_up(settings):
        with console.status("starting the pipeline worker..."):
            worker = WorkerProcess(settings, settings.home / "worker.log").start()
    try:
        ticks = max(1, round(options.duration * options.rate / options.series))
        workload = Workload(options.tenants, options.regions, options.series, options.anomalies, ticks, options.seed)
        _register_tenants(settings, workload)
        produced = asyncio.run(_produce(settings, workload, ticks, options, console))
        stored, drain_s = _wait_stored(settings, workload, produced, console)
        summary = _summarise(settings, workload, produced, stored, drain_s)
        _print(summary, settings, console)
        return summary
    finally:
        if not options.keep_running:
            if worker is not None:
                worker.stop()
            if started_broker:
                broker.stop()


def _register_tenants(settings: Settings, workload: Workload) -> None:
    """Create the workload's tenants in the registry (those it already has stay as they are)."""
    registry = Registry.from_settings(settings)
    try:
        known = {t.name for t in registry.tenants()}
        for tenant in sorted({s.tenant for s in workload.series} - known):
            registry.create_tenant(tenant)
    finally:
        registry.close()


async def _produce(settings: Settings, workload: Workload, ticks: int, options: DemoOptions, console: Console) -> Produced:
    producer = make_producer(settings)
    await producer.start()
    interval = options.series / options.rate
    produced = Produced(started=time.time(), tick_seconds=interval)
    columns = [TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TextColumn("points"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("produce", total=ticks * options.series)
            futures, invalid = [], []
            for tick in range(ticks):
                due = produced.started + tick * interval
                await asyncio.sleep(max(0.0, due - time.time()))
                for key, value, is_valid in workload.records(tick, due, options.invalid_share):
                    sent = await producer.send(settings.topic_metrics, value, key=key)
                    (futures if is_valid else invalid).append(sent)
                progress.update(bar, completed=(tick + 1) * options.series)
            await asyncio.gather(*futures)
            produced.valid, produced.invalid = len(futures), len(invalid)
            produced.invalid_at = {(m.partition, m.offset) for m in await asyncio.gather(*invalid)}
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


@dataclass(frozen=True)
class DemoSummary:
    """What the demo put in and what the pipeline made of it."""

    valid: int
    invalid: int
    stored: int
    dead_lettered: int  # of the invalid records this demo sent
    older_dead_letters: int  # records left on the topic before the demo, dead-lettered during it
    detected_by_kind: dict[str, tuple[int, int]]  # episode kind -> (detected, injected)
    false_alerts: int
    points_per_second: float
    forecasts: int  # forecast rows for the demo's series (every horizon)
    recommendations: int  # replica recommendations for them

    @property
    def detected(self) -> int:
        return sum(n for n, _ in self.detected_by_kind.values())

    @property
    def injected(self) -> int:
        return sum(total for _, total in self.detected_by_kind.values())


def _summarise(settings: Settings, workload: Workload, produced: Produced, stored: int, drain_s: float) -> DemoSummary:
    where = _series_filter(workload, produced)
    letters = run_query(settings, f"SELECT partition, offset FROM dead_letters FINAL WHERE topic = '{settings.topic_metrics}' "
                                  f"AND received_at >= toDateTime64({produced.started - 1:.3f}, 3, 'UTC')").rows
    dead = sum((int(p), int(o)) in produced.invalid_at for p, o in letters)
    alerts = run_query(settings, f"SELECT series, toUnixTimestamp64Milli(ts) / 1000 FROM anomalies FINAL WHERE {where}").rows
    hit, false_alerts = _match(workload, alerts, produced.started, produced.tick_seconds)
    kinds = sorted({e.kind for e in workload.episodes})
    by_kind = {k: (sum(f for e, f in zip(workload.episodes, hit) if e.kind == k),
                   sum(e.kind == k for e in workload.episodes)) for k in kinds}
    elapsed = produced.ended - produced.started + drain_s
    forecasts, recommendations = (run_query(settings, f"SELECT count() FROM {table} FINAL WHERE {where}").rows[0][0]
                                  for table in ("forecasts", "recommendations"))
    return DemoSummary(produced.valid, produced.invalid, stored, dead, len(letters) - dead, by_kind, false_alerts,
                       stored / max(elapsed, 1e-9), forecasts, recommendations)


def _print(summary: DemoSummary, settings: Settings, console: Console) -> None:
    s = summary
    table = Table(title="M1 demo summary", show_header=False)
    table.add_row("events in (valid + invalid)", f"{s.valid + s.invalid:,} ({s.valid:,} + {s.invalid:,})")
    table.add_row("points stored (FINAL)", f"{s.stored:,}")
    older = f" (and {s.older_dead_letters:,} older records left on the topic)" if s.older_dead_letters else ""
    table.add_row("dead-lettered", f"{s.dead_lettered:,}{older}")
    table.add_row("anomalies injected", f"{s.injected}")
    kinds = ", ".join(f"{kind.replace('_', ' ')} {n}/{total}" for kind, (n, total) in s.detected_by_kind.items())
    table.add_row("  detected", f"{s.detected} ({s.detected / max(1, s.injected):.0%}): {kinds}")
    table.add_row("  alerts outside injected episodes", f"{s.false_alerts}")
    table.add_row("forecasts / replica recommendations", f"{s.forecasts:,} / {s.recommendations:,}")
    table.add_row("throughput (stored / wall time)", f"{s.points_per_second:,.0f} points/s")
    table.add_row("data", str(settings.chdb_path) if not settings.clickhouse_url else settings.clickhouse_url)
    table.add_row("API key (platform-admin)", f"{shown(settings.api_key.get_secret_value())} in "
                                                f"{key_file(settings, 'demo')}")
    table.add_row("", f"m1 query needs it while a worker runs: export M1_API_KEY=$(cat {key_file(settings, 'demo')})")
    table.add_row("try", "m1 query \"SELECT severity, count() FROM anomalies FINAL GROUP BY severity\"")
    table.add_row("", "m1 query \"SELECT series, argMax(replicas, ts) AS replicas FROM recommendations "
                      "FINAL GROUP BY series ORDER BY series LIMIT 5\"")
    console.print(table)
    if s.stored < s.valid:
        console.print(f"[red]only {s.stored:,} of {s.valid:,} valid points were stored in time[/]")


def _match(workload: Workload, alerts: list[tuple], t0: float, tick_s: float) -> tuple[list[bool], int]:
    """(for each episode whether an alert fell during it or 5 ticks after, alerts outside every episode)."""
    keys = [s.key for s in workload.series]
    windows = [(keys[e.series], t0 + e.start * tick_s, t0 + (e.start + e.length + 5) * tick_s) for e in workload.episodes]
    hit = [False] * len(windows)
    outside = 0
    for series, ts in alerts:
        inside = [i for i, (k, lo, hi) in enumerate(windows) if k == series and lo - tick_s <= float(ts) <= hi]
        for i in inside:
            hit[i] = True
        outside += not inside
    return hit, outside
