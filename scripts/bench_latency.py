"""End-to-end latency of a running worker at a steady produce rate, and a process tree's memory.

:func:`live_latency` produces the demo workload at ``rate`` points/s for ``seconds``, each point
stamped with the wall-clock time it is sent, and plants one spike per series (50 noise widths).
Two clocks are read against those stamps, as histograms:

* **row visible**: a poller asks the worker's query API every ``poll`` seconds for the rows of a
  sample of the series (one in :data:`SAMPLE`: the queries run inside the worker) that became
  visible since it last asked; a row's latency is the poll time minus its stamp (so it is
  over-stated by up to ``poll``);
* **anomaly on its topic**: a consumer of the anomalies topic; an anomaly's latency is the time
  it is received minus its point's stamp.

:func:`tree_rss` is the resident memory (now and peak) of a process and its descendants, from ``/proc``.
Used by ``scripts/bench_metrics.py`` (``--rate``); the times are on the one machine clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer

from core.kafka.security import client_kwargs
from core.kafka.producer import make_producer
from m1.query_client import QueryError, run_query
from core.settings import Settings
from m1.workload import Workload
from schemas.events import encode

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # upper bounds (s) of the printed histogram


def live_latency(settings: Settings, workload: Workload, first_tick: int, rate: float, seconds: float,
                 poll: float = 0.2, drain: float = 120.0) -> tuple[int, dict[str, np.ndarray]]:
    """Points produced and the latencies (s) ``{"row visible": ..., "anomaly on topic": ...}``
    of producing ``workload`` from tick ``first_tick`` at ``rate`` points/s for ``seconds`` (see
    the module); waits up to ``drain`` s after the last send for every row to be visible (a
    worker slower than ``rate`` shows as a long tail, and as fewer rows than points if it never catches up)."""
    start = time.time()
    rows: list[float] = []
    anomalies: list[float] = []
    done = threading.Event()
    visible = [0]
    poller = threading.Thread(target=_poll_rows, args=(settings, start, poll, rows, done, visible), daemon=True)
    poller.start()
    produced = 0
    try:
        produced = asyncio.run(_produce_and_listen(settings, workload, first_tick, rate, seconds, anomalies, visible, drain))
    finally:
        done.set()
        poller.join()
    return produced, {"row visible": np.array(rows), "anomaly on topic": np.array(anomalies)}


async def _produce_and_listen(settings: Settings, workload: Workload, first_tick: int, rate: float, seconds: float,
                              anomalies: list[float], visible: list[int], drain: float) -> int:
    """Points sent; returns once their rows are all visible, or ``drain`` s after the last send."""
    consumer = AIOKafkaConsumer(settings.topic_anomalies, bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="latest", enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    await consumer.seek_to_end()
    listening = asyncio.create_task(_listen(consumer, anomalies))
    producer = make_producer(settings)
    await producer.start()
    try:
        spec = workload.series
        live_ticks = max(1, int(seconds * rate / len(spec)))
        sent, began = 0, time.time()
        for tick in range(first_tick, first_tick + live_ticks):
            points = workload.tick(tick, 0.0)
            for chunk in range(0, len(points), 100):
                lag = began + sent / rate - time.time()
                if lag > 0:
                    await asyncio.sleep(lag)
                now = time.time()
                for i in range(chunk, min(chunk + 100, len(points))):
                    value = points[i].value
                    if i % live_ticks == tick - first_tick:  # one spike per series
                        value += 50.0 * spec[i].noise
                    point = msgspec.structs.replace(points[i], ts=now, value=value)
                    await producer.send(settings.topic_metrics, encode(point), key=point.series_key.encode())
                sent += min(100, len(points) - chunk)
        await producer.flush()
        deadline = time.time() + drain
        while visible[-1] < sent and time.time() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # the last anomalies
        return sent
    finally:
        await producer.stop()
        listening.cancel()
        await consumer.stop()


async def _listen(consumer: AIOKafkaConsumer, anomalies: list[float]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for messages in batches.values():
            anomalies.extend(now - msgspec.json.decode(m.value)["ts"] for m in messages)


#: Rows whose latency is collected: one series in SAMPLE (the poller's queries run inside the worker).
SAMPLE = 20


def _poll_rows(settings: Settings, start: float, poll: float, rows: list[float], done: threading.Event,
               visible: list[int]) -> None:
    """Every ``poll`` s: how many rows of points stamped after ``start`` are visible (into
    ``visible``), and the latencies of a sample's rows (one series in :data:`SAMPLE`) newly
    visible since the last ask (rows stored from 2 s before the latest one seen, less those counted)."""
    seen: set[tuple[str, int]] = set()
    start_ms = int(start * 1000)
    since = start_ms  # ingested_at from which sampled rows may still be new
    while not done.is_set():
        asked = time.time()
        try:
            result = run_query(settings, "SELECT series, toUnixTimestamp64Milli(ts), toUnixTimestamp64Milli(ingested_at) "
                                         f"FROM metric_points WHERE ts >= fromUnixTimestamp64Milli(toInt64({start_ms})) "
                                         f"AND ingested_at >= fromUnixTimestamp64Milli(toInt64({since})) "
                                         f"AND cityHash64(series) % {SAMPLE} = 0")
            visible.append(int(run_query(settings, "SELECT count() FROM metric_points WHERE "
                                                   f"ts >= fromUnixTimestamp64Milli(toInt64({start_ms}))").rows[0][0]))
        except QueryError:  # a loaded worker missed its health check: ask again (rows seen late count late)
            time.sleep(poll)
            continue
        latest = since
        for series, stamp, ingested in result.rows:
            latest = max(latest, ingested)
            if (series, stamp) not in seen:
                seen.add((series, stamp))
                rows.append(asked - stamp / 1000.0)  # visible by the time the query was asked
        if latest - 2_000 > since:  # batches are stored in the order of their ingested_at
            since = latest - 2_000
            seen = {(series, stamp) for series, stamp, ingested in result.rows if ingested >= since}
        time.sleep(max(0.0, poll - (time.time() - asked)))


def summary(latencies: np.ndarray) -> dict[str, float]:
    """Count, p50, p90, p99 and max (s) of ``latencies``; NaN for none."""
    if not len(latencies):
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {"n": len(latencies), "p50": p50, "p90": p90, "p99": p99, "max": float(latencies.max())}


def histogram(latencies: np.ndarray) -> list[tuple[str, int]]:
    """Counts per bucket of :data:`BUCKETS` (and above the last)."""
    edges = [0.0, *BUCKETS, np.inf]
    counts, _ = np.histogram(latencies, bins=edges)
    return [(f"<= {hi:g} s" if np.isfinite(hi) else f"> {BUCKETS[-1]:g} s", int(c)) for hi, c in zip(edges[1:], counts)]


def tree_rss(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of ``pid`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total = peak = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{current}/status").read_text().splitlines())
        except OSError:
            continue
        total += int(status.get("VmRSS", "0 kB").split()[0]) * 1024
        peak += int(status.get("VmHWM", "0 kB").split()[0]) * 1024
    return total, peak
