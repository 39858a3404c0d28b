"""The metrics path's batch handler: pipeline in a thread, outputs to Kafka, then return.

It returns the batch's :class:`~streams.metrics_pipeline.BatchOutcome`, whose decoded points
the forecast handler learns next (``streams.app`` wires the two). The batch consumer
(``streams.batch_consumer``) commits a batch's offsets only after both returned, that is
after the store inserts and the Kafka sends have all completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from streams.batch_consumer import KafkaEvent
from streams.metrics_pipeline import BatchOutcome, MetricsPipeline, Record
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings
    from streams.app import Topics


def records_of(events: Sequence[KafkaEvent]) -> list[Record]:
    """The pipeline's view of a batch of Kafka events (Faust's or the batch consumer's)."""
    return [Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events]


MetricsHandler = Callable[[Sequence[KafkaEvent]], Awaitable[BatchOutcome]]


def metrics_handler(pipeline: MetricsPipeline, topics: Topics, settings: Settings) -> MetricsHandler:
    """The handler of metrics batches, bound to its pipeline and topics."""

    async def handle(events: Sequence[KafkaEvent]) -> BatchOutcome:
        with batch_span(settings.topic_metrics, events, agent="metrics") as span:
            with stage("consume"):
                records = records_of(events)
            outcome = await in_thread(pipeline.process, records)
            with stage("produce"):
                sends = [topics.dead_letter.send(value=msgspec.json.encode(d)) for d in outcome.dead_letters]
                sends += [topics.anomalies.send(key=a.series.encode(), value=msgspec.json.encode(a))
                          for a in outcome.anomalies]
                sends += [topics.metrics.send(key=k, value=v) for k, v in outcome.rekeyed]
                await delivered(sends)
            record_outcome(span, stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                           anomalies=len(outcome.anomalies), rekeyed=len(outcome.rekeyed))
        return outcome

    return handle


async def delivered(sends: list) -> None:
    """Wait until every Faust ``topic.send`` is acknowledged by the broker."""
    futures = [await s for s in sends]
    await asyncio.gather(*futures)
