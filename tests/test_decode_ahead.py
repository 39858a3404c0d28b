"""The next metrics batch is decoded while the batch before it is handled.

``BatchConsumer(ready=...)`` is told of each batch read in full while the one before it is
handled, before its handler gets it (real broker); :class:`streams.metrics_handler.DecodeAhead`
hands the handler that decoding once, equal to the batch's own decoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import core.telemetry

from core.kafka.topics import ensure_topics
from core.settings import Settings
from schemas.events import MetricPoint, encode
from sinks.clickhouse import Store
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.metrics_handler import DecodeAhead, records_of
from streams.metrics_pipeline import BatchOutcome, MetricsPipeline
from streams.publisher import Publisher

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.kafka
async def test_ready_is_told_of_each_next_batch_while_the_one_before_is_handled(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(batch_size=50, topic_partitions=1)
    await asyncio.to_thread(ensure_topics, settings)
    steps: list[tuple[str, int]] = []  # (ready | handle start | handle end, first offset of the batch)
    told: list[Sequence[KafkaEvent]] = []
    next_told = asyncio.Event()

    def ready(events: Sequence[KafkaEvent]) -> None:
        steps.append(("ready", events[0].offset))
        told.append(events)
        next_told.set()

    async def handler(events: Sequence[KafkaEvent]) -> None:
        steps.append(("handle start", events[0].offset))
        if events[-1].offset < 199:  # the batch after it is read meanwhile; it is told of before this one ends
            await asyncio.wait_for(next_told.wait(), 30)
            next_told.clear()
        assert events[0].offset == 0 or any(events is batch for batch in told)  # the very list it was told of
        steps.append(("handle end", events[0].offset))

    consumer = BatchConsumer(settings, settings.topic_metrics, f"{settings.app_id}-ahead", handler, checkpoints=[],
                             ready=ready)
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish([(settings.topic_metrics, b"k", b"%d" % i) for i in range(200)])
        await consumer.start()
        async with asyncio.timeout(60):
            while ("handle end", 150) not in steps:
                await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        await publisher.stop()
    firsts = [offset for step, offset in steps if step == "handle start"]
    assert firsts == [0, 50, 100, 150]
    for before, after in zip(firsts, firsts[1:]):  # told of the next batch between the start and end of this one
        assert steps.index(("handle start", before)) < steps.index(("ready", after)) < steps.index(("handle end", before))


def view(outcome: BatchOutcome) -> tuple:
    return ([(d.offset, d.reason) for d in outcome.dead_letters], outcome.rekeyed, outcome.points,
            [r.offset for r in outcome.records], outcome.keys)


async def test_decode_ahead_hands_the_handler_its_batch_decoded_once(tmp_path: Path, store: Store) -> None:
    pipeline = MetricsPipeline(Settings(home=tmp_path), store)
    points = [MetricPoint(T0 + i, "acme", "eu-west-1", "api", "latency_ms", float(i), {"host": f"h{i % 3}"})
              for i in range(30)]
    rows = [(p.series_key.encode(), encode(p)) for p in points] + [(b"k", b"{not json"), (None, encode(points[0]))]
    events = [ConsumerRecord("metrics", 0, i, 0, 0, key, value, None, 0, 0, ()) for i, (key, value) in enumerate(rows)]
    ahead = DecodeAhead(pipeline)
    ahead.ready(events)
    assert ahead.take(list(events)) is None  # another batch (an equal list) gets nothing
    decoding = ahead.take(events)
    assert decoding is not None and ahead.take(events) is None  # once: a retry decodes again
    decoded = await decoding
    assert view(decoded) == view(pipeline.decode(records_of(events)))
    assert len(decoded.records) == 30 and len(decoded.dead_letters) == 1 and len(decoded.rekeyed) == 1
    outcome = pipeline.process(records_of(events), decoded)
    assert outcome is decoded and outcome.stored == 30


async def test_a_batch_decoded_ahead_traces_its_decode_and_validate_in_a_prepare_span(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(core.telemetry, "_provider", provider)  # what core.telemetry.tracer() hands out
    settings = Settings(home=tmp_path)
    point = MetricPoint(T0, "acme", "eu-west-1", "api", "latency_ms", 1.0)
    events = [ConsumerRecord(settings.topic_metrics, 0, 0, 0, 0, point.series_key.encode(), encode(point), None, 0, 0, ())]
    ahead = DecodeAhead(MetricsPipeline(settings, store))
    ahead.ready(events)
    decoding = ahead.take(events)
    assert decoding is not None and len((await decoding).records) == 1
    spans = exporter.get_finished_spans()
    [prepare] = [s for s in spans if s.name == f"prepare {settings.topic_metrics}"]
    assert prepare.parent is None and prepare.attributes["m1.agent"] == "metrics" and prepare.attributes["m1.records"] == 1
    assert sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == prepare.context.span_id) == [
        "decode", "validate"]
