"""Benchmark the metrics path on this machine; results go to docs/benchmarks.md by hand.

It loads a topic with N points, then measures, in the same run and over the same topic:
1. the ceiling: a bare aiokafka consume-and-decode loop (msgspec, no scoring, no sink), with
   aiokafka's own records and again with the worker's (``core.kafka.lean_records``);
2. the full path: one worker process (Faust consume, decode, validate, score, sink to chdb),
   timed by the store's own ``ingested_at`` stamps (first to last batch) and end to end, and
   as a share of each ceiling. A first worker runs over the topic before it (its own group and
   store; ``--no-warm-up`` skips it) and is reported apart: the first worker after the broker
   started also pays for the broker compiling its group, transaction and produce paths, which a
   broker that has been running has done (the broker's CPU seconds during each run show it);
3. with ``--rate R`` (default 10,000), the same worker, now warm, fed live at R points/s for
   ``--live-seconds``: end-to-end latency histograms from produce to a visible row and to an
   anomaly on its topic (``scripts/bench_latency.py``);
4. the worker's resident memory (process tree, now and peak) with ``--series`` live series;
5. the pipeline alone, in this process, without Kafka: decode, score and insert per point
   (the personal-data policy included, as in the worker).
It prints the machine, its load and the command first, so a result table stands on its own.

Run:  .venv/bin/python scripts/bench_metrics.py --points 200000 --series 1000 [--stage-times]
      .venv/bin/python scripts/bench_metrics.py --points 200000 --series 10000 --rate 0

``--cpu-split`` measures just where a worker's CPU goes per point, in this process, without a
broker: decode (with the personal-data policy), score, store insert and forecasting, in CPU
time over the second half of the batches (the first half warms the models up).

``--redaction-only`` measures just what the personal-data policy adds per point, in this
process, without a broker: decode alone, then decode + redact, on the workload's points as they
are and with two more labels per point that the policy pseudonymises (a client IP, an email).
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import platform
import shutil
import sys
import tempfile
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench_latency import histogram, live_latency, summary, tree_rss  # scripts/
from compliance.redact import Redactor
from core.gc_tuning import tune_for_batches
from core.kafka.local_broker import LocalKafka, free_port
from core.kafka.lean_records import use_lean_records
from core.kafka.security import client_kwargs
from m1.local_key import local_admin_key
from core.kafka.producer import make_producer
from m1.query_client import QueryError, QueryResult, run_query
from core.settings import Settings
from core.kafka.topics import ensure_topics
from m1.worker_process import WorkerProcess
from m1.workload import Workload
from schemas.events import decode_metric, encode
from sinks.clickhouse import Store, connect
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import MetricsPipeline, Record, decode_batch

console = Console(width=150)


def main(
    points: int = typer.Option(200_000, help="Metric points to load into the topic."),
    series: int = typer.Option(1_000, help="Distinct series."),
    detector: str = typer.Option("ensemble", help="Detector name (models.registry)."),
    batch_size: int = typer.Option(Settings.model_fields["batch_size"].default, help="Worker batch size (M1_BATCH_SIZE)."),
    flush_seconds: float = typer.Option(0.25, help="Worker flush interval (M1_FLUSH_SECONDS; the default is 1 s): the "
                                                "longest a point waits for its batch, so the floor of the live latency."),
    snapshot_seconds: float = typer.Option(Settings.model_fields["snapshot_seconds"].default,
                                           help="Worker checkpoint interval (M1_SNAPSHOT_SECONDS)."),
    forecasting: bool = typer.Option(True, help="Keep the forecasting handler on (it learns the load metrics)."),
    stage_times: bool = typer.Option(False, help="Trace the worker to a local OTLP receiver and show where its batch time goes."),
    redaction_only: bool = typer.Option(False, help="Only the cost of the personal-data policy per point, in process."),
    cpu_split: bool = typer.Option(False, help="Only the CPU per point of each stage, in process."),
    rate: float = typer.Option(10_000, help="Then feed the warm worker live at this many points/s for the latency "
                                            "histograms (0: skip)."),
    live_seconds: float = typer.Option(30.0, help="Seconds of the live feed."),
    drop_caches: bool = typer.Option(False, help="Also drop the page cache (root) before the ceiling and the "
                                                "worker run (each is preceded by a sync either way)."),
    warm_up: bool = typer.Option(True, help="First run one worker over the topic (its own group and store), reported "
                                           "apart: the timed worker then meets a broker whose group, transaction and "
                                           "produce paths are compiled, as a running broker's are."),
) -> None:
    """Measure the bare consume+decode ceiling and the full per-worker metrics path."""
    tune_for_batches()  # what is measured in this process runs with the worker's collector settings
    home = Path(tempfile.mkdtemp(prefix="m1-bench-"))
    atexit.register(shutil.rmtree, home, True)  # its broker log and stores take about 1 GB a run
    console.print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
                  f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    console.print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    if redaction_only:
        table = Table(title=f"personal-data policy on the metrics path: {points:,} points, {series:,} series")
        table.add_column("measurement")
        table.add_column("points/s", justify="right")
        table.add_column("µs / point", justify="right")
        for name, rate in redaction_cost(workload_records(points, series, time.time()), home).items():
            table.add_row(name, f"{rate:,.0f}", f"{1e6 / rate:.2f}")
        console.print(table)
        return
    if cpu_split:
        table = Table(title=f"CPU per point, in process (steady state): {points:,} points, {series:,} series")
        for column in ("stage", "µs / point"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for name, micros in stage_cpu(workload_records(points, series, time.time()), home, batch_size).items():
            table.add_row(name, f"{micros:.1f}")
        console.print(table)
        return
    broker = LocalKafka(Settings(home=home / "broker"))
    with console.status("starting Kafka..."):
        started = broker.start()
    bootstrap, broker_pid = started.bootstrap, started.pid
    settings = Settings(home=home, kafka_bootstrap=bootstrap, detector=detector, batch_size=batch_size,
                        flush_seconds=flush_seconds, snapshot_seconds=snapshot_seconds, topic_partitions=2, web_port=free_port(),
                        **({} if forecasting else {"forecast_metrics": [], "cost_metrics": [], "replica_capacity": {}}))
    settings = settings.model_copy(update={"api_key": SecretStr(local_admin_key(settings, "bench"))})  # for /v1/query
    ensure_topics(settings)
    try:
        records = load_topic(settings, points, series)
        gc.freeze()  # kept for the in-process runs: the collector must not walk them while the worker is timed
        settle(drop_caches)  # the loaded topic written out first: neither run competes with that writeback
        ceiling = asyncio.run(bare_consume(settings, points))
        lean_ceiling = asyncio.run(bare_consume(settings, points, lean=True))
        live: dict[str, object] = {}

        def then(worker: WorkerProcess) -> None:  # the warm worker: live latency, then its memory
            if rate > 0:
                workload = Workload(tenants=10, regions=3, series=series, anomalies=series // 20,
                                    ticks=-(-points // series), seed=1)
                live["latency"] = live_latency(settings, workload, -(-points // series), rate, live_seconds)
            assert worker.proc is not None
            live["rss"] = tree_rss(worker.proc.pid)

        broker_cpu: list[float] = []  # the broker's CPU seconds while each worker stored the topic
        broker_threads: list[Counter[str]] = []  # the same by the broker's thread names

        def timing_broker(then: Callable[[WorkerProcess], None] | None = None) -> Callable[[WorkerProcess], None]:
            start, threads = cpu_seconds(broker_pid), thread_seconds(broker_pid)

            def stored(worker: WorkerProcess) -> None:
                broker_cpu.append(cpu_seconds(broker_pid) - start)
                broker_threads.append(thread_seconds(broker_pid) - threads)
                if then is not None:
                    then(worker)
            return stored

        runs: list[tuple[str, WorkerRun]] = []  # (which worker, its run)
        if warm_up:
            settle(drop_caches)
            runs.append(("first worker after the broker started",
                         full_path(run_settings(settings, "first-worker"), points, timing_broker())))
        settle(drop_caches)
        if stage_times:
            timed, stages = traced_full_path(settings, points, timing_broker(then))
        else:
            timed, stages = full_path(settings, points, timing_broker(then)), {}
        runs.append(("the next worker" if warm_up else "one worker", timed))
        alone = in_process(records, detector, home / "inproc", batch_size)
    finally:
        broker.stop()
    table = Table(title=f"metrics path: {points:,} points, {series:,} series, detector {detector}, "
                        f"forecasting {'on' if forecasting else 'off'}")
    table.add_column("measurement")
    table.add_column("points/s", justify="right")
    table.add_row("ceiling: bare aiokafka consume + msgspec decode", f"{ceiling:,.0f}")
    table.add_row("ceiling with the worker's record path (core.kafka.lean_records)", f"{lean_ceiling:,.0f}")
    for (which, run), broker_seconds in zip(runs, broker_cpu):
        table.add_row(f"full path, {which} (store ingested_at span; broker CPU {broker_seconds:.1f} s; "
                      f"{run.batch_points:,.0f} points a batch)", f"{run.rate:,.0f}")
        table.add_row("  as a share of the ceiling / of the lean-records ceiling",
                      f"{run.rate / ceiling:.1%} / {run.rate / lean_ceiling:.1%}")
    table.add_row("full path, one worker (end to end incl. group join)", f"{timed.end_to_end:,.0f}")
    for stage, stage_rate in alone.items():
        table.add_row(f"pipeline alone, no Kafka: {stage}", f"{stage_rate:,.0f}")
    console.print(table)
    for (which, _), threads in zip(runs, broker_threads):
        console.print(f"broker CPU, {which}, by thread: "
                      + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in threads.most_common(5)))
    rss, peak = live["rss"]  # type: ignore[misc]
    console.print(f"worker memory with {series:,} series: {rss / 2**20:,.0f} MiB resident, {peak / 2**20:,.0f} MiB peak")
    if "latency" in live:
        produced, latencies = live["latency"]  # type: ignore[misc]
        print_latency(latencies, rate, series, produced)
    if stages:
        print_stages(stages, points)


def print_latency(latencies: dict, rate: float, series: int, produced: int) -> None:
    """Percentiles and histogram of each end-to-end latency."""
    table = Table(title=f"end to end at {rate:,.0f} points/s ({series:,} series, {produced:,} points produced, "
                        f"one spike per series), produce to ...")
    for column in ("measure", "n", "p50 s", "p90 s", "p99 s", "max s", *(label for label, _ in histogram(np.zeros(0)))):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for name, values in latencies.items():
        s = summary(values)
        table.add_row(name, f"{s['n']:,}", *(f"{s[k]:.3f}" for k in ("p50", "p90", "p99", "max")),
                      *(f"{count:,}" for _, count in histogram(values)))
    console.print(table)


def traced_full_path(settings: Settings, points: int, then: Callable[[WorkerProcess], None] | None = None
                     ) -> tuple[WorkerRun, dict[str, dict[str, float]]]:
    """:func:`full_path` with the worker's self-tracing exported to a receiver in a child process;
    also returns, per handler (``metrics``, ``forecast``), the seconds spent in each stage span."""
    from bench_tracing import ReceiverProcess  # scripts/: the receiver runs outside this process

    receiver = ReceiverProcess()
    saved = dict(os.environ)
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
                       "OTEL_SERVICE_NAME": "m1-worker-bench", "OTEL_SDK_DISABLED": "false"})
    try:
        run = full_path(settings, points, then)  # the worker exports its last spans when it stops
        return run, {agent: receiver.stage_seconds(agent) for agent in ("metrics", "forecast")}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        receiver.close()


def print_stages(stages: dict[str, dict[str, float]], points: int) -> None:
    """Seconds, microseconds per point and share of all batch time, per handler and stage."""
    total = sum(seconds["batch"] for seconds in stages.values())
    table = Table(title="where the worker's batch time goes (its own trace spans)")
    for column in ("handler", "stage", "seconds", "us / point", "share"):
        table.add_column(column, justify="left" if column in ("handler", "stage") else "right")
    for agent, seconds in stages.items():
        for name, value in sorted(seconds.items(), key=lambda item: (item[0] == "batch", -item[1])):
            table.add_row(agent, "(whole batch)" if name == "batch" else name, f"{value:.2f}",
                          f"{value / points * 1e6:.1f}", f"{value / total:.0%}")
    console.print(table)


def workload_records(points: int, series: int, now: float) -> list[tuple[bytes, bytes]]:
    """``points`` (key, value) records of the demo workload, ending at ``now``."""
    ticks = -(-points // series)
    workload = Workload(tenants=10, regions=3, series=series, anomalies=series // 20, ticks=ticks, seed=1)
    t0 = now - ticks * 60.0
    return [(k, v) for tick in range(ticks) for k, v, _ in workload.records(tick, t0 + 60.0 * tick, 0.0)][:points]


def redaction_cost(records: list[tuple[bytes, bytes]], home: Path) -> dict[str, float]:
    """Points/s of decode alone and of decode + the worker's redaction, without and with personal data."""
    redactor = Redactor.from_settings(Settings(home=home))
    values = [v for _, v in records]
    planted = [encode(msgspec.structs.replace(p, labels={**p.labels, "client_ip": f"10.{i % 7}.{i % 251}.{i % 97}",
                                                         "email": f"user{i % 1000}@example.com"}))
               for i, p in enumerate(decode_metric(v) for v in values)]
    rates = {}
    for name, batch, redact in (("decode", values, None), ("decode + redact", values, redactor.event),
                                ("decode, +2 personal labels", planted, None),
                                ("decode + redact, +2 personal labels", planted, redactor.event)):
        start = time.process_time()
        for value in batch:
            point = decode_metric(value)
            if redact is not None:
                redact(point)
        rates[name] = len(batch) / (time.process_time() - start)
    return rates


def stage_cpu(records: list[tuple[bytes, bytes]], home: Path, batch: int) -> dict[str, float]:
    """CPU µs per point of decode (+ redaction), score (+ bank and columns), the store inserts (of
    both paths) and forecasting, over the second half of the batches; and of all of them."""
    settings = Settings(home=home, snapshot_seconds=1e9)
    store = Store(connect(settings))
    store.migrate()
    metrics, forecasts = MetricsPipeline(settings, store), ForecastPipeline(settings, store)
    seconds = dict.fromkeys(("decode", "score", "insert", "forecast"), 0.0)
    insert = store.insert

    def timed_insert(*args: object, **kwargs: object) -> int:
        start = time.process_time()
        try:
            return insert(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            seconds["insert"] += time.process_time() - start

    store.insert = timed_insert  # type: ignore[method-assign]
    batches = [[Record("bench", 0, i + j, k, v) for j, (k, v) in enumerate(records[i : i + batch])]
               for i in range(0, len(records), batch)]
    for number, records_batch in enumerate(batches):
        if number == len(batches) // 2:
            seconds = dict.fromkeys(seconds, 0.0)
        now = time.time()
        start = time.process_time()
        outcome = decode_batch(metrics.decoder, records_batch, now, settings.max_future_seconds, metrics.tenant_of,
                               redact=metrics.series_of)  # as MetricsPipeline.process does
        seconds["decode"] += time.process_time() - start
        start, inserted = time.process_time(), seconds["insert"]
        metrics.score_and_store(outcome.points, now, outcome.dead_letters, outcome.sources)
        seconds["score"] += time.process_time() - start - (seconds["insert"] - inserted)
        start, inserted = time.process_time(), seconds["insert"]
        forecasts.process_points(outcome.points)
        seconds["forecast"] += time.process_time() - start - (seconds["insert"] - inserted)
    store.close()
    timed = sum(len(b) for b in batches[len(batches) // 2 :])
    micros = {name: value / timed * 1e6 for name, value in seconds.items()}
    micros["all four"] = sum(micros.values())
    return micros


def load_topic(settings: Settings, points: int, series: int) -> list[tuple[bytes, bytes]]:
    records = workload_records(points, series, time.time())

    async def produce() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            with Progress(console=console) as progress:
                task = progress.add_task("loading the topic", total=len(records))
                futures = []
                for i, (key, value) in enumerate(records):
                    futures.append(await producer.send(settings.topic_metrics, value, key=key))
                    if i % 10_000 == 0:
                        progress.update(task, completed=i)
                await asyncio.gather(*futures)
                progress.update(task, completed=len(records))
        finally:
            await producer.stop()

    asyncio.run(produce())
    return records


def settle(drop_caches: bool) -> None:
    """Write dirty pages out and, with ``drop_caches``, drop the clean ones (root): a run timed right
    after the topic was loaded would otherwise share the disk and CPU with its writeback."""
    os.sync()
    if drop_caches:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


async def bare_consume(settings: Settings, points: int, lean: bool = False) -> float:
    """Points/s of a bare consume-and-decode loop over the loaded topic: aiokafka's records, or
    with ``lean`` the worker's (:mod:`core.kafka.lean_records`)."""
    use_lean_records(lean)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, max_poll_records=5000,
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
                                **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic_metrics, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        start = time.perf_counter()
        while seen < points:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batches.values():
                for message in messages:
                    decode_metric(message.value)
                seen += len(messages)
        return points / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        use_lean_records(False)


class WorkerRun(NamedTuple):
    """One worker process storing the loaded topic."""

    rate: float  #: points/s over the store's ingested_at span (first to last batch)
    end_to_end: float  #: points/s from the worker's start to the last point stored
    batch_points: float  #: points a batch, on average (a batch's points share one ingested_at)


def full_path(settings: Settings, points: int, then: Callable[[WorkerProcess], None] | None = None) -> WorkerRun:
    """One worker process storing the loaded topic; ``then(worker)`` runs once it has stored them
    all, before it stops."""
    worker = WorkerProcess(settings, settings.home / "bench-worker.log")
    start = time.perf_counter()
    worker.start()
    try:
        stored = 0
        with Progress(console=console) as progress:
            task = progress.add_task("worker storing", total=points)
            while stored < points:
                stored = patient_query(settings, "SELECT count() FROM metric_points").rows[0][0]
                progress.update(task, completed=stored)
                time.sleep(0.5)  # the bench's own queries cost the worker little: the span is the store's stamps
        end_to_end = points / (time.perf_counter() - start)
        first, last = patient_query(settings, "SELECT toUnixTimestamp64Milli(min(ingested_at)), "
                                          "toUnixTimestamp64Milli(max(ingested_at)) FROM metric_points").rows[0]
        batch_rows = patient_query(settings, "SELECT count() FROM metric_points WHERE ingested_at = "
                                         "(SELECT min(ingested_at) FROM metric_points)").rows[0][0]
        batches = patient_query(settings, "SELECT uniqExact(ingested_at) FROM metric_points").rows[0][0]
        if then is not None:
            then(worker)
        # The first batch's own work precedes its stamp: count it out of the span.
        return WorkerRun((points - batch_rows) / max((last - first) / 1000.0, 1e-9), end_to_end, points / max(batches, 1))
    finally:
        worker.stop()


def run_settings(base: Settings, name: str) -> Settings:
    """``base`` for a worker run of its own: its own home (store), consumer group, API port and key."""
    settings = base.model_copy(update={"home": base.home / name, "app_id": f"m1-bench-{name}", "web_port": free_port()})
    return settings.model_copy(update={"api_key": SecretStr(local_admin_key(settings, "bench"))})


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds that process ``pid`` has used so far."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def thread_seconds(pid: int) -> Counter[str]:
    """CPU seconds that the threads of process ``pid`` have used so far, by thread name (numbers
    taken out: the JVM's ``C2 CompilerThread0`` and ``1`` count as one; names as the kernel keeps
    them, 15 characters at most)."""
    out: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = re.sub(r"[-#]?\d+$", "", (task / "comm").read_text().strip())
            out[name] += _stat_seconds(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return out


def _stat_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def patient_query(settings: Settings, sql: str, tries: int = 10) -> QueryResult:
    """``run_query`` through the worker's API, asked again when a loaded machine makes the worker
    miss the health check (then the query would try to open the store the worker holds)."""
    for _ in range(tries - 1):
        try:
            return run_query(settings, sql)
        except QueryError:
            time.sleep(1.0)
    return run_query(settings, sql)


def in_process(records: list[tuple[bytes, bytes]], detector: str, home: Path, size: int) -> dict[str, float]:
    """Throughput of decode only, and of decode+score+insert in batches of ``size``, in this process."""
    batch = [Record("bench", 0, i, k, v) for i, (k, v) in enumerate(records)]
    start = time.perf_counter()
    for r in batch:
        decode_metric(r.value)
    decode_rate = len(batch) / (time.perf_counter() - start)
    store = Store(connect(Settings(home=home)))
    store.migrate()
    pipeline = MetricsPipeline(Settings(home=home, detector=detector, snapshot_seconds=1e9), store)
    start = time.perf_counter()
    for i in range(0, len(batch), size):
        pipeline.process(batch[i : i + size])
    full_rate = len(batch) / (time.perf_counter() - start)
    store.close()
    return {"decode + validate": decode_rate, "decode + score + insert": full_rate}


if __name__ == "__main__":
    typer.run(main)
