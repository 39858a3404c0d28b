"""The forecasting path's batch handler: learn, publish forecasts and advice, then return.

``register_forecasting`` builds the :class:`ForecastPipeline` and its output topics, and
returns the handler that the metrics topic's batch consumer calls after the metrics handler,
with the same records. The consumer checkpoints the pipeline only between batches, so models
are never saved between learning a batch and delivering what it produced (a series does not
learn a point twice, so such a checkpoint would drop those outputs from a replay).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust
import msgspec

from streams.batch_consumer import BatchHandler, KafkaEvent
from streams.forecast_pipeline import ForecastPipeline
from streams.metrics_handler import delivered, records_of
from streams.tracing import batch_span, in_thread, record_outcome, stage

if TYPE_CHECKING:
    from m1.settings import Settings
    from sinks.clickhouse import Store


def register_forecasting(app: faust.App, settings: Settings, store: Store) -> tuple[BatchHandler, ForecastPipeline]:
    """Output topics on ``app``; returns the batch handler and its pipeline."""
    pipeline = ForecastPipeline(settings, store)
    raw = dict(key_serializer="raw", value_serializer="raw")
    forecasts = app.topic(settings.topic_forecasts, **raw)
    recommendations = app.topic(settings.topic_recommendations, **raw)

    async def handle(events: Sequence[KafkaEvent]) -> None:
        with batch_span(settings.topic_metrics, events, agent="forecast") as span:
            with stage("consume"):
                records = records_of(events)
            outcome = await in_thread(pipeline.process, records)
            with stage("produce"):
                sends = [forecasts.send(key=f.series.encode(), value=msgspec.json.encode(f)) for f in outcome.forecasts]
                sends += [forecasts.send(key=c.series.encode(), value=msgspec.json.encode(c)) for c in outcome.costs]
                sends += [recommendations.send(key=r.series.encode(), value=msgspec.json.encode(r))
                          for r in outcome.recommendations]
                await delivered(sends)
            record_outcome(span, learned=outcome.learned, skipped_invalid=outcome.skipped_invalid,
                           forecasts=len(outcome.forecasts), cost_projections=len(outcome.costs),
                           recommendations=len(outcome.recommendations))

    return handle, pipeline
