"""Alert workflows end to end: anomaly record -> engine -> outbox -> delivery -> a local receiver.

    .venv/bin/python scripts/bench_workflows.py [--rate 1000] [--minutes 3] [--tenants 4] [--scale-share 0.2]

Starts a broker of its own, a real worker (engine and delivery in it) and a local receiver on
127.0.0.1, then produces ``--rate`` anomalies per minute for ``--minutes`` onto the anomalies topic,
each stamped with the time it is produced and each of a new service (so each opens a group, an
incident and a workflow run). Two workflows per tenant:

* ``page`` (``latency_ms`` anomalies): notify the receiver, wait 10 s for an ack (none comes),
  escalate to a second receiver; terminal state ``resolved`` when the anomaly clears (20 s);
* ``scale`` (``requests_per_s``, ``--scale-share`` of the anomalies): call the receiver's scaler
  webhook, which answers ``{"scaled": true}``, and branch to the ``resolve`` step.

Reported: p50/p99/max from the anomaly record's timestamp to the first delivery attempt the
receiver sees of each run's first notification (the ``page`` runs), and the share of runs that
reached their declared terminal state (run records on the workflow_runs topic, against the runs
the load must start). The bars: p99 < 2 s, share > 99.9 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import Progress

from core.kafka.local_broker import LocalKafka, free_port
from core.kafka.security import client_kwargs
from core.kafka.producer import make_producer
from core.settings import Settings
from m1.worker_process import WorkerProcess

WORKFLOWS = """
tenant: {tenant}
receivers:
  - {{name: chat, type: webhook, url: "{url}/chat"}}
  - {{name: pager, type: webhook, url: "{url}/pager"}}
  - {{name: scaler, type: webhook, url: "{url}/scale"}}
workflows:
  - name: page
    trigger: {{source: anomalies, match: {{labels: {{metric: latency_ms}}}}}}
    group: {{by: [service, region], wait: 0s}}
    resolve_after: 20s
    terminal: resolved
    steps:
      - notify: [chat]
      - wait_ack: {{timeout: 10s}}
      - notify: [pager]
  - name: scale
    trigger: {{source: anomalies, match: {{labels: {{metric: requests_per_s}}}}}}
    group: {{by: [service, region], wait: 0s}}
    resolve_after: 20s
    terminal: resolved
    steps:
      - webhook: {{receiver: scaler, body: {{action: add_replicas}}, timeout: 5s}}
        branch:
          - {{status: 2xx, json: {{scaled: true}}, goto: done}}
      - notify: [chat]
      - {{id: done, resolve: {{}}}}
"""
console = Console()


class Receiver:
    """Answers 200 to everything; records the first attempt of each webhook-id and its anomaly's time."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[float, float, str, str]] = {}  # id -> (arrival, anomaly ts, kind, path)
        self.decided: dict[str, float] = {}  # id -> when the engine made it (the body's timestamp)
        self.scale_calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        arrival = time.time()
        body = await request.json()
        if request.path == "/scale":
            self.scale_calls += 1
            return web.json_response({"scaled": True})
        msg_id = request.headers.get("webhook-id", "")
        if msg_id not in self.first:
            data = body["data"]
            alerts = data["enrichment"].get("alerts") or [{}]
            self.first[msg_id] = (arrival, float(alerts[0].get("ts", 0.0)), data["kind"], request.path)
            self.decided[msg_id] = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
        return web.json_response({"ok": True})


def anomaly(tenant: str, i: int, metric: str) -> tuple[bytes, bytes]:
    series = f"{tenant}|eu|svc-{i}|{metric}|"
    return series.encode(), json.dumps({
        "ts": time.time(), "tenant": tenant, "region": "eu", "service": f"svc-{i}", "metric": metric, "series": series,
        "value": 1.0, "score": 0.9, "severity": "critical", "detector": "ensemble"}).encode()


async def load(settings: Settings, rate: float, minutes: float, tenants: int, scale_share: float) -> dict[str, int]:
    """Produce the anomalies at ``rate`` per minute; returns runs expected per workflow."""
    producer = make_producer(settings)
    await producer.start()
    total, every = int(rate * minutes), 60.0 / rate
    scale_every = round(1 / scale_share) if scale_share else 0
    expected = {"page": 0, "scale": 0}
    start = time.monotonic()
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("anomalies", total=total)
            for i in range(total):
                await asyncio.sleep(max(0.0, start + i * every - time.monotonic()))
                scale = bool(scale_every) and i % scale_every == 0
                expected["scale" if scale else "page"] += 1
                key, value = anomaly(f"t{i % tenants}", i, "requests_per_s" if scale else "latency_ms")
                await producer.send(settings.topic_anomalies, value, key=key)
                progress.update(task, completed=i + 1)
            await producer.flush()
    finally:
        await producer.stop()
    return expected


async def run_records(settings: Settings, expected: int, deadline: float) -> dict[str, dict]:
    """The last record of each run on the workflow_runs topic, until every expected run ended or ``deadline``."""
    consumer = AIOKafkaConsumer(settings.topic_workflow_runs, bootstrap_servers=settings.bootstrap,
                                auto_offset_reset="earliest", **client_kwargs(settings))
    await consumer.start()
    runs: dict[str, dict] = {}
    try:
        while time.monotonic() < deadline and sum(r["state"] == "resolved" for r in runs.values()) < expected:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    run = json.loads(r.value)
                    runs[run["id"]] = run
    finally:
        await consumer.stop()
    return runs


async def bench(args: argparse.Namespace, settings: Settings) -> bool:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    wf_dir = settings.workflows_dir
    for t in range(args.tenants):
        (wf_dir / f"t{t}.yaml").write_text(WORKFLOWS.format(tenant=f"t{t}", url=f"http://127.0.0.1:{port}"))
    worker = WorkerProcess(settings, settings.home / "bench-worker.log")
    with console.status("starting the worker..."):
        await asyncio.to_thread(worker.start, 180.0)
    try:
        await asyncio.sleep(5)  # the engine's partitions assigned and recovered
        expected = await load(settings, args.rate, args.minutes, args.tenants, args.scale_share)
        with console.status("waiting for every run to end (anomalies clear after 20 s)..."):
            runs = await run_records(settings, sum(expected.values()), time.monotonic() + 180)
    finally:
        await asyncio.to_thread(worker.stop)
        await runner.cleanup()
    firsts = [arrival - ts for arrival, ts, kind, path in receiver.first.values() if path == "/chat" and kind == "trigger"]
    firsts.sort()
    reached = sum(bool(r["reached"]) for r in runs.values())
    total = sum(expected.values())
    p = lambda q: firsts[min(len(firsts) - 1, int(q * len(firsts)))] if firsts else float("nan")  # noqa: E731
    console.print(f"{total} anomalies at {args.rate:g}/min over {args.minutes:g} min, {args.tenants} tenants: "
                  f"{expected['page']} page runs, {expected['scale']} scale runs ({receiver.scale_calls} scaler calls)")
    console.print(f"anomaly record -> first delivery attempt (page runs' first notification, {len(firsts)} seen): "
                  f"p50 {statistics.median(firsts) if firsts else float('nan'):.3f} s, p99 {p(0.99):.3f} s, "
                  f"max {firsts[-1] if firsts else float('nan'):.3f} s")
    engine = sorted(receiver.decided[i] - ts for i, (_, ts, kind, path) in receiver.first.items()
                    if path == "/chat" and kind == "trigger")
    by_time = [arrival - ts for arrival, ts, kind, path in sorted(receiver.first.values(), key=lambda v: v[1])
               if path == "/chat" and kind == "trigger"]
    tenth = max(1, len(by_time) // 10)
    if by_time:
        console.print(f"  median latency of the first, middle and last tenth of the load: "
                      f"{statistics.median(by_time[:tenth]):.3f} / {statistics.median(by_time[4 * tenth:5 * tenth]):.3f} / "
                      f"{statistics.median(by_time[-tenth:]):.3f} s")
    if engine:
        console.print(f"  of which anomaly -> notification decided (source agent, engine): p50 {statistics.median(engine):.3f} s, "
                      f"p99 {engine[min(len(engine) - 1, int(0.99 * len(engine)))]:.3f} s; the rest is outbox and delivery")
    escalations = sum(1 for _, _, kind, path in receiver.first.values() if path == "/pager" and kind == "trigger")
    resolves = sum(1 for _, _, kind, _ in receiver.first.values() if kind == "resolve")
    console.print(f"escalations delivered {escalations}, resolve notifications delivered {resolves}")
    console.print(f"runs that reached their declared terminal state: {reached} / {total} = {reached / total:.4%} "
                  f"(run records seen: {len(runs)})")
    ok = bool(firsts) and p(0.99) < 2.0 and reached / total > 0.999
    console.print("[green]bars met[/]" if ok else "[red]bars NOT met[/]")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="Anomalies per minute.")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--scale-share", type=float, default=0.2, help="Share of anomalies that run the scale workflow.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-workflows-"))
    broker = LocalKafka(Settings(home=home / "broker"))
    with console.status("starting Kafka..."):
        bootstrap = broker.start().bootstrap
    run = uuid.uuid4().hex[:8]
    (home / "workflows").mkdir()
    settings = Settings(home=home, kafka_bootstrap=bootstrap, app_id=f"bench-workflows-{run}", topic_partitions=4,
                        web_port=free_port(), workflows_dir=home / "workflows", incident_clear_seconds=20.0,
                        workflow_tick_seconds=0.5, bottleneck_seconds=0)
    try:
        ok = asyncio.run(bench(args, settings))
    finally:
        broker.stop()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
