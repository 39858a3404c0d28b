"""Benchmark replication lag between local regions; results go to docs/benchmarks.md by hand.

For 2 and then 3 local clusters with MirrorMaker 2 (full mesh; ``regions.cluster``), it runs one
region agent per region (child processes) and, in the same run, measures two ways:

1. **records**: every region produces ``--rate`` timestamped records a second to a bench topic for
   ``--seconds``; a consumer in every other region reads the mirrored ``<source>.<topic>`` and takes
   arrival minus send time, per record (one machine, one clock: no skew). p50 / p99 / max per set.
2. **agents**: the agents' own ``region_lag`` reports over the same time (heartbeats, one a second):
   the median of their window p50s and the largest window p99, and the largest skew they estimated.

Run:  .venv/bin/python scripts/bench_regions.py --seconds 60 --rate 20 [--sets 2,3]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from regions.cluster import DEFAULT_REGIONS, RegionSet
from regions.lag import RegionLag, percentile
from regions.processes import start_agents, stop_agents
from regions.watch import read_topic, wait_for_route

console = Console(width=150)


async def _measure_records(bootstraps: dict[str, str], seconds: float, rate: float) -> list[float]:
    """Arrival minus send (ms) of every record mirrored from each region to each other one."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    lags: list[float] = []
    producers = {r: AIOKafkaProducer(bootstrap_servers=b, linger_ms=0, acks="all") for r, b in bootstraps.items()}
    consumers = {}
    for region, bootstrap in bootstraps.items():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                    metadata_max_age_ms=1000, fetch_max_wait_ms=50)
        consumer.subscribe(pattern=rf"^[a-z][a-z0-9-]*\.{topic}$")
        consumers[region] = consumer
    for client in [*producers.values(), *consumers.values()]:
        await client.start()
    for producer in producers.values():  # create the topic, let MirrorMaker find it (refresh: 2 s)
        await producer.send_and_wait(topic, b"warm-up")
    await asyncio.sleep(8)
    stop = time.monotonic() + seconds
    expected = 0
    produced = asyncio.Event()

    async def produce(producer: AIOKafkaProducer) -> None:
        nonlocal expected
        while time.monotonic() < stop:
            await producer.send_and_wait(topic, repr(time.time()).encode())
            expected += len(bootstraps) - 1
            await asyncio.sleep(1 / rate)

    async def produce_all() -> None:
        await asyncio.gather(*(produce(p) for p in producers.values()))
        produced.set()

    async def consume(consumer: AIOKafkaConsumer) -> None:
        while not produced.is_set() or (len(lags) < expected and time.monotonic() < stop + 10):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                lags.extend((now - float(r.value)) * 1000 for r in records if r.value != b"warm-up")

    await asyncio.gather(produce_all(), *(consume(c) for c in consumers.values()))
    for client in [*producers.values(), *consumers.values()]:
        await client.stop()
    if len(lags) < expected:
        console.print(f"[red]{expected - len(lags)} of {expected} records did not arrive in time[/]")
    return lags


def _agents_view(region_set: RegionSet, since: float) -> tuple[float, float, float, int]:
    """Median window p50, largest window p99 and largest |skew| of the agents' reports after
    ``since``, and how many reports."""
    reports: list[RegionLag] = []
    for region in region_set.names:
        settings = region_set.settings.model_copy(update={"kafka_bootstrap": region_set.kafka(region).bootstrap()})
        values = asyncio.run(read_topic(settings, settings.topic_region_lag, timeout=10))
        reports += [r for r in (msgspec.json.decode(v, type=RegionLag) for v in values)
                    if r.target == region and r.ts >= since and r.samples > 0]
    if not reports:
        return float("nan"), float("nan"), float("nan"), 0
    return (statistics.median(r.lag_p50_ms for r in reports), max(r.lag_p99_ms for r in reports),
            max(abs(r.skew_ms) for r in reports if r.skew_known) if any(r.skew_known for r in reports) else float("nan"),
            len(reports))


def _run_set(names: list[str], seconds: float, rate: float, home: Path) -> list[str]:
    region_set = RegionSet(Settings(home=home, regions=names), names)
    with console.status(f"{len(names)} clusters + MirrorMaker 2 starting..."):
        region_set.start()
    agents = start_agents(region_set.settings, names, home / "logs")
    try:
        with console.status("agents warming up..."):
            for region in names:
                settings = region_set.settings.model_copy(update={"kafka_bootstrap": region_set.kafka(region).bootstrap()})
                asyncio.run(wait_for_route(settings, region, lambda regions, region=region: regions[:1] == [region], 120))
        since = time.time() + 12  # agents' windows (10 s) hold only the measured period from then on
        with console.status(f"measuring for {seconds:.0f}s..."):
            lags = sorted(asyncio.run(_measure_records(region_set.bootstraps(), seconds, rate)))
        p50, p99_window, skew, n_reports = _agents_view(region_set, since)
    finally:
        stop_agents(agents)
        region_set.stop()
    return [str(len(names)), str(len(lags)), f"{percentile(lags, 50):.1f}", f"{percentile(lags, 99):.1f}",
            f"{lags[-1]:.1f}", f"{p50:.1f}", f"{p99_window:.1f}", f"{skew:.1f}", str(n_reports)]


def main(seconds: float = typer.Option(60.0, help="Measured time per set."),
         rate: float = typer.Option(20.0, help="Records a second each region produces."),
         sets: str = typer.Option("2,3", help="Sizes of the region sets to measure, one after the other.")) -> None:
    table = Table("regions", "records", "p50 ms", "p99 ms", "max ms", "agents p50 ms", "agents max p99 ms",
                  "agents max |skew| ms", "reports", title="Replication lag through MirrorMaker 2 (local clusters)")
    for size in (int(n) for n in sets.split(",")):
        with tempfile.TemporaryDirectory(prefix="m1-bench-regions-") as home:
            table.add_row(*_run_set(DEFAULT_REGIONS[:size] if size <= 3 else [f"r{i}" for i in range(size)],
                                    seconds, rate, Path(home)))
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
