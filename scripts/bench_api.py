"""Benchmark the HTTP API on a typical read; results go to docs/benchmarks.md by hand.

A server process opens a fresh embedded store, writes ``--rows`` anomalies for each of two
tenants, and serves the API (``api.app.make_api`` on ``api.server.ApiServer``) on 127.0.0.1.
This process then sends ``--requests`` times ``GET /v1/tenants/acme/anomalies?limit=N`` with a
viewer's API key (after one warm-up request, every request takes the remembered-key path: a
SHA-256 and a registry version read, no scrypt), ``--concurrency`` at a time over keep-alive
connections, and reports latency percentiles and requests per second. Client and server are
separate processes; on a 2-core machine they share the cores.

Run:  .venv/bin/python scripts/bench_api.py --rows 100000 --requests 2000 --concurrency 8
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

console = Console()


def serve(home: str, rows: int, ready: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The server process: store with ``rows`` anomalies per tenant, registry, API."""
    import pyarrow as pa

    from api.app import make_api
    from api.server import ApiServer
    from core.settings import Settings
    from sinks.clickhouse import TS_TYPE, Store, connect
    from tenancy.registry import Registry

    settings = Settings(home=Path(home), web_bind="127.0.0.1", web_port=0, quota_requests_per_second=1e9)
    store = Store(connect(settings))
    store.migrate()
    now_ms, chunk = int(time.time() * 1000), 100_000
    for tenant in ("acme", "globex"):
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            ts = pa.array([now_ms - 1000 * (start + i) for i in range(n)], type=TS_TYPE)
            store.insert("anomalies", {
                "ts": ts, "tenant": [tenant] * n, "region": ["eu"] * n, "service": ["api"] * n, "metric": ["rps"] * n,
                "series": [f"{tenant}|eu|api|rps|host={(start + i) % 100}" for i in range(n)],
                "value": [float(i) for i in range(n)], "score": pa.array([0.9] * n, type=pa.float32()),
                "severity": ["critical" if i % 3 == 0 else "warning" for i in range(n)],
                "detector": ["ensemble"] * n, "detected_at": ts})
    registry = Registry.from_settings(settings)
    registry.create_tenant("acme")
    key = registry.create_key("acme", ["viewer"], name="bench", created_by="bench_api")[1]

    async def run() -> None:
        server = ApiServer(settings, make_api(settings, store, registry))
        await server.start()
        ready.put((server.port, key))
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await server.stop()

    asyncio.run(run())
    store.close()


async def load(url: str, key: str, requests: int, concurrency: int, progress: Progress) -> tuple[list[float], int, float]:
    """Latencies (ms) of ``requests`` GETs, ``concurrency`` in flight; errors; wall seconds."""
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors = 0
    task = progress.add_task("requests", total=requests)
    remaining = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=headers) as session:
        async with session.get(url) as warm:  # the one scrypt check; then the key is remembered
            assert warm.status == 200, await warm.text()

        async def worker() -> None:
            nonlocal errors
            for _ in remaining:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append((time.perf_counter() - started) * 1000)
                progress.advance(task)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main(
    rows: int = typer.Option(100_000, help="Anomalies stored per tenant (two tenants)."),
    requests: int = typer.Option(2_000, help="Requests to time."),
    concurrency: list[int] = typer.Option([1, 8], help="Requests in flight at once (repeat to compare)."),
    limit: int = typer.Option(100, help="Rows per answer (the 'limit' parameter)."),
    path: str = typer.Option("", help="Another path to time instead, e.g. /v1/whoami (the API without the store)."),
) -> None:
    """Measure p50/p99 latency and requests per second of GET anomalies with an API key."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    home = tempfile.mkdtemp(prefix="m1-bench-api-")
    server = context.Process(target=serve, args=(home, rows, ready, stop), daemon=True)
    with console.status(f"server: storing {2 * rows:,} anomalies and starting the API..."):
        server.start()
        port, key = ready.get(timeout=600)
    path = path or f"/v1/tenants/acme/anomalies?limit={limit}"
    url = f"http://127.0.0.1:{port}{path}"
    table = Table(title=f"API: GET {path}, {rows:,} anomalies per tenant, viewer API key")
    for column in ("in flight", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "requests/s"):
        table.add_column(column, justify="right")
    try:
        with Progress(console=console) as progress:
            results = [(c, *asyncio.run(load(url, key, requests, c, progress))) for c in concurrency]
    finally:
        stop.set()
        server.join(30)
    for c, latencies, errors, seconds in results:
        table.add_row(str(c), f"{len(latencies):,}", str(errors), f"{percentile(latencies, 0.5):.1f}",
                      f"{percentile(latencies, 0.9):.1f}", f"{percentile(latencies, 0.99):.1f}",
                      f"{max(latencies):.1f}", f"{len(latencies) / seconds:,.0f}")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
