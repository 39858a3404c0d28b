"""Faust wiring of the forecasting path: a second agent on the metrics topic.

``register_forecasting(app, settings, store, topics)`` (one line in ``streams.app.build_app``)
adds the ``forecasts`` agent. Faust hands every record of the metrics topic to each agent
subscribed to it, and commits an offset only when every agent has acknowledged the record,
so this agent sees all points the metrics agent sees, at least once. Like the metrics agent it
processes a batch in a thread (``ForecastPipeline.process``: learn, store), sends what the
batch produced (forecasts and cost projections to the forecasts topic, recommendations to the
recommendations topic) and only then lets the batch be acknowledged.

The models are checkpointed on a timer every ``snapshot_seconds`` (so idle series are saved
too) and when the agent stops, but never while a batch is between learning and delivery: a
series does not learn a point twice, so state saved before its outputs reached Kafka would
drop them from a replay. The ``guard`` lock keeps the timer out of that window.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import faust
import msgspec

from streams.agents import _delivered
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_pipeline import Record
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings
    from sinks.clickhouse import Store
    from streams.app import Topics

log = logging.getLogger(__name__)


def register_forecasting(app: faust.App, settings: Settings, store: Store, topics: Topics) -> ForecastPipeline:
    """Add the forecasting agent (on ``topics.metrics``) and its output topics to ``app``."""
    pipeline = ForecastPipeline(settings, store)
    raw = dict(key_serializer="raw", value_serializer="raw")
    forecasts = app.topic(settings.topic_forecasts, **raw)
    recommendations = app.topic(settings.topic_recommendations, **raw)
    guard = asyncio.Lock()
    app.agent(topics.metrics, name="forecasts")(forecast_agent(pipeline, forecasts, recommendations, settings, guard))

    @app.timer(settings.snapshot_seconds, name="forecast_checkpoint")
    async def checkpoint_forecasters() -> None:
        """Checkpoint changed series on a clock, between batches."""
        async with guard:
            await in_thread(pipeline.checkpoint)

    return pipeline


def forecast_agent(pipeline: ForecastPipeline, forecasts: faust.TopicT, recommendations: faust.TopicT,
                   settings: Settings, guard: asyncio.Lock) -> Any:
    """The agent function: batches of metric records -> pipeline -> output topics -> ack."""

    async def agent(stream: Any) -> None:
        in_flight = False
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.flush_seconds):
                async with guard:
                    in_flight = True
                    await _handle(events)
                    in_flight = False
        finally:
            if not in_flight:  # else the last checkpoint stands and the replay redoes the batch
                saved = pipeline.checkpoint()
                log.info("forecast agent stopping: checkpointed %d series", saved)

    async def _handle(events: list[Any]) -> None:
        with batch_span(settings.topic_metrics, events) as span:
            with stage("consume"):
                records = [
                    Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events
                ]
            outcome = await in_thread(pipeline.process, records)
            with stage("produce"):
                sends = [forecasts.send(key=f.series.encode(), value=msgspec.json.encode(f)) for f in outcome.forecasts]
                sends += [forecasts.send(key=c.series.encode(), value=msgspec.json.encode(c)) for c in outcome.costs]
                sends += [recommendations.send(key=r.series.encode(), value=msgspec.json.encode(r))
                          for r in outcome.recommendations]
                await _delivered(sends)
            record_outcome(span, learned=outcome.learned, skipped_invalid=outcome.skipped_invalid,
                           forecasts=len(outcome.forecasts), cost_projections=len(outcome.costs),
                           recommendations=len(outcome.recommendations))

    return agent
