"""A failed store insert fails the metrics topic's batch and commits nothing, and its retry stores
every row, the forecasts its first try learned included. Real broker, real chdb, the handlers
wired as ``streams.app`` wires them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.kafka.topics import ensure_topics
from core.settings import Settings
from schemas.events import MetricPoint, encode
from sinks.clickhouse import Store
from streams.app import metrics_then_forecasting
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.forecast_handler import forecast_handler
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_handler import batch_dead_letters, metrics_handler
from streams.metrics_pipeline import MetricsPipeline
from streams.publisher import Publisher
from streams.tracing import in_thread
from tests.helpers import produce
from tests.test_store_faults import committed, until

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
N = 48


def points(tenant: str) -> list[MetricPoint]:
    """One forecast series of ``tenant``: :data:`N` points a minute apart."""
    return [MetricPoint(T0 + 60 * i, tenant, "eu-west-1", "api", "requests_per_s", 100.0 + i % 7) for i in range(N)]


def produced(settings: Settings, tenant: str) -> list[MetricPoint]:
    ensure_topics(settings)
    series = points(tenant)
    produce(settings, [(p.series_key.encode(), encode(p)) for p in series])
    return series


def expected_forecasts(settings: Settings, series: list[MetricPoint]) -> list[tuple[int, int, float]]:
    """(ts ms, horizon, point) of the forecasts a pipeline of its own makes of ``series``."""
    class NoStore:
        def insert(self, table: str, columns: dict) -> int:
            return 0

        def query(self, sql: str, parameters: dict | None = None) -> Any:
            return SimpleNamespace(rows=[])

    outcome = ForecastPipeline(settings, NoStore()).process_points({series[0].series_key: series})
    assert outcome.forecasts
    return sorted((int(np.rint(f.ts * 1000)), f.horizon, f.point) for f in outcome.forecasts)


def stored_forecasts(store: Store, tenant: str) -> list[tuple[int, int, float]]:
    return sorted(store.query("SELECT toUnixTimestamp64Milli(ts), horizon, point FROM forecasts FINAL "
                              f"WHERE tenant = '{tenant}'").rows)


def stored_points(store: Store, tenant: str) -> int:
    return store.query(f"SELECT count() FROM metric_points FINAL WHERE tenant = '{tenant}'").rows[0][0]


def offsets(events: Sequence[KafkaEvent]) -> list[tuple[int, int]]:
    return [(e.partition, e.offset) for e in events]


@pytest.mark.parametrize("refusing", ["metric_points", "forecasts"])
async def test_a_failed_insert_fails_the_batch_commits_nothing_and_its_retry_stores_every_row(
        store: Store, make_settings: Callable[..., Settings], refusing: str) -> None:
    """The metric rows' insert fails while forecasting learns, or the forecasts' insert fails after the
    forecasters learned (a retry learns nothing again: it stores and sends what the first try learned)."""
    settings = make_settings(store_retry_attempts=10**6, store_retry_base_seconds=0.05, store_retry_max_seconds=0.1)
    tenant, group = f"r-{uuid.uuid4().hex[:6]}", f"{settings.app_id}-metrics"
    store.command(f"ALTER TABLE {refusing} ADD CONSTRAINT test_overlap CHECK tenant != '{tenant}'")
    publisher, pipeline = Publisher(settings), MetricsPipeline(settings, store)
    forecast, forecasting = forecast_handler(settings, store, publisher)
    handle, tries = metrics_then_forecasting(metrics_handler(pipeline, publisher, settings), forecast), []

    async def counted(events: Sequence[KafkaEvent]) -> None:
        tries.append(offsets(events))
        await handle(events)

    consumer = BatchConsumer(settings, settings.topic_metrics, group, counted,
                             checkpoints=[pipeline.checkpoint, forecasting.checkpoint],
                             dead_letters=batch_dead_letters(pipeline, publisher, settings))
    refused = True
    try:
        await publisher.start()
        series = await in_thread(produced, settings, tenant)
        await consumer.start()
        await until(lambda: len(tries) >= 3)
        assert await committed(settings, group) == {}  # the batch failed: nothing committed
        assert len({tuple(t) for t in tries}) == 1  # the same batch, tried again
        store.command(f"ALTER TABLE {refusing} DROP CONSTRAINT test_overlap")
        refused = False
        await until(lambda: stored_points(store, tenant) == N and len(stored_forecasts(store, tenant)) > 0)
    finally:
        await consumer.stop()  # its last checkpoint commits the offsets
        await publisher.stop()
        if refused:
            store.command(f"ALTER TABLE {refusing} DROP CONSTRAINT test_overlap")
    assert stored_forecasts(store, tenant) == expected_forecasts(settings, series)
    assert await committed(settings, group) == {tries[0][0][0]: N}
