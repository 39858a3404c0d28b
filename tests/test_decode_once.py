"""Each record of the metrics topic is decoded once: forecasting learns the metrics path's points.

On real components: the broker of the session, the publisher, a chdb store, both pipelines and
both handlers wired as ``streams.app`` wires them. The decoder is only counted, not replaced.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.settings import Settings
from core.kafka.topics import ensure_topics
from schemas.events import EventDecoder, MetricPoint, encode
from sinks.clickhouse import Store, connect
from streams.app import metrics_then_forecasting
from streams.batch_consumer import KafkaEvent
from streams.forecast_handler import forecast_handler
from streams.forecast_pipeline import ForecastOutcome, ForecastPipeline
from streams.metrics_handler import Alongside, metrics_handler
from streams.metrics_pipeline import BatchOutcome, MetricsPipeline, Record
from streams.publisher import Publisher
from tests.helpers import consume_records, isolated_settings, produce, read_json

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def batch(tenant: str, n: int = 48) -> tuple[list[tuple[bytes | None, bytes]], list[MetricPoint]]:
    """Kafka records (valid points of a forecast, a cost and an unforecast metric, two invalid
    records, one point keyed otherwise) and the valid, rightly keyed points among them."""
    points = [MetricPoint(T0 + 60 * i, tenant, "eu-west-1", "api", metric, 100.0 + i % 7)
              for i in range(n) for metric in ("requests_per_s", "cost_usd", "latency_ms")]
    stray = MetricPoint(T0 + 60 * n, tenant, "eu-west-1", "api", "requests_per_s", 1.0)
    records: list[tuple[bytes | None, bytes]] = [(p.series_key.encode(), encode(p)) for p in points]
    records += [(None, b"{not json"), (None, b'{"schema":"metric/9"}'), (b"other|key", encode(stray))]
    return records, points


def test_forecasting_learns_the_points_decoded_by_the_metrics_path(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = Store(connect(settings))
    store.migrate()
    try:
        metrics = MetricsPipeline(settings, store)
        records, points = batch("pipes")
        as_records = [Record("metrics", 0, i, k, v) for i, (k, v) in enumerate(records)]
        outcome = metrics.process(as_records)
        by_series: dict[str, list[MetricPoint]] = {}
        for p in points:
            by_series.setdefault(p.series_key, []).append(p)
        assert outcome.points == by_series and len(outcome.dead_letters) == 2 and len(outcome.rekeyed) == 1

        streamed = ForecastPipeline(settings, store).process_points(outcome.points, len(outcome.dead_letters))
        alone = ForecastPipeline(settings, store).process(as_records)
        assert streamed == alone and streamed.learned == 2 * 48 and streamed.skipped_invalid == 2
        assert streamed.forecasts and streamed.costs
    finally:
        store.close()  # chdb: one data directory per process at a time


def test_the_wired_handlers_decode_each_record_once(tmp_path: Path, kafka_bootstrap: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap)
    ensure_topics(settings)
    tenant = f"d-{uuid.uuid4().hex[:6]}"
    records, points = batch(tenant)
    produce(settings, records)

    decoded = 0
    read_raw_each = EventDecoder.read_raw_each  # decode_batch's one pass over every payload of a batch

    def counted(self: EventDecoder, payloads: list[bytes | None]) -> list[object]:
        nonlocal decoded
        decoded += len(payloads)
        return read_raw_each(self, payloads)

    monkeypatch.setattr(EventDecoder, "read_raw_each", counted)
    store = Store(connect(settings))
    store.migrate()
    try:
        metrics_outcome, learned, forecast_outcome = asyncio.run(handle_once(settings, store, len(records)))
    finally:
        store.close()

    assert decoded == len(records)  # once, by the metrics path
    assert learned is metrics_outcome.points  # the very points it decoded, handed over
    assert forecast_outcome.learned == 2 * len(points) // 3  # requests_per_s and cost_usd
    assert forecast_outcome.skipped_invalid == 2
    assert sum(map(len, metrics_outcome.points.values())) == len(points)
    for topic, events in ((settings.topic_forecasts, forecast_outcome.forecasts), (settings.topic_costs, forecast_outcome.costs)):
        published = read_json(settings, topic, lambda out, n=len(events): len(out) >= n)
        assert len(published) == len(events) > 0


async def handle_once(settings: Settings, store: Store,
                      n: int) -> tuple[BatchOutcome, dict[str, list[MetricPoint]], ForecastOutcome]:
    """One batch of the metrics topic through the handlers wired as in ``streams.app``; returns
    the metrics outcome, the points forecasting got, and the forecast outcome."""
    publisher = Publisher(settings)
    await publisher.start()
    forecast, forecasting = forecast_handler(settings, store, publisher)
    scored = metrics_handler(MetricsPipeline(settings, store), publisher, settings)
    outcomes: list[BatchOutcome] = []
    learned: list[tuple[dict[str, list[MetricPoint]], ForecastOutcome]] = []

    async def metrics(events: Sequence[KafkaEvent], alongside: Alongside | None) -> BatchOutcome:
        outcomes.append(await scored(events, alongside))
        return outcomes[-1]

    learn_points = forecasting.learn_points

    def forecasting_points(points: dict[str, list[MetricPoint]], skipped_invalid: int = 0) -> ForecastOutcome:
        learned.append((points, learn_points(points, skipped_invalid)))
        return learned[-1][1]

    forecasting.learn_points = forecasting_points  # type: ignore[method-assign]
    try:
        await metrics_then_forecasting(metrics, forecast)(await consume_records(settings, settings.topic_metrics, n))
    finally:
        await publisher.stop()
    [outcome] = outcomes
    [(points, forecast_outcome)] = learned
    return outcome, points, forecast_outcome
