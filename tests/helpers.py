"""Helpers for tests that run the pipeline on the real broker: settings, produce, poll."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from click.testing import Result
from pydantic import SecretStr
from typer.testing import CliRunner

from core.kafka.local_broker import free_port
from core.kafka.security import client_kwargs
from core.kafka.producer import make_producer, send_all
from m1.query_client import run_query
from core.child_env import settings_env
from core.settings import Settings, get_settings
from m1.cli import app
from m1.worker_process import WorkerProcess
from core.tenant_names import PLATFORM
from tenancy.registry import Registry


def isolated_settings(home: Path, bootstrap: str, **overrides: object) -> Settings:
    """Settings with their own topics, consumer group, store and web port, and a platform-admin
    API key of their own registry (``api_key``, unless given) for every request to the API."""
    run = uuid.uuid4().hex[:8]
    values: dict = dict(
        home=home,
        kafka_bootstrap=bootstrap,
        app_id=f"m1-test-{run}",
        topic_metrics=f"metrics-{run}",
        topic_dead_letter=f"dead-letter-{run}",
        topic_anomalies=f"anomalies-{run}",
        topic_otlp_spans=f"otlp-spans-{run}",
        topic_otlp_metrics=f"otlp-metrics-{run}",
        topic_bottlenecks=f"bottlenecks-{run}",
        topic_forecasts=f"forecasts-{run}",
        topic_costs=f"costs-{run}",
        topic_recommendations=f"recommendations-{run}",
        topic_notifications=f"notifications-{run}",  # integrations (#12): each worker its own outbox
        topic_notification_retries=f"notification-retries-{run}",
        topic_deliveries=f"deliveries-{run}",
        topic_workflow_signals=f"workflow-signals-{run}",  # the engine ticks every partition it is configured with
        topic_incidents=f"incidents-{run}",
        topic_workflow_runs=f"workflow-runs-{run}",
        topic_partitions=2,
        web_port=free_port(),
        batch_size=500,
        flush_seconds=0.3,
        snapshot_seconds=0.5,
    )
    values.update(overrides)
    settings = Settings(**values)
    if "api_key" in overrides:
        return settings
    return settings.model_copy(update={"api_key": SecretStr(new_key(settings, PLATFORM, ["platform-admin"]))})


def new_key(settings: Settings, tenant: str, roles: list[str]) -> str:
    """A raw API key of ``tenant`` (created in the registry if missing) with ``roles``."""
    registry = Registry.from_settings(settings)
    try:
        if tenant not in {t.name for t in registry.tenants()}:
            registry.create_tenant(tenant)
        return registry.create_key(tenant, roles, name="test", created_by="tests")[1]
    finally:
        registry.close()


def add_tenant(settings: Settings, tenant: str) -> None:
    """Register ``tenant`` (the API answers 404 for a tenant the registry does not know)."""
    registry = Registry.from_settings(settings)
    try:
        registry.create_tenant(tenant)
    finally:
        registry.close()


def produce(settings: Settings, records: list[tuple[bytes | None, bytes]], topic: str | None = None) -> int:
    """Send records to the metrics topic (or ``topic``) and wait for the broker's acks."""

    async def run() -> int:
        producer = make_producer(settings)
        await producer.start()
        try:
            return await send_all(producer, topic or settings.topic_metrics, records)
        finally:
            await producer.stop()

    return asyncio.run(run())


def scalar(settings: Settings, sql: str) -> object:
    return run_query(settings, sql).rows[0][0]


def m1_in_process(settings: Settings, *args: str, **env: str) -> Result:
    """``m1 ARGS`` run in this process with ``settings`` (and ``env``) as its environment, wide output:
    for commands that only call a running worker's API (one that opens the store would hold the
    worker's chdb directory in this process); a child process costs seconds of imports."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env={**settings_env(settings), "COLUMNS": "200", **env})
    finally:
        get_settings.cache_clear()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.5) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def worker_process(settings: Settings) -> WorkerProcess:
    """A worker of ``settings``, not started, its log in its home."""
    return WorkerProcess(settings, settings.home / f"worker-{settings.web_port}.log")


def start_worker(settings: Settings) -> WorkerProcess:
    return worker_process(settings).start()


def start_together(workers: list[WorkerProcess], timeout: float = 60.0) -> list[WorkerProcess]:
    """Launch ``workers`` at once (their imports and group joins overlap), then wait until each is
    up; if one does not come up, every one is killed."""
    for worker in workers:
        worker.launch()
    try:
        return [worker.wait_up(timeout) for worker in workers]
    except BaseException:
        for worker in workers:
            worker.kill()
        raise


def read_json(settings: Settings, topic: str, until: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
    """JSON records of ``topic`` from the beginning, until ``until(records)`` holds or ``timeout`` passes."""

    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest",
                                    **client_kwargs(settings))
        await consumer.start()
        out: list[dict] = []
        try:
            async with asyncio.timeout(timeout):
                async for message in consumer:
                    out.append(json.loads(message.value))
                    if until(out):
                        break
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


async def consume_records(settings: Settings, topic: str, n: int, timeout: float = 30.0) -> list[ConsumerRecord]:
    """The first ``n`` records of ``topic`` (all partitions), read in batches as the batch consumer does."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                for part in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(part)
    finally:
        await consumer.stop()
    return out
