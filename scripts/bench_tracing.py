"""Benchmark the pipeline's self-tracing: overhead, export success through an outage, stage coverage.

In one run, against an OTLP/HTTP receiver this script starts on 127.0.0.1 in a child process
(tests/otlp_receiver.py), so the receiver's own work is not billed to the pipeline:

(a) overhead: the metrics path's per-batch code exactly as the agent runs it (batch span, consume,
    decode, validate, score, sink, produce stages; ``MetricsPipeline.process`` in a thread) on an
    embedded chdb store, alternating rounds with tracing off (no-op tracer) and on (SDK, default
    sampling ``parentbased_always_on``, BatchSpanProcessor -> OTLP/HTTP). Kafka I/O is left out on
    purpose: it only adds time to both sides, so the overhead measured here is an upper bound.
(b) export success under load: the same loop, traced, for ``--load-seconds``; the receiver is
    stopped for ``--outage-seconds`` in the middle and started again on the same port. Success
    rate = spans the SDK's exporter reported exported / spans it tried (``core.telemetry.export_stats``),
    cross-checked with spans ended vs spans the receiver got (spans dropped from a full queue never
    reach the exporter, so only that second number would show them).
(c) coverage: a real worker process on a real local broker, tracing to the receiver; metric
    records (a few invalid) are produced with a ``traceparent`` header; coverage = share of the
    stages consume, decode, validate, score, produce, sink that produced at least one span as a
    child of the metrics agent's batch spans (``m1.agent=metrics``).

Run:  .venv/bin/python scripts/bench_tracing.py   (defaults: --rounds 16 --batches 10 --load-seconds 40 --outage-seconds 10)
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import typer
from opentelemetry.sdk.trace import SpanProcessor
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import telemetry  # noqa: E402
from core.kafka.local_broker import LocalKafka, free_port  # noqa: E402
from m1.local_key import local_admin_key  # noqa: E402
from core.kafka.producer import make_producer  # noqa: E402
from m1.query_client import run_query  # noqa: E402
from core.settings import Settings  # noqa: E402
from m1.worker_process import WorkerProcess  # noqa: E402
from m1.workload import Workload  # noqa: E402
from sinks.clickhouse import Store, connect  # noqa: E402
from streams.metrics_pipeline import MetricsPipeline, Record  # noqa: E402
from streams.tracing import STAGES, batch_span, in_thread, record_outcome, stage  # noqa: E402

console = Console()

# Exporter and batch-processor settings for (b): see docs/benchmarks-tracing.md.
EXPORT_ENV = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "65536",  # spans held while the collector is away
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
    "OTEL_BSP_SCHEDULE_DELAY": "1000",  # ms
    "OTEL_BSP_EXPORT_TIMEOUT": "60000",  # ms
    "OTEL_EXPORTER_OTLP_TIMEOUT": "30",  # s (Python SDK unit): retries with backoff 1, 2, 4, 8 s fit
}


class ReceiverProcess:
    """tests/otlp_receiver.ReceiverProcess in a child process, so its HTTP and protobuf work does not
    count against the pipeline's CPU time or hold this process's GIL. Driven over stdin/stdout."""

    SCRIPT = (
        "import json, sys; from tests.otlp_receiver import OtlpReceiver\n"
        "r = OtlpReceiver().start(); print(r.port, flush=True)\n"
        "for line in sys.stdin:\n"
        "    cmd = line.strip()\n"
        "    if cmd == 'stop': r.stop()\n"
        "    elif cmd == 'start': r.start()\n"
        "    elif cmd.startswith('seconds '): print(json.dumps(r.stage_seconds(cmd[8:])), flush=True); continue\n"
        "    elif cmd == 'traces': print(','.join(sorted({s.trace_id.hex() for q in r.requests for rs in q.resource_spans"
        " for ss in rs.scope_spans for s in ss.spans})), flush=True); continue\n"
        "    print(r.span_count, flush=True)\n"
    )

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": root})
        self.port = int(self.proc.stdout.readline())
        self.up = True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self._ask("stop")
        self.up = False

    def start(self) -> None:
        self._ask("start")
        self.up = True

    @property
    def span_count(self) -> int:
        return int(self._ask("count"))

    def stage_seconds(self, agent: str) -> dict[str, float]:
        """Seconds per child span (stage) of ``agent``'s batch spans, and ``"batch"`` (see OtlpReceiver)."""
        return json.loads(self._ask(f"seconds {agent}"))

    def stage_names(self, agent: str) -> set[str]:
        """Names of the child spans of ``agent``'s batch spans (attribute ``m1.agent``)."""
        return set(self.stage_seconds(agent)) - {"batch"}

    @property
    def trace_ids(self) -> set[str]:
        return set(filter(None, self._ask("traces").split(",")))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


class EndedCounter(SpanProcessor):
    """Counts spans ended in this process (what should reach the receiver)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span) -> None:  # noqa: ANN001
        self.ended += 1


@dataclass
class Batches:
    """Pre-encoded batches of metric records, as Faust-like events for the agent's helpers."""

    events: list[list[SimpleNamespace]]

    @classmethod
    def make(cls, batches: int, size: int, series: int) -> Batches:
        workload = Workload(tenants=3, regions=3, series=series, anomalies=0, ticks=10**6, seed=5)
        out, tick, offset = [], 0, 0
        pending: list[SimpleNamespace] = []
        while len(out) < batches:
            for key, value, _ in workload.records(tick, 1_767_225_600.0 + 60 * tick, 0.0):
                message = SimpleNamespace(topic="metrics", partition=offset % 4, offset=offset, headers=())
                pending.append(SimpleNamespace(message=message, key=key, value=value))
                offset += 1
                if len(pending) == size:
                    out.append(pending)
                    pending = []
            tick += 1
        return cls(out[:batches])


async def run_batch(pipeline: MetricsPipeline, events: list[SimpleNamespace]) -> int:
    """The metrics batch handler (streams/metrics_handler.py), minus the Kafka sends."""
    with batch_span("metrics", events) as span:
        with stage("consume"):
            records = [Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events]
        outcome = await in_thread(pipeline.process, records)
        with stage("produce"):
            await asyncio.sleep(0)  # nothing to send: the batches hold no invalid records
        record_outcome(span, stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                       anomalies=len(outcome.anomalies), rekeyed=len(outcome.rekeyed))
    return outcome.stored


def tracing(on: bool, endpoint: str) -> telemetry.TracerProvider | None:
    """Switch self-tracing on (SDK -> receiver) or off (no-op tracer) for this process."""
    os.environ["OTEL_SDK_DISABLED"] = "false" if on else "true"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    os.environ.pop("OTEL_TRACES_SAMPLER", None)  # default sampling
    return telemetry.setup_tracing("m1-bench")


def overhead(pipeline: MetricsPipeline, batches: Batches, rounds: int, receiver: ReceiverProcess,
             progress: Progress) -> dict:
    """(a): points/s per round, alternating off/on; the median of each side."""
    rates: dict[bool, list[float]] = {False: [], True: []}  # round i's off and on ran back to back
    cpu: dict[bool, float] = {False: 0.0, True: 0.0}  # process CPU seconds (all threads, chdb included)
    points_per_side = {False: 0, True: 0}
    task = progress.add_task("(a) overhead: rounds off/on", total=2 * rounds)
    per_round = (len(batches.events) - 3) // (2 * rounds)
    fresh = iter(batches.events[3:])  # every batch is new data: later ticks of the same series
    asyncio.run(_loop(pipeline, batches.events[:3]))  # warm-up: detectors created, chdb parts
    for i in range(rounds):
        for on in ((False, True) if i % 2 == 0 else (True, False)):  # ABBA: linear drift cancels
            tracing(on, receiver.endpoint)
            work = [next(fresh) for _ in range(per_round)]
            gc.collect()  # both sides start from the same collector state (setting tracing up allocates)
            start, start_cpu = time.perf_counter(), time.process_time()
            points = asyncio.run(_loop(pipeline, work))
            telemetry.force_flush()  # the export work is part of the cost
            rates[on].append(points / (time.perf_counter() - start))
            cpu[on] += time.process_time() - start_cpu
            points_per_side[on] += points
            progress.advance(task)
    tracing(False, receiver.endpoint)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    paired = statistics.median(1 - n / f for f, n in zip(rates[False], rates[True]))
    cpu_off, cpu_on = (cpu[k] / points_per_side[k] for k in (False, True))
    return {"off": off, "on": on, "overhead": (off - on) / off, "paired": paired, "rates": rates,
            "cpu_us_off": cpu_off * 1e6, "cpu_us_on": cpu_on * 1e6, "cpu_overhead": cpu_on / cpu_off - 1,
            "span_cost_ms": span_cost(receiver, batches.events[0])}


def span_cost(receiver: ReceiverProcess, events: list[SimpleNamespace], n: int = 2000) -> float:
    """Milliseconds the instrumentation alone adds per batch: the agent's spans around no work."""

    async def spans_only() -> None:
        for _ in range(n):
            with batch_span("metrics", events) as span:
                for name in ("consume", "decode", "validate", "score", "sink", "produce"):
                    with stage(name):
                        pass
                record_outcome(span, stored=1, dead_letters=0, anomalies=0, rekeyed=0)

    cost = {}
    for on in (False, True):
        tracing(on, receiver.endpoint)
        start = time.process_time()
        asyncio.run(spans_only())
        telemetry.force_flush()
        cost[on] = (time.process_time() - start) / n * 1e3
    tracing(False, receiver.endpoint)
    return cost[True] - cost[False]


async def _loop(pipeline: MetricsPipeline, events: list[list[SimpleNamespace]]) -> int:
    return sum([await run_batch(pipeline, batch) for batch in events])


def export_under_outage(pipeline: MetricsPipeline, batches: Batches, receiver: ReceiverProcess, seconds: float,
                        outage: float, progress: Progress) -> dict:
    """(b): traced load with the receiver down for ``outage`` seconds in the middle."""
    os.environ.update(EXPORT_ENV)
    received_before = receiver.span_count
    provider = tracing(True, receiver.endpoint)
    counter = EndedCounter()
    provider.add_span_processor(counter)
    task = progress.add_task(f"(b) export: {seconds:.0f}s load, receiver down {outage:.0f}s", total=seconds)

    async def load() -> int:
        start = time.monotonic()
        down_at, up_at = start + (seconds - outage) / 2, start + (seconds + outage) / 2
        state, batches_done, i = "up", 0, 0
        while (now := time.monotonic()) - start < seconds:
            if state == "up" and now >= down_at:
                receiver.stop()
                state = "down"
            elif state == "down" and now >= up_at:
                receiver.start()
                state = "back"
            await run_batch(pipeline, batches.events[i % len(batches.events)])
            i += 1
            batches_done += 1
            progress.update(task, completed=min(seconds, now - start))
        return batches_done

    done = asyncio.run(load())
    if not receiver.up:
        receiver.start()
    flushed = telemetry.force_flush(120_000)
    stats = telemetry.export_stats()
    received = receiver.span_count - received_before
    tracing(False, receiver.endpoint)
    for key in EXPORT_ENV:
        os.environ.pop(key, None)
    return {"batches": done, "stats": stats, "ended": counter.ended, "received": received, "flushed": flushed}


def coverage(home: Path, receiver: ReceiverProcess, progress: Progress) -> dict:
    """(c): stages with spans from a real worker on a real broker."""
    task = progress.add_task("(c) coverage: broker + traced worker", total=4)
    broker = LocalKafka(Settings(home=home / "kafka")).start()
    progress.advance(task)
    run = uuid.uuid4().hex[:8]
    settings = Settings(home=home / "worker", kafka_bootstrap=broker.bootstrap, app_id=f"bench-{run}",
                        topic_metrics=f"metrics-{run}", topic_dead_letter=f"dead-letter-{run}",
                        topic_anomalies=f"anomalies-{run}", topic_otlp_spans=f"otlp-spans-{run}",
                        topic_otlp_metrics=f"otlp-metrics-{run}", topic_bottlenecks=f"bottlenecks-{run}",
                        web_port=free_port(), batch_size=500, flush_seconds=0.3, bottleneck_seconds=0)
    settings = settings.model_copy(update={"api_key": SecretStr(local_admin_key(settings, "bench"))})  # for /v1/query
    saved = dict(os.environ)
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
                       "OTEL_SERVICE_NAME": "m1-worker-bench", "OTEL_SDK_DISABLED": "false"})
    try:
        worker = WorkerProcess(settings, settings.home / "worker.log").start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    progress.advance(task)
    try:
        trace_id = uuid.uuid4().hex
        headers = [("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01".encode())]
        workload = Workload(tenants=2, regions=2, series=200, anomalies=0, ticks=100, seed=3)
        records = [(k, v) for t in range(10) for k, v, _ in workload.records(t, 1_767_225_600.0 + 60 * t, 0.01)]
        valid = sum(1 for t in range(10) for _ in workload.tick(t, 0.0))

        async def produce() -> None:
            producer = make_producer(settings)
            await producer.start()
            try:
                futures = [await producer.send(settings.topic_metrics, v, key=k, headers=headers) for k, v in records]
                await asyncio.gather(*futures)
            finally:
                await producer.stop()

        asyncio.run(produce())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = run_query(settings, "SELECT count() FROM metric_points").rows[0][0]
            if stored >= valid:
                break
            time.sleep(0.5)
        progress.advance(task)
        time.sleep(2.0)  # two schedule delays: the last batch's spans are exported
        names = receiver.stage_names("metrics")  # the metrics agent's stages only
        progress.advance(task)
    finally:
        worker.stop()
        LocalKafka(Settings(home=home / "kafka")).stop()
    seen = [s for s in STAGES if s in names]
    linked = trace_id in receiver.trace_ids
    return {"stages": seen, "coverage": len(seen) / len(STAGES), "records": len(records), "stored": stored,
            "trace_continued": linked}


def main(
    rounds: int = typer.Option(16, help="(a) rounds per side (off/on alternate)."),
    batches: int = typer.Option(10, help="(a) batches per round and side (each one fresh data)."),
    batch_size: int = typer.Option(500, help="Records per batch (the worker's M1_BATCH_SIZE in tests)."),
    series: int = typer.Option(1000, help="Distinct series in the workload."),
    load_seconds: float = typer.Option(40.0, help="(b) seconds of traced load."),
    outage_seconds: float = typer.Option(10.0, help="(b) seconds the receiver is down, mid-load."),
    detector: str = typer.Option("", help="Detector (default: the pipeline's default)."),
    skip_overhead: bool = typer.Option(False, help="Skip (a)."),
    skip_coverage: bool = typer.Option(False, help="Skip (c), which starts a local broker and a worker."),
) -> None:
    """Tracing overhead (bar < 5%), export success through a receiver outage (bar > 99%), stage coverage (bar > 80%)."""
    home = Path(tempfile.mkdtemp(prefix="m1-bench-tracing-"))
    settings = Settings(home=home / "inproc", **({"detector": detector} if detector else {}))
    store = Store(connect(settings))
    store.migrate()
    pipeline = MetricsPipeline(settings, store)
    data = Batches.make(3 + 2 * rounds * batches, batch_size, series)
    receiver = ReceiverProcess()
    with Progress(console=console) as progress:
        a = None if skip_overhead else overhead(pipeline, data, rounds, receiver, progress)
        b = export_under_outage(pipeline, data, receiver, load_seconds, outage_seconds, progress)
        store.close()
        c = None if skip_coverage else coverage(home, receiver, progress)
    receiver.close()

    table = Table(title=f"self-tracing benchmark (detector {pipeline.bank.detector}, batches of {batch_size})")
    for column in ("measure", "result", "bar", "met"):
        table.add_column(column)
    if a is not None:
        table.add_row("(a) points/s, tracing off (median)", f"{a['off']:,.0f}", "", "")
        table.add_row("(a) points/s, tracing on (median)", f"{a['on']:,.0f}", "", "")
        table.add_row("(a) overhead (medians)", f"{a['overhead']:.2%}", "< 5%", _yes(a["overhead"] < 0.05))
        table.add_row("(a) overhead (median of paired rounds)", f"{a['paired']:.2%}", "< 5%", _yes(a["paired"] < 0.05))
        table.add_row("(a) CPU µs per point, off / on", f"{a['cpu_us_off']:.1f} / {a['cpu_us_on']:.1f}", "", "")
        table.add_row("(a) overhead (CPU time)", f"{a['cpu_overhead']:.2%}", "< 5%", _yes(a["cpu_overhead"] < 0.05))
        per_batch_ms = a["cpu_us_off"] * batch_size / 1e3
        table.add_row("(a) spans' own CPU per batch / batch CPU",
                      f"{a['span_cost_ms']:.3f} ms / {per_batch_ms:.1f} ms = {a['span_cost_ms'] / per_batch_ms:.2%}", "< 5%",
                      _yes(a["span_cost_ms"] / per_batch_ms < 0.05))
    stats = b["stats"]
    table.add_row("(b) exporter: spans ok / failed", f"{stats.spans_ok} / {stats.spans_failed}", "", "")
    table.add_row("(b) exporter: batches ok / failed", f"{stats.batches_ok} / {stats.batches_failed}", "", "")
    table.add_row("(b) export success rate (SDK)", f"{stats.success_rate:.3%}", "> 99%", _yes(stats.success_rate > 0.99))
    table.add_row("(b) spans ended / received", f"{b['ended']} / {b['received']}", "", "")
    delivered = b["received"] / b["ended"] if b["ended"] else 1.0
    table.add_row("(b) delivered share (receiver / ended)", f"{delivered:.3%}", "", "")
    if c is not None:
        table.add_row("(c) stages with spans", ", ".join(c["stages"]), "", "")
        table.add_row("(c) coverage", f"{c['coverage']:.0%}", "> 80%", _yes(c["coverage"] > 0.8))
        table.add_row("(c) producer's trace continued", str(c["trace_continued"]), "", "")
    console.print(table)
    if a is not None:
        console.print(f"(a) per-round points/s off: {[round(r) for r in a['rates'][False]]}")
        console.print(f"(a) per-round points/s on:  {[round(r) for r in a['rates'][True]]}")
    console.print(f"(b) {b['batches']} batches under load; final flush completed: {b['flushed']}")


def _yes(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


if __name__ == "__main__":
    typer.run(main)
