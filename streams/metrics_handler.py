"""The metrics path's batch handler: pipeline in a thread, outputs to Kafka, then return.

It returns the batch's :class:`~streams.metrics_pipeline.BatchOutcome`, whose decoded points
the forecast handler learns next (``streams.app`` wires the two). The batch consumer
(``streams.batch_consumer``) commits a batch's offsets only after both returned, that is
after the store inserts and the Kafka sends have all completed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import msgspec

from streams.batch_consumer import KafkaEvent
from streams.metrics_pipeline import Anomaly, BatchOutcome, DeadLetter, MetricsPipeline, Record
from streams.publisher import OutputRecord, Publisher
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings


def records_of(events: Sequence[KafkaEvent]) -> list[Record]:
    """The pipeline's view of a batch of Kafka events (Faust's or the batch consumer's)."""
    return [Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events]


MetricsHandler = Callable[[Sequence[KafkaEvent]], Awaitable[BatchOutcome]]


def metrics_handler(pipeline: MetricsPipeline, publisher: Publisher, settings: Settings) -> MetricsHandler:
    """The handler of metrics batches, bound to its pipeline and publisher."""

    async def handle(events: Sequence[KafkaEvent]) -> BatchOutcome:
        with batch_span(settings.topic_metrics, events, agent="metrics") as span:
            with stage("consume"):
                records = records_of(events)
            outcome = await in_thread(pipeline.process, records)
            with stage("produce"):
                await publisher.publish(alert_records(settings, outcome.dead_letters, outcome.anomalies) + outcome.rekeyed)
            record_outcome(span, stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                           anomalies=len(outcome.anomalies), rekeyed=len(outcome.rekeyed))
        return outcome

    return handle


def alert_records(settings: Settings, dead_letters: Iterable[DeadLetter], anomalies: Iterable[Anomaly]) -> list[OutputRecord]:
    """Dead letters (unkeyed) and anomalies (keyed by series) as records for their topics."""
    records: list[OutputRecord] = [(settings.topic_dead_letter, None, msgspec.json.encode(d)) for d in dead_letters]
    records += [(settings.topic_anomalies, a.series.encode(), msgspec.json.encode(a)) for a in anomalies]
    return records
