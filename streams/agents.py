"""Faust agents: short loops that hand batches to the pipelines and send their outputs.

A batch is acknowledged (its offsets become committable) only after the loop body
returns, that is after the store insert and the Kafka sends have both completed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from streams.metrics_pipeline import MetricsPipeline, Record
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings
    from streams.app import Topics

log = logging.getLogger(__name__)


def metrics_agent(pipeline: MetricsPipeline, topics: Topics, settings: Settings) -> Any:
    """The agent function for the metrics topic, bound to its pipeline and topics."""

    async def agent(stream: Any) -> None:
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.flush_seconds):
                with batch_span(settings.topic_metrics, events, agent="metrics") as span:
                    with stage("consume"):
                        records = [
                            Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events
                        ]
                    outcome = await in_thread(pipeline.process, records)
                    with stage("produce"):
                        sends = [topics.dead_letter.send(value=msgspec.json.encode(d)) for d in outcome.dead_letters]
                        sends += [topics.anomalies.send(key=a.series.encode(), value=msgspec.json.encode(a)) for a in outcome.anomalies]
                        sends += [topics.metrics.send(key=k, value=v) for k, v in outcome.rekeyed]
                        await _delivered(sends)
                    record_outcome(span, stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                                   anomalies=len(outcome.anomalies), rekeyed=len(outcome.rekeyed))
        finally:
            saved = pipeline.checkpoint()
            log.info("metrics agent stopping: checkpointed %d series", saved)

    return agent


async def _delivered(sends: list) -> None:
    """Wait until every send is acknowledged by the broker."""
    futures = [await s for s in sends]
    await asyncio.gather(*futures)
